"""`download --engine process` and `--workers`, the CLI's default engine, and `demo --json`:
the real entry point in a subprocess, FakeVobiz on 127.0.0.1 in this test's event loop.

Process-engine runs are few and small: each worker is a spawned interpreter (about 0.3 s).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _waiting import eventually
from test_cli import (
    assert_archived,
    env_for,
    finish,
    parts,
    run_cli,
    saved,
    size_of,
    start_cli,
)

from vobiz_async.engines import (
    PROCESS_MIN_CONCURRENCY,
    PROCESS_MIN_RECORDINGS,
    choose_engine,
    shard_size_for,
    usable_cpus,
)
from vobiz_async.manifest import MANIFEST_NAME, Manifest, verify_manifest
from vobiz_async.testing import FakeVobiz

#: The token the fake accepts: distinctive, so a search of a process's memory maps cannot
#: miss it.
TOKEN = "tok-Hx4mV9-cli-never-in-a-worker"
#: The keys `download --json` has always printed; `engine` is added beside them.
SUMMARY_KEYS = {"downloaded", "skipped", "failed", "bytes", "elapsed", "failures"}


@pytest.fixture(name="base_env")
def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=24, seed=11, auth_token=TOKEN, wav_as_mp3_rate=0.25) as fake:
        yield fake


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        fields = text.rsplit(")", 1)[1].split()
        parents[int(stat.parent.name)] = int(fields[1])  # after the state: the ppid
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def workers_of(pid: int) -> list[int]:
    """The spawned worker processes below `pid` (their command line names spawn_main)."""
    found = []
    for child in descendants(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


# -- the default engine ---------------------------------------------------------------------


#: Enough transfers at once, and too few, for the process engine to pay.
WIDE, NARROW = PROCESS_MIN_CONCURRENCY, PROCESS_MIN_CONCURRENCY - 1
LARGE = PROCESS_MIN_RECORDINGS


@pytest.mark.parametrize(
    ("cpus", "recordings", "concurrency", "engine"),
    [
        (1, None, WIDE, "local"),
        (1, 10, WIDE, "local"),
        (1, 1_000_000, 1024, "local"),  # one CPU: a second interpreter has no core to use
        (2, None, WIDE, "local"),  # size unknown: stay local
        (2, 0, WIDE, "local"),
        (2, LARGE - 1, WIDE, "local"),
        (2, LARGE, WIDE, "process"),
        (2, 1_000_000, WIDE, "process"),
        (2, 1_000_000, NARROW, "local"),  # few transfers: one process has CPU to spare
        (2, 1_000_000, 16, "local"),  # the CLI's default concurrency
        (8, None, 1024, "local"),
        (8, 50, 1024, "local"),
        (8, LARGE, WIDE, "process"),
        (8, LARGE, NARROW, "local"),
    ],
)
def test_default_engine_rule(
    cpus: int, recordings: int | None, concurrency: int, engine: str
) -> None:
    """Process only with 2+ CPUs, a job known to be large and many transfers at once."""
    assert choose_engine(cpus, recordings, concurrency) == engine


@pytest.mark.parametrize(
    ("recordings", "workers", "size"),
    [
        (None, 2, 500),
        (0, 2, 10),
        (40, 2, 10),
        (200, 2, 25),
        (210, 2, 25),
        (2000, 2, 250),
        (2000, 8, 50),
        (10**6, 2, 500),
    ],
)
def test_cli_shard_size(recordings: int | None, workers: int, size: int) -> None:
    """About four shards a worker, from a fixed ladder of 10 to 500; 500 when unknown."""
    assert shard_size_for(recordings, workers) == size


async def test_a_small_job_runs_on_the_local_engine_by_default(
    base_env: dict[str, str], fake: FakeVobiz, tmp_path: Path
) -> None:
    """24 recordings are below the crossover: the JSON summary says `local`."""
    out = tmp_path / "archive"
    result = await run_cli("download", "--out", str(out), "--json", env=env_for(base_env, fake))

    assert result.code == 0, result.output
    summary = json.loads(result.out)
    assert summary["engine"] == "local"
    assert set(summary) >= SUMMARY_KEYS
    assert_archived(fake, out, fake.recording_ids)


# -- --engine process -----------------------------------------------------------------------


async def test_engine_process_archives_every_recording_and_indexes_it(
    base_env: dict[str, str], fake: FakeVobiz, tmp_path: Path
) -> None:
    """`--engine process --workers 2`: every file whole, the index complete, exit 0."""
    out = tmp_path / "archive"
    result = await run_cli(
        "download",
        *("--out", str(out), "--engine", "process", "--workers", "2", "--json"),
        env=env_for(base_env, fake),
    )

    assert result.code == 0, result.output
    summary = json.loads(result.out)
    assert summary["engine"] == "process"
    assert summary["downloaded"] == 24
    assert summary["failed"] == 0
    assert sum(share["recordings"] for share in summary["workers"]) == 24  # in the workers
    assert 1 <= len({share["pid"] for share in summary["workers"]}) <= 2
    assert_archived(fake, out, fake.recording_ids)
    assert not parts(out)
    with Manifest(out / MANIFEST_NAME) as index:
        assert sorted(entry.recording_id for entry in index) == sorted(fake.recording_ids)
        assert verify_manifest(out, index) == []


@pytest.mark.parametrize("engine", ["local", "ray"])
async def test_workers_with_another_engine_is_refused(
    base_env: dict[str, str], fake: FakeVobiz, tmp_path: Path, engine: str
) -> None:
    """`--workers` belongs to the process engine: one line, exit 2, nothing created."""
    out = tmp_path / "archive"
    result = await run_cli(
        "download",
        *("--out", str(out), "--engine", engine, "--workers", "2"),
        env=env_for(base_env, fake),
    )

    assert result.code == 2, result.output
    assert result.err.strip() == f"error: --workers needs --engine process, not --engine {engine}"
    assert not out.exists()


async def test_no_worker_process_holds_the_token(base_env: dict[str, str], tmp_path: Path) -> None:
    """While the workers run, no process the CLI started has the token in its command line,
    environment or name (the token is in VOBIZ_AUTH_TOKEN, as users pass it)."""
    async with FakeVobiz(recordings=12, seed=12, auth_token=TOKEN, media_latency=0.3) as fake:
        out = tmp_path / "archive"
        proc = await start_cli(
            "download",
            *("--out", str(out), "--engine", "process", "--workers", "2", "--concurrency", "2"),
            env=env_for(base_env, fake),
        )
        assert await eventually(lambda: fake.stats.media_requests > 0)
        workers = workers_of(proc.pid)
        seen = {}
        for pid in descendants(proc.pid):
            proc_dir = Path(f"/proc/{pid}")
            try:
                seen[pid] = b"".join(
                    (proc_dir / name).read_bytes() for name in ("cmdline", "environ", "comm")
                )
            except OSError:
                continue
        result = await finish(proc)

    assert result.code == 0, result.output
    assert len(workers) == 2
    assert set(workers) <= set(seen)
    for pid, text in seen.items():
        assert TOKEN.encode() not in text, pid


@pytest.mark.parametrize("workers", [("--workers", "2"), ()], ids=["workers-2", "in-driver"])
async def test_ctrl_c_stops_the_workers_keeps_part_files_and_exits_130(
    base_env: dict[str, str], tmp_path: Path, workers: tuple[str, ...]
) -> None:
    """SIGINT mid-download on the process engine: exit 130, the .part kept, no worker left;
    a re-run completes the archive. Without `--workers` the command downloads too, and
    the slow recording may be its own."""
    async with FakeVobiz(recordings=4, seed=13, auth_token=TOKEN) as fake:
        big = fake.add_recording(size=2_000_000).recording_id
        fake.media_fault(big, "slow")  # about 25 s at the fake's "slow" rate
        env = env_for(base_env, fake)
        out = tmp_path / "archive"
        proc = await start_cli(
            "download", "--out", str(out), "--engine", "process", *workers, env=env
        )
        assert await eventually(lambda: size_of(out / f"{big}.part") > 0)
        spawned = workers_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        interrupted = await finish(proc)

        assert interrupted.code == 130, interrupted.output
        assert "interrupted" in interrupted.err
        assert "Traceback" not in interrupted.output
        assert out / f"{big}.part" in parts(out)
        assert big not in saved(out)
        assert spawned
        assert await eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in spawned))

        rerun = await run_cli("download", "--out", str(out), env=env)
        assert rerun.code == 0, rerun.output
        assert_archived(fake, out, fake.recording_ids)


async def test_without_workers_the_command_downloads_beside_its_workers(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """`--engine process` without `--workers`: the command is one of the workers (its pid
    has a share), beside at least one spawned worker; every file whole, the index whole.
    (Each media answer waits 0.3 s, so the worker is ready before the command's own lane
    has done the whole job.)"""
    async with FakeVobiz(recordings=24, seed=11, auth_token=TOKEN, media_latency=0.3) as fake:
        out = tmp_path / "archive"
        proc = await start_cli(
            "download",
            *("--out", str(out), "--engine", "process", "--concurrency", "4", "--json"),
            env=env_for(base_env, fake),
        )
        result = await finish(proc)
        assert result.code == 0, result.output
        assert_archived(fake, out, fake.recording_ids)
    summary = json.loads(result.out)
    shares = {share["pid"]: share["recordings"] for share in summary["workers"]}
    assert proc.pid in shares
    assert 2 <= len(shares) <= max(2, usable_cpus())
    assert sum(shares.values()) == 24
    with Manifest(out / MANIFEST_NAME) as index:
        assert verify_manifest(out, index) == []


async def test_a_small_job_at_high_concurrency_closes_the_workers_started_ahead(
    base_env: dict[str, str], fake: FakeVobiz, tmp_path: Path
) -> None:
    """At `--concurrency 128` on 2+ CPUs the command starts its workers while it reads the
    first page; 24 recordings are too few for them: the job runs locally, exit 0."""
    out = tmp_path / "archive"
    result = await run_cli(
        "download",
        *("--out", str(out), "--concurrency", str(PROCESS_MIN_CONCURRENCY), "--json"),
        env=env_for(base_env, fake),
    )
    assert result.code == 0, result.output
    assert json.loads(result.out)["engine"] == "local"
    assert_archived(fake, out, fake.recording_ids)


# -- demo --json ----------------------------------------------------------------------------


async def test_demo_json_prints_the_download_summary_object(base_env: dict[str, str]) -> None:
    """`demo --json`: stdout is one JSON object with `download --json`'s keys; the demo's
    story goes to stderr."""
    result = await run_cli("demo", "--count", "20", "--json", env=base_env)

    assert result.code == 0, result.output
    summary = json.loads(result.out)  # the whole of stdout: one object
    assert set(summary) >= SUMMARY_KEYS
    assert summary["downloaded"] == 20
    assert summary["failed"] == 0
    assert summary["engine"] == "local"
    assert "verified the archive" in result.err


async def test_demo_refuses_engine_ray(base_env: dict[str, str]) -> None:
    """The demo runs locally or in worker processes; Ray is for download: exit 2."""
    result = await run_cli("demo", "--count", "5", "--engine", "ray", env=base_env)

    assert result.code == 2, result.output
    assert "--engine ray is for download" in result.err
