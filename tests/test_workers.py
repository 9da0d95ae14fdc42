"""`download_in_workers`: real worker processes against FakeVobiz on 127.0.0.1.

The parent runs in the test's event loop; the workers are real child processes with their
own sessions, so everything that crosses the pipes (recordings, results, errors) is
exercised for real.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _procs import child_pids

from vobiz_async import (
    APIStatusError,
    AsyncSession,
    DiskError,
    DownloadError,
    DownloadStatus,
    NotFoundError,
    ProgressEvent,
    ProgressKind,
    Recording,
    ResponseValidationError,
)
from vobiz_async import workers as workers_module
from vobiz_async.manifest import Manifest, verify_manifest
from vobiz_async.protocol import make_status_error
from vobiz_async.testing import FakeVobiz
from vobiz_async.workers import _shares, default_workers, download_in_workers


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(
        recordings=40, seed=3, fault_rate=0.3, wav_as_mp3_rate=0.2, foreign_redirect_rate=0.2
    ) as fake:
        yield fake


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern))


def roundtrip(error: BaseException) -> BaseException:
    """`error` through pickle, as a worker's result crosses the pipe."""
    copy: BaseException = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    return copy


def worker_pids() -> set[int]:
    """This process's live worker children (their command line names worker_main)."""
    return child_pids(os.getpid(), b"worker_main")


def alive(pid: int) -> bool:
    """`pid` exists, zombie or not (a worker must have been reaped too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for(condition: object, what: str) -> None:
    for _ in range(400):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


def slow_fake(count: int, size: int) -> FakeVobiz:
    """`count` recordings of `size` bytes that trickle out at about 80 KB/s."""
    fake = FakeVobiz(recordings=0, seed=5)
    for _ in range(count):
        fake.add_recording(size=size)
    for rid in fake.recording_ids:
        fake.media_fault(rid, "slow", times=100)
    return fake


# -- the whole job ----------------------------------------------------------------------


async def test_every_recording_lands_verified_across_workers(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """40 recordings with injected faults, redirects and relabelled WAVs over 3 workers: all
    saved byte for byte, in listing order, one manifest entry each, no foreign credentials."""
    events: list[ProgressEvent] = []
    manifest_path = tmp_path / "manifest.jsonl"

    report = await download_in_workers(
        session,
        session.recordings.list(limit=7),
        tmp_path,
        workers=3,
        concurrency=6,
        manifest=manifest_path,
        on_progress=events.append,
    )

    assert report.ok, [(r.recording_id, r.error) for r in report.failed]
    assert [r.recording_id for r in report.results] == fake.recording_ids
    for result in report.downloaded:
        assert result.path is not None
        assert sha256(result.path) == fake.sha256(result.recording_id)
        assert result.sha256 == fake.sha256(result.recording_id)
    assert any(r.attempts > 1 for r in report.results), "no fault was retried in a worker"
    assert fake.stats.foreign_credentials_seen == 0
    with Manifest(manifest_path) as manifest:
        assert len(manifest) == 40
        assert {entry.recording_id for entry in manifest} == set(fake.recording_ids)
        assert verify_manifest(tmp_path, manifest) == []
    finished = [e for e in events if e.kind is ProgressKind.FINISHED]
    assert len(finished) == 40
    sent = sum(e.bytes for e in events if e.kind is ProgressKind.BYTES)
    assert sent == report.total_bytes == sum(fake.size(rid) for rid in fake.recording_ids)
    assert not worker_pids()


async def test_a_second_run_skips_everything(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Workers read the shared manifest: a re-run downloads nothing."""
    manifest = tmp_path / "manifest.jsonl"
    first = await download_in_workers(
        session, fake.recording_ids, tmp_path, workers=2, concurrency=4, manifest=manifest
    )
    sent = fake.stats.media_bytes_sent

    again = await download_in_workers(
        session, fake.recording_ids, tmp_path, workers=2, concurrency=4, manifest=manifest
    )

    assert first.ok
    assert len(first.downloaded) == 40
    assert len(again.skipped) == 40
    assert fake.stats.media_bytes_sent == sent


async def test_results_keep_input_order_repeats_skip_and_errors_keep_their_type(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Ids in, one result per input in input order; a repeated id is skipped once; an
    unknown id fails with the NotFoundError the worker saw, status and all."""
    first, second = fake.recording_ids[:2]
    recording = await session.recordings.get(second)
    source: list[str | Recording] = [first, recording, first, "RE_NOT_THERE"]

    report = await download_in_workers(session, source, tmp_path, workers=2, concurrency=2)

    assert [r.recording_id for r in report.results] == [first, second, first, "RE_NOT_THERE"]
    assert [r.status for r in report.results] == [
        DownloadStatus.DOWNLOADED,
        DownloadStatus.DOWNLOADED,
        DownloadStatus.SKIPPED,
        DownloadStatus.FAILED,
    ]
    error = report.results[3].error
    assert isinstance(error, NotFoundError)
    assert error.status_code == 404


# -- failures of the machinery ------------------------------------------------------------


async def test_a_killed_worker_fails_its_items_and_the_rest_complete(tmp_path: Path) -> None:
    """kill -9 of one worker mid-transfer: what it held is reported failed, never lost or
    left under a final name; the other worker and the parent finish everything else."""
    async with slow_fake(6, 40_000) as fake, AsyncSession(**fake.session_kwargs()) as session:
        job = asyncio.create_task(
            download_in_workers(session, fake.recording_ids, tmp_path, workers=3, concurrency=3)
        )
        await wait_for(lambda: len(worker_pids()) == 2, "two workers")
        await wait_for(lambda: any(p.stat().st_size for p in tmp_path.glob("*.part")), "bytes")
        victim = min(worker_pids())
        os.kill(victim, signal.SIGKILL)
        report = await asyncio.wait_for(job, 45)

    assert len(report.results) == 6
    failed = report.failed
    assert failed, "the killed worker's items were not reported"
    for result in failed:
        assert isinstance(result.error, DownloadError)
        assert "exited" in str(result.error)
        assert not files(tmp_path, f"{result.recording_id}.*3")
    for result in report.downloaded:
        assert result.path is not None
        assert sha256(result.path) == fake.sha256(result.recording_id)
    assert len(report.downloaded) == 6 - len(failed) >= 2


async def test_cancelling_stops_every_worker_and_keeps_part_files(tmp_path: Path) -> None:
    """Cancellation (Ctrl-C in the CLI) reaches every worker: none outlives the call, and
    the in-flight `.part` files stay for a resume."""
    async with slow_fake(4, 200_000) as fake, AsyncSession(**fake.session_kwargs()) as session:
        job = asyncio.create_task(
            download_in_workers(session, fake.recording_ids, tmp_path, workers=3, concurrency=3)
        )
        await wait_for(lambda: len(worker_pids()) == 2, "two workers")
        pids = worker_pids()
        await wait_for(lambda: any(p.stat().st_size for p in tmp_path.glob("*.part")), "bytes")
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    assert not any(alive(pid) for pid in pids)
    assert files(tmp_path, "*.part")
    assert not files(tmp_path, "*.mp3")


async def test_an_error_from_the_source_propagates_and_stops_the_workers(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A listing that breaks mid-way raises out of the call, as with `download_many`."""

    async def broken() -> AsyncIterator[str]:
        for rid in fake.recording_ids[:3]:
            yield rid
        await wait_for(lambda: len(worker_pids()) == 2, "two workers")
        raise RuntimeError("the listing broke")

    with pytest.raises(RuntimeError, match="the listing broke"):
        await download_in_workers(session, broken(), tmp_path, workers=3, concurrency=3)

    assert not worker_pids()


async def test_bad_credentials_from_the_source_stop_every_worker(
    fake: FakeVobiz, tmp_path: Path
) -> None:
    """Workers start while the listing's first page loads; a refused listing stops them."""
    async with AsyncSession(fake.auth_id, "wrong", base_url=fake.base_url) as session:
        job = download_in_workers(session, session.recordings.list(), tmp_path, workers=3)
        with pytest.raises(Exception, match="401"):
            await job
    assert not worker_pids()


# -- pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 4)])
def test_default_workers_one_per_two_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int, expected: int
) -> None:
    """The default is one process per two usable CPUs, at least 1 and at most 4."""
    monkeypatch.setattr(workers_module, "_usable_cpus", lambda: cpus)
    assert default_workers() == expected


@pytest.mark.parametrize(("total", "parts"), [(16, 2), (16, 3), (5, 4), (4, 4), (1, 1)])
def test_transfer_slots_split_evenly(total: int, parts: int) -> None:
    shares = _shares(total, parts)
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1
    assert len(shares) == parts


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 422, 429, 500, 503])
def test_status_errors_survive_pickling(status: int) -> None:
    """Worker results carry their errors across a pipe: class and evidence intact."""
    error = make_status_error(status, {"Retry-After": "7", "X-A": "1"}, {"api_id": "id-1"})

    copy = roundtrip(error)
    assert isinstance(copy, APIStatusError)

    assert type(copy) is type(error)
    assert (copy.status_code, copy.api_id, copy.body) == (status, "id-1", {"api_id": "id-1"})
    assert copy.headers["retry-after"] == "7"
    assert str(copy) == str(error)


def test_other_errors_survive_pickling() -> None:
    disk = DiskError("cannot write x: No space left on device")
    disk.errno = 28  # type: ignore[attr-defined]
    invalid = ResponseValidationError("not JSON", body="<html>")

    disk_copy = roundtrip(disk)
    invalid_copy = roundtrip(invalid)

    assert isinstance(disk_copy, DiskError)
    assert isinstance(invalid_copy, ResponseValidationError)
    assert (str(disk_copy), disk_copy.errno) == (str(disk), 28)  # type: ignore[attr-defined]
    assert (str(invalid_copy), invalid_copy.body) == ("not JSON", "<html>")
