"""The type aliases and protocols the batch, its engines and the API share, in one place.

Nothing here imports the session, the downloader or an engine: those import this, so the
batch can name what it needs of a session (`MediaClient`) without importing it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

import aiohttp
from yarl import URL

from .models import Recording
from .sinks.base import Layout, Sink  # Layout lives with the sinks, which name files by it

__all__ = [
    "ApiClient",
    "Destination",
    "Item",
    "Layout",
    "Lookup",
    "MediaClient",
    "Metadata",
    "Source",
]

#: One input of a batch: a listed `Recording`, or an id to fetch first.
Item = Recording | str
#: What a batch archives: any iterable or async iterable of items (a pager, a list).
Source = Iterable[Item] | AsyncIterable[Item]
#: Where a batch archives: a folder's path, an `s3://bucket/prefix/` URL, or a `Sink`.
Destination = str | os.PathLike[str] | Sink
#: Fetches one recording by id (`session.recordings.get`).
Lookup = Callable[[str], Awaitable[Recording]]
#: What a batch stores beside each recording: "sidecar" is `<key without extension>.json`
#: holding the recording's wire object (`protocol.sidecar_key`, `protocol.sidecar_document`).
Metadata = Literal["sidecar"]


class MediaClient(Protocol):
    """What a downloader needs of a session (`AsyncSession` is one)."""

    def reserve_connections(self, count: int) -> int: ...

    async def stream(
        self,
        method: str,
        url: URL,
        *,
        headers: Mapping[str, str] | None = None,
        read_bufsize: int | None = None,
        trusted_hosts: Iterable[str] | None = None,
        auto_decompress: bool = True,
    ) -> aiohttp.ClientResponse: ...


class ApiClient(MediaClient, Protocol):
    """What `Recordings` and an engine need of a session (`AsyncSession` is one)."""

    def account_url(self, *segments: str) -> URL: ...

    async def request(
        self,
        method: str,
        url: URL,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        retry: bool = True,
    ) -> Any: ...
