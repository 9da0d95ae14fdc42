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

from vobiz_async import AsyncSession, DownloadStatus, RateLimitError, ResponseValidationError
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


# ------------------------------------------------------------------ rate limits


async def test_a_rate_limit_never_costs_a_recording(tmp_path: Path) -> None:
    """Far over a media host's rate limit, every recording is archived: an honoured
    Retry-After does not use up max_attempts."""
    async with FakeVobiz(recordings=0, media_rate_limit=60, rate_limit_burst=5) as fake:
        for _ in range(80):
            fake.add_recording(size=4_000)
        async with AsyncSession(**fake.session_kwargs()) as session:
            report = await session.recordings.download_many(
                session.recordings.list(limit=100), tmp_path, concurrency=40, max_attempts=2
            )

        assert fake.stats.rate_limited > 0
        assert report.ok, [str(r.error) for r in report.failed]
        assert len(report.downloaded) == 80
        for result in report.downloaded:
            assert result.path is not None
            assert sha256(result.path) == fake.sha256(result.recording_id)


async def test_a_host_that_only_paces_ends_with_a_clear_error(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A host that answers nothing but 429 fails the item once max_paced_wait is spent."""
    rid = fake.add_recording(size=4_000).recording_id
    fake.media_fault(rid, "status", status=429, retry_after=1, times=50)

    result = await session.recordings.download(rid, tmp_path, max_paced_wait=2.5)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, RateLimitError)
    assert result.attempts == 3  # two honoured waits of 1 s, then the bound
