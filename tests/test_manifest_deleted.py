"""The index's `deleted_at` column: stamped by `mark_deleted`, counted, and added in place
to an index written before it existed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from vobiz_async import AsyncSession
from vobiz_async.cli import main
from vobiz_async.manifest import MANIFEST_NAME, Manifest, ManifestError
from vobiz_async.results import DownloadReport, DownloadResult, DownloadStatus
from vobiz_async.testing import FakeVobiz


def _record(manifest: Manifest, recording_id: str) -> None:
    manifest.record(
        recording_id,
        f"{recording_id}.mp3",
        size=3,
        sha256="a" * 64,
        container=None,
        add_time=None,
    )


def test_mark_deleted_stamps_and_counts(tmp_path: Path) -> None:
    with Manifest(tmp_path / "index.sqlite") as manifest:
        _record(manifest, "r1")
        _record(manifest, "r2")
        assert manifest.released_count() == 0
        first = manifest.get("r1")
        assert first is not None
        assert first.deleted_at is None
        manifest.mark_deleted("r1", "2026-12-05T20:00:00+00:00")
        entry = manifest.get("r1")
        assert entry is not None
        assert entry.deleted_at == "2026-12-05T20:00:00+00:00"
        assert manifest.released_count() == 1
        assert [e.deleted_at for e in manifest] == ["2026-12-05T20:00:00+00:00", None]
    with Manifest(tmp_path / "index.sqlite") as reopened:
        assert reopened.released_count() == 1


def test_mark_deleted_refuses_unknown_id(tmp_path: Path) -> None:
    with Manifest(tmp_path / "index.sqlite") as manifest:
        _record(manifest, "r1")
        with pytest.raises(ManifestError):
            manifest.mark_deleted("nope")


def test_old_index_gains_the_column_in_place(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with Manifest(path) as manifest:
        _record(manifest, "r1")
    db = sqlite3.connect(path)
    db.execute("DROP VIEW recordings")  # it names the column (the view came later too)
    db.execute("ALTER TABLE entries DROP COLUMN deleted_at")  # as written before it existed
    db.execute("ALTER TABLE entries DROP COLUMN delete_requested_at")
    db.commit()
    db.close()
    with Manifest(path) as manifest:
        entry = manifest.get("r1")
        assert entry is not None
        assert entry.deleted_at is None
        assert manifest.unsettled_deletions() == []
        manifest.mark_delete_requested("r1")
        manifest.mark_deleted("r1")
        assert manifest.released_count() == 1


def test_report_lists_the_results_deleted_at_vobiz() -> None:
    kept = DownloadResult("r1", DownloadStatus.DOWNLOADED)
    released = DownloadResult("r2", DownloadStatus.SKIPPED, deleted=True)
    report = DownloadReport(results=[kept, released], elapsed=0.0)
    assert not kept.deleted
    assert report.deleted == [released]


async def test_fake_calls_the_delete_hook_before_removing() -> None:
    """The hook sees the recording still listed: a test can check the archive then."""
    seen: list[tuple[str, bool]] = []
    async with FakeVobiz(recordings=3, seed=0) as fake:
        fake.delete_hook = lambda rid: seen.append((rid, rid in fake.recording_ids))
        rid = fake.recording_ids[0]
        async with AsyncSession(**fake.session_kwargs()) as session:
            await session.recordings.delete(rid)
        assert rid not in fake.recording_ids
    assert seen == [(rid, True)]


def test_index_export_shows_deleted_at(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Manifest(tmp_path / MANIFEST_NAME) as manifest:
        _record(manifest, "r1")
        _record(manifest, "r2")
        manifest.mark_deleted("r2", "2026-12-05T20:00:00+00:00")
    assert main(["index", "export", str(tmp_path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["deleted_at"] for line in lines] == [None, "2026-12-05T20:00:00+00:00"]


def test_mark_transcript_is_committed_on_return_within_a_group(tmp_path: Path) -> None:
    """Inside a commit group, a transcript's place is still committed when the call
    returns: another connection (a reader, or the next run after a kill -9) sees it."""
    path = tmp_path / "index.sqlite"
    with Manifest(path) as manifest, manifest.grouped(entries=100, seconds=60.0):
        _record(manifest, "r1")
        assert manifest.mark_transcript("r1", "r1.transcript.json")
        other = sqlite3.connect(path)
        try:
            rows = other.execute(
                "SELECT transcript_path FROM entries WHERE recording_id = 'r1'"
            ).fetchall()
        finally:
            other.close()
        assert rows == [("r1.transcript.json",)]


def test_a_delete_sent_but_never_stamped_is_unsettled_until_stamped(tmp_path: Path) -> None:
    """`mark_delete_requested` before the DELETE, `mark_deleted` after: an entry with only
    the first is what a stopped run leaves, and the next one settles it."""
    with Manifest(tmp_path / "index.sqlite") as manifest:
        _record(manifest, "r1")
        _record(manifest, "r2")
        manifest.mark_delete_requested("r1", "2026-12-06T03:00:00+00:00")
        manifest.mark_delete_requested("r2", "2026-12-06T03:00:01+00:00")
        manifest.mark_deleted("r2")
        assert manifest.unsettled_deletions() == [("r1", "2026-12-06T03:00:00+00:00")]
        manifest.mark_deleted("r1", "2026-12-06T03:00:00+00:00")
        assert manifest.unsettled_deletions() == []
