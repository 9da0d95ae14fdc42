"""Listings end (issue 22, item 5): a `meta.next` that points back at its own page, and a
`total_count` that promises more than the server lists, against FakeVobiz on 127.0.0.1,
through `download_many` and the command line, each with its list requests counted."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_cli import env_for, run_cli

from vobiz_async import AsyncSession, DownloadStatus, ResponseValidationError
from vobiz_async.testing import FakeVobiz

RECORDINGS = 25
PAGE = 10
#: A guard that turns a listing that never ends into a failure instead of a hung suite;
#: nothing here asserts how long anything takes.
HANG_GUARD = 30.0
#: Pages a correct client asks for: the real ones plus at most one prefetch round.
CONCURRENCY = 4
BOUND = RECORDINGS // PAGE + 1 + CONCURRENCY


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=RECORDINGS, seed=3, max_limit=PAGE) as fake:
        yield fake


def list_requests(fake: FakeVobiz) -> int:
    return sum(1 for r in fake.stats.requests if r.operation == "list")


def env(fake: FakeVobiz) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}
    return env_for(base, fake)


async def test_self_referencing_next_stops_download_many(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A `meta.next` pointing back at its own page raises instead of asking again for good."""
    fake.listing_fault = "self_next"
    pager = session.recordings.list(limit=PAGE, page_concurrency=CONCURRENCY)

    with pytest.raises(ResponseValidationError, match="repeats offset 0: stopping"):
        async with asyncio.timeout(HANG_GUARD):
            await session.recordings.download_many(pager, tmp_path)

    assert list_requests(fake) <= BOUND


async def test_lying_total_count_ends_download_many(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A `total_count` far above what is listed ends at the first empty page, with every
    recording archived and one warning."""
    fake.listing_fault = "lying_total"
    pager = session.recordings.list(limit=PAGE, page_concurrency=CONCURRENCY)

    with caplog.at_level(logging.WARNING, logger="vobiz_async.pager"):
        async with asyncio.timeout(HANG_GUARD):
            report = await session.recordings.download_many(pager, tmp_path)

    assert report.ok
    assert sorted(r.recording_id for r in report.downloaded) == sorted(fake.recording_ids)
    assert all(r.status is DownloadStatus.DOWNLOADED for r in report.results)
    assert list_requests(fake) <= BOUND
    cut = [r for r in caplog.records if "is empty although meta.next" in r.getMessage()]
    assert len(cut) == 1


async def test_self_referencing_next_exits_nonzero_from_cli(
    fake: FakeVobiz, tmp_path: Path
) -> None:
    """`download` over a self-referencing listing exits non-zero with one line."""
    fake.listing_fault = "self_next"

    result = await run_cli("download", "--out", str(tmp_path / "a"), env=env(fake))

    assert result.code not in (0, 2), result.output
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "repeats offset 0: stopping" in lines[0]
    assert list_requests(fake) <= 2 + 8  # the first page, one more, and a prefetch round


async def test_lying_total_count_ends_cleanly_from_cli(fake: FakeVobiz, tmp_path: Path) -> None:
    """`download` over a listing whose `total_count` lies archives everything and exits 0."""
    fake.listing_fault = "lying_total"
    out = tmp_path / "a"

    result = await run_cli("download", "--out", str(out), env=env(fake))

    assert result.code == 0, result.output
    assert sorted(p.stem for p in out.iterdir() if p.suffix in (".mp3", ".wav")) == sorted(
        fake.recording_ids
    )
    assert list_requests(fake) <= RECORDINGS // PAGE + 1 + 8
