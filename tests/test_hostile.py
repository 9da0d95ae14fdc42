"""Hostile or broken servers (issue 26), through real sockets on 127.0.0.1: a signed media
URL in aiohttp's errors, a body longer than its Content-Length, nested JSON, a huge API
answer, a trickled body, and clients that hold the receiver's connections open."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from _download_helpers import recording
from aiohttp import web
from yarl import URL

from vobiz_async import AsyncSession, DownloadStatus, ResponseValidationError
from vobiz_async import download as download_module
from vobiz_async import listener as listener_module
from vobiz_async import webhooks as webhooks_module
from vobiz_async.receiver import ServeConfig, serve
from vobiz_async.testing import FakeVobiz

QUERY = "X-Amz-Credential=CRED&X-Amz-Signature=SECRET"
PUBLIC_URL = "https://hooks.example.test/vobiz/recording"
#: A bound for what should happen at once: reached only when the behaviour is missing.
BOUND = 20.0
ETAG = '"trickle-v1"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[str]:
    """A server on 127.0.0.1 that answers every request with `answer`, byte for byte."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            await reader.read()  # until the client hangs up
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def app_server(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """An aiohttp app on 127.0.0.1 serving GET `routes`; yields its origin."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# -- media errors -------------------------------------------------------------------------


async def test_a_signed_url_never_reaches_an_error_or_a_log(
    fake: FakeVobiz, dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An invalid Content-Length makes aiohttp quote the whole URL: the result's error and
    every log line keep its path and lose its query."""
    caplog.set_level(logging.DEBUG, logger="vobiz_async")
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nID3456789012"
    async with raw_server(answer) as origin:
        rid = fake.add_recording(recording_url=f"{origin}/r/abc.mp3?{QUERY}").recording_id
        async with AsyncSession(**fake.session_kwargs()) as session:
            result = await session.recordings.download(recording(fake, rid), dest, max_attempts=1)

    assert result.status is DownloadStatus.FAILED
    assert "Content-Length" in str(result.error)
    assert "/r/abc.mp3" in str(result.error)
    for text in (str(result.error), repr(result.error), caplog.text):
        assert "SECRET" not in text
        assert "CRED" not in text


async def test_a_body_longer_than_its_length_is_quoted_briefly(fake: FakeVobiz, dest: Path) -> None:
    """Bytes past the Content-Length that aiohttp quotes are cut to a short excerpt."""
    junk = b"\x00\x01yy" * 3000
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nID3" + junk
    async with raw_server(answer) as origin:
        rid = fake.add_recording(recording_url=f"{origin}/long.mp3").recording_id
        async with AsyncSession(**fake.session_kwargs()) as session:
            result = await session.recordings.download(recording(fake, rid), dest, max_attempts=2)

    assert result.status is DownloadStatus.FAILED
    assert 0 < len(str(result.error)) < 300, len(str(result.error))
    assert "more characters" in str(result.error)


# -- API answers --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000])
async def test_nested_json_from_the_api_is_a_validation_error(body: bytes, dest: Path) -> None:
    """Nested JSON ends `get` and `download_many` with ResponseValidationError."""

    async def nested(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async with (
        app_server({"/{tail:.*}": nested}) as origin,
        AsyncSession("MA_HOSTILE", "token", base_url=f"{origin}/api/v1/") as session,
    ):
        with pytest.raises(ResponseValidationError, match="nested too deeply"):
            await session.recordings.get("abc")
        with pytest.raises(ResponseValidationError, match="nested too deeply"):
            await session.recordings.download_many(session.recordings.list(), dest)


class Huge:
    """Streams `size` bytes of a JSON-looking answer and counts what it could send."""

    def __init__(self, size: int, *, announce: bool) -> None:
        self.size = size
        self.announce = announce
        self.sent = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if self.announce:
            resp.content_length = self.size
        await resp.prepare(request)
        chunk = b" " * 65536
        with contextlib.suppress(ConnectionError):
            while self.sent < self.size:
                await resp.write(chunk)
                self.sent += len(chunk)
        return resp


@pytest.mark.parametrize("announce", [False, True])
async def test_an_api_answer_is_capped(announce: bool) -> None:
    """A 256 MiB answer (chunked, or announced by Content-Length) fails at 8 MiB; the rest
    is never read."""
    huge = Huge(256 * 1024 * 1024, announce=announce)
    async with (
        app_server({"/{tail:.*}": huge.handle}) as origin,
        AsyncSession(
            "MA_HOSTILE", "token", base_url=f"{origin}/api/v1/", max_retries=0, read_timeout=BOUND
        ) as session,
    ):
        with pytest.raises(ResponseValidationError, match=r"larger than 8 MiB"):
            await session.recordings.get("abc")

    assert huge.sent < 64 * 1024 * 1024, huge.sent


# -- a trickled body ----------------------------------------------------------------------


class Trickle:
    """A recording whose first response sends 2,000 bytes at once, then 20 bytes every
    0.1 s (200 B/s); a ranged request is answered at once. A strong ETag lets a resume
    ask for exactly the bytes it lacks."""

    def __init__(self) -> None:
        self.body = b"ID3\x03\x00" + random.Random(26).randbytes(7995)
        self.ranges: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        asked = request.headers.get("Range")
        self.ranges.append(asked)
        if asked is not None:
            start = int(asked.removeprefix("bytes=").removesuffix("-"))
            content_range = f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
            headers = {"Content-Range": content_range, "ETag": ETAG}
            return web.Response(status=206, body=self.body[start:], headers=headers)
        resp = web.StreamResponse(headers={"ETag": ETAG})
        resp.content_length = len(self.body)
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            await resp.write(self.body[:2000])
            for at in range(2000, len(self.body), 20):
                await asyncio.sleep(0.1)
                await resp.write(self.body[at : at + 20])
        return resp


async def test_a_trickled_body_is_given_up_and_resumed(
    fake: FakeVobiz, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body slower than the floor (1,000 B/s over 0.5 s here) ends its attempt; the next
    resumes from the bytes held and the file lands whole."""
    monkeypatch.setattr(download_module, "MIN_SPEED", 1000.0)
    monkeypatch.setattr(download_module, "MIN_SPEED_WINDOW", 0.5)
    trickle = Trickle()
    async with app_server({"/trickle.mp3": trickle.handle}) as origin:
        rid = fake.add_recording(recording_url=f"{origin}/trickle.mp3").recording_id
        async with AsyncSession(**fake.session_kwargs()) as session:
            result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert result.attempts == 2
    assert result.path is not None
    assert result.path.read_bytes() == trickle.body
    assert trickle.ranges[0] is None
    assert trickle.ranges[1] is not None  # resumed, not started over
    assert int(trickle.ranges[1].removeprefix("bytes=").removesuffix("-")) > 0


# -- the receiver's connections -----------------------------------------------------------


@contextlib.asynccontextmanager
async def running_receiver(fake: FakeVobiz, tmp_path: Path) -> AsyncIterator[URL]:
    """`serve` in this event loop on 127.0.0.1 (any port); yields its origin."""
    kwargs = fake.session_kwargs()
    config = ServeConfig(
        public_url=PUBLIC_URL,
        dest=str(tmp_path / "archive"),
        auth_id=kwargs["auth_id"],
        auth_token=kwargs["auth_token"],
        base_url=kwargs["base_url"],
        host="127.0.0.1",
        port=0,
    )
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, on_ready=ready.set_result))
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        yield URL(ready.result()).origin()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def half_requests(
    origin: URL, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`count` connections that each send half a request line, and nothing more."""
    connections = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(origin.host, origin.port)
        writer.write(b"GET /healthz HT")
        await writer.drain()
        connections.append((reader, writer))
    return connections


async def close_all(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_connections_that_never_finish_their_headers_are_closed(
    fake: FakeVobiz, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 clients stuck mid request line: /healthz answers meanwhile, and each of them is
    closed by the header timeout (0.5 s here)."""
    monkeypatch.setattr(listener_module, "HEADER_TIMEOUT", 0.5)
    async with running_receiver(fake, tmp_path) as origin:
        stuck = await half_requests(origin, 50)
        try:
            async with aiohttp.ClientSession() as http, http.get(origin / "healthz") as resp:
                assert resp.status == 200
            answers = await asyncio.wait_for(
                asyncio.gather(*(reader.read() for reader, _ in stuck)), BOUND
            )
        finally:
            await close_all(stuck)

    assert answers == [b""] * 50  # closed, never answered


async def test_connections_beyond_the_cap_are_refused_and_the_rest_served(
    fake: FakeVobiz, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 10 connections open (the cap here), a new one gets a 503 and is closed, while
    an open keep-alive connection is still served."""
    monkeypatch.setattr(listener_module, "MAX_CONNECTIONS", 10)
    monkeypatch.setattr(listener_module, "HEADER_TIMEOUT", 60.0)  # none closes meanwhile
    async with (
        running_receiver(fake, tmp_path) as origin,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http,
    ):
        async with http.get(origin / "healthz") as resp:  # one kept-alive connection
            assert resp.status == 200
        stuck = await half_requests(origin, 9)
        extra = await half_requests(origin, 5)
        try:
            refusals = await asyncio.wait_for(
                asyncio.gather(*(reader.read() for reader, _ in extra)), BOUND
            )
            async with http.get(origin / "healthz") as resp:  # the same connection
                assert resp.status == 200
        finally:
            await close_all(stuck + extra)

    assert all(r.startswith(b"HTTP/1.1 503 ") for r in refusals), refusals


def signed(token: str, nonce: str) -> dict[str, str]:
    """The V3 headers Vobiz sends for PUBLIC_URL (the documented formula)."""
    mac = hmac.new(token.encode(), f"{PUBLIC_URL}.{nonce}".encode(), hashlib.sha256)
    return {
        "X-Vobiz-Signature-V3": base64.b64encode(mac.digest()).decode(),
        "X-Vobiz-Signature-V3-Nonce": nonce,
    }


async def test_a_trickled_callback_body_is_refused_with_408(
    fake: FakeVobiz, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed callback whose body stops arriving is answered 408 (after 0.3 s here)."""
    monkeypatch.setattr(webhooks_module, "BODY_TIMEOUT", 0.3)
    headers = signed(fake.auth_token, "7001")
    async with running_receiver(fake, tmp_path) as origin:
        reader, writer = await asyncio.open_connection(origin.host, origin.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"POST {URL(PUBLIC_URL).path} HTTP/1.1\r\nHost: x\r\n{head}"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            "Event=Reco".encode()
        )
        try:
            answer = await asyncio.wait_for(reader.readline(), BOUND)
        finally:
            await close_all([(reader, writer)])

    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_a_nested_callback_body_is_a_400(fake: FakeVobiz, tmp_path: Path) -> None:
    """A signed callback whose JSON is nested past the recursion limit gets a 400."""
    async with running_receiver(fake, tmp_path) as origin, aiohttp.ClientSession() as http:
        for nonce, body in (("7002", b"[" * 60_000), ("7003", b'{"a":' * 12_000)):
            async with http.post(
                origin.with_path(URL(PUBLIC_URL).path),
                data=body,
                headers={**signed(fake.auth_token, nonce), "Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 400
                assert "nested too deeply" in await resp.text()
