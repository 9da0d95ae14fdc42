"""Real-world robustness: payloads written by others, encoded bodies, resume without a
validator, private addresses, a nearly full disk, rate limits (issue 12).

Everything runs against servers on 127.0.0.1: the embedded fake, small aiohttp apps of this
file, and nginx where the behaviour under test is nginx's own.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vobiz_async import AsyncSession, DownloadStatus, ResponseValidationError
from vobiz_async.testing import FakeVobiz


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=0) as fake:
        yield fake


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ odd listed objects


async def test_one_bad_object_never_sinks_a_page(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A listing with an unusable object archives every good recording (odd optional fields
    included) and reports the unusable one, by id, as failed."""
    good = fake.add_recording(size=20_000).recording_id
    odd = fake.add_recording(size=20_000, add_time="yesterday at noon").recording_id
    broken = fake.add_recording(size=20_000, extra_fields={"recording_url": None}).recording_id
    nameless = fake.add_recording(size=20_000, extra_fields={"recording_id": None}).recording_id
    pager = session.recordings.list()

    report = await session.recordings.download_many(pager, tmp_path)

    by_id = {r.recording_id: r for r in report.results}
    assert by_id[good].status is DownloadStatus.DOWNLOADED
    assert by_id[odd].status is DownloadStatus.DOWNLOADED
    assert sha256(tmp_path / f"{odd}.mp3") == fake.sha256(odd)
    assert by_id[broken].status is DownloadStatus.FAILED
    assert isinstance(by_id[broken].error, ResponseValidationError)
    assert "recording_url" in str(by_id[broken].error)
    assert nameless not in by_id
    assert [i.recording_id for i in pager.invalid] == [None, broken]
