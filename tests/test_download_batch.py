"""Batches: a clean batch's files and report, inputs and their errors, single downloads,
progress events, concurrency and the connection pool, and chunks written on helper threads,
against FakeVobiz on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _download_helpers import (
    FINAL_SUFFIXES,
    HELPERS,
    PartFile,
    add,
    assert_no_partial_finals,
    assert_verified,
    gets,
    media,
    recording,
    tree,
    wrap_part_files,
)
from _waiting import eventually

from vobiz_async import (
    AsyncSession,
    AuthenticationError,
    DownloadReport,
    DownloadResult,
    DownloadStatus,
    InvalidRecordingIdError,
    NotFoundError,
    ProgressEvent,
    ProgressKind,
    Recording,
    UnsafeURLError,
)
from vobiz_async import offload as offload_module
from vobiz_async.download import Downloader
from vobiz_async.offload import OffloadPolicy
from vobiz_async.testing import FakeVobiz

# --------------------------------------------------------------------------- a clean batch


@pytest.fixture(name="batch")
async def _batch(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> tuple[FakeVobiz, Path, DownloadReport]:
    """A clean batch over the pager: sizes around the fake's block and the read size."""
    for size in (1, 100, 65_535, 65_536, 65_537, 262_144, 262_145, 700_000):
        fake.add_recording(size=size)
    fake.add_recording(size=120_000, container="wav")
    fake.add_recording(size=90_000, container="wav", recording_format="mp3")
    fake.add_recording(size=90_000, redirect_foreign=True)
    report = await session.recordings.download_many(session.recordings.list(), dest)
    return fake, dest, report


async def test_batch_files_match_served_bytes(
    batch: tuple[FakeVobiz, Path, DownloadReport],
) -> None:
    """Every downloaded file's sha256 equals the fake's, on disk and in the result."""
    fake, _, report = batch

    assert len(report.results) == len(fake.recording_ids)
    for result in report.results:
        assert_verified(fake, result)


async def test_batch_leaves_no_debris(batch: tuple[FakeVobiz, Path, DownloadReport]) -> None:
    """After a successful batch dest holds exactly one final file per recording."""
    fake, dest, report = batch

    expected = {r.path.relative_to(dest).as_posix() for r in report.results if r.path}
    assert tree(dest) == expected
    assert len(expected) == len(fake.recording_ids)
    assert not any(name.endswith(".part") for name in tree(dest))


async def test_batch_report_counts(batch: tuple[FakeVobiz, Path, DownloadReport]) -> None:
    """The report is ok, in input order, and its counts and total_bytes add up."""
    fake, _, report = batch

    assert report.ok
    assert [r.recording_id for r in report.results] == fake.recording_ids
    assert len(report.downloaded) == len(fake.recording_ids)
    assert report.skipped == report.failed == []
    assert report.total_bytes == sum(fake.size(rid) for rid in fake.recording_ids)
    assert report.elapsed > 0


# --------------------------------------------------------------------------- inputs


async def test_id_strings_resolved_with_one_get_each(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Id strings are resolved with exactly one get() each, then downloaded."""
    rids = add(fake, 4)

    report = await session.recordings.download_many(rids, dest)

    assert report.ok
    for result in report.results:
        assert_verified(fake, result)
    assert gets(fake) == 4
    assert fake.stats.api_requests == 4


async def test_missing_id_fails_not_found(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A missing id fails with NotFoundError while the other ids download."""
    rids = add(fake, 2)
    missing = "00000000-0000-4000-8000-000000000000"

    report = await session.recordings.download_many([rids[0], missing, rids[1]], dest)

    first, gone, last = report.results
    assert gone.recording_id == missing
    assert gone.status is DownloadStatus.FAILED
    assert isinstance(gone.error, NotFoundError)
    assert_verified(fake, first)
    assert_verified(fake, last)
    assert not report.ok
    assert report.failed == [gone]


async def test_failing_item_does_not_sink_batch(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Media that answers 404 for good fails one item after one refresh; the rest succeed."""
    rids = add(fake, 6)
    doomed = rids[2]
    fake.media_fault(doomed, "status", status=404, times=100)

    report = await session.recordings.download_many(session.recordings.list(), dest)

    by_id = {r.recording_id: r for r in report.results}
    assert isinstance(by_id[doomed].error, NotFoundError)
    assert gets(fake) == 1  # one refresh of the stale URL, then give up
    assert [r.recording_id for r in report.failed] == [doomed]
    for rid in rids:
        if rid != doomed:
            assert_verified(fake, by_id[rid])


async def test_duplicate_input_downloaded_once(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """The same recording given twice is fetched once and never fails the batch."""
    (rid,) = add(fake)

    report = await session.recordings.download_many([rid, rid], dest)

    assert report.ok
    assert len(report.results) == 2
    assert len(media(fake)) == 1
    assert tree(dest) == {f"{rid}.mp3"}


async def test_repeated_input_after_completion_is_skipped(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A recording repeated after its first copy finished is skipped, not fetched again."""
    (rid,) = add(fake)
    rec = recording(fake, rid)

    report = await session.recordings.download_many([rec, rec], dest, concurrency=1)

    assert [r.status for r in report.results] == [
        DownloadStatus.DOWNLOADED,
        DownloadStatus.SKIPPED,
    ]
    assert len(media(fake)) == 1


async def test_refresh_of_stale_url_that_fails_keeps_attempts(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """When the refreshing get() fails too, the item fails with that error and its attempts."""
    (rid,) = add(fake)
    rec = recording(fake, rid)
    fake.media_fault(rid, "expired")
    fake.api_fault("get", 404)

    result = await session.recordings.download(rec, dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, NotFoundError)
    assert result.attempts == 1
    assert tree(dest) == set()


async def test_source_error_propagates(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """An AuthenticationError from the pager propagates from download_many."""
    add(fake, 3)
    fake.api_fault("list", 401)

    with pytest.raises(AuthenticationError):
        await session.recordings.download_many(session.recordings.list(), dest)

    assert media(fake) == []
    assert not any(name.endswith(FINAL_SUFFIXES) for name in tree(dest))


async def test_source_error_mid_batch_winds_down(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A source that fails while transfers run: the error propagates, no partial finals."""
    done = add(fake, 2, size=3_000)
    slow = add(fake, 3, size=1_000_000)
    for rid in slow:
        fake.media_fault(rid, "slow")
    flowing: set[str] = set()

    def on_progress(event: ProgressEvent) -> None:
        if event.kind is ProgressKind.BYTES:
            flowing.add(event.recording_id)

    async def source() -> AsyncIterator[Recording]:
        for rid in (*done, *slow):
            yield recording(fake, rid)
        assert await eventually(lambda: flowing.issuperset(slow))
        raise AuthenticationError("token rotated", status_code=401)

    with pytest.raises(AuthenticationError, match="token rotated"):
        await session.recordings.download_many(source(), dest, on_progress=on_progress)

    assert_no_partial_finals(fake, dest)
    assert not any((dest / f"{rid}.mp3").exists() for rid in slow)
    assert all((dest / f"{rid}.part").exists() for rid in slow)
    assert await eventually(lambda: fake.stats.media_in_flight == 0)


# --------------------------------------------------------------------------- single download


async def test_download_single_returns_result(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """download() of an id returns a verified DownloadResult."""
    (rid,) = add(fake)

    result = await session.recordings.download(rid, dest)

    assert isinstance(result, DownloadResult)
    assert_verified(fake, result)
    assert result.path == dest / f"{rid}.mp3"
    assert result.container == "mp3"
    assert result.attempts == 1


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ("00000000-0000-4000-8000-000000000000", NotFoundError),
        ("../../x", InvalidRecordingIdError),
    ],
)
async def test_download_single_failure_returned(
    session: AsyncSession, dest: Path, item: str, error: type[Exception]
) -> None:
    """download() returns a failed result with a typed error instead of raising."""
    result = await session.recordings.download(item, dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, error)
    assert result.path is None
    assert not result.ok


async def test_download_single_unsafe_url_returned(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """download() of a `file:` recording returns a failed UnsafeURLError result."""
    rid = fake.add_recording(recording_url="file:///etc/passwd").recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)


async def test_misuse_raises(session: AsyncSession, dest: Path) -> None:
    """Misuse (concurrency 0, max_attempts 0, an unknown layout) raises ValueError."""
    with pytest.raises(ValueError, match="concurrency"):
        await session.recordings.download_many([], dest, concurrency=0)
    with pytest.raises(ValueError, match="max_attempts"):
        await session.recordings.download_many([], dest, max_attempts=0)
    with pytest.raises(ValueError, match="layout"):
        await session.recordings.download_many([], dest, layout="by-month")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- progress


async def test_progress_events(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """on_progress sees started, bytes and finished per file (failed for a failure)."""
    rids = add(fake, 3, size=300_000)
    bad = fake.add_recording(recording_url="file:///etc/passwd").recording_id
    events: list[ProgressEvent] = []

    report = await session.recordings.download_many(
        [recording(fake, rid) for rid in [*rids, bad]], dest, on_progress=events.append
    )

    assert len(report.downloaded) == 3
    for rid in rids:
        kinds = [e.kind for e in events if e.recording_id == rid]
        assert kinds[0] is ProgressKind.STARTED
        assert kinds[-1] is ProgressKind.FINISHED
        assert set(kinds[1:-1]) == {ProgressKind.BYTES}
        assert sum(e.bytes for e in events if e.recording_id == rid) == fake.size(rid)
    assert [e.kind for e in events if e.recording_id == bad][-1] is ProgressKind.FAILED
    failed_event = next(e for e in events if e.kind is ProgressKind.FAILED)
    assert failed_event.result is not None
    assert isinstance(failed_event.result.error, UnsafeURLError)


async def test_progress_callback_error_does_not_fail(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A progress callback that raises does not fail the download."""
    (rid,) = add(fake)

    def explode(event: ProgressEvent) -> None:
        raise RuntimeError("progress bar broke")

    report = await session.recordings.download_many(
        [recording(fake, rid)], dest, on_progress=explode
    )

    assert report.ok


# --------------------------------------------------------------------------- scale and bounds


async def test_thousand_recordings_bounded_without_fd_leak(tmp_path: Path) -> None:
    """1,000 small recordings at concurrency 32: all ok, <= 32 in flight, no fd leaked."""
    async with FakeVobiz(recordings=0, seed=1, media_latency=0.005) as fake:
        for _ in range(1_000):
            fake.add_recording(size=2_000)
        fds_before = len(os.listdir("/proc/self/fd"))

        async with AsyncSession(**fake.session_kwargs()) as session:
            report = await session.recordings.download_many(
                session.recordings.list(), tmp_path / "archive", concurrency=32
            )

        # The fake serves from this process: its side of each connection closes once it
        # reads the client's FIN, a few loop iterations after the session has closed.
        settled = await eventually(lambda: len(os.listdir("/proc/self/fd")) <= fds_before)
        fds_after = len(os.listdir("/proc/self/fd"))

        assert report.ok
        assert len(report.downloaded) == 1_000
        assert 1 < fake.stats.media_in_flight_max <= 32
        assert settled, f"{fds_after - fds_before} file descriptors leaked"
        assert fds_after == fds_before
        assert len(tree(tmp_path / "archive")) == 1_000


async def test_concurrency_bound_observed(tmp_path: Path) -> None:
    """With concurrency=4 and slow responses, exactly four media requests overlap at most."""
    async with FakeVobiz(recordings=0) as fake:
        rids = add(fake, 16, size=2_000_000)
        for rid in rids:  # trickled: a transfer holds its slot until the batch is cancelled
            fake.media_fault(rid, "slow")
        async with AsyncSession(**fake.session_kwargs()) as session:
            batch = asyncio.create_task(
                session.recordings.download_many(
                    [recording(fake, rid) for rid in rids], tmp_path, concurrency=4
                )
            )
            filled = await eventually(lambda: fake.stats.media_in_flight == 4)
            assert await eventually(lambda: fake.stats.media_bytes_sent > 4 * 10_000)
            batch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await batch

    assert filled
    assert fake.stats.media_requests == 4  # no fifth while four held their slots
    assert fake.stats.media_in_flight_max == 4


# --------------------------------------------------------------------------- the connection pool


async def test_pool_is_sized_to_the_concurrency(fake: FakeVobiz, dest: Path) -> None:
    """A fresh session's pool grows to the batch's concurrency before the first request."""
    (rid,) = add(fake)
    async with AsyncSession(**fake.session_kwargs(), max_connections=4) as session:
        report = await session.recordings.download_many(
            [recording(fake, rid)], dest, concurrency=32
        )
        assert report.ok
        assert session.http.connector is not None
        assert session.http.connector.limit == 32


async def test_connections_are_reused_across_files(fake: FakeVobiz, dest: Path) -> None:
    """Forty files at concurrency 4 travel over at most four keep-alive connections."""
    rids = add(fake, 40, size=70_000)  # more than one read per body
    async with AsyncSession(**fake.session_kwargs()) as session:
        report = await session.recordings.download_many(
            [recording(fake, rid) for rid in rids], dest, concurrency=4
        )
    assert report.ok
    assert fake.stats.media_requests == 40
    assert 1 <= fake.stats.connections <= 4


async def test_small_existing_pool_is_warned_about(
    fake: FakeVobiz, dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pool already open and smaller than the concurrency is logged, not silently kept."""
    (rid,) = add(fake)
    async with AsyncSession(**fake.session_kwargs(), max_connections=4) as session:
        await session.recordings.list()  # opens the pool at 4
        with caplog.at_level("WARNING", logger="vobiz_async"):
            await session.recordings.download_many([recording(fake, rid)], dest, concurrency=32)
    assert any("below concurrency 32" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- helper threads


@pytest.mark.parametrize(("concurrency", "helped"), [(1, False), (4, True)])
async def test_only_concurrent_transfers_hand_chunks_to_helpers(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    monkeypatch: pytest.MonkeyPatch,
    concurrency: int,
    helped: bool,
) -> None:
    """A lone transfer writes on the loop (a hand-over would only make it wait); several
    in flight write on helper threads too."""
    writers: set[str] = set()

    class Watched(PartFile):
        def write(self, data: bytes) -> int:
            writers.add(threading.current_thread().name)
            return super().write(data)

    wrap_part_files(monkeypatch, Watched)
    rids = add(fake, 4, size=1_000_000)

    downloader = Downloader(
        session, dest, lookup=session.recordings.get, concurrency=concurrency, offload=HELPERS
    )
    report = await downloader.run([recording(fake, rid) for rid in rids])

    assert report.ok
    assert any(name.startswith("vobiz-hash") for name in writers) is helped


@pytest.mark.parametrize(
    ("threads", "jobs", "smallest"),
    [(0, 0, 1), (2, 1, 1), (2, 8, 1), (2, 8, 128 * 1024)],
    ids=["on-the-loop", "one-job-out", "all-to-helpers", "big-chunks-to-helpers"],
)
async def test_multi_chunk_files_land_whole_however_chunks_are_written(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    threads: int,
    jobs: int,
    smallest: int,
) -> None:
    """Chunks written on the loop, on helper threads, or on both keep each file in order."""
    rids = add(fake, 12, size=1_500_000)
    policy = OffloadPolicy(threads=threads, jobs=jobs, min_chunk=smallest)

    downloader = Downloader(
        session, dest, lookup=session.recordings.get, concurrency=6, offload=policy
    )
    report = await downloader.run([recording(fake, rid) for rid in rids])

    assert report.ok
    assert len(report.downloaded) == 12
    for result in report.downloaded:
        assert_verified(fake, result)


async def test_batch_raises_the_mmap_threshold_first(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A batch frees the block that keeps read buffers on the heap (test_download_memory)."""
    offload_module.raise_mmap_threshold.cache_clear()
    add(fake)

    await session.recordings.download_many(session.recordings.list(), dest)

    assert offload_module.raise_mmap_threshold.cache_info().currsize == 1
