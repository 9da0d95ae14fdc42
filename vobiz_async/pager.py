"""`AsyncPager`: await it for the first page, `async for` it for every recording.

Vobiz paginates by offset. Once the first page tells `total_count`, the remaining pages are
fetched several at a time concurrently and still yielded in order, so listing 20,000
recordings costs about 200 / `concurrency` round trips, not 200. Offsets shift when
recordings arrive during a listing, so items are de-duplicated by `recording_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from typing import Any

from .errors import ResponseValidationError
from .models import InvalidRecording, Page, Recording
from .protocol import next_page_offset, next_page_params

__all__ = ["AsyncPager"]

logger = logging.getLogger(__name__)

FetchPage = Callable[[Mapping[str, str]], Awaitable[Page]]


class AsyncPager:
    """A listing that is both awaitable (first page) and async-iterable (all items)."""

    def __init__(
        self,
        fetch: FetchPage,
        params: Mapping[str, str],
        *,
        concurrency: int = 8,
        keep: Callable[[Recording], bool | None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("page concurrency must be >= 1")
        self._fetch = fetch
        self._params = dict(params)
        self._concurrency = concurrency
        #: `meta.total_count` of the latest page fetched while iterating; None before.
        self.total_count: int | None = None
        #: Listed objects skipped while iterating because they cannot be archived (no usable
        #: `recording_id` or `recording_url`); each was logged at WARNING.
        self.invalid: list[InvalidRecording] = []
        #: `keep(recording)` decides whether a listed recording is yielded: True keeps it,
        #: False leaves it out, None leaves it out as unreadable (counted below).
        self._keep = keep
        #: Recordings left out because a field the selection needs is missing or unreadable.
        self.unreadable = 0

    def __await__(self) -> Generator[Any, None, Page]:
        return self._fetch(self._params).__await__()

    def __aiter__(self) -> AsyncGenerator[Recording, None]:
        """Every recording; `contextlib.aclosing` it to stop early and cancel the prefetch
        at once (a bare `break` leaves that to the event loop's generator finaliser)."""
        return self._items()

    async def _items(self) -> AsyncGenerator[Recording, None]:
        async with contextlib.aclosing(self.entries()) as entries:
            async for entry in entries:
                if isinstance(entry, Recording):
                    yield entry

    async def entries(self) -> AsyncGenerator[Recording | InvalidRecording, None]:
        """Every recording, de-duplicated, and in between the listed objects that cannot be
        archived (also collected in `invalid`), for a caller that reports them."""
        seen: set[str] = set()
        async with contextlib.aclosing(self.iter_pages()) as pages:
            async for page in pages:
                for invalid in page.invalid:
                    self.invalid.append(invalid)
                    yield invalid
                for recording in page.objects:
                    if recording.recording_id not in seen:
                        seen.add(recording.recording_id)
                        if self._kept(recording):
                            yield recording
        if self.unreadable:
            logger.warning(
                "%d listed recording(s) left out: a field the selection needs is unreadable",
                self.unreadable,
            )

    def _kept(self, recording: Recording) -> bool:
        if self._keep is None:
            return True
        verdict = self._keep(recording)
        if verdict is None:
            self.unreadable += 1
        return bool(verdict)

    async def iter_pages(self) -> AsyncGenerator[Page, None]:
        """Every page in order: the first alone, then the rest `concurrency` at a time.

        Follow-up requests keep the caller's filters and take `limit`/`offset` from
        `meta.next`'s query (never its path, which lacks the `/api` prefix). The pages up to
        `total_count` are planned from the first reply; whenever a page's `meta.next`
        disagrees with the plan (the server clamped the page size, or recordings arrived
        meanwhile) the rest is planned again from that page. The next pages are requested
        before a page is handed out, so a consumer busy with one page never waits a round
        trip for the next.

        The listing always ends (`protocol.next_page_offset`): an empty page ends it (with
        one warning when its `meta.next` promised more), and a `meta.next` that repeats or
        goes back raises `ResponseValidationError` instead of asking again for good.
        """
        offset = _start(self._params)
        page = await self._fetch(self._params)
        seen: set[int] = set()
        query: dict[str, str] = {}
        offsets = range(0)
        pending: deque[tuple[int, asyncio.Task[Page]]] = deque()
        try:
            while True:
                self.total_count = page.meta.total_count
                seen.add(offset)
                after = next_page_offset(offset, len(page.objects), page.meta.next, seen)
                if after is None:
                    _warn_if_cut(page, offset)
                    await _cancel(pending)
                    offsets = range(0)
                elif after != _planned(pending, offsets):
                    # The first page, a plan that no longer fits, or a listing that grew
                    # past the plan: follow this page's meta.next instead.
                    await _cancel(pending)
                    query, offsets = self._plan(page, after)
                while len(pending) < self._concurrency and offsets:
                    request = {**query, "limit": str(offsets.step), "offset": str(offsets[0])}
                    pending.append((offsets[0], asyncio.ensure_future(self._fetch(request))))
                    offsets = offsets[1:]
                yield page
                if not pending:
                    return
                offset, task = pending.popleft()
                page = await task
        finally:
            await _cancel(pending)

    def _plan(self, page: Page, start: int) -> tuple[dict[str, str], range]:
        """The query and the offsets of the pages from `start` (where `page`'s `meta.next`
        points) up to its `total_count`; the range's step is the page size."""
        query = {**self._params, **(next_page_params(page.meta.next) or {})}
        try:
            size = int(query.get("limit") or page.meta.limit or len(page.objects))
        except ValueError:
            raise ResponseValidationError(f"malformed meta.next: {page.meta.next!r}") from None
        size = size if size > 0 else len(page.objects)
        return query, range(start, max(page.meta.total_count, start + 1), size)


def _start(params: Mapping[str, str]) -> int:
    """The offset the caller's first page is asked at."""
    try:
        return max(int(params.get("offset") or 0), 0)
    except ValueError:
        return 0


def _planned(pending: deque[tuple[int, asyncio.Task[Page]]], offsets: range) -> int | None:
    """The offset of the next page the plan has requested or will request; None past it."""
    if pending:
        return pending[0][0]
    return offsets[0] if offsets else None


def _warn_if_cut(page: Page, offset: int) -> None:
    """One warning when an empty page ends a listing whose `meta.next` promised more."""
    if page.meta.next and not page.objects:
        logger.warning(
            "the listing's page at offset %d is empty although meta.next points on "
            "(total_count %d): ending the listing there",
            offset,
            page.meta.total_count,
        )


async def _cancel(pending: deque[tuple[int, asyncio.Task[Page]]]) -> None:
    """Cancel the page requests still in flight and wait for them to finish."""
    tasks = [task for _, task in pending]
    pending.clear()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
