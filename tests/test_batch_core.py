"""The batch core (`vobiz_async.batch.Batch`): one record of a batch under every engine.

An engine only decides where items run; the core writes the index (its only writer), emits
each result's progress event once, stops the batch when the index refuses writes, and
indexes stored files the index does not know instead of skipping them unrecorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from _download_helpers import add, file_sha256, media, recording

from vobiz_async import (
    AsyncSession,
    DownloadReport,
    DownloadResult,
    DownloadStatus,
    ProgressEvent,
    ProgressKind,
    Recording,
    StorageError,
)
from vobiz_async.batch import Batch, BatchOptions, item_id
from vobiz_async.manifest import Manifest
from vobiz_async.sinks import AlreadyStored, DirectorySink, Stored
from vobiz_async.testing import FakeVobiz
from vobiz_async.types import ApiClient, Destination, Source


class ElsewhereEngine:
    """An engine whose items "ran elsewhere": it writes each file itself and hands the
    core only the results, as `RayEngine`'s driver does with its workers' results."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies

    async def run(
        self, session: ApiClient, source: Source, dest: Destination, options: BatchOptions
    ) -> DownloadReport:
        assert isinstance(dest, Path)
        assert options.manifest is not None
        assert not isinstance(options.manifest, Manifest)
        started = time.monotonic()
        with Manifest(options.manifest) as index:
            core = Batch(DirectorySink(dest), index=index, on_progress=options.on_progress)
            admitted = [pair async for pair in core.admitted(source)]
            for place, item in admitted:
                rid = item_id(item)
                path = dest / f"{rid}.mp3"
                path.write_bytes(self.bodies[rid])
                result = DownloadResult(
                    rid,
                    DownloadStatus.DOWNLOADED,
                    path=path,
                    location=str(path),
                    size=len(self.bodies[rid]),
                    sha256=hashlib.sha256(self.bodies[rid]).hexdigest(),
                    container="mp3",
                )
                core.settle(place, result, item if isinstance(item, Recording) else None)
            return core.report(time.monotonic() - started)


async def test_results_from_another_engine_are_indexed_and_reported_once(
    session: AsyncSession, tmp_path: Path
) -> None:
    """A fake engine feeds the core results: the index holds each, in listing order, each
    final progress event arrives once, and a repeated id is skipped without running."""
    bodies = {"a": b"ID3 first", "b": b"ID3 second body"}
    events: list[ProgressEvent] = []
    report = await session.recordings.download_many(
        ["a", "b", "a"],
        tmp_path,
        manifest=tmp_path / "index",
        on_progress=events.append,
        engine=ElsewhereEngine(bodies),
    )
    assert [(r.recording_id, r.status) for r in report.results] == [
        ("a", DownloadStatus.DOWNLOADED),
        ("b", DownloadStatus.DOWNLOADED),
        ("a", DownloadStatus.SKIPPED),
    ]
    finals = Counter((e.recording_id, e.kind) for e in events if e.result is not None)
    assert finals == {
        ("a", ProgressKind.FINISHED): 1,
        ("b", ProgressKind.FINISHED): 1,
        ("a", ProgressKind.SKIPPED): 1,
    }
    with Manifest(tmp_path / "index") as index:
        assert {e.recording_id: (e.path, e.sha256) for e in index} == {
            rid: (f"{rid}.mp3", hashlib.sha256(body).hexdigest()) for rid, body in bodies.items()
        }


@contextlib.contextmanager
def held_index(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's exclusive hold on the index: every write to it is refused."""
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        yield blocker
    finally:
        blocker.rollback()
        blocker.close()


async def test_an_index_that_refuses_writes_stops_the_batch_and_keeps_what_is_stored(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The index locked by another process after three recordings: the fourth is stored and
    reported downloaded, no further transfer starts, one line says why; a re-run indexes
    the fourth from its file, without fetching it again."""
    ids = add(fake, 8, size=20_000)
    index = Manifest(tmp_path / "index", timeout=0.05)
    stack = contextlib.ExitStack()

    def lock_after_three(event: ProgressEvent) -> None:
        if event.kind is ProgressKind.FINISHED and event.recording_id == ids[2]:
            index.commit()  # the open group, which another process's writer waits for
            stack.enter_context(held_index(tmp_path / "index"))

    with stack, caplog.at_level(logging.INFO, logger="vobiz_async"):
        report = await session.recordings.download_many(
            ids, dest, manifest=index, concurrency=1, on_progress=lock_after_three
        )
    statuses = [r.status for r in report.results]
    assert statuses == [DownloadStatus.DOWNLOADED] * 4 + [DownloadStatus.FAILED] * 4
    assert all(isinstance(r.error, StorageError) for r in report.failed)
    assert all("not started" in str(r.error) for r in report.failed)
    assert len(media(fake)) == 4
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1
    assert "index refuses writes" in loud[0].getMessage()
    assert file_sha256(dest / f"{ids[3]}.mp3") == fake.sha256(ids[3])
    assert len(index) == 3

    fake.stats.reset()
    again = await session.recordings.download_many(ids[:4], dest, manifest=index)
    index.close()
    assert {r.status for r in again.results} == {DownloadStatus.SKIPPED}
    assert fake.stats.media_requests == 0
    with Manifest(tmp_path / "index") as reopened:
        entry = reopened.get(ids[3])
        assert entry is not None
        assert entry.sha256 == fake.sha256(ids[3])


async def test_files_stored_without_an_index_are_indexed_without_a_media_request(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """Downloaded with no index, then run with one: every file is hashed and indexed with
    its true sha256, and no recording is fetched again."""
    ids = add(fake, 5, size=30_000)
    first = await session.recordings.download_many(session.recordings.list(), dest)
    assert first.counts[DownloadStatus.DOWNLOADED] == 5
    fake.stats.reset()
    again = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=tmp_path / "index"
    )
    assert fake.stats.media_requests == 0
    assert {r.status for r in again.results} == {DownloadStatus.SKIPPED}
    assert {r.recording_id: r.sha256 for r in again.results} == {
        rid: fake.sha256(rid) for rid in ids
    }
    with Manifest(tmp_path / "index") as index:
        assert {e.recording_id: (e.path, e.sha256, e.size) for e in index} == {
            rid: (f"{rid}.mp3", fake.sha256(rid), fake.size(rid)) for rid in ids
        }


async def test_a_stored_file_whose_size_disagrees_with_the_index_is_fetched_again(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """The index is the record, the sink the truth: a file of another size is refetched."""
    (rid,) = add(fake, 1, size=25_000)
    await session.recordings.download_many([rid], dest, manifest=tmp_path / "index")
    (dest / f"{rid}.mp3").write_bytes(b"ID3 not the recording")
    fake.stats.reset()
    again = await session.recordings.download_many([rid], dest, manifest=tmp_path / "index")
    assert again.results[0].status is DownloadStatus.DOWNLOADED
    assert fake.stats.media_requests == 1
    assert file_sha256(dest / f"{rid}.mp3") == fake.sha256(rid)


class FinishedMeanwhile(DirectorySink):
    """A folder where another process finishes each recording just as this one claims it."""

    def __init__(self, root: Path, bodies: dict[str, bytes]) -> None:
        super().__init__(root)
        self.bodies = bodies

    async def open(self, recording: Recording, *, size_hint: int | None = None) -> NoReturn:
        rid = recording.recording_id
        path = self.root / f"{rid}.mp3"
        path.write_bytes(self.bodies[rid])
        raise AlreadyStored(Stored(f"{rid}.mp3", str(path), len(self.bodies[rid])))


async def test_a_recording_another_process_finished_is_skipped_and_indexed(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """`AlreadyStored` from the sink: skipped (not fetched), hashed and indexed."""
    (rid,) = add(fake, 1, size=12_000)
    body = b"ID3 finished by the other run"
    sink = FinishedMeanwhile(dest, {rid: body})
    report = await session.recordings.download_many(
        [recording(fake, rid)], sink, manifest=tmp_path / "index"
    )
    (result,) = report.results
    assert result.status is DownloadStatus.SKIPPED
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert fake.stats.media_requests == 0
    with Manifest(tmp_path / "index") as index:
        entry = index.get(rid)
        assert entry is not None
        assert (entry.path, entry.sha256) == (f"{rid}.mp3", hashlib.sha256(body).hexdigest())
