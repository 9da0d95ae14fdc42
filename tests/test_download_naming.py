"""Naming and layout: the container sniffed from the bytes names the file, hostile ids never
escape dest, and layout="date" files by add_time, against FakeVobiz on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from _download_helpers import (
    add,
    assert_verified,
    media,
    recording,
    snapshot,
    tree,
)

from vobiz_async import (
    AsyncSession,
    DownloadStatus,
    InvalidRecordingIdError,
)
from vobiz_async.testing import FakeVobiz

# --------------------------------------------------------------------------- names


async def test_empty_recording_saved_as_empty_file(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A zero-byte recording is saved as an empty file named from recording_format."""
    (rid,) = add(fake, size=0)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.path == dest / f"{rid}.mp3"
    assert result.path.read_bytes() == b""
    assert result.sha256 == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("container", "claimed"),
    [("wav", "mp3"), ("mp3", "wav")],
    ids=["wav-bytes-under-mp3-saved-as-wav", "mp3-bytes-under-wav-saved-as-mp3"],
)
async def test_the_bytes_win_over_the_claimed_format(
    fake: FakeVobiz, session: AsyncSession, dest: Path, container: str, claimed: str
) -> None:
    """WAV bytes the API calls mp3 land as `<id>.wav` with container "wav", and MP3 bytes
    the API calls wav as `<id>.mp3`: the bytes win over the claim."""
    (rid,) = add(fake, container=container, recording_format=claimed)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.path == dest / f"{rid}.{container}"
    assert result.container == container


async def test_id3_and_frame_sync_sniffed_as_mp3(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """MP3 starting with `ID3` and MP3 starting with frame sync `FF E3` are both mp3."""
    rids = add(fake, 10, container="mp3", recording_format="wav")
    id3 = [rid for rid in rids if fake.body(rid).startswith(b"ID3")]
    sync = [rid for rid in rids if fake.body(rid).startswith(b"\xff\xe3")]
    assert id3
    assert sync

    report = await session.recordings.download_many([recording(fake, r) for r in rids], dest)

    for result in report.results:
        assert_verified(fake, result)
        assert result.container == "mp3"
        assert result.path == dest / f"{result.recording_id}.mp3"


HOSTILE_IDS = [
    "../../x",
    "/abs",
    "....",
    "..",
    "a\x00b",
    "x" * 300,
    "a/b",
    "..\\..\\y",
    "line\nbreak",
]


async def test_hostile_ids_never_escape_dest(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Hostile ids from the listing fail with InvalidRecordingIdError before any request of
    their own, nothing escapes dest, and the rest succeed."""
    dest = tmp_path / "deep" / "er" / "archive"
    good = add(fake, 3)
    for hostile in HOSTILE_IDS:
        fake.add_recording(hostile, size=2_000)
    watched = (tmp_path.parent, Path("/"))
    before = snapshot(*watched)

    report = await session.recordings.download_many(session.recordings.list(), dest)

    new = snapshot(*watched) - before
    escaped = {p for p in new if not p.is_relative_to(dest) and not dest.is_relative_to(p)}
    assert escaped == set()  # only dest itself, its parents and what is inside it are new
    by_id = {r.recording_id: r for r in report.results}
    assert set(by_id) == {*good, *HOSTILE_IDS}
    for rid in good:
        assert_verified(fake, by_id[rid])
    for hostile in HOSTILE_IDS:
        result = by_id[hostile]
        assert result.status is DownloadStatus.FAILED, hostile
        assert isinstance(result.error, InvalidRecordingIdError), hostile
        assert result.path is None
    assert {r.operation for r in fake.stats.requests} == {"list", "media"}
    assert len(media(fake)) == len(good)
    assert tree(dest) == {by_id[rid].path.name for rid in good if by_id[rid].path}


async def test_hostile_id_strings_fail_without_requests(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Hostile id strings fail with InvalidRecordingIdError and cause no request at all."""
    report = await session.recordings.download_many(["../../x", "/abs", "...."], dest)

    assert [r.status for r in report.results] == [DownloadStatus.FAILED] * 3
    assert all(isinstance(r.error, InvalidRecordingIdError) for r in report.results)
    assert fake.stats.requests == []
    assert tree(dest) == set()


async def test_date_layout(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """layout="date" files a recording under YYYY/MM/DD of its add_time, inside dest."""
    rid = fake.add_recording(size=5_000, add_time="2024-02-29 12:00:00.5+05:30").recording_id

    result = await session.recordings.download(recording(fake, rid), dest, layout="date")

    assert_verified(fake, result)
    assert result.path == dest / "2024" / "02" / "29" / f"{rid}.mp3"
    assert tree(dest) == {f"2024/02/29/{rid}.mp3"}
