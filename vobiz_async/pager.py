"""`AsyncPager`: await it for the first page, `async for` it for every recording.

Vobiz paginates by offset. Once the first page tells `total_count`, the remaining pages are
fetched several at a time concurrently and still yielded in order, so listing 20,000
recordings costs about 200 / `concurrency` round trips, not 200. Offsets shift when
recordings arrive during a listing, so items are de-duplicated by `recording_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Mapping
from typing import Any

from .models import Page, Recording
from .protocol import next_page_params

__all__ = ["AsyncPager"]

FetchPage = Callable[[Mapping[str, str]], Awaitable[Page]]


class AsyncPager:
    """A listing that is both awaitable (first page) and async-iterable (all items)."""

    def __init__(
        self,
        fetch: FetchPage,
        params: Mapping[str, str],
        *,
        concurrency: int = 8,
    ) -> None:
        if concurrency < 1:
            raise ValueError("page concurrency must be >= 1")
        self._fetch = fetch
        self._params = dict(params)
        self._concurrency = concurrency
        #: `meta.total_count` of the latest page fetched while iterating; None before.
        self.total_count: int | None = None

    def __await__(self) -> Generator[Any, None, Page]:
        return self._fetch(self._params).__await__()

    def __aiter__(self) -> AsyncIterator[Recording]:
        return self._items()

    async def _items(self) -> AsyncIterator[Recording]:
        seen: set[str] = set()
        async with contextlib.aclosing(self.iter_pages()) as pages:
            async for page in pages:
                for recording in page.objects:
                    if recording.recording_id not in seen:
                        seen.add(recording.recording_id)
                        yield recording

    async def iter_pages(self) -> AsyncGenerator[Page, None]:
        """Every page in order: the first alone, then the rest `concurrency` at a time.

        Follow-up requests keep the caller's filters and take `limit`/`offset` from
        `meta.next`'s query (never its path, which lacks the `/api` prefix). The pages up to
        `total_count` are planned from the first reply; whenever a page's `meta.next`
        disagrees with the plan (the server clamped the page size, or recordings arrived
        meanwhile) the rest is planned again from that page.
        """
        page = await self._fetch(self._params)
        self.total_count = page.meta.total_count
        yield page
        while (follow := next_page_params(page.meta.next)) is not None and page.objects:
            query = {**self._params, **follow}
            size = int(query.get("limit") or page.meta.limit or len(page.objects))
            start = int(query.get("offset") or page.meta.offset + len(page.objects))
            planned = iter(range(start, max(page.meta.total_count, start + 1), size))
            pending: deque[tuple[int, asyncio.Task[Page]]] = deque()
            try:
                while True:
                    while (
                        len(pending) < self._concurrency
                        and (offset := next(planned, None)) is not None
                    ):
                        request = {**query, "limit": str(size), "offset": str(offset)}
                        pending.append((offset, asyncio.ensure_future(self._fetch(request))))
                    if not pending:
                        break
                    offset, task = pending.popleft()
                    page = await task
                    self.total_count = page.meta.total_count
                    yield page
                    after = next_page_params(page.meta.next)
                    if after is None or int(after.get("offset", -1)) != offset + size:
                        break  # the last page, or the plan no longer fits: plan again
            finally:
                for _, task in pending:
                    task.cancel()
                await asyncio.gather(*(task for _, task in pending), return_exceptions=True)
