"""An embedded fake of the Vobiz Recording API and its media hosts, for tests and demos.

``FakeVobiz`` runs two small aiohttp servers bound to 127.0.0.1 on random ports: the API plus
its media route (the "Vobiz host", addressed as ``127.0.0.1``), and an object-storage host that
some media URLs redirect to (the "foreign host", addressed as ``localhost`` so a client sees a
different host name). It reproduces the quirks in ``VOBIZ_API.md``: the list envelope with a
relative ``meta.next`` and ``limit`` capped at 100, flat retrieve with ``api_id``, 204 delete,
202 bulk delete and export (403 while an export runs), the three error shapes plus HTML gateway
pages, decimal strings, five- and six-digit fractions in ``add_time``, unknown extra fields, auth
required on media, WAV bytes served as ``.mp3`` / ``audio/mpeg``, Range / If-Range / ETag, and
401 for a path in the wrong case.

Use it as an async context manager::

    from vobiz_async import AsyncSession
    from vobiz_async.testing import FakeVobiz

    async with FakeVobiz(recordings=100, seed=0) as fake:
        async with AsyncSession(**fake.session_kwargs()) as session:
            ...

or as a pytest fixture (pytest-asyncio, ``asyncio_mode = "auto"``)::

    @pytest.fixture(name="fake")
    async def _fake() -> AsyncIterator[FakeVobiz]:
        async with FakeVobiz(recordings=25, seed=1) as fake:
            yield fake

Recordings are generated deterministically from ``seed`` and their position, on demand:
``FakeVobiz(recordings=100_000)`` holds no per-recording state until something asks, and media
bodies are produced block by block, so a 400 MB recording is served with flat memory.

Faults are programmable per recording (:meth:`FakeVobiz.media_fault`) and per API operation
(:meth:`FakeVobiz.api_fault`); ``fake.stats`` counts what arrived.

Where Vobiz documents nothing the fake chooses: bulk delete runs synchronously before its 202,
naive times in bulk-delete filters are read as IST (+05:30), a request for another account's
path answers 403, and ``limit=0`` answers 400.

The package: ``catalogue`` (generation, the store, list order; pure), ``faults`` (the fault
kinds and their decisions, the rate limit; pure), ``queries`` (what a request asks for;
pure) and ``app`` (the aiohttp servers and handlers: `FakeVobiz`).
"""

from __future__ import annotations

from .app import (
    DEFAULT_AUTH_ID,
    DEFAULT_AUTH_TOKEN,
    FakeStats,
    FakeVobiz,
    RequestRecord,
    SessionKwargs,
)
from .catalogue import FakeRecording
from .faults import ApiOperation, ErrorBody, ListingFault, MediaFaultKind

__all__ = [
    "DEFAULT_AUTH_ID",
    "DEFAULT_AUTH_TOKEN",
    "ApiOperation",
    "ErrorBody",
    "FakeRecording",
    "FakeStats",
    "FakeVobiz",
    "ListingFault",
    "MediaFaultKind",
    "RequestRecord",
    "SessionKwargs",
]
