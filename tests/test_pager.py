"""AsyncPager against FakeVobiz: first page, every item in order, concurrency, drift."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

import pytest
from _waiting import eventually
from aiohttp import web
from aiohttp.test_utils import TestServer

from vobiz_async import (
    AsyncPager,
    AsyncSession,
    NotFoundError,
    Page,
    PermissionDeniedError,
    ResponseValidationError,
    ServerError,
    SessionClosedError,
)
from vobiz_async.testing import FakeVobiz

#: One recording in the API's wire form, for hand-written servers.
WIRE = {
    "recording_id": "r0",
    "call_uuid": "c0",
    "recording_url": "https://media.vobiz.ai/r0.mp3",
    "recording_format": "mp3",
    "recording_type": "call",
    "add_time": "2026-05-07 09:45:35.79276+05:30",
    "recording_duration_ms": "7880.00000",
    "recording_start_ms": None,
    "recording_end_ms": None,
    "rounded_recording_duration": 60,
    "from_number": "+918000000000",
    "to_number": "918000000001",
    "conference_name": None,
    "recording_storage_duration": 3,
    "recording_storage_rate": 0.004,
    "monthly_recording_storage_amount": 0,
    "resource_uri": "/v1/Account/MA_X/Recording/r0/",
}


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=57, seed=0) as fake:
        yield fake


@pytest.fixture(name="session")
async def _session(fake: FakeVobiz) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(**fake.session_kwargs(), max_retries=0) as session:
        yield session


def list_queries(fake: FakeVobiz) -> list[dict[str, str]]:
    """The query of every list request the fake received, in arrival order."""
    return [
        dict(parse_qsl(urlsplit(r.path).query))
        for r in fake.stats.requests
        if r.operation == "list"
    ]


# --- awaiting the pager -------------------------------------------------------------------


async def test_await_gives_first_page(fake: FakeVobiz, session: AsyncSession) -> None:
    """`await list()` is the first page with the server's meta, in one request."""
    page = await session.recordings.list(limit=20)

    assert isinstance(page, Page)
    assert [r.recording_id for r in page.objects] == fake.recording_ids[:20]
    assert page.meta.total_count == 57
    assert page.meta.next is not None
    assert page.api_id
    assert len(fake.stats.requests) == 1


async def test_await_with_offset(fake: FakeVobiz, session: AsyncSession) -> None:
    """limit and offset select the window."""
    page = await session.recordings.list(limit=5, offset=50)

    assert [r.recording_id for r in page.objects] == fake.recording_ids[50:55]


async def test_last_page_has_no_next(fake: FakeVobiz, session: AsyncSession) -> None:
    """A window reaching the end has a null next."""
    page = await session.recordings.list(limit=20, offset=40)

    assert len(page.objects) == 17
    assert page.meta.next is None


# --- walking every recording --------------------------------------------------------------


async def test_57_over_pages_of_20(fake: FakeVobiz, session: AsyncSession) -> None:
    """`async for` yields all 57 recordings once, in the server's order."""
    ids = [rec.recording_id async for rec in session.recordings.list(limit=20)]

    assert ids == fake.recording_ids
    assert len(set(ids)) == 57


async def test_pages_of_20(fake: FakeVobiz, session: AsyncSession) -> None:
    """iter_pages() yields the three pages in order: 20, 20 and 17 recordings."""
    pages = [page async for page in session.recordings.list(limit=20).iter_pages()]

    assert [len(p.objects) for p in pages] == [20, 20, 17]
    assert [p.meta.offset for p in pages] == [0, 20, 40]


async def test_follow_ups_use_the_api_path(fake: FakeVobiz, session: AsyncSession) -> None:
    """Follow-up pages are requested under /api/v1/, never at meta.next's relative path."""
    [rec async for rec in session.recordings.list(limit=20)]

    paths = [urlsplit(r.path).path for r in fake.stats.requests]
    assert paths == [f"/api/v1/Account/{fake.auth_id}/Recording/"] * 3
    assert {r.status for r in fake.stats.requests} == {200}


async def hold_follow_ups(fake: FakeVobiz, pager: AsyncPager, in_flight: int) -> bool:
    """Take the first item, then hold every later page request at the fake (however fast
    this machine sends them) until `in_flight` are waiting there at once; stop the walk."""
    async with contextlib.aclosing(aiter(pager)) as items:
        await anext(items)
        fake.latency = 3600  # no await since the first page: no follow-up has arrived yet
        return await eventually(lambda: fake.stats.api_in_flight >= in_flight)


async def test_default_page_size_walk(fake: FakeVobiz, session: AsyncSession) -> None:
    """Without a limit the walk still yields everything once, in order."""
    ids = [rec.recording_id async for rec in session.recordings.list()]

    assert ids == fake.recording_ids


async def test_default_page_size_is_the_servers() -> None:
    """Without a limit, pages keep the server's default size and still overlap."""
    async with (
        FakeVobiz(recordings=250, seed=3) as fake,
        AsyncSession(**fake.session_kwargs()) as session,
    ):
        ids = [rec.recording_id async for rec in session.recordings.list()]
        assert ids == fake.recording_ids
        assert len(list_queries(fake)) == 13

        assert await hold_follow_ups(fake, session.recordings.list(), 2)


async def test_clamped_page_size_is_replanned_concurrently() -> None:
    """When the server caps the page size, the rest is planned at that size, in parallel."""
    async with (
        FakeVobiz(recordings=100, seed=3, max_limit=20) as fake,
        AsyncSession(**fake.session_kwargs()) as session,
    ):
        ids = [rec.recording_id async for rec in session.recordings.list(limit=100)]
        assert ids == fake.recording_ids
        assert len(list_queries(fake)) == 5

        assert await hold_follow_ups(fake, session.recordings.list(limit=100), 2)


@contextlib.asynccontextmanager
async def scripted_listing(
    listing: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[AsyncSession]:
    """A session whose listing endpoint is `listing`, served on 127.0.0.1."""
    app = web.Application()
    app.router.add_get("/api/v1/Account/MA_X/Recording/", listing)
    async with TestServer(app, host="127.0.0.1") as server:
        base_url = str(server.make_url("/api/v1/"))
        async with AsyncSession("MA_X", "token", base_url=base_url) as session:
            yield session


async def test_filters_kept_when_next_omits_them() -> None:
    """Later pages keep the caller's filters even if meta.next's query leaves them out."""
    queries: list[dict[str, str]] = []

    async def listing(request: web.Request) -> web.Response:
        queries.append(dict(request.query))
        offset = int(request.query.get("offset", 0))
        next_ref = None if offset else "/v1/Account/MA_X/Recording/?limit=1&offset=1"
        wire = {**WIRE, "recording_id": f"r{offset}"}
        meta = {"limit": 1, "offset": offset, "total_count": 2, "next": next_ref}
        return web.json_response({"api_id": "a", "meta": meta, "objects": [wire]})

    async with scripted_listing(listing) as session:
        pager = session.recordings.list(limit=1, recording_type="call")
        ids = [rec.recording_id async for rec in pager]

    assert ids == ["r0", "r1"]
    assert [q.get("recording_type") for q in queries] == ["call", "call"]


async def test_server_clamps_page_size() -> None:
    """A server that caps the page size below the plan still yields everything once."""
    async with FakeVobiz(recordings=130, seed=4, max_limit=30) as fake:
        async with AsyncSession(**fake.session_kwargs()) as session:
            ids = [rec.recording_id async for rec in session.recordings.list()]

        assert ids == fake.recording_ids


async def test_filters_carried_to_every_page(fake: FakeVobiz, session: AsyncSession) -> None:
    """Filters stay on follow-up page requests, so every item matches."""
    expected = [rid for rid, rec in fake.recordings.items() if rec.recording_type == "call"]

    recs = [rec async for rec in session.recordings.list(limit=10, recording_type="call")]

    assert [r.recording_id for r in recs] == expected
    assert len(list_queries(fake)) > 1
    assert all(q.get("recording_type") == "call" for q in list_queries(fake))


async def test_concurrent_page_fetch(fake: FakeVobiz, session: AsyncSession) -> None:
    """Once total_count is known, more than one page request is in flight at a time."""
    overlapped = await hold_follow_ups(fake, session.recordings.list(limit=10), 2)

    assert overlapped
    assert fake.stats.api_in_flight_max > 1


async def test_concurrency_bounded(fake: FakeVobiz, session: AsyncSession) -> None:
    """page_concurrency bounds the follow-up requests in flight."""
    pager = session.recordings.list(limit=5, page_concurrency=2)

    overlapped = await hold_follow_ups(fake, pager, 2)

    assert overlapped
    assert fake.stats.api_in_flight_max == 2
    assert fake.stats.api_requests == 1 + 2  # no third follow-up while two are held


async def test_sequential_with_concurrency_one(fake: FakeVobiz, session: AsyncSession) -> None:
    """page_concurrency=1 fetches one page at a time."""
    fake.latency = 0.01

    ids = [rec.recording_id async for rec in session.recordings.list(limit=10, page_concurrency=1)]

    assert ids == fake.recording_ids
    assert fake.stats.api_in_flight_max == 1


async def test_next_pages_requested_before_the_first_is_consumed(
    fake: FakeVobiz, session: AsyncSession
) -> None:
    """A consumer still busy with the first page does not wait a round trip for the next:
    the follow-up requests are out as soon as the first page arrives."""
    fake.latency = 0.05
    pager = session.recordings.list(limit=10, page_concurrency=3)
    items = aiter(pager)

    first = await anext(items)
    # "Busy" with the first item, asking for nothing more, until the follow-ups are answered.
    answered = await eventually(
        lambda: fake.stats.api_requests >= 4 and fake.stats.api_in_flight == 0
    )

    assert first.recording_id == fake.recording_ids[0]
    assert answered
    assert fake.stats.api_requests == 4  # the first page and the next three, no more
    rest = [rec.recording_id async for rec in items]
    assert [first.recording_id, *rest] == fake.recording_ids


async def test_malformed_next_offset_is_a_validation_error() -> None:
    """A meta.next whose offset is not a number is a typed error, not a bare ValueError."""

    async def listing(request: web.Request) -> web.Response:
        next_ref = "/v1/Account/MA_X/Recording/?limit=1&offset=one"
        meta = {"limit": 1, "offset": 0, "total_count": 2, "next": next_ref}
        return web.json_response({"api_id": "a", "meta": meta, "objects": [WIRE]})

    async with scripted_listing(listing) as session:
        with pytest.raises(ResponseValidationError, match=r"meta\.next"):
            [rec async for rec in session.recordings.list(limit=1)]


# --- empty accounts and failures ----------------------------------------------------------


@pytest.fixture(name="empty")
async def _empty() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0) as fake:
        yield fake


async def test_empty_account_page(empty: FakeVobiz) -> None:
    """An empty account's first page has no objects and no next."""
    async with AsyncSession(**empty.session_kwargs()) as session:
        page = await session.recordings.list()

    assert page.objects == []
    assert page.meta.total_count == 0
    assert page.meta.next is None


async def test_empty_account_walk(empty: FakeVobiz) -> None:
    """`async for` over an empty account yields nothing, after one request."""
    async with AsyncSession(**empty.session_kwargs()) as session:
        recs = [rec async for rec in session.recordings.list()]

    assert recs == []
    assert len(empty.stats.requests) == 1


async def test_no_match(fake: FakeVobiz, session: AsyncSession) -> None:
    """A filter matching nothing is an empty walk, not an error."""
    recs = [rec async for rec in session.recordings.list(call_uuid="no-such-call")]

    assert recs == []


async def test_first_page_failure_in_async_for(fake: FakeVobiz, session: AsyncSession) -> None:
    """`async for` over a listing whose first page fails raises the typed error."""
    fake.api_fault("list", 403)

    seen: list[str] = []

    async def walk() -> None:
        async for rec in session.recordings.list():
            seen.append(rec.recording_id)

    with pytest.raises(PermissionDeniedError):
        await walk()

    assert seen == []


async def test_first_page_failure_await(fake: FakeVobiz, session: AsyncSession) -> None:
    """`await list()` raises the first page's typed error."""
    fake.api_fault("list", 404)

    with pytest.raises(NotFoundError):
        await session.recordings.list()


async def test_later_page_failure(fake: FakeVobiz, session: AsyncSession) -> None:
    """A follow-up page that fails raises its typed error after the earlier items."""
    seen: list[str] = []

    async def walk() -> None:
        async for rec in session.recordings.list(limit=20):
            if not seen:
                fake.api_fault("list", 503, times=10)
            seen.append(rec.recording_id)

    with pytest.raises(ServerError):
        await walk()

    assert seen == fake.recording_ids[:20]


async def test_stop_early(fake: FakeVobiz, session: AsyncSession) -> None:
    """Breaking out after a few items fetches no more than the first page."""
    ids = []
    async for rec in session.recordings.list(limit=20):
        ids.append(rec.recording_id)
        if len(ids) == 3:
            break

    assert ids == fake.recording_ids[:3]
    assert len(list_queries(fake)) == 1


def page_fetches() -> list[asyncio.Task[object]]:
    """The page-fetch tasks still running in this loop."""
    return [t for t in asyncio.all_tasks() if "_fetch_page" in repr(t.get_coro())]


async def test_stop_with_pages_in_flight(fake: FakeVobiz, session: AsyncSession) -> None:
    """Breaking out while a follow-up page is in flight cancels that fetch."""
    fake.latency = 0.2
    in_flight_at_break = 0
    ids = []
    async for rec in session.recordings.list(limit=5):
        ids.append(rec.recording_id)
        if len(ids) == 12:  # page 3; page 6 was just scheduled
            in_flight_at_break = len(page_fetches())
            break

    assert in_flight_at_break > 0
    assert await eventually(lambda: page_fetches() == [])
    assert ids == fake.recording_ids[:12]


async def test_walk_from_offset(fake: FakeVobiz, session: AsyncSession) -> None:
    """A walk that starts at an offset yields the rest of the listing, in order."""
    ids = [rec.recording_id async for rec in session.recordings.list(limit=20, offset=10)]

    assert ids == fake.recording_ids[10:]


async def test_walk_twice(fake: FakeVobiz, session: AsyncSession) -> None:
    """A pager can be awaited and walked again; each use starts from the beginning."""
    pager = session.recordings.list(limit=20)

    first = await pager
    again = [rec.recording_id async for rec in pager]

    assert [r.recording_id for r in first.objects] == fake.recording_ids[:20]
    assert again == fake.recording_ids


# --- offsets shifting during a listing ----------------------------------------------------


@pytest.mark.parametrize(
    "added", [3, 10], ids=["new-recordings-during-listing", "growth-beyond-the-plan"]
)
async def test_recordings_added_during_a_listing(
    fake: FakeVobiz, session: AsyncSession, added: int
) -> None:
    """Recordings added mid-listing shift offsets; every original one is yielded exactly once,
    and when the account grows past the planned pages the pager follows meta.next to the end."""
    original = fake.recording_ids
    ids: list[str] = []

    async for rec in session.recordings.list(limit=20):
        if not ids:
            for _ in range(added):
                fake.add_recording()
        ids.append(rec.recording_id)

    assert len(ids) == len(set(ids))
    assert set(original) <= set(ids)


async def test_total_count_known_once_iteration_starts(
    fake: FakeVobiz, session: AsyncSession
) -> None:
    """The pager exposes the listing's total_count from the first page on."""
    pager = session.recordings.list(limit=20)
    assert pager.total_count is None

    first = await anext(aiter(pager))

    assert first.recording_id == fake.recording_ids[0]
    assert pager.total_count == 57


# -- abandoning a listing -----------------------------------------------------------------


async def settle() -> None:
    """Let every other task finish (an abandoned pager's finaliser, its prefetches)."""
    current = asyncio.current_task()
    for _ in range(100):
        others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not others:
            return
        await asyncio.wait(others, timeout=0.05)


async def test_break_out_of_a_listing_leaks_no_pool(fake: FakeVobiz) -> None:
    """`break` after the first item, then leaving the session: no new pool, no error logged."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
    try:
        async with AsyncSession(**fake.session_kwargs()) as session:
            async for _ in session.recordings.list(limit=5):
                break
        await settle()
        gc.collect()
        await settle()
    finally:
        loop.set_exception_handler(previous)

    assert reported == []
    assert session._http is None


async def test_closed_session_refuses_a_new_pool(fake: FakeVobiz) -> None:
    """A request on a closed session raises SessionClosedError instead of opening a pool."""
    async with AsyncSession(**fake.session_kwargs()) as session:
        await session.recordings.list(limit=1)

    with pytest.raises(SessionClosedError, match="closed"):
        await session.recordings.list(limit=1)
    assert session._http is None
