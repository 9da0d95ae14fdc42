"""`recordings.move_many` into a folder: every DELETE comes after the proof, checked inside the
fake's DELETE handler (the file holds the served bytes, the index row is committed), and
nothing short of that is deleted (issue 24 §3)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vobiz_async import AsyncSession, DownloadStatus
from vobiz_async.errors import AuthenticationError
from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.testing import FakeVobiz


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=0) as fake:
        yield fake


def add(fake: FakeVobiz, count: int, size: int = 2_000) -> list[str]:
    return [fake.add_recording(size=size + i).recording_id for i in range(count)]


def committed_sha256(index: Path, rid: str) -> str | None:
    """The index row's sha256 as another process would read it: committed rows only."""
    db = sqlite3.connect(f"{index.as_uri()}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT sha256 FROM entries WHERE recording_id = ?", (rid,)).fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


class ProofAtDelete:
    """The fake's delete hook: at each DELETE, the archived file must hold exactly the bytes
    the fake serves and the index must hold its committed row; problems are collected."""

    def __init__(self, fake: FakeVobiz, out: Path) -> None:
        self.fake, self.out = fake, out
        self.seen: list[str] = []
        self.problems: list[str] = []

    def __call__(self, rid: str) -> None:
        self.seen.append(rid)
        expected = self.fake.sha256(rid)
        files = [p for p in self.out.glob(f"{rid}.*") if p.suffix in (".mp3", ".wav")]
        if len(files) != 1:
            self.problems.append(f"{rid}: {len(files)} archived files at DELETE")
            return
        if hashlib.sha256(files[0].read_bytes()).hexdigest() != expected:
            self.problems.append(f"{rid}: archived bytes differ at DELETE")
        if committed_sha256(self.out / MANIFEST_NAME, rid) != expected:
            self.problems.append(f"{rid}: no committed index row at DELETE")


async def test_every_delete_comes_after_the_proof(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """All archived, each proven at its DELETE, none left at the fake, deleted_at stamped."""
    rids = add(fake, 12)
    out = tmp_path / "out"
    hook = fake.delete_hook = ProofAtDelete(fake, out)

    report = await session.recordings.move_many(session.recordings.list(), out)

    assert hook.problems == []
    assert sorted(hook.seen) == sorted(rids)
    assert fake.recording_ids == []
    assert report.counts["deleted"] == 12
    assert all(r.deleted for r in report.results)
    assert report.ok
    with Manifest(out / MANIFEST_NAME) as index:
        assert index.released_count() == 12


async def test_permanent_media_failures_are_never_deleted(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A recording whose media always fails stays at Vobiz; the rest are released."""
    rids = add(fake, 5)
    doomed = rids[2]
    fake.media_fault(doomed, "status", status=404, times=100)
    out = tmp_path / "out"
    hook = fake.delete_hook = ProofAtDelete(fake, out)

    report = await session.recordings.move_many(session.recordings.list(), out, max_attempts=2)

    assert hook.problems == []
    assert doomed not in hook.seen
    assert fake.recording_ids == [doomed]
    assert [r.recording_id for r in report.failed] == [doomed]
    assert report.counts["deleted"] == 4
    assert not report.ok


async def test_over_a_thousand_recordings_in_pages_of_100_leave_none(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Offset pagination is not shifted by deletions: every one of 1,050 is archived and
    deleted, in one run."""
    rids = add(fake, 1_050, size=300)
    out = tmp_path / "out"
    seen: list[str] = []
    fake.delete_hook = seen.append

    report = await session.recordings.move_many(session.recordings.list(limit=100), out)

    assert fake.recording_ids == []
    assert sorted(seen) == sorted(rids)
    assert report.counts[DownloadStatus.DOWNLOADED] == 1_050
    assert report.counts["deleted"] == 1_050
    assert len(list(out.glob("*.mp3"))) == 1_050


async def test_deletes_slow_down_together_when_vobiz_rate_limits_them(tmp_path: Path) -> None:
    """DELETEs answered 429 pass one pacing gate: the pass slows to the rate Vobiz allows
    instead of spending each DELETE's retries, so every one goes through."""
    async with (
        FakeVobiz(recordings=30, seed=3, delete_rate_limit=15, rate_limit_burst=3) as fake,
        AsyncSession(
            auth_id=fake.auth_id, auth_token=fake.auth_token, base_url=fake.base_url
        ) as session,
    ):
        report = await session.recordings.move_many(session.recordings.list(), tmp_path / "out")

        assert report.delete_failures == []
        assert report.counts["deleted"] == 30
        assert fake.recording_ids == []
        assert 0 < fake.stats.delete_rate_limited < 30  # limited, and paced after it


async def test_a_file_corrupted_in_place_is_fetched_again_before_its_delete(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Archived earlier, then one file damaged (same size): move re-fetches it, and its
    DELETE sees the served bytes again."""
    rids = add(fake, 4)
    out = tmp_path / "out"
    index = out / MANIFEST_NAME
    await session.recordings.download_many(session.recordings.list(), out, manifest=index)
    damaged = out / f"{rids[1]}.mp3"
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    fake.stats.reset()
    hook = fake.delete_hook = ProofAtDelete(fake, out)

    report = await session.recordings.move_many(session.recordings.list(), out)

    assert hook.problems == []
    assert sorted(hook.seen) == sorted(rids)
    media = [r for r in fake.stats.requests if r.operation == "media"]
    assert len(media) == 1
    assert rids[1] in media[0].path
    by_id = {r.recording_id: r for r in report.results}
    assert by_id[rids[1]].status is DownloadStatus.DOWNLOADED
    assert by_id[rids[1]].deleted
    assert report.counts[DownloadStatus.SKIPPED] == 3
    assert report.counts[DownloadStatus.DOWNLOADED] == 1


async def test_max_delete_caps_the_deletes_and_archiving_completes(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """At most N DELETEs; every recording is archived; the report says why it stopped."""
    add(fake, 7)
    out = tmp_path / "out"
    seen: list[str] = []
    fake.delete_hook = seen.append

    report = await session.recordings.move_many(session.recordings.list(), out, max_delete=3)

    assert len(seen) == 3
    assert len(fake.recording_ids) == 4
    assert report.counts[DownloadStatus.DOWNLOADED] == 7
    assert report.counts["deleted"] == 3
    assert report.release_stopped is not None
    assert "4 archived" in report.release_stopped


async def test_refused_credentials_on_delete_stop_further_deletes(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A 401 on DELETE: no further DELETE is sent; archiving was complete; reported."""
    add(fake, 5)
    fake.api_fault("delete", 401, times=100)
    out = tmp_path / "out"

    report = await session.recordings.move_many(session.recordings.list(), out, concurrency=1)

    deletes = [r for r in fake.stats.requests if r.operation == "delete"]
    assert len(deletes) == 1
    assert report.counts[DownloadStatus.DOWNLOADED] == 5
    assert report.counts["deleted"] == 0
    assert len(report.delete_failures) == 1
    assert isinstance(report.delete_failures[0].error, AuthenticationError)
    assert report.release_stopped is not None
    assert "credentials" in report.release_stopped
    assert len(fake.recording_ids) == 5


async def test_a_404_on_delete_counts_as_deleted(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Already gone at Vobiz: counted deleted and stamped in the index."""
    (rid,) = add(fake, 1)
    fake.api_fault("delete", 404)
    out = tmp_path / "out"

    report = await session.recordings.move_many(session.recordings.list(), out)

    assert report.counts["deleted"] == 1
    assert report.ok
    with Manifest(out / MANIFEST_NAME) as index:
        entry = index.get(rid)
        assert entry is not None
        assert entry.deleted_at is not None


async def test_object_storage_without_an_index_is_refused(session: AsyncSession) -> None:
    """An index is what each deletion is proven against: none, nothing starts."""
    with pytest.raises(ValueError, match="needs an index"):
        await session.recordings.move_many([], "s3://bucket/prefix/")
