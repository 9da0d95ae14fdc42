"""`recordings.list(selection=...)`: the selection applied to every listed recording."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from vobiz_async import AsyncSession
from vobiz_async.converter import structure
from vobiz_async.models import Page
from vobiz_async.pager import AsyncPager
from vobiz_async.selection import Selection, Verdict
from vobiz_async.testing import FakeVobiz


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=60, seed=3) as fake:
        yield fake


async def test_list_with_selection_keeps_only_the_selection(fake: FakeVobiz) -> None:
    """Bounds taken from listed add_times: `after` inclusive, `before` exclusive."""
    async with AsyncSession(**fake.session_kwargs(), max_retries=0) as session:
        every = [r async for r in session.recordings.list(limit=100)]
        times = sorted({r.add_time for r in every if r.add_time is not None})
        low, high = times[len(times) // 4], times[3 * len(times) // 4]
        selection = Selection(after=low, before=high)
        now = datetime.now(UTC)
        pager = session.recordings.list(limit=7, selection=selection, now=now)
        got = [r.recording_id async for r in pager]
    expected = [
        r.recording_id for r in every if r.add_time is not None and low <= r.add_time < high
    ]
    assert expected
    assert len(expected) < len(every)
    assert got == expected
    assert pager.unreadable == 0


async def test_unreadable_recordings_are_left_out_and_counted() -> None:
    """A recording without add_time is neither kept nor silently dropped: it is counted."""
    objects = [
        {
            "recording_id": "a",
            "recording_url": "https://m/a.mp3",
            "add_time": "2026-05-03 10:00:00",
        },
        {"recording_id": "b", "recording_url": "https://m/b.mp3"},
        {
            "recording_id": "c",
            "recording_url": "https://m/c.mp3",
            "add_time": "2026-04-01 10:00:00",
        },
    ]
    body = {"api_id": "x", "meta": {"limit": 20, "offset": 0, "total_count": 3}, "objects": objects}

    async def fetch(params: Mapping[str, str]) -> Page:
        return structure(body, Page)

    selection = Selection(after="2026-05-01")
    now = datetime(2026, 6, 1, tzinfo=UTC)

    def keep(recording: object) -> bool | None:
        verdict = selection.verdict(recording, now)  # type: ignore[arg-type]
        return None if verdict is Verdict.UNREADABLE else verdict is Verdict.KEEP

    pager = AsyncPager(fetch, {}, keep=keep)
    assert [r.recording_id async for r in pager] == ["a"]
    assert pager.unreadable == 1


async def test_list_passes_server_filters(fake: FakeVobiz) -> None:
    """The request carries the selection's safe server-side filters."""
    now = datetime(2026, 6, 1, tzinfo=UTC)
    selection = Selection(min_age=timedelta(days=7), recording_type="call")
    async with AsyncSession(**fake.session_kwargs(), max_retries=0) as session:
        pager = session.recordings.list(selection=selection, now=now)
        assert pager._params["recording_type"] == "call"
        assert "add_time__lt" in pager._params


@pytest.mark.parametrize("honour", [False, True])
async def test_same_selection_with_server_filters_on_and_off(honour: bool) -> None:
    """The fake applying the date filters itself changes nothing in what is selected."""
    async with (
        FakeVobiz(recordings=60, seed=3, honour_filters=honour) as fake,
        AsyncSession(**fake.session_kwargs(), max_retries=0) as session,
    ):
        every = [r async for r in session.recordings.list(limit=100)]
        times = sorted({r.add_time for r in every if r.add_time is not None})
        low, high = times[10], times[40]
        pager = session.recordings.list(limit=9, selection=Selection(after=low, before=high))
        got = [r.recording_id async for r in pager]
        first = await session.recordings.list(selection=Selection(after=times[-3]))
    expected = [
        r.recording_id for r in every if r.add_time is not None and low <= r.add_time < high
    ]
    assert got == expected
    # The switch is real: on, the fake itself narrows the listing.
    assert (first.meta.total_count < len(every)) is honour
