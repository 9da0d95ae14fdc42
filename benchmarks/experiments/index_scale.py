"""The index at scale: a million archived recordings, a thousand new ones.

Builds a JSON Lines manifest of `--entries` entries (the format this library wrote before
the index), lets `Manifest` import it once into the SQLite index, then measures in fresh
processes (each line is one process; peak RSS is its `VmHWM` from /proc/self/status):

- `probe`: open the index and look up `--new` ids it does not have and `--existing` ids it
  has: time to the first answer, time for all of them, peak RSS;
- `download`: `download_many` of `--new` recordings from a fake Vobiz (its own process, on
  127.0.0.1) with `manifest=` the index: time from the call to the first transfer starting
  (its first BYTES event), and peak RSS at the end of the batch;
- `legacy`: the old JSON Lines load (read whole, one `ManifestEntry` per line), unless
  `--no-legacy`.

    python benchmarks/experiments/index_scale.py [--entries 1000000] [--new 1000] [--existing 1000]
        [--dir DIR] [--no-legacy] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
SHA = "5f" * 32


def rid(i: int) -> str:
    """A uuid-shaped, deterministic recording id."""
    h = f"{i * 2654435761 % 2**64:016x}{i:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


def write_legacy(path: Path, count: int) -> None:
    with path.open("w") as f:
        for i in range(count):
            r = rid(i)
            entry = {
                "recording_id": r,
                "path": f"2026/05/07/{r}.mp3",
                "size": 100_000 + i % 5000,
                "sha256": SHA,
                "container": "mp3",
                "add_time": "2026-05-07 09:45:35.79276+05:30",
                "downloaded_at": "2026-05-07T10:00:00.123456+00:00",
            }
            f.write(json.dumps(entry, separators=(",", ":")) + "\n")


# -- the measurements, each in its own process ---------------------------------------------


def probe(path: str, entries: int, new: int, existing: int) -> dict[str, float]:
    started = time.perf_counter()
    from vobiz_async.manifest import Manifest

    imported = time.perf_counter()
    base_rss = peak_rss_mb()
    opened = time.perf_counter()
    manifest = Manifest(path)
    first = manifest.get(rid(entries + 1))
    first_answer = time.perf_counter() - opened
    assert first is None
    for i in range(new):
        assert manifest.get(rid(entries + 1 + i)) is None
    step = max(1, entries // max(1, existing))
    for i in range(0, step * existing, step):
        found = manifest.get(rid(i))
        assert found is not None
        assert found.sha256 == SHA
    every = time.perf_counter() - opened
    manifest.close()
    return {
        "import_s": imported - started,
        "first_answer_ms": first_answer * 1000,
        "all_lookups_ms": every * 1000,
        "rss_after_imports_mb": base_rss,
        "peak_rss_mb": peak_rss_mb(),
    }


def legacy(path: str) -> dict[str, float]:
    """The JSON Lines load as the library did it until the index (manifest.py `_load`)."""
    from vobiz_async.manifest import ManifestEntry

    started = time.perf_counter()
    entries: dict[str, ManifestEntry] = {}
    data = Path(path).read_bytes()
    for line in data.split(b"\n"):
        if line.strip():
            entry = ManifestEntry(**json.loads(line))
            entries[entry.recording_id] = entry
    return {
        "load_s": time.perf_counter() - started,
        "entries": len(entries),
        "peak_rss_mb": peak_rss_mb(),
    }


def download(path: str, ids_file: str, dest: str) -> dict[str, float]:
    """Credentials and base URL come from the environment (the fake's, not secrets)."""
    from vobiz_async import AsyncSession, ProgressEvent, ProgressKind

    ids = Path(ids_file).read_text().split()
    first: list[float] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.kind is ProgressKind.BYTES and not first:
            first.extend((time.perf_counter(), time.time()))

    async def run() -> tuple[float, int]:
        async with AsyncSession() as session:
            started = time.perf_counter()
            report = await session.recordings.download_many(
                ids, dest, manifest=path, on_progress=on_progress, concurrency=16
            )
            assert report.ok, report.failed[:3]
            return started, len(report.downloaded)

    started, downloaded = asyncio.run(run())
    return {
        "first_transfer_s": first[0] - started,
        "first_transfer_at": first[1],
        "downloaded": downloaded,
        "peak_rss_mb": peak_rss_mb(),
    }


def child(*args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    started, spawned = time.perf_counter(), time.time()
    out = subprocess.run(
        [sys.executable, __file__, *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    ).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - started
    if "first_transfer_at" in result:  # from spawning the process, interpreter start included
        result["first_transfer_from_spawn_s"] = result.pop("first_transfer_at") - spawned
    return result


def show(name: str, result: dict[str, float]) -> None:
    shown = ", ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
    )
    print(f"{name:10s} {shown}", flush=True)


def fake_server(count: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vobiz_async.cli", "fake-server", "--count", str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    env: dict[str, str] = {}
    for line in proc.stdout:
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("#")[0].strip().split("=", 1)
            env[name] = value
        if len(env) == 3:
            return proc, env
    raise RuntimeError("the fake server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=1000)
    parser.add_argument("--existing", type=int, default=1000)
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-legacy", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--mode", choices=["probe", "legacy", "download"], help=argparse.SUPPRESS)
    parser.add_argument("--args", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "probe":
        print(json.dumps(probe(args.args[0], args.entries, args.new, args.existing)))
        return
    if args.mode == "legacy":
        print(json.dumps(legacy(args.args[0])))
        return
    if args.mode == "download":
        print(json.dumps(download(*args.args)))
        return

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="index-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        index = scratch / "vobiz-manifest.jsonl"
        started = time.perf_counter()
        write_legacy(index, args.entries)
        size = index.stat().st_size
        print(
            f"built      {args.entries} JSON lines, {size / 1e6:.1f} MB, "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        sizes = ["--entries", str(args.entries), "--new", str(args.new)]
        if not args.no_legacy:
            show("legacy", child(*sizes, "--mode", "legacy", "--args", str(index)))
        started = time.perf_counter()
        imported = child(*sizes, "--existing", "0", "--mode", "probe", "--args", str(index))
        print(
            f"import     one-time, {time.perf_counter() - started:.1f} s in all; index "
            f"{index.stat().st_size / 1e6:.1f} MB; peak_rss_mb {imported['peak_rss_mb']:.1f}",
            flush=True,
        )
        for _ in range(3):
            show(
                "probe",
                child(
                    *sizes,
                    "--existing",
                    str(args.existing),
                    "--mode",
                    "probe",
                    "--args",
                    str(index),
                ),
            )
        proc, fake_env = fake_server(args.new)
        try:
            ids_file = scratch / "ids.txt"
            from vobiz_async.testing import FakeVobiz

            ids = FakeVobiz(recordings=args.new).recording_ids  # the same seed as the server
            ids_file.write_text("\n".join(ids) + "\n")
            for run in range(3):
                dest = scratch / f"dest{run}"
                show(
                    "download",
                    child(
                        *sizes,
                        "--mode",
                        "download",
                        "--args",
                        str(index),
                        str(ids_file),
                        str(dest),
                        env=fake_env,
                    ),
                )
                shutil.rmtree(dest)
        finally:
            proc.terminate()
            proc.wait()
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
