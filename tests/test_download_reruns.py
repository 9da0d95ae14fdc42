"""Re-runs and the manifest: what a second run skips, refetches or cleans up, and the index
entries a batch writes and trusts, against FakeVobiz on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
from _download_helpers import (
    add,
    assert_verified,
    file_sha256,
    media,
    recording,
    tree,
    write_part,
)

from vobiz_async import (
    AsyncSession,
    DownloadStatus,
)
from vobiz_async import download as download_module
from vobiz_async.manifest import Manifest
from vobiz_async.testing import FakeVobiz

# --------------------------------------------------------------------------- re-runs


async def test_rerun_skips_without_media_requests(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A second download_many skips every saved recording and makes no media request."""
    rids = add(fake, 5)
    add(fake, 1, container="wav", recording_format="mp3")
    await session.recordings.download_many(session.recordings.list(), dest)
    before = fake.stats.media_requests

    report = await session.recordings.download_many(session.recordings.list(), dest)

    assert len(report.skipped) == len(rids) + 1
    assert report.ok
    assert report.total_bytes == 0
    assert fake.stats.media_requests == before


async def test_rerun_of_id_strings_makes_no_request(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Re-running with id strings skips saved files without any request at all."""
    rids = add(fake, 3)
    await session.recordings.download_many(rids, dest)
    fake.stats.reset()

    report = await session.recordings.download_many(rids, dest)

    assert [r.status for r in report.results] == [DownloadStatus.SKIPPED] * 3
    assert fake.stats.requests == []


async def test_overwrite_refetches(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """overwrite=True downloads saved recordings again."""
    rids = add(fake, 3)
    await session.recordings.download_many(session.recordings.list(), dest)
    (dest / f"{rids[0]}.mp3").write_bytes(b"tampered")
    before = fake.stats.media_requests

    report = await session.recordings.download_many(session.recordings.list(), dest, overwrite=True)

    assert len(report.downloaded) == 3
    assert fake.stats.media_requests == before + 3
    for result in report.results:
        assert_verified(fake, result)


async def test_skip_removes_a_stale_part(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A .part beside a finished file (an aborted overwrite) is removed when it is skipped."""
    (rid,) = add(fake)
    first = await session.recordings.download_many([recording(fake, rid)], dest)
    assert first.ok
    write_part(dest, rid, b"ID3 stale")

    again = await session.recordings.download_many([recording(fake, rid)], dest)

    assert [r.status for r in again.results] == [DownloadStatus.SKIPPED]
    assert tree(dest) == {f"{rid}.mp3"}


# --------------------------------------------------------------------------- manifest


def manifest_lines(path: Path) -> list[dict[str, Any]]:
    """The index's entries, read by a fresh `Manifest`, as the dicts its export prints."""
    with Manifest(path) as manifest:
        return [attrs.asdict(entry) for entry in manifest]


async def test_manifest_line_per_download(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """The manifest gets one entry per downloaded recording: id, path, size, sha256."""
    rids = add(fake, 4)
    manifest = tmp_path / "manifest.jsonl"

    report = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=manifest
    )

    assert report.ok
    lines = manifest_lines(manifest)
    assert sorted(line["recording_id"] for line in lines) == sorted(rids)
    for line in lines:
        rid = line["recording_id"]
        assert line["path"] == f"{rid}.mp3"
        assert line["size"] == fake.size(rid)
        assert line["sha256"] == fake.sha256(rid)
        assert file_sha256(dest / line["path"]) == line["sha256"]


async def test_callers_manifest_knows_the_new_entries(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """A Manifest the caller passes in holds this batch's entries afterwards."""
    rids = add(fake, 3)

    with Manifest(tmp_path / "manifest.jsonl") as manifest:
        await session.recordings.download_many(session.recordings.list(), dest, manifest=manifest)

        assert sorted(e.recording_id for e in manifest) == sorted(rids)
        assert all(e.sha256 == fake.sha256(e.recording_id) for e in manifest)


async def test_own_manifest_keeps_no_entries_in_memory(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A manifest the batch opens from a path is written and closed, holding no entries."""
    opened: list[Manifest] = []

    class Watched(Manifest):
        def __init__(self, path: str | os.PathLike[str]) -> None:
            super().__init__(path)
            opened.append(self)

    monkeypatch.setattr(download_module, "Manifest", Watched)
    rids = add(fake, 3)
    path = tmp_path / "manifest.jsonl"

    await session.recordings.download_many(session.recordings.list(), dest, manifest=path)

    assert [manifest._db for manifest in opened] == [None]  # closed when the batch ended
    assert sorted(line["recording_id"] for line in manifest_lines(path)) == sorted(rids)


async def test_repeated_id_with_own_manifest_fetched_once(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """With a manifest opened from a path, an id repeated later in the batch is skipped."""
    rids = add(fake, 2)

    report = await session.recordings.download_many(
        [*rids, rids[0]], dest, manifest=tmp_path / "manifest.jsonl", concurrency=1
    )

    statuses = [r.status for r in report.results]
    assert statuses == [DownloadStatus.DOWNLOADED] * 2 + [DownloadStatus.SKIPPED]
    assert len(media(fake)) == 2


async def test_repeated_id_with_stale_manifest_entry_fetched_once(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """An id whose old manifest entry no longer matches is fetched once, even when repeated."""
    rid = add(fake)[0]
    manifest = tmp_path / "manifest.jsonl"
    with Manifest(manifest) as old:
        old.record(rid, f"{rid}.mp3", size=1, sha256="0" * 64, container="mp3", add_time=None)

    report = await session.recordings.download_many(
        [rid, rid], dest, manifest=manifest, concurrency=1
    )

    assert [r.status for r in report.results] == [DownloadStatus.DOWNLOADED, DownloadStatus.SKIPPED]
    assert len(media(fake)) == 1
    assert file_sha256(dest / f"{rid}.mp3") == fake.sha256(rid)


async def test_manifest_rerun_skips(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """A re-run with the manifest skips everything, adds no entry, and fetches nothing."""
    add(fake, 4)
    manifest = tmp_path / "manifest.jsonl"
    await session.recordings.download_many(session.recordings.list(), dest, manifest=manifest)
    text = manifest_lines(manifest)
    before = fake.stats.media_requests

    report = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=manifest
    )

    assert len(report.skipped) == 4
    assert all(r.sha256 == fake.sha256(r.recording_id) for r in report.skipped)
    assert fake.stats.media_requests == before
    assert manifest_lines(manifest) == text


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
async def test_manifest_entry_with_damaged_file_refetched(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path, damage: str
) -> None:
    """A manifest entry whose file was deleted or truncated is fetched again."""
    rids = add(fake, 3)
    manifest = tmp_path / "manifest.jsonl"
    await session.recordings.download_many(session.recordings.list(), dest, manifest=manifest)
    victim = dest / f"{rids[1]}.mp3"
    if damage == "deleted":
        victim.unlink()
    else:
        with victim.open("r+b") as f:
            f.truncate(1_000)
    fake.stats.reset()

    report = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=manifest
    )

    statuses = {r.recording_id: r.status for r in report.results}
    assert statuses[rids[1]] is DownloadStatus.DOWNLOADED
    assert [s for rid, s in statuses.items() if rid != rids[1]] == [DownloadStatus.SKIPPED] * 2
    assert len(media(fake)) == 1
    assert file_sha256(victim) == fake.sha256(rids[1])


async def test_manifest_torn_last_line_tolerated(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """A JSON Lines manifest with a torn last line is imported: earlier entries are kept
    (their recordings skipped), new entries are added, the old file stays as a backup."""
    first = add(fake, 2)
    manifest = tmp_path / "manifest.jsonl"
    await session.recordings.download_many(session.recordings.list(), dest, manifest=manifest)
    legacy = b"".join(json.dumps(line).encode() + b"\n" for line in manifest_lines(manifest))
    manifest.write_bytes(legacy + b'{"recording_id": "torn", "pa')  # as an older version
    later = add(fake, 1)
    fake.stats.reset()

    report = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=manifest
    )

    statuses = {r.recording_id: r.status for r in report.results}
    assert [statuses[rid] for rid in first] == [DownloadStatus.SKIPPED] * 2
    assert statuses[later[0]] is DownloadStatus.DOWNLOADED
    assert len(media(fake)) == 1
    readable = [line["recording_id"] for line in manifest_lines(manifest)]
    assert sorted(readable) == sorted([*first, *later])
    assert manifest.with_name("manifest.jsonl.bak").read_bytes().startswith(legacy)
