"""`AsyncPager`: await it for the first page, `async for` it for every recording.

Vobiz paginates by offset. Once the first page tells `total_count`, the remaining pages are
fetched several at a time concurrently and still yielded in order, so listing 20,000
recordings costs about 200 / `concurrency` round trips, not 200. Offsets shift when
recordings arrive during a listing, so items are de-duplicated by `recording_id`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
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
        page_size: int = 100,
        concurrency: int = 4,
    ) -> None:
        if concurrency < 1:
            raise ValueError("page concurrency must be >= 1")
        self._fetch = fetch
        self._params = dict(params)
        self._page_size = page_size
        self._concurrency = concurrency

    def __await__(self) -> Generator[Any, None, Page]:
        return self._fetch(self._params).__await__()

    def __aiter__(self) -> AsyncIterator[Recording]:
        return self._items()

    async def _items(self) -> AsyncIterator[Recording]:
        seen: set[str] = set()
        async for page in self.iter_pages():
            for recording in page.objects:
                if recording.recording_id not in seen:
                    seen.add(recording.recording_id)
                    yield recording

    async def iter_pages(self) -> AsyncIterator[Page]:
        """Every page in order: the first alone, then the planned rest concurrently.

        Follow-up requests reuse the query of `meta.next` (never its path). When a page's
        `meta.next` disagrees with the plan (the server clamped the page size, or the account
        grew meanwhile), the pager stops planning and follows `meta.next` one page at a time.
        """
        page = await self._fetch(self._params)
        yield page
        follow = next_page_params(page.meta.next)
        if follow is None:
            return
        size = int(follow.get("limit") or page.meta.limit or self._page_size)
        if "limit" not in self._params:
            size = max(size, self._page_size)
        start = int(follow.get("offset") or page.meta.offset + len(page.objects))
        planned = iter(range(start, page.meta.total_count, size))
        base_query = follow
        pending: deque[tuple[int, asyncio.Task[Page]]] = deque()

        def schedule() -> None:
            while len(pending) < self._concurrency:
                offset = next(planned, None)
                if offset is None:
                    return
                query = {**base_query, "limit": str(size), "offset": str(offset)}
                pending.append((offset, asyncio.ensure_future(self._fetch(query))))

        try:
            schedule()
            while pending:
                offset, task = pending.popleft()
                page = await task
                yield page
                follow = next_page_params(page.meta.next)
                if follow is None or int(follow.get("offset", -1)) != offset + size:
                    break
                schedule()
        finally:
            for _, task in pending:
                task.cancel()
            await asyncio.gather(*(task for _, task in pending), return_exceptions=True)
        while follow is not None:
            page = await self._fetch(follow)
            if not page.objects:
                return
            yield page
            follow = next_page_params(page.meta.next)
