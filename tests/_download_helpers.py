"""Helpers shared by the `test_download_*` modules: short names for what FakeVobiz saw,
file checks, a wrapper for the `.part` files the directory sink writes, and `Scripted`, a
tiny aiohttp app on 127.0.0.1 for the cases the fake cannot script (a redirect loop, a
redirect to `file:`, an https->http downgrade, a body that stalls)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import pytest
from aiohttp import web

from vobiz_async import (
    DownloadResult,
    DownloadStatus,
    Recording,
)
from vobiz_async.download import RESUME_OVERLAP
from vobiz_async.offload import OffloadPolicy
from vobiz_async.sinks import directory as directory_module
from vobiz_async.testing import FakeVobiz, RequestRecord

FINAL_SUFFIXES = (".mp3", ".wav")


def recording(fake: FakeVobiz, rid: str) -> Recording:
    """The `Recording` the API would hand out for `rid`, built without a request."""
    return Recording.from_dict(fake.recordings[rid].wire())


def add(fake: FakeVobiz, count: int = 1, *, size: int = 50_000, **kwargs: Any) -> list[str]:
    """Add `count` recordings of `size` bytes to the fake; return their ids, oldest first."""
    return [fake.add_recording(size=size, **kwargs).recording_id for _ in range(count)]


def media(fake: FakeVobiz) -> list[RequestRecord]:
    """Media requests (Vobiz host and foreign storage) the fake has seen."""
    return [r for r in fake.stats.requests if r.operation in ("media", "storage")]


def gets(fake: FakeVobiz) -> int:
    """Retrieve calls (`GET Recording/{id}/`) the fake has seen."""
    return sum(1 for r in fake.stats.requests if r.operation == "get")


def tree(root: Path) -> set[str]:
    """Every file under `root`, as paths relative to it."""
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def snapshot(*roots: Path) -> set[Path]:
    """Every path under `roots` (the top level only for `/`)."""
    found: set[Path] = set()
    for root in roots:
        found.update(root.iterdir() if root == Path("/") else root.rglob("*"))
    return found


def overlap_start(offset: int) -> int:
    """Where a resume without a strong ETag starts: a little before the partial's end."""
    return offset - min(RESUME_OVERLAP, offset)


def write_part(dest: Path, rid: str, data: bytes) -> None:
    """Leave a `.part` for `rid` in `dest`, as an earlier run would."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{rid}.part").write_bytes(data)


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class PartFile:
    """A `.part` file the downloader opened, wrapped so a test can step into its writes."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, data: bytes) -> int:
        return int(self._file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def wrap_part_files(monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Any], PartFile]) -> None:
    """Make the downloader's `open` hand out `wrap(file)` for the `.part` files it writes."""

    def part_open(path: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by the wrapper
        return wrap(file) if str(path).endswith(".part") and mode in ("wb", "ab") else file

    monkeypatch.setattr(directory_module, "open", part_open, raising=False)


def assert_verified(fake: FakeVobiz, result: DownloadResult) -> None:
    """`result` is a download whose file on disk holds exactly the served bytes."""
    rid = result.recording_id
    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.error is None
    assert result.path is not None
    assert result.path.is_file()
    assert result.path.suffix in FINAL_SUFFIXES
    assert result.sha256 == fake.sha256(rid)
    assert file_sha256(result.path) == fake.sha256(rid)
    assert result.size == fake.size(rid) == result.path.stat().st_size


def assert_no_partial_finals(fake: FakeVobiz, dest: Path) -> None:
    """Every file under a final name in `dest` is a whole recording (a `.part` may stay)."""
    for name in tree(dest):
        path = dest / name
        if path.suffix in FINAL_SUFFIXES:
            rid = path.name.removesuffix(path.suffix)
            assert file_sha256(path) == fake.sha256(rid), f"partial file under final name {name}"


class Scripted:
    """A tiny media server on 127.0.0.1 for what FakeVobiz cannot script.

    `/redirect?to=URL` answers 302 to URL; `/loop` redirects to itself; `/stall` serves
    `body`, but its first response sends half and then stalls until the test ends.
    """

    def __init__(self) -> None:
        self.body = b"ID3\x03\x00" + random.Random(7).randbytes(300_000)
        self.hits: Counter[str] = Counter()
        self.ranges: list[str | None] = []
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/redirect", self._redirect)
        self.app.router.add_get("/loop", self._loop)
        self.app.router.add_get("/stall.mp3", self._stall)
        self.app.router.add_get("/reset.mp3", self._reset)
        self.app.router.add_get("/plain.mp3", self._plain)
        self.app.router.add_get("/short206.mp3", self._short206)
        self.app.router.add_get("/etag206.mp3", self._etag206)
        self.credentials_seen = 0
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.25)
        self.port = 0
        self.tls_port = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        if tls is not None:
            tls_site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=tls)
            await tls_site.start()
            self.tls_port = self.runner.addresses[1][1]

    async def close(self) -> None:
        self.release.set()
        await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tls_url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.tls_port}{path}"

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        self.hits["redirect"] += 1
        raise web.HTTPFound(request.query["to"])

    async def _loop(self, request: web.Request) -> web.StreamResponse:
        self.hits["loop"] += 1
        raise web.HTTPFound("/loop")

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "stall")

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "reset")

    async def _plain(self, request: web.Request) -> web.StreamResponse:
        """The whole body; counts requests that arrive with Vobiz credentials."""
        if "X-Auth-ID" in request.headers or "X-Auth-Token" in request.headers:
            self.credentials_seen += 1
        return web.Response(body=self.body, content_type="audio/mpeg")

    async def _short206(self, request: web.Request) -> web.StreamResponse:
        """Drops the first body halfway; answers the first resume with only 10 bytes past
        the partial's end."""
        self.hits["short206"] += 1
        range_header = request.headers.get("Range")
        self.ranges.append(range_header)
        body, half = self.body, len(self.body) // 2
        if self.hits["short206"] == 2 and range_header:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            headers = {"Content-Range": f"bytes {start}-{half + 9}/{len(body)}"}
            return web.Response(status=206, body=body[start : half + 10], headers=headers)
        if self.hits["short206"] == 1:
            return await self._drop_halfway(request, body, half, {})
        start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header else 0
        headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
        return web.Response(status=206 if start else 200, body=body[start:], headers=headers)

    async def _etag206(self, request: web.Request) -> web.StreamResponse:
        """ETag "a" and a drop halfway, then a 206 under ETag "b" that ignores If-Range."""
        self.hits["etag206"] += 1
        range_header = request.headers.get("Range")
        self.ranges.append(range_header)
        body = self.body
        if self.hits["etag206"] == 1:
            return await self._drop_halfway(request, body, len(body) // 2, {"ETag": '"a"'})
        start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header else 0
        headers = {"ETag": '"b"'}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        return web.Response(status=206 if start else 200, body=body[start:], headers=headers)

    async def _drop_halfway(
        self, request: web.Request, body: bytes, half: int, headers: dict[str, str]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:half])
        assert request.transport is not None
        request.transport.close()
        return resp

    async def _serve(self, request: web.Request, name: str) -> web.StreamResponse:
        """Serve `body` with Range support; the first response misbehaves as `name` says."""
        self.hits[name] += 1
        first = self.hits[name] == 1
        range_header = request.headers.get("Range")
        self.ranges.append(range_header)
        start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header else 0
        body = self.body
        resp = web.StreamResponse(status=206 if start else 200)
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        resp.content_length = len(body) - start
        await resp.prepare(request)
        if first:
            await resp.write(body[: len(body) // 2])
            if name == "reset":  # abort with a TCP RST instead of a FIN
                transport = request.transport
                assert transport is not None
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
                return resp
            await self.release.wait()  # stall until the test is over
            return resp
        await resp.write(body[start:])
        return resp


#: Every chunk goes to the two helper threads, whatever this machine's CPU count.
HELPERS = OffloadPolicy(threads=2, jobs=8, min_chunk=1)
