"""The small costs of a transfer (issue 23 item 4), each kept only where it pays: the
`.part.etag` file only for a large body or one that broke off, and gc tuned only while a
batch runs (and restored after it)."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _download_helpers import add, recording

from vobiz_async import AsyncSession, DownloadResult, DownloadStatus, ProgressEvent, ProgressKind
from vobiz_async.batch import Batch
from vobiz_async.download import BATCH_GC_THRESHOLD, REMEMBER_ABOVE
from vobiz_async.manifest import Manifest, ManifestEntry
from vobiz_async.sinks import DirectorySink
from vobiz_async.sinks.directory import VALIDATOR_SUFFIX
from vobiz_async.testing import FakeVobiz


def _validator_seen(dest: Path) -> tuple[list[str], Callable[[ProgressEvent], None]]:
    """A progress callback noting, at every read of a body, whether its `.part.etag` is
    there (the file a kill -9 at that moment would leave)."""
    seen: list[str] = []

    def on_progress(event: ProgressEvent) -> None:
        validator = dest / f"{event.recording_id}.part{VALIDATOR_SUFFIX}"
        if event.kind is ProgressKind.BYTES and validator.exists():
            seen.append(event.recording_id)

    return seen, on_progress


async def test_no_validator_file_for_a_small_clean_transfer(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A 300 KB body that arrives whole never writes `.part.etag` (16 in flight)."""
    rids = add(fake, 4, size=300_000)
    assert REMEMBER_ABOVE > 300_000
    seen, on_progress = _validator_seen(dest)

    report = await session.recordings.download_many(
        [recording(fake, r) for r in rids], dest, concurrency=16, on_progress=on_progress
    )

    assert len(report.downloaded) == 4
    assert seen == []


async def test_a_large_body_remembers_its_validator_before_its_bytes(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A body above REMEMBER_ABOVE has its `.part.etag` on disk while it streams, so a
    kill -9 mid-transfer leaves what an If-Range resume needs."""
    (rid,) = add(fake, size=REMEMBER_ABOVE + 500_000)
    seen, on_progress = _validator_seen(dest)

    report = await session.recordings.download_many(
        [recording(fake, rid)], dest, on_progress=on_progress
    )

    assert len(report.downloaded) == 1
    assert seen  # present from the first read on
    assert not (dest / f"{rid}.part{VALIDATOR_SUFFIX}").exists()  # gone with the partial


@pytest.fixture(name="gc_state")
def _gc_state() -> Iterator[tuple[tuple[int, int, int], int]]:
    """gc's thresholds and freeze count before the test, put back after it."""
    before = (gc.get_threshold(), gc.get_freeze_count())
    yield before
    gc.set_threshold(*before[0])
    gc.unfreeze()


async def test_gc_is_tuned_while_a_batch_runs_and_restored_after(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    gc_state: tuple[tuple[int, int, int], int],
) -> None:
    """During a batch gen0's threshold is BATCH_GC_THRESHOLD and start-up's objects are
    frozen; after it the process's gc is as it was."""
    threshold, frozen = gc_state
    assert frozen == 0
    rids = add(fake, 3, size=50_000)
    during: list[tuple[int, int]] = []

    def on_progress(event: ProgressEvent) -> None:
        during.append((gc.get_threshold()[0], gc.get_freeze_count()))

    report = await session.recordings.download_many(
        [recording(fake, r) for r in rids], dest, on_progress=on_progress
    )

    assert [r.status for r in report.results] == [DownloadStatus.DOWNLOADED] * 3
    assert during
    assert all(t == max(threshold[0], BATCH_GC_THRESHOLD) and n > 0 for t, n in during)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (threshold, 0)


async def test_gc_of_a_process_that_froze_objects_itself_is_left_alone(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    gc_state: tuple[tuple[int, int, int], int],
) -> None:
    """A process that froze objects (a pre-fork server, say) keeps its own gc settings."""
    threshold, _ = gc_state
    gc.freeze()
    rids = add(fake, 2, size=50_000)
    during: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        during.append(gc.get_threshold()[0])

    await session.recordings.download_many(
        [recording(fake, r) for r in rids], dest, on_progress=on_progress
    )

    assert set(during) == {threshold[0]}
    assert gc.get_freeze_count() > 0  # still frozen: the batch did not unfreeze it


async def test_a_new_recording_costs_one_index_query(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The skip check's lookup (none found) is the only one before a download's entry is
    written; a skip still compares with what the index holds before writing."""
    rids = add(fake, 3, size=50_000)
    asked: list[str] = []
    get = Manifest.get

    def counted(self: Manifest, recording_id: str) -> ManifestEntry | None:
        asked.append(recording_id)
        return get(self, recording_id)

    monkeypatch.setattr(Manifest, "get", counted)
    index = tmp_path / "index"
    items = [recording(fake, r) for r in rids]

    report = await session.recordings.download_many(items, dest, manifest=index)

    assert len(report.downloaded) == 3
    assert sorted(asked) == sorted(rids)
    with Manifest(index) as manifest:
        entries = [manifest.get(r) for r in rids]
    assert [(e.path, e.size) for e in entries if e] == [(f"{r}.mp3", 50_000) for r in rids]
    asked.clear()

    again = await session.recordings.download_many(items, dest, manifest=index)

    assert len(again.skipped) == 3
    assert sorted(asked) == sorted(rids * 2)  # found, then compared before (not) writing
    for path in tmp_path.glob("index*"):  # noqa: ASYNC240 - the index, its -wal/-shm
        path.unlink()
    asked.clear()

    unindexed = await session.recordings.download_many(items, dest, manifest=index)

    # Stored files the index does not know: skipped, and compared before they are written
    # (another process may have indexed and moved one meanwhile).
    assert len(unindexed.skipped) == 3
    assert sorted(asked) == sorted(rids * 2)


@pytest.mark.parametrize(
    ("root", "path", "key"),
    [
        ("/a/out", "/a/out/x.mp3", "x.mp3"),
        ("/a/out", "/a/out/2026/01/02/x.mp3", "2026/01/02/x.mp3"),
        ("out", "out/x.mp3", "x.mp3"),
        ("/a/out", "/a/out/./x.mp3", "x.mp3"),
        ("/a/out", "/a/out/b/../x.mp3", "x.mp3"),
        ("/a/out", "/a/out/.hidden/x.mp3", ".hidden/x.mp3"),
        ("/a/out", "/a/outer/x.mp3", "../outer/x.mp3"),
    ],
)
def test_a_result_key_is_its_path_relative_to_the_folder(root: str, path: str, key: str) -> None:
    """`key_of`'s shortcut gives relpath's answer, and falls back to it off the plain case."""
    batch = Batch(DirectorySink(root))
    result = DownloadResult("x", DownloadStatus.DOWNLOADED, path=path)
    assert batch.key_of(result) == key == os.path.relpath(path, root)
