"""The webhook receiver's cost per callback as the archive grows (issue 22, item 7).

    .venv/bin/python benchmarks/experiments/receiver_scale.py [--folder 10 100000]
        [--s3 10 20000] [--callbacks 30] [--size 32768] [--code DIR] [--dir DIR] [--json FILE]

For each destination and size N: a folder pre-populated with N archived files and their N
index entries, or an S3 prefix (moto, its own process on 127.0.0.1) holding N objects (an
`s3://` destination has no index). A `vobiz-recordings serve` child process (the package
under `--code`, default this checkout: point it at an extracted older commit to measure
"before") archives from FakeVobiz (in this process, on 127.0.0.1); this process fires
`--callbacks` signed RecordStop callbacks for new recordings one after another, each sent
once the previous one is archived, and times each from the POST to the spool's `archived`
line for it (the receiver writes it after the file is stored and indexed; the spool is
watched from here, so the receiver spends nothing on being watched).

CPU per callback is the receiver's over all callbacks divided by their number (and, for its
main thread, the first callback's apart from the mean of the rest: a first callback may pay
for a one-time listing): `loop` is its main thread (the event loop;
`/proc/PID/task/PID/schedstat`, in ns), `process` every thread (`utime + stime`, in clock
ticks). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository
TOKEN = "receiver-scale-token-Qw7eR4"
PUBLIC_URL = "https://hooks.example.test/vobiz/recording"
BUCKET = "receiver-scale"
PREFIX = "calls/"
TICK = os.sysconf("SC_CLK_TCK")
#: Seconds one callback may take (a first one may list 100,000 objects in moto).
WAIT = 1200.0
_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+/\S*)")


def rid(i: int) -> str:
    """A uuid-shaped, deterministic id for a pre-populated recording."""
    h = f"{i * 2654435761 % 2**64:016x}{i:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def signed(nonce: str) -> dict[str, str]:
    """V3 headers for PUBLIC_URL, from the documented formula."""
    mac = hmac.new(TOKEN.encode(), f"{PUBLIC_URL}.{nonce}".encode(), hashlib.sha256)
    return {
        "X-Vobiz-Signature-V3": base64.b64encode(mac.digest()).decode(),
        "X-Vobiz-Signature-V3-Nonce": nonce,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the archive as it was before the callbacks --------------------------------------------


def populate_folder(out: Path, count: int) -> None:
    """`count` archived files (64 bytes each) and their index entries."""
    sys.path.insert(0, str(ROOT))
    from vobiz_async.manifest import MANIFEST_NAME, Manifest

    out.mkdir(parents=True)
    body = b"ID3" + bytes(61)
    digest = hashlib.sha256(body).hexdigest()
    with Manifest(out / MANIFEST_NAME) as manifest:
        for i in range(count):
            name = f"{rid(i)}.mp3"
            (out / name).write_bytes(body)
            manifest.record(
                rid(i), name, size=len(body), sha256=digest, container="mp3", add_time=None
            )


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto did not start")


def populate_bucket(endpoint: str, count: int) -> None:
    """A fresh bucket whose prefix holds `count` 64-byte objects."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    body = b"ID3" + bytes(61)

    def put(i: int) -> None:
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}{rid(i)}.mp3", Body=body)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


# -- the receiver ------------------------------------------------------------------------


def cpu(pid: int) -> tuple[float, float]:
    """(main thread's CPU seconds, the whole process's) so far."""
    loop_ns = int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    process = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return loop_ns / 1e9, process


class SpoolWatch:
    """Reads the spool's new lines as they appear: which recordings are archived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.done: dict[str, str] = {}

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            record = json.loads(line)
            if record["op"] in ("archived", "failed"):
                self.done[record["recording_id"]] = record["op"]

    async def wait(self, recording_id: str) -> str:
        """`archived` or `failed`, once the spool says which (within WAIT seconds)."""
        async with asyncio.timeout(WAIT):
            while recording_id not in self.done:
                await asyncio.sleep(0.001)
                self.poll()
        return self.done[recording_id]


async def start_receiver(
    dest: str, spool: Path, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--public-url",
        PUBLIC_URL,
        "--out",
        dest,
        "--spool",
        str(spool),
        env=env,
        cwd=spool.parent,  # not the checkout: `-m` would import the package from there
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    match = _LISTENING.search(line.decode())
    if match is None:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"the receiver did not start: {line!r}")
    return proc, match.group(1)


async def measure(
    dest: str, work: Path, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Fire the callbacks at a fresh receiver for `dest`; latencies and CPU."""
    import aiohttp

    from vobiz_async.testing import FakeVobiz

    spool = work / "spool.jsonl"
    async with FakeVobiz(recordings=0, seed=22, auth_token=TOKEN, record_requests=False) as fake:
        rids = [fake.add_recording(size=args.size).recording_id for _ in range(args.callbacks)]
        env = {**env, "VOBIZ_AUTH_ID": fake.auth_id, "VOBIZ_AUTH_TOKEN": TOKEN}
        env["VOBIZ_BASE_URL"] = fake.base_url
        proc, url = await start_receiver(dest, spool, env)
        watch = SpoolWatch(spool)
        latencies: list[float] = []
        failed = 0
        try:
            async with aiohttp.ClientSession() as client:
                loop0, process0 = cpu(proc.pid)
                after_first = loop0
                for n, recording_id in enumerate(rids):
                    body = {
                        "Event": "RecordStop",
                        "RecordingID": recording_id,
                        "RecordUrl": "https://x/r.mp3",
                    }
                    started = time.perf_counter()
                    async with client.post(url, data=body, headers=signed(f"{n + 1:020d}")) as r:
                        assert r.status == 200, r.status
                    failed += await watch.wait(recording_id) == "failed"
                    latencies.append(time.perf_counter() - started)
                    if n == 0:
                        after_first = cpu(proc.pid)[0]
                loop1, process1 = cpu(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "callbacks": len(latencies),
        "failed": failed,
        "first_ms": latencies[0] * 1000,
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": p95 * 1000,
        "max_ms": ordered[-1] * 1000,
        "loop_cpu_ms": (loop1 - loop0) * 1000 / len(latencies),
        "first_loop_cpu_ms": (after_first - loop0) * 1000,
        "rest_loop_cpu_ms": (loop1 - after_first) * 1000 / max(1, len(latencies) - 1),
        "process_cpu_ms": (process1 - process0) * 1000 / len(latencies),
    }


def base_env(code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOBIZ_", "AWS_"))}
    env["PYTHONPATH"] = str(code)
    return env


async def run_folder(count: int, base: Path, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"folder-{count}-", dir=base))
    try:
        started = time.perf_counter()
        await asyncio.to_thread(populate_folder, work / "archive", count)
        print(f"  folder of {count}: populated in {time.perf_counter() - started:.1f}s")
        return await measure(str(work / "archive"), work, base_env(args.code), args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def run_s3(count: int, base: Path, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"s3-{count}-", dir=base))
    moto, endpoint = start_moto()  # a fresh server: the bucket holds exactly `count`
    aws = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(work / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    os.environ.update(aws)  # for the boto3 client that populates the bucket
    try:
        started = time.perf_counter()
        await asyncio.to_thread(populate_bucket, endpoint, count)
        print(f"  s3 prefix of {count}: populated in {time.perf_counter() - started:.1f}s")
        env = {**base_env(args.code), **aws}
        return await measure(f"s3://{BUCKET}/{PREFIX}", work, env, args)
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| destination | archived before | callbacks | first ms | median ms | p95 ms | max ms "
        "| loop CPU ms/callback: mean, first, the rest | process CPU ms/callback |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['archived']:,} | {r['callbacks']} | {r['first_ms']:.1f} "
            f"| {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} "
            f"| {r['loop_cpu_ms']:.1f}, {r['first_loop_cpu_ms']:.1f}, {r['rest_loop_cpu_ms']:.1f} "
            f"| {r['process_cpu_ms']:.1f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--folder", type=int, nargs="*", default=[10, 100_000])
    parser.add_argument("--s3", type=int, nargs="*", default=[10, 20_000])
    parser.add_argument("--callbacks", type=int, default=30)
    parser.add_argument("--size", type=int, default=32 * 1024, help="bytes per new recording")
    parser.add_argument("--code", type=Path, default=ROOT, help="the package the receiver runs")
    parser.add_argument("--dir", type=Path, default=None, help="where archives are built")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # FakeVobiz and the index from this checkout
    base = Path(tempfile.mkdtemp(prefix="receiver-scale-", dir=args.dir))
    rows: list[dict[str, Any]] = []
    try:
        for kind, counts, run in (("folder", args.folder, run_folder), ("s3", args.s3, run_s3)):
            for count in counts:
                row = await run(count, base, args)
                rows.append({"kind": kind, "archived": count, **row})
                print(f"  {kind} {count}: {json.dumps(row)}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"receiver code: {args.code}")
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
