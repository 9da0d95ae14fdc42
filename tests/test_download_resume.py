"""Resume and retry: dropped, short, stalled and reset bodies, Range and If-Range against
`.part` files from earlier attempts and runs, retry statuses, stale media URLs, and
cancellation mid-transfer, against FakeVobiz (and `Scripted`) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from _download_helpers import (
    FINAL_SUFFIXES,
    HELPERS,
    PartFile,
    Scripted,
    add,
    assert_verified,
    gets,
    media,
    overlap_start,
    recording,
    tree,
    wrap_part_files,
    write_part,
)
from _waiting import eventually

from vobiz_async import (
    APIConnectionError,
    APIStatusError,
    AsyncSession,
    DownloadStatus,
    IntegrityError,
    PermissionDeniedError,
    ProgressEvent,
    ProgressKind,
    ServerError,
)
from vobiz_async.download import Downloader
from vobiz_async.sinks.directory import VALIDATOR_SUFFIX
from vobiz_async.testing import FakeVobiz, MediaFaultKind

# --------------------------------------------------------------------------- faults and retries


@pytest.mark.parametrize(
    ("size", "faults", "statuses"),
    [
        (400_000, [("drop", {})], [200, 206]),
        (50_000, [("status", {"status": 500})], [500, 200]),
        (400_000, [("drop", {}), ("no_range", {})], [200, 200]),
    ],
    ids=[
        "mid-body-drop-resumes-with-range",
        "server-error-then-success",
        "no-range-support-restarts",
    ],
)
async def test_one_fault_then_the_second_attempt_verifies(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    size: int,
    faults: list[tuple[MediaFaultKind, dict[str, Any]]],
    statuses: list[int],
) -> None:
    """A connection dropped mid-body resumes with a Range request; a 500 is retried with
    backoff; a 200 answer to a Range request restarts the file from zero. Each verifies on
    the second attempt."""
    (rid,) = add(fake, size=size)
    for kind, options in faults:
        fake.media_fault(rid, kind, **options)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.attempts == 2
    assert [r.status for r in media(fake)] == statuses


async def test_short_body_is_retried(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """A body shorter than its Content-Length is detected and fetched again."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "short")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.attempts == 2


async def test_short_body_never_renamed(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """With no attempt left, a short body fails the item and never gets a final name."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "short")

    result = await session.recordings.download(recording(fake, rid), dest, max_attempts=1)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, IntegrityError | APIConnectionError)
    assert not any(name.endswith(FINAL_SUFFIXES) for name in tree(dest))


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_statuses_retried(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """429 and 503 with `Retry-After: 0` are retried, then the download succeeds."""
    (rid,) = add(fake)
    fake.media_fault(rid, "status", status=status, retry_after=0, times=2)

    with caplog.at_level("DEBUG", logger="vobiz_async"):
        result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.attempts == 3
    assert [r.status for r in media(fake)] == [status, status, 200]
    waits = [m for r in caplog.records if (m := r.getMessage()).startswith(f"retrying {rid}")]
    assert [w.split(" in ", 1)[1].split(":")[0] for w in waits] == ["0.00s"] * 2  # not backoff


async def test_changed_etag_restarts(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """An ETag that changes between attempts (If-Range mismatch, full 200) still verifies."""
    (rid,) = add(fake, size=400_000)
    old_etag = fake.etag(rid)
    fake.media_fault(rid, "drop")
    fake.media_fault(rid, "etag_change")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert fake.etag(rid) != old_etag
    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [200, 200]


async def test_exhausted_attempts_fail_typed(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """When max_attempts run out the item fails with a typed error and no final file."""
    (rid,) = add(fake)
    fake.media_fault(rid, "status", status=503, retry_after=0, times=10)

    result = await session.recordings.download(recording(fake, rid), dest, max_attempts=3)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, ServerError)
    assert result.error.status_code == 503
    assert result.attempts == 3
    assert len(media(fake)) == 3
    assert not any(name.endswith(FINAL_SUFFIXES) for name in tree(dest))


async def test_exhausted_drops_keep_only_part(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Drops until max_attempts run out: APIConnectionError, a `.part`, no final file."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "drop", times=5)

    result = await session.recordings.download(recording(fake, rid), dest, max_attempts=2)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, APIConnectionError)
    assert result.attempts == 2
    # The partial, and the ETag of the version it came from, for a later run's If-Range.
    assert tree(dest) == {f"{rid}.part", f"{rid}.part{VALIDATOR_SUFFIX}"}


async def test_stalled_body_is_retried(fake: FakeVobiz, scripted: Scripted, dest: Path) -> None:
    """A body that stalls past the read timeout is a retryable transfer error, not a disk one."""
    rid = fake.add_recording(recording_url=scripted.url("/stall.mp3")).recording_id

    async with AsyncSession(**fake.session_kwargs(), read_timeout=0.5) as session:
        result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert result.attempts == 2
    assert result.path is not None
    assert result.path.read_bytes() == scripted.body
    # No ETag: the resume asks for the partial's tail again, to prove it continues it.
    assert scripted.ranges == [None, f"bytes={overlap_start(len(scripted.body) // 2)}-"]


async def test_connection_reset_mid_body_is_retried(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A TCP reset mid-body is a retryable transfer error: the next attempt resumes."""
    rid = fake.add_recording(recording_url=scripted.url("/reset.mp3")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert result.path is not None
    assert result.path.read_bytes() == scripted.body
    assert result.attempts == 2


async def test_oversized_part_restarts_after_416(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A leftover `.part` longer than the recording, without a validator, fails the overlap
    check of its resume, restarts, and verifies."""
    (rid,) = add(fake)
    write_part(dest, rid, b"\0" * (fake.size(rid) + 10))

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [206, 200]
    assert tree(dest) == {f"{rid}.mp3"}


async def test_part_from_earlier_run_sends_if_range(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A `.part` left by an earlier run resumes only if its ETag still matches (If-Range)."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "drop")
    first = await session.recordings.download(recording(fake, rid), dest, max_attempts=1)
    assert first.status is DownloadStatus.FAILED
    assert (dest / f"{rid}.part").stat().st_size == fake.size(rid) // 2
    fake.media_fault(rid, "etag_change")
    fake.stats.reset()

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [200]  # If-Range mismatch: the full body


async def test_part_from_earlier_run_resumed(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A `.part` left by an earlier failed run is resumed with a Range request."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "drop")
    await session.recordings.download(recording(fake, rid), dest, max_attempts=1)
    fake.stats.reset()

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [206]
    assert fake.stats.media_bytes_sent == fake.size(rid) - fake.size(rid) // 2


# --------------------------------------------------------------------------- 206 answers


async def test_short_206_is_resumed_not_finished(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A 206 that stops before the end of the file is resumed, never renamed short."""
    rid = fake.add_recording(recording_url=scripted.url("/short206.mp3")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert result.path is not None
    assert result.path.read_bytes() == scripted.body
    assert result.attempts == 3
    half = len(scripted.body) // 2
    assert scripted.ranges == [
        None,
        f"bytes={overlap_start(half)}-",
        f"bytes={overlap_start(half + 10)}-",
    ]


async def test_206_under_a_new_etag_restarts(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A resume answered under a different ETag (If-Range ignored) starts over from zero."""
    rid = fake.add_recording(recording_url=scripted.url("/etag206.mp3")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert result.path is not None
    assert result.path.read_bytes() == scripted.body
    assert scripted.ranges == [None, f"bytes={len(scripted.body) // 2}-", None]


# --------------------------------------------------------------------------- stale URLs


async def test_expired_url_repaired_by_one_get(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A refused media URL is repaired by exactly one fresh get() of the recording."""
    (rid,) = add(fake)
    fake.media_fault(rid, "expired")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert gets(fake) == 1
    assert [r.status for r in media(fake)] == [403, 200]


async def test_second_refusal_fails_typed(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """When the fresh URL is refused too, the item fails with a typed APIStatusError."""
    (rid,) = add(fake)
    fake.media_fault(rid, "expired", times=2)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, PermissionDeniedError)
    assert isinstance(result.error, APIStatusError)
    assert result.error.status_code == 403
    assert gets(fake) == 1
    assert tree(dest) == set()


# --------------------------------------------------------------------------- cancellation


async def test_cancel_keeps_part_and_rerun_resumes(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Cancelling mid-transfer re-raises, keeps the `.part`, and a re-run resumes it."""
    (rid,) = add(fake, size=1_000_000)
    fake.media_fault(rid, "slow")
    received: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.kind is ProgressKind.BYTES:
            received.append(event.bytes)

    task = asyncio.create_task(
        session.recordings.download_many([recording(fake, rid)], dest, on_progress=on_progress)
    )
    assert await eventually(lambda: sum(received) >= 40_000)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    part = dest / f"{rid}.part"
    assert tree(dest) == {part.name, part.name + VALIDATOR_SUFFIX}
    assert 0 < part.stat().st_size < fake.size(rid)
    assert await eventually(lambda: fake.stats.media_in_flight == 0)  # the connection closed

    fake.stats.reset()
    report = await session.recordings.download_many([recording(fake, rid)], dest)

    (result,) = report.results
    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [206]
    assert tree(dest) == {f"{rid}.mp3"}


class _GatedFile(PartFile):
    """A `.part` file whose first write from a helper thread waits for `gate`."""

    def __init__(self, file: Any, entered: threading.Event, gate: threading.Event) -> None:
        super().__init__(file)
        self._entered = entered
        self._gate = gate
        self.closed_during_write = False

    def write(self, data: bytes) -> int:
        if threading.current_thread() is not threading.main_thread() and not self._entered.is_set():
            self._entered.set()
            self._gate.wait(10)
            self.closed_during_write = self._file.closed
        return super().write(data)


async def test_cancel_waits_for_the_helper_thread_writing(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled while a helper writes a chunk: the file stays open until that write ends,
    the `.part` holds a prefix of the body, and a re-run resumes it to the right sha256."""
    (rid,) = add(fake, size=2_000_000)
    entered, gate = threading.Event(), threading.Event()
    files: list[_GatedFile] = []

    def gated(file: Any) -> _GatedFile:
        files.append(_GatedFile(file, entered, gate))
        return files[-1]

    wrap_part_files(monkeypatch, gated)
    downloader = Downloader(session, dest, lookup=session.recordings.get, offload=HELPERS)
    task = asyncio.create_task(downloader.run([recording(fake, rid)]))
    assert await eventually(entered.is_set)
    task.cancel()
    await asyncio.sleep(0.2)
    assert not task.done()  # settling: the helper still holds a chunk of this file
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not files[0].closed_during_write
    part = dest / f"{rid}.part"
    assert tree(dest) == {part.name, part.name + VALIDATOR_SUFFIX}
    written = part.read_bytes()
    assert 0 < len(written) < fake.size(rid)
    assert fake.body(rid).startswith(written)

    monkeypatch.undo()
    report = await session.recordings.download_many([recording(fake, rid)], dest)
    (result,) = report.results
    assert_verified(fake, result)
