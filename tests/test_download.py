"""Acceptance tests for the streaming bulk downloader, against FakeVobiz on 127.0.0.1.

Every test goes through the public surface (`session.recordings.download` /
`download_many`) and the real connector, stream reader and file system. A few cases the fake
cannot script (a redirect loop, a redirect to `file:`, an https→http downgrade, a body that
stalls) use `Scripted`, a tiny aiohttp app of this file, also bound to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import random
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Self

import aiohttp
import attrs
import pytest
from _waiting import eventually
from aiohttp import web

from vobiz_async import (
    APIConnectionError,
    APIStatusError,
    AsyncSession,
    AuthenticationError,
    DiskError,
    DownloadReport,
    DownloadResult,
    DownloadStatus,
    IntegrityError,
    InvalidRecordingIdError,
    NotFoundError,
    PermissionDeniedError,
    ProgressEvent,
    ProgressKind,
    Recording,
    ServerError,
    UnsafeURLError,
)
from vobiz_async import download as download_module
from vobiz_async import offload as offload_module
from vobiz_async.download import RESUME_OVERLAP, Downloader
from vobiz_async.manifest import Manifest
from vobiz_async.offload import OffloadPolicy
from vobiz_async.sinks import directory as directory_module
from vobiz_async.sinks.directory import VALIDATOR_SUFFIX
from vobiz_async.testing import FakeVobiz, RequestRecord

FINAL_SUFFIXES = (".mp3", ".wav")


# --------------------------------------------------------------------------- helpers


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


class _PartFile:
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


def wrap_part_files(monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Any], _PartFile]) -> None:
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


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=0) as fake:
        yield fake


@pytest.fixture(name="dest")
def _dest(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture(name="scripted")
async def _scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture(name="tls_context")
def _tls_context(tmp_path: Path) -> ssl.SSLContext:
    """A server-side TLS context with a throwaway self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(  # noqa: S603 - a fixed argument list, no shell
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture(name="batch")
async def _batch(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> tuple[FakeVobiz, Path, DownloadReport]:
    """A clean batch over the pager: sizes around the fake's block and the read size."""
    for size in (1, 100, 65_535, 65_536, 65_537, 262_144, 262_145, 700_000):
        fake.add_recording(size=size)
    fake.add_recording(size=120_000, container="wav")
    fake.add_recording(size=90_000, container="wav", recording_format="mp3")
    fake.add_recording(size=90_000, redirect_foreign=True)
    report = await session.recordings.download_many(session.recordings.list(), dest)
    return fake, dest, report


# --------------------------------------------------------------------------- a clean batch


async def test_batch_files_match_served_bytes(
    batch: tuple[FakeVobiz, Path, DownloadReport],
) -> None:
    """Every downloaded file's sha256 equals the fake's, on disk and in the result."""
    fake, _, report = batch

    assert len(report.results) == len(fake.recording_ids)
    for result in report.results:
        assert_verified(fake, result)


async def test_batch_leaves_no_debris(batch: tuple[FakeVobiz, Path, DownloadReport]) -> None:
    """After a successful batch dest holds exactly one final file per recording."""
    fake, dest, report = batch

    expected = {r.path.relative_to(dest).as_posix() for r in report.results if r.path}
    assert tree(dest) == expected
    assert len(expected) == len(fake.recording_ids)
    assert not any(name.endswith(".part") for name in tree(dest))


async def test_batch_report_counts(batch: tuple[FakeVobiz, Path, DownloadReport]) -> None:
    """The report is ok, in input order, and its counts and total_bytes add up."""
    fake, _, report = batch

    assert report.ok
    assert [r.recording_id for r in report.results] == fake.recording_ids
    assert len(report.downloaded) == len(fake.recording_ids)
    assert report.skipped == report.failed == []
    assert report.total_bytes == sum(fake.size(rid) for rid in fake.recording_ids)
    assert report.elapsed > 0


async def test_empty_recording_saved_as_empty_file(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A zero-byte recording is saved as an empty file named from recording_format."""
    (rid,) = add(fake, size=0)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.path == dest / f"{rid}.mp3"
    assert result.path.read_bytes() == b""
    assert result.sha256 == hashlib.sha256(b"").hexdigest()


# --------------------------------------------------------------------------- faults and retries


async def test_mid_body_drop_resumes_with_range(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A connection dropped mid-body resumes with a Range request and verifies."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "drop")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.attempts == 2
    assert [r.status for r in media(fake)] == [200, 206]


async def test_short_body_is_retried(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """A body shorter than its Content-Length is detected and fetched again."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "short")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.attempts == 2


async def test_short_body_never_renamed(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """With no attempt left, a short body fails the item and never gets a final name."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "short")

    result = await session.recordings.download(recording(fake, rid), dest, max_attempts=1)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, IntegrityError | APIConnectionError)
    assert not any(name.endswith(FINAL_SUFFIXES) for name in tree(dest))


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_statuses_retried(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """429 and 503 with `Retry-After: 0` are retried, then the download succeeds."""
    (rid,) = add(fake)
    fake.media_fault(rid, "status", status=status, retry_after=0, times=2)

    with caplog.at_level("DEBUG", logger="vobiz_async"):
        result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.attempts == 3
    assert [r.status for r in media(fake)] == [status, status, 200]
    waits = [m for r in caplog.records if (m := r.getMessage()).startswith(f"retrying {rid}")]
    assert [w.split(" in ", 1)[1].split(":")[0] for w in waits] == ["0.00s"] * 2  # not backoff


async def test_server_error_then_success(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A 500 is retried with backoff and the next attempt's file verifies."""
    (rid,) = add(fake)
    fake.media_fault(rid, "status", status=500)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.attempts == 2
    assert [r.status for r in media(fake)] == [500, 200]


async def test_no_range_support_restarts(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A 200 answer to a Range request restarts the file from zero and still verifies."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "drop")
    fake.media_fault(rid, "no_range")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.attempts == 2
    assert [r.status for r in media(fake)] == [200, 200]


async def test_changed_etag_restarts(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """An ETag that changes between attempts (If-Range mismatch, full 200) still verifies."""
    (rid,) = add(fake, size=400_000)
    old_etag = fake.etag(rid)
    fake.media_fault(rid, "drop")
    fake.media_fault(rid, "etag_change")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert fake.etag(rid) != old_etag
    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [200, 200]


async def test_exhausted_attempts_fail_typed(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """When max_attempts run out the item fails with a typed error and no final file."""
    (rid,) = add(fake)
    fake.media_fault(rid, "status", status=503, retry_after=0, times=10)

    result = await session.recordings.download(recording(fake, rid), dest, max_attempts=3)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, ServerError)
    assert result.error.status_code == 503
    assert result.attempts == 3
    assert len(media(fake)) == 3
    assert not any(name.endswith(FINAL_SUFFIXES) for name in tree(dest))


async def test_exhausted_drops_keep_only_part(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Drops until max_attempts run out: APIConnectionError, a `.part`, no final file."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "drop", times=5)

    result = await session.recordings.download(recording(fake, rid), dest, max_attempts=2)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, APIConnectionError)
    assert result.attempts == 2
    # The partial, and the ETag of the version it came from, for a later run's If-Range.
    assert tree(dest) == {f"{rid}.part", f"{rid}.part{VALIDATOR_SUFFIX}"}


async def test_stalled_body_is_retried(fake: FakeVobiz, scripted: Scripted, dest: Path) -> None:
    """A body that stalls past the read timeout is a retryable transfer error, not a disk one."""
    rid = fake.add_recording(recording_url=scripted.url("/stall.mp3")).recording_id

    async with AsyncSession(**fake.session_kwargs(), read_timeout=0.5) as session:
        result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert result.attempts == 2
    assert result.path is not None
    assert result.path.read_bytes() == scripted.body
    # No ETag: the resume asks for the partial's tail again, to prove it continues it.
    assert scripted.ranges == [None, f"bytes={overlap_start(len(scripted.body) // 2)}-"]


async def test_connection_reset_mid_body_is_retried(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A TCP reset mid-body is a retryable transfer error: the next attempt resumes."""
    rid = fake.add_recording(recording_url=scripted.url("/reset.mp3")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert result.path is not None
    assert result.path.read_bytes() == scripted.body
    assert result.attempts == 2


async def test_oversized_part_restarts_after_416(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A leftover `.part` longer than the recording, without a validator, fails the overlap
    check of its resume, restarts, and verifies."""
    (rid,) = add(fake)
    write_part(dest, rid, b"\0" * (fake.size(rid) + 10))

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [206, 200]
    assert tree(dest) == {f"{rid}.mp3"}


async def test_part_from_earlier_run_sends_if_range(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A `.part` left by an earlier run resumes only if its ETag still matches (If-Range)."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "drop")
    first = await session.recordings.download(recording(fake, rid), dest, max_attempts=1)
    assert first.status is DownloadStatus.FAILED
    assert (dest / f"{rid}.part").stat().st_size == fake.size(rid) // 2
    fake.media_fault(rid, "etag_change")
    fake.stats.reset()

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [200]  # If-Range mismatch: the full body


async def test_part_from_earlier_run_resumed(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A `.part` left by an earlier failed run is resumed with a Range request."""
    (rid,) = add(fake, size=400_000)
    fake.media_fault(rid, "drop")
    await session.recordings.download(recording(fake, rid), dest, max_attempts=1)
    fake.stats.reset()

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [206]
    assert fake.stats.media_bytes_sent == fake.size(rid) - fake.size(rid) // 2


@pytest.mark.parametrize("fsync", [True, False])
async def test_fsync_option(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    monkeypatch: pytest.MonkeyPatch,
    fsync: bool,
) -> None:
    """fsync=True flushes each `.part` before its rename and then its folder; False, nothing."""
    rids = add(fake, 2)
    flushed: list[Path] = []  # what each os.fsync reached, by the name it had at that moment
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        flushed.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)

    report = await session.recordings.download_many(
        [recording(fake, rid) for rid in rids], dest, fsync=fsync
    )

    for result in report.results:
        assert_verified(fake, result)
    under_dest = [p for p in flushed if p.is_relative_to(dest)]
    if not fsync:
        assert under_dest == []
        return
    for rid in rids:
        part = dest / f"{rid}.part"
        assert part in under_dest, f"{rid}: its .part was not flushed before the rename"
        assert dest in under_dest[under_dest.index(part) :], f"{rid}: folder not flushed after"


# --------------------------------------------------------------------------- redirects


async def test_untrusted_recording_url_gets_no_credentials(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A recording_url on a host that is not trusted never receives credentials."""
    (target,) = add(fake)
    url = fake.recording_url(target).replace("127.0.0.1", "localhost")
    rid = fake.add_recording(recording_url=url).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    to_localhost = [r for r in fake.stats.requests if r.host.startswith("localhost")]
    assert to_localhost
    assert not any(r.credentials for r in to_localhost)
    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, AuthenticationError)
    assert tree(dest) == set()


async def test_foreign_redirect_drops_credentials(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A redirect to the foreign storage host is followed without credentials."""
    (rid,) = add(fake, redirect_foreign=True)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert fake.stats.foreign_requests == 1
    assert fake.stats.foreign_credentials_seen == 0
    sent = {(r.operation, r.credentials) for r in media(fake)}
    assert sent == {("media", True), ("storage", False)}


async def test_multi_hop_redirect_followed(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Same-host hops and then a foreign hop are followed; credentials stay home."""
    (rid,) = add(fake, extra_hops=3, redirect_foreign=True)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert len(media(fake)) == 5
    assert fake.stats.foreign_credentials_seen == 0


async def test_ten_redirects_followed(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """Exactly ten redirects are still followed."""
    (rid,) = add(fake, extra_hops=10)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert len(media(fake)) == 11


async def test_eleven_redirects_fail(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """More than ten redirects fail the item with UnsafeURLError and write nothing."""
    (rid,) = add(fake, extra_hops=11)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert len(media(fake)) == 11
    assert tree(dest) == set()


async def test_redirect_loop_fails(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A redirect loop stops after ten hops with UnsafeURLError."""
    rid = fake.add_recording(recording_url=scripted.url("/loop")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert scripted.hits["loop"] == 11
    assert tree(dest) == set()


async def test_redirect_to_file_url_refused(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A redirect to a `file:` URL fails the item with UnsafeURLError."""
    rid = fake.add_recording(
        recording_url=scripted.url("/redirect?to=file:///etc/passwd")
    ).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert tree(dest) == set()


async def test_https_to_http_downgrade_refused(
    fake: FakeVobiz, tls_context: ssl.SSLContext, dest: Path
) -> None:
    """An https URL that redirects to http is refused before the http URL is fetched."""
    (target,) = add(fake)
    server = Scripted()
    await server.start(tls=tls_context)
    try:
        url = server.tls_url(f"/redirect?to={fake.recording_url(target)}")
        rid = fake.add_recording(recording_url=url).recording_id
        connector = aiohttp.TCPConnector(ssl=False)  # the certificate is self-signed
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            AsyncSession(**fake.session_kwargs(), http_session=http) as session,
        ):
            result = await session.recordings.download(recording(fake, rid), dest)
    finally:
        await server.close()

    assert server.hits["redirect"] == 1
    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert media(fake) == []
    assert tree(dest) == set()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.mp3"])
async def test_non_http_url_refused(
    fake: FakeVobiz, session: AsyncSession, dest: Path, url: str
) -> None:
    """A `file:` or `ftp:` recording_url fails with UnsafeURLError; nothing fetched or written."""
    (good,) = add(fake)
    bad = fake.add_recording(recording_url=url).recording_id

    report = await session.recordings.download_many(
        [recording(fake, bad), recording(fake, good)], dest
    )

    failed, ok = report.results
    assert failed.status is DownloadStatus.FAILED
    assert isinstance(failed.error, UnsafeURLError)
    assert_verified(fake, ok)
    assert [r.path for r in media(fake)] == [f"/media/{good}.mp3"]
    assert tree(dest) == {f"{good}.mp3"}


# --------------------------------------------------------------------------- stale URLs


async def test_expired_url_repaired_by_one_get(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A refused media URL is repaired by exactly one fresh get() of the recording."""
    (rid,) = add(fake)
    fake.media_fault(rid, "expired")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert gets(fake) == 1
    assert [r.status for r in media(fake)] == [403, 200]


async def test_second_refusal_fails_typed(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """When the fresh URL is refused too, the item fails with a typed APIStatusError."""
    (rid,) = add(fake)
    fake.media_fault(rid, "expired", times=2)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, PermissionDeniedError)
    assert isinstance(result.error, APIStatusError)
    assert result.error.status_code == 403
    assert gets(fake) == 1
    assert tree(dest) == set()


# --------------------------------------------------------------------------- names


async def test_wav_bytes_under_mp3_saved_as_wav(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """WAV bytes the API calls mp3 land as `<id>.wav` with container "wav"."""
    (rid,) = add(fake, container="wav", recording_format="mp3")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.path == dest / f"{rid}.wav"
    assert result.container == "wav"


async def test_mp3_bytes_under_wav_saved_as_mp3(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """MP3 bytes the API calls wav land as `<id>.mp3`: the bytes win over the claim."""
    (rid,) = add(fake, container="mp3", recording_format="wav")

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert result.path == dest / f"{rid}.mp3"
    assert result.container == "mp3"


async def test_id3_and_frame_sync_sniffed_as_mp3(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """MP3 starting with `ID3` and MP3 starting with frame sync `FF E3` are both mp3."""
    rids = add(fake, 10, container="mp3", recording_format="wav")
    id3 = [rid for rid in rids if fake.body(rid).startswith(b"ID3")]
    sync = [rid for rid in rids if fake.body(rid).startswith(b"\xff\xe3")]
    assert id3
    assert sync

    report = await session.recordings.download_many([recording(fake, r) for r in rids], dest)

    for result in report.results:
        assert_verified(fake, result)
        assert result.container == "mp3"
        assert result.path == dest / f"{result.recording_id}.mp3"


HOSTILE_IDS = [
    "../../x",
    "/abs",
    "....",
    "..",
    "a\x00b",
    "x" * 300,
    "a/b",
    "..\\..\\y",
    "line\nbreak",
]


async def test_hostile_ids_never_escape_dest(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Hostile ids from the listing fail with InvalidRecordingIdError before any request of
    their own, nothing escapes dest, and the rest succeed."""
    dest = tmp_path / "deep" / "er" / "archive"
    good = add(fake, 3)
    for hostile in HOSTILE_IDS:
        fake.add_recording(hostile, size=2_000)
    watched = (tmp_path.parent, Path("/"))
    before = snapshot(*watched)

    report = await session.recordings.download_many(session.recordings.list(), dest)

    new = snapshot(*watched) - before
    escaped = {p for p in new if not p.is_relative_to(dest) and not dest.is_relative_to(p)}
    assert escaped == set()  # only dest itself, its parents and what is inside it are new
    by_id = {r.recording_id: r for r in report.results}
    assert set(by_id) == {*good, *HOSTILE_IDS}
    for rid in good:
        assert_verified(fake, by_id[rid])
    for hostile in HOSTILE_IDS:
        result = by_id[hostile]
        assert result.status is DownloadStatus.FAILED, hostile
        assert isinstance(result.error, InvalidRecordingIdError), hostile
        assert result.path is None
    assert {r.operation for r in fake.stats.requests} == {"list", "media"}
    assert len(media(fake)) == len(good)
    assert tree(dest) == {by_id[rid].path.name for rid in good if by_id[rid].path}


async def test_hostile_id_strings_fail_without_requests(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Hostile id strings fail with InvalidRecordingIdError and cause no request at all."""
    report = await session.recordings.download_many(["../../x", "/abs", "...."], dest)

    assert [r.status for r in report.results] == [DownloadStatus.FAILED] * 3
    assert all(isinstance(r.error, InvalidRecordingIdError) for r in report.results)
    assert fake.stats.requests == []
    assert tree(dest) == set()


async def test_date_layout(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """layout="date" files a recording under YYYY/MM/DD of its add_time, inside dest."""
    rid = fake.add_recording(size=5_000, add_time="2024-02-29 12:00:00.5+05:30").recording_id

    result = await session.recordings.download(recording(fake, rid), dest, layout="date")

    assert_verified(fake, result)
    assert result.path == dest / "2024" / "02" / "29" / f"{rid}.mp3"
    assert tree(dest) == {f"2024/02/29/{rid}.mp3"}


# --------------------------------------------------------------------------- cancellation


async def test_cancel_keeps_part_and_rerun_resumes(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Cancelling mid-transfer re-raises, keeps the `.part`, and a re-run resumes it."""
    (rid,) = add(fake, size=1_000_000)
    fake.media_fault(rid, "slow")
    received: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.kind is ProgressKind.BYTES:
            received.append(event.bytes)

    task = asyncio.create_task(
        session.recordings.download_many([recording(fake, rid)], dest, on_progress=on_progress)
    )
    assert await eventually(lambda: sum(received) >= 40_000)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    part = dest / f"{rid}.part"
    assert tree(dest) == {part.name, part.name + VALIDATOR_SUFFIX}
    assert 0 < part.stat().st_size < fake.size(rid)
    assert await eventually(lambda: fake.stats.media_in_flight == 0)  # the connection closed

    fake.stats.reset()
    report = await session.recordings.download_many([recording(fake, rid)], dest)

    (result,) = report.results
    assert_verified(fake, result)
    assert [r.status for r in media(fake)] == [206]
    assert tree(dest) == {f"{rid}.mp3"}


class _GatedFile(_PartFile):
    """A `.part` file whose first write from a helper thread waits for `gate`."""

    def __init__(self, file: Any, entered: threading.Event, gate: threading.Event) -> None:
        super().__init__(file)
        self._entered = entered
        self._gate = gate
        self.closed_during_write = False

    def write(self, data: bytes) -> int:
        if threading.current_thread() is not threading.main_thread() and not self._entered.is_set():
            self._entered.set()
            self._gate.wait(10)
            self.closed_during_write = self._file.closed
        return super().write(data)


#: Every chunk goes to the two helper threads, whatever this machine's CPU count.
HELPERS = OffloadPolicy(threads=2, jobs=8, min_chunk=1)


async def test_cancel_waits_for_the_helper_thread_writing(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled while a helper writes a chunk: the file stays open until that write ends,
    the `.part` holds a prefix of the body, and a re-run resumes it to the right sha256."""
    (rid,) = add(fake, size=2_000_000)
    entered, gate = threading.Event(), threading.Event()
    files: list[_GatedFile] = []

    def gated(file: Any) -> _GatedFile:
        files.append(_GatedFile(file, entered, gate))
        return files[-1]

    wrap_part_files(monkeypatch, gated)
    downloader = Downloader(session, dest, lookup=session.recordings.get, offload=HELPERS)
    task = asyncio.create_task(downloader.run([recording(fake, rid)]))
    assert await eventually(entered.is_set)
    task.cancel()
    await asyncio.sleep(0.2)
    assert not task.done()  # settling: the helper still holds a chunk of this file
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not files[0].closed_during_write
    part = dest / f"{rid}.part"
    assert tree(dest) == {part.name, part.name + VALIDATOR_SUFFIX}
    written = part.read_bytes()
    assert 0 < len(written) < fake.size(rid)
    assert fake.body(rid).startswith(written)

    monkeypatch.undo()
    report = await session.recordings.download_many([recording(fake, rid)], dest)
    (result,) = report.results
    assert_verified(fake, result)


@pytest.mark.parametrize(("concurrency", "helped"), [(1, False), (4, True)])
async def test_only_concurrent_transfers_hand_chunks_to_helpers(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    monkeypatch: pytest.MonkeyPatch,
    concurrency: int,
    helped: bool,
) -> None:
    """A lone transfer writes on the loop (a hand-over would only make it wait); several
    in flight write on helper threads too."""
    writers: set[str] = set()

    class Watched(_PartFile):
        def write(self, data: bytes) -> int:
            writers.add(threading.current_thread().name)
            return super().write(data)

    wrap_part_files(monkeypatch, Watched)
    rids = add(fake, 4, size=1_000_000)

    downloader = Downloader(
        session, dest, lookup=session.recordings.get, concurrency=concurrency, offload=HELPERS
    )
    report = await downloader.run([recording(fake, rid) for rid in rids])

    assert report.ok
    assert any(name.startswith("vobiz-hash") for name in writers) is helped


@pytest.mark.parametrize(
    ("threads", "jobs", "smallest"),
    [(0, 0, 1), (2, 1, 1), (2, 8, 1), (2, 8, 128 * 1024)],
    ids=["on-the-loop", "one-job-out", "all-to-helpers", "big-chunks-to-helpers"],
)
async def test_multi_chunk_files_land_whole_however_chunks_are_written(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    threads: int,
    jobs: int,
    smallest: int,
) -> None:
    """Chunks written on the loop, on helper threads, or on both keep each file in order."""
    rids = add(fake, 12, size=1_500_000)
    policy = OffloadPolicy(threads=threads, jobs=jobs, min_chunk=smallest)

    downloader = Downloader(
        session, dest, lookup=session.recordings.get, concurrency=6, offload=policy
    )
    report = await downloader.run([recording(fake, rid) for rid in rids])

    assert report.ok
    assert len(report.downloaded) == 12
    for result in report.downloaded:
        assert_verified(fake, result)


# --------------------------------------------------------------------------- scale and bounds


async def test_thousand_recordings_bounded_without_fd_leak(tmp_path: Path) -> None:
    """1,000 small recordings at concurrency 32: all ok, <= 32 in flight, no fd leaked."""
    async with FakeVobiz(recordings=0, seed=1, media_latency=0.005) as fake:
        for _ in range(1_000):
            fake.add_recording(size=2_000)
        fds_before = len(os.listdir("/proc/self/fd"))

        async with AsyncSession(**fake.session_kwargs()) as session:
            report = await session.recordings.download_many(
                session.recordings.list(), tmp_path / "archive", concurrency=32
            )

        # The fake serves from this process: its side of each connection closes once it
        # reads the client's FIN, a few loop iterations after the session has closed.
        settled = await eventually(lambda: len(os.listdir("/proc/self/fd")) <= fds_before)
        fds_after = len(os.listdir("/proc/self/fd"))

        assert report.ok
        assert len(report.downloaded) == 1_000
        assert 1 < fake.stats.media_in_flight_max <= 32
        assert settled, f"{fds_after - fds_before} file descriptors leaked"
        assert fds_after == fds_before
        assert len(tree(tmp_path / "archive")) == 1_000


async def test_concurrency_bound_observed(tmp_path: Path) -> None:
    """With concurrency=4 and slow responses, exactly four media requests overlap at most."""
    async with FakeVobiz(recordings=0) as fake:
        rids = add(fake, 16, size=2_000_000)
        for rid in rids:  # trickled: a transfer holds its slot until the batch is cancelled
            fake.media_fault(rid, "slow")
        async with AsyncSession(**fake.session_kwargs()) as session:
            batch = asyncio.create_task(
                session.recordings.download_many(
                    [recording(fake, rid) for rid in rids], tmp_path, concurrency=4
                )
            )
            filled = await eventually(lambda: fake.stats.media_in_flight == 4)
            assert await eventually(lambda: fake.stats.media_bytes_sent > 4 * 10_000)
            batch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await batch

    assert filled
    assert fake.stats.media_requests == 4  # no fifth while four held their slots
    assert fake.stats.media_in_flight_max == 4


# --------------------------------------------------------------------------- re-runs


async def test_rerun_skips_without_media_requests(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A second download_many skips every saved recording and makes no media request."""
    rids = add(fake, 5)
    add(fake, 1, container="wav", recording_format="mp3")
    await session.recordings.download_many(session.recordings.list(), dest)
    before = fake.stats.media_requests

    report = await session.recordings.download_many(session.recordings.list(), dest)

    assert len(report.skipped) == len(rids) + 1
    assert report.ok
    assert report.total_bytes == 0
    assert fake.stats.media_requests == before


async def test_rerun_of_id_strings_makes_no_request(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Re-running with id strings skips saved files without any request at all."""
    rids = add(fake, 3)
    await session.recordings.download_many(rids, dest)
    fake.stats.reset()

    report = await session.recordings.download_many(rids, dest)

    assert [r.status for r in report.results] == [DownloadStatus.SKIPPED] * 3
    assert fake.stats.requests == []


async def test_overwrite_refetches(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """overwrite=True downloads saved recordings again."""
    rids = add(fake, 3)
    await session.recordings.download_many(session.recordings.list(), dest)
    (dest / f"{rids[0]}.mp3").write_bytes(b"tampered")
    before = fake.stats.media_requests

    report = await session.recordings.download_many(session.recordings.list(), dest, overwrite=True)

    assert len(report.downloaded) == 3
    assert fake.stats.media_requests == before + 3
    for result in report.results:
        assert_verified(fake, result)


async def test_batch_raises_the_mmap_threshold_first(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A batch frees the block that keeps read buffers on the heap (test_download_memory)."""
    offload_module.raise_mmap_threshold.cache_clear()
    add(fake)

    await session.recordings.download_many(session.recordings.list(), dest)

    assert offload_module.raise_mmap_threshold.cache_info().currsize == 1


# --------------------------------------------------------------------------- manifest


def manifest_lines(path: Path) -> list[dict[str, Any]]:
    """The index's entries, read by a fresh `Manifest`, as the dicts its export prints."""
    with Manifest(path) as manifest:
        return [attrs.asdict(entry) for entry in manifest]


async def test_manifest_line_per_download(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """The manifest gets one entry per downloaded recording: id, path, size, sha256."""
    rids = add(fake, 4)
    manifest = tmp_path / "manifest.jsonl"

    report = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=manifest
    )

    assert report.ok
    lines = manifest_lines(manifest)
    assert sorted(line["recording_id"] for line in lines) == sorted(rids)
    for line in lines:
        rid = line["recording_id"]
        assert line["path"] == f"{rid}.mp3"
        assert line["size"] == fake.size(rid)
        assert line["sha256"] == fake.sha256(rid)
        assert file_sha256(dest / line["path"]) == line["sha256"]


async def test_callers_manifest_knows_the_new_entries(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """A Manifest the caller passes in holds this batch's entries afterwards."""
    rids = add(fake, 3)

    with Manifest(tmp_path / "manifest.jsonl") as manifest:
        await session.recordings.download_many(session.recordings.list(), dest, manifest=manifest)

        assert sorted(e.recording_id for e in manifest) == sorted(rids)
        assert all(e.sha256 == fake.sha256(e.recording_id) for e in manifest)


async def test_own_manifest_keeps_no_entries_in_memory(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A manifest the batch opens from a path is written and closed, holding no entries."""
    opened: list[Manifest] = []

    class Watched(Manifest):
        def __init__(self, path: str | os.PathLike[str]) -> None:
            super().__init__(path)
            opened.append(self)

    monkeypatch.setattr(download_module, "Manifest", Watched)
    rids = add(fake, 3)
    path = tmp_path / "manifest.jsonl"

    await session.recordings.download_many(session.recordings.list(), dest, manifest=path)

    assert [manifest._db for manifest in opened] == [None]  # closed when the batch ended
    assert sorted(line["recording_id"] for line in manifest_lines(path)) == sorted(rids)


async def test_repeated_id_with_own_manifest_fetched_once(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """With a manifest opened from a path, an id repeated later in the batch is skipped."""
    rids = add(fake, 2)

    report = await session.recordings.download_many(
        [*rids, rids[0]], dest, manifest=tmp_path / "manifest.jsonl", concurrency=1
    )

    statuses = [r.status for r in report.results]
    assert statuses == [DownloadStatus.DOWNLOADED] * 2 + [DownloadStatus.SKIPPED]
    assert len(media(fake)) == 2


async def test_repeated_id_with_stale_manifest_entry_fetched_once(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """An id whose old manifest entry no longer matches is fetched once, even when repeated."""
    rid = add(fake)[0]
    manifest = tmp_path / "manifest.jsonl"
    with Manifest(manifest) as old:
        old.record(rid, f"{rid}.mp3", size=1, sha256="0" * 64, container="mp3", add_time=None)

    report = await session.recordings.download_many(
        [rid, rid], dest, manifest=manifest, concurrency=1
    )

    assert [r.status for r in report.results] == [DownloadStatus.DOWNLOADED, DownloadStatus.SKIPPED]
    assert len(media(fake)) == 1
    assert file_sha256(dest / f"{rid}.mp3") == fake.sha256(rid)


async def test_manifest_rerun_skips(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """A re-run with the manifest skips everything, adds no entry, and fetches nothing."""
    add(fake, 4)
    manifest = tmp_path / "manifest.jsonl"
    await session.recordings.download_many(session.recordings.list(), dest, manifest=manifest)
    text = manifest_lines(manifest)
    before = fake.stats.media_requests

    report = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=manifest
    )

    assert len(report.skipped) == 4
    assert all(r.sha256 == fake.sha256(r.recording_id) for r in report.skipped)
    assert fake.stats.media_requests == before
    assert manifest_lines(manifest) == text


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
async def test_manifest_entry_with_damaged_file_refetched(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path, damage: str
) -> None:
    """A manifest entry whose file was deleted or truncated is fetched again."""
    rids = add(fake, 3)
    manifest = tmp_path / "manifest.jsonl"
    await session.recordings.download_many(session.recordings.list(), dest, manifest=manifest)
    victim = dest / f"{rids[1]}.mp3"
    if damage == "deleted":
        victim.unlink()
    else:
        with victim.open("r+b") as f:
            f.truncate(1_000)
    fake.stats.reset()

    report = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=manifest
    )

    statuses = {r.recording_id: r.status for r in report.results}
    assert statuses[rids[1]] is DownloadStatus.DOWNLOADED
    assert [s for rid, s in statuses.items() if rid != rids[1]] == [DownloadStatus.SKIPPED] * 2
    assert len(media(fake)) == 1
    assert file_sha256(victim) == fake.sha256(rids[1])


async def test_manifest_torn_last_line_tolerated(
    fake: FakeVobiz, session: AsyncSession, dest: Path, tmp_path: Path
) -> None:
    """A JSON Lines manifest with a torn last line is imported: earlier entries are kept
    (their recordings skipped), new entries are added, the old file stays as a backup."""
    first = add(fake, 2)
    manifest = tmp_path / "manifest.jsonl"
    await session.recordings.download_many(session.recordings.list(), dest, manifest=manifest)
    legacy = b"".join(json.dumps(line).encode() + b"\n" for line in manifest_lines(manifest))
    manifest.write_bytes(legacy + b'{"recording_id": "torn", "pa')  # as an older version
    later = add(fake, 1)
    fake.stats.reset()

    report = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=manifest
    )

    statuses = {r.recording_id: r.status for r in report.results}
    assert [statuses[rid] for rid in first] == [DownloadStatus.SKIPPED] * 2
    assert statuses[later[0]] is DownloadStatus.DOWNLOADED
    assert len(media(fake)) == 1
    readable = [line["recording_id"] for line in manifest_lines(manifest)]
    assert sorted(readable) == sorted([*first, *later])
    assert manifest.with_name("manifest.jsonl.bak").read_bytes().startswith(legacy)


# --------------------------------------------------------------------------- inputs


async def test_id_strings_resolved_with_one_get_each(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Id strings are resolved with exactly one get() each, then downloaded."""
    rids = add(fake, 4)

    report = await session.recordings.download_many(rids, dest)

    assert report.ok
    for result in report.results:
        assert_verified(fake, result)
    assert gets(fake) == 4
    assert fake.stats.api_requests == 4


async def test_missing_id_fails_not_found(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A missing id fails with NotFoundError while the other ids download."""
    rids = add(fake, 2)
    missing = "00000000-0000-4000-8000-000000000000"

    report = await session.recordings.download_many([rids[0], missing, rids[1]], dest)

    first, gone, last = report.results
    assert gone.recording_id == missing
    assert gone.status is DownloadStatus.FAILED
    assert isinstance(gone.error, NotFoundError)
    assert_verified(fake, first)
    assert_verified(fake, last)
    assert not report.ok
    assert report.failed == [gone]


async def test_failing_item_does_not_sink_batch(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Media that answers 404 for good fails one item after one refresh; the rest succeed."""
    rids = add(fake, 6)
    doomed = rids[2]
    fake.media_fault(doomed, "status", status=404, times=100)

    report = await session.recordings.download_many(session.recordings.list(), dest)

    by_id = {r.recording_id: r for r in report.results}
    assert isinstance(by_id[doomed].error, NotFoundError)
    assert gets(fake) == 1  # one refresh of the stale URL, then give up
    assert [r.recording_id for r in report.failed] == [doomed]
    for rid in rids:
        if rid != doomed:
            assert_verified(fake, by_id[rid])


async def test_duplicate_input_downloaded_once(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """The same recording given twice is fetched once and never fails the batch."""
    (rid,) = add(fake)

    report = await session.recordings.download_many([rid, rid], dest)

    assert report.ok
    assert len(report.results) == 2
    assert len(media(fake)) == 1
    assert tree(dest) == {f"{rid}.mp3"}


async def test_repeated_input_after_completion_is_skipped(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A recording repeated after its first copy finished is skipped, not fetched again."""
    (rid,) = add(fake)
    rec = recording(fake, rid)

    report = await session.recordings.download_many([rec, rec], dest, concurrency=1)

    assert [r.status for r in report.results] == [
        DownloadStatus.DOWNLOADED,
        DownloadStatus.SKIPPED,
    ]
    assert len(media(fake)) == 1


async def test_refresh_of_stale_url_that_fails_keeps_attempts(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """When the refreshing get() fails too, the item fails with that error and its attempts."""
    (rid,) = add(fake)
    rec = recording(fake, rid)
    fake.media_fault(rid, "expired")
    fake.api_fault("get", 404)

    result = await session.recordings.download(rec, dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, NotFoundError)
    assert result.attempts == 1
    assert tree(dest) == set()


async def test_source_error_propagates(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """An AuthenticationError from the pager propagates from download_many."""
    add(fake, 3)
    fake.api_fault("list", 401)

    with pytest.raises(AuthenticationError):
        await session.recordings.download_many(session.recordings.list(), dest)

    assert media(fake) == []
    assert not any(name.endswith(FINAL_SUFFIXES) for name in tree(dest))


async def test_source_error_mid_batch_winds_down(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A source that fails while transfers run: the error propagates, no partial finals."""
    done = add(fake, 2, size=3_000)
    slow = add(fake, 3, size=1_000_000)
    for rid in slow:
        fake.media_fault(rid, "slow")
    flowing: set[str] = set()

    def on_progress(event: ProgressEvent) -> None:
        if event.kind is ProgressKind.BYTES:
            flowing.add(event.recording_id)

    async def source() -> AsyncIterator[Recording]:
        for rid in (*done, *slow):
            yield recording(fake, rid)
        assert await eventually(lambda: flowing.issuperset(slow))
        raise AuthenticationError("token rotated", status_code=401)

    with pytest.raises(AuthenticationError, match="token rotated"):
        await session.recordings.download_many(source(), dest, on_progress=on_progress)

    assert_no_partial_finals(fake, dest)
    assert not any((dest / f"{rid}.mp3").exists() for rid in slow)
    assert all((dest / f"{rid}.part").exists() for rid in slow)
    assert await eventually(lambda: fake.stats.media_in_flight == 0)


# --------------------------------------------------------------------------- single download


async def test_download_single_returns_result(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """download() of an id returns a verified DownloadResult."""
    (rid,) = add(fake)

    result = await session.recordings.download(rid, dest)

    assert isinstance(result, DownloadResult)
    assert_verified(fake, result)
    assert result.path == dest / f"{rid}.mp3"
    assert result.container == "mp3"
    assert result.attempts == 1


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ("00000000-0000-4000-8000-000000000000", NotFoundError),
        ("../../x", InvalidRecordingIdError),
    ],
)
async def test_download_single_failure_returned(
    session: AsyncSession, dest: Path, item: str, error: type[Exception]
) -> None:
    """download() returns a failed result with a typed error instead of raising."""
    result = await session.recordings.download(item, dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, error)
    assert result.path is None
    assert not result.ok


async def test_download_single_unsafe_url_returned(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """download() of a `file:` recording returns a failed UnsafeURLError result."""
    rid = fake.add_recording(recording_url="file:///etc/passwd").recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)


async def test_misuse_raises(session: AsyncSession, dest: Path) -> None:
    """Misuse (concurrency 0, max_attempts 0, an unknown layout) raises ValueError."""
    with pytest.raises(ValueError, match="concurrency"):
        await session.recordings.download_many([], dest, concurrency=0)
    with pytest.raises(ValueError, match="max_attempts"):
        await session.recordings.download_many([], dest, max_attempts=0)
    with pytest.raises(ValueError, match="layout"):
        await session.recordings.download_many([], dest, layout="by-month")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- progress


async def test_progress_events(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """on_progress sees started, bytes and finished per file (failed for a failure)."""
    rids = add(fake, 3, size=300_000)
    bad = fake.add_recording(recording_url="file:///etc/passwd").recording_id
    events: list[ProgressEvent] = []

    report = await session.recordings.download_many(
        [recording(fake, rid) for rid in [*rids, bad]], dest, on_progress=events.append
    )

    assert len(report.downloaded) == 3
    for rid in rids:
        kinds = [e.kind for e in events if e.recording_id == rid]
        assert kinds[0] is ProgressKind.STARTED
        assert kinds[-1] is ProgressKind.FINISHED
        assert set(kinds[1:-1]) == {ProgressKind.BYTES}
        assert sum(e.bytes for e in events if e.recording_id == rid) == fake.size(rid)
    assert [e.kind for e in events if e.recording_id == bad][-1] is ProgressKind.FAILED
    failed_event = next(e for e in events if e.kind is ProgressKind.FAILED)
    assert failed_event.result is not None
    assert isinstance(failed_event.result.error, UnsafeURLError)


async def test_progress_callback_error_does_not_fail(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A progress callback that raises does not fail the download."""
    (rid,) = add(fake)

    def explode(event: ProgressEvent) -> None:
        raise RuntimeError("progress bar broke")

    report = await session.recordings.download_many(
        [recording(fake, rid)], dest, on_progress=explode
    )

    assert report.ok


# --------------------------------------------------------------------------- disk errors


async def test_unwritable_dest_fails_with_disk_error(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """An unwritable dest fails every item with DiskError and a clear message."""
    if os.geteuid() == 0:  # root ignores permission bits: a file as parent gives ENOTDIR
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory")
        dest = blocker / "archive"
        reason = os.strerror(errno.ENOTDIR)
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        dest = locked / "archive"
        reason = os.strerror(errno.EACCES)
    rids = add(fake, 3)

    try:
        report = await session.recordings.download_many(
            [recording(fake, rid) for rid in rids], dest
        )
    finally:
        if not dest.parent.is_file():
            dest.parent.chmod(0o700)

    assert len(report.failed) == 3
    for result in report.failed:
        assert isinstance(result.error, DiskError)
        assert reason in str(result.error)
        assert str(dest) in str(result.error)


class _FullFile(_PartFile):
    """A file whose writes fail with ENOSPC once a shared byte budget is spent."""

    def __init__(self, file: Any, budget: list[int]) -> None:
        super().__init__(file)
        self._budget = budget

    def write(self, data: bytes) -> int:
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= len(data)
        return super().write(data)


@pytest.fixture(name="small_disk")
def _small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory with about 1 MB of space: a real tmpfs when we may mount one.

    Otherwise the downloader's `open` is patched so `.part` files fail with ENOSPC after
    1 MB.
    """
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if os.geteuid() == 0 and mount and umount:
        done = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            try:
                yield mount_point
            finally:
                subprocess.run([umount, str(mount_point)], check=True)  # noqa: S603
            return
    budget = [1 << 20]
    wrap_part_files(monkeypatch, lambda file: _FullFile(file, budget))
    yield mount_point


async def test_full_disk_stops_new_transfers(
    fake: FakeVobiz, session: AsyncSession, small_disk: Path
) -> None:
    """On ENOSPC the batch stops starting transfers; the rest fail fast with DiskError."""
    rids = add(fake, 20, size=200_000)
    concurrency = 2

    report = await session.recordings.download_many(
        [recording(fake, rid) for rid in rids], small_disk, concurrency=concurrency
    )

    assert len(report.results) == len(rids)  # one result per input item
    assert 0 < len(report.downloaded) < len(rids)
    assert len(report.failed) == len(rids) - len(report.downloaded)
    assert all(isinstance(r.error, DiskError) for r in report.failed)
    assert any(os.strerror(errno.ENOSPC) in str(r.error) for r in report.failed)
    assert fake.stats.media_requests <= len(report.downloaded) + concurrency
    assert all(r.attempts <= 1 for r in report.failed)  # fast: no retry, no backoff wait
    for result in report.downloaded:
        assert_verified(fake, result)
    assert_no_partial_finals(fake, small_disk)


class _TornWrite(_PartFile):
    """A file whose third write lands half its bytes and then fails with ENOSPC."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes == 3:
            super().write(data[: len(data) // 2])
            self.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


async def test_a_torn_write_fails_and_the_next_run_resumes_whole(
    fake: FakeVobiz, session: AsyncSession, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails halfway fails the item with DiskError, leaves a partial that is a
    prefix of the served bytes, and the next run resumes it to the whole recording."""
    (rid,) = add(fake, size=2_000_000)
    wrap_part_files(monkeypatch, _TornWrite)

    torn = await session.recordings.download(recording(fake, rid), dest)

    assert torn.status is DownloadStatus.FAILED
    assert isinstance(torn.error, DiskError)
    part = dest / f"{rid}.part"
    assert part.read_bytes() == fake.body(rid)[: part.stat().st_size]
    monkeypatch.undo()

    again = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, again)


async def test_a_destination_turning_read_only_stops_new_transfers(
    fake: FakeVobiz, session: AsyncSession, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the folder turns read-only mid-batch, the batch stops starting transfers: one
    EROFS error, then every remaining item is `not started`, not one write error each."""
    rids = add(fake, 12, size=20_000)
    opened = [0]

    def read_only_after_three(file: Any) -> _PartFile:
        opened[0] += 1
        if opened[0] > 3:
            file.close()
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return _PartFile(file)

    wrap_part_files(monkeypatch, read_only_after_three)

    report = await session.recordings.download_many(
        [recording(fake, rid) for rid in rids], dest, concurrency=2
    )

    assert len(report.downloaded) == 3
    errors = [str(r.error) for r in report.failed]
    assert len(errors) == 9
    assert sum(os.strerror(errno.EROFS) in e and "not started" not in e for e in errors) <= 2
    not_started = [e for e in errors if e.startswith("not started: the destination is not")]
    assert len(not_started) >= 7
    assert fake.stats.media_requests <= 3 + 2


# --------------------------------------------------------------------------- review fixes


async def test_no_credentials_to_another_port_on_the_api_host(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """Same host as the API but another port is another origin: it gets no credentials."""
    rid = fake.add_recording(recording_url=scripted.url("/plain.mp3")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert scripted.credentials_seen == 0


@pytest.mark.parametrize(
    ("session_trusts", "option", "credentialed"),
    [("127.0.0.1", "example.invalid", 0), ("example.invalid", "127.0.0.1", 1)],
    ids=["option-distrusts-the-media-host", "option-trusts-the-media-host"],
)
async def test_trusted_hosts_option_reaches_the_downloader(
    fake: FakeVobiz,
    tls_context: ssl.SSLContext,
    dest: Path,
    session_trusts: str,
    option: str,
    credentialed: int,
) -> None:
    """download_many(trusted_hosts=...) replaces the session's domains for media requests."""
    # An https media host, so the domain list alone decides whether credentials go there.
    server = Scripted()
    await server.start(tls=tls_context)
    try:
        rid = fake.add_recording(recording_url=server.tls_url("/plain.mp3")).recording_id
        connector = aiohttp.TCPConnector(ssl=False)  # the certificate is self-signed
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            AsyncSession(
                **fake.session_kwargs(), http_session=http, trusted_hosts=[session_trusts]
            ) as session,
        ):
            report = await session.recordings.download_many(
                [recording(fake, rid)], dest, trusted_hosts=[option]
            )
    finally:
        await server.close()

    assert report.ok, report.failed
    assert server.credentials_seen == credentialed


async def test_short_206_is_resumed_not_finished(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A 206 that stops before the end of the file is resumed, never renamed short."""
    rid = fake.add_recording(recording_url=scripted.url("/short206.mp3")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert result.path is not None
    assert result.path.read_bytes() == scripted.body
    assert result.attempts == 3
    half = len(scripted.body) // 2
    assert scripted.ranges == [
        None,
        f"bytes={overlap_start(half)}-",
        f"bytes={overlap_start(half + 10)}-",
    ]


async def test_206_under_a_new_etag_restarts(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A resume answered under a different ETag (If-Range ignored) starts over from zero."""
    rid = fake.add_recording(recording_url=scripted.url("/etag206.mp3")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert result.path is not None
    assert result.path.read_bytes() == scripted.body
    assert scripted.ranges == [None, f"bytes={len(scripted.body) // 2}-", None]


@pytest.mark.parametrize("url", ["http://[::1", "http:///no-host.mp3"])
async def test_malformed_url_fails_only_its_item(
    fake: FakeVobiz, session: AsyncSession, dest: Path, url: str
) -> None:
    """A recording URL that does not parse fails that item; the rest of the batch lands."""
    bad = fake.add_recording(recording_url=url).recording_id
    (good,) = add(fake)

    report = await session.recordings.download_many(
        [recording(fake, bad), recording(fake, good)], dest
    )

    assert [r.status for r in report.results] == [
        DownloadStatus.FAILED,
        DownloadStatus.DOWNLOADED,
    ]
    assert isinstance(report.results[0].error, UnsafeURLError)


async def test_pool_is_sized_to_the_concurrency(fake: FakeVobiz, dest: Path) -> None:
    """A fresh session's pool grows to the batch's concurrency before the first request."""
    (rid,) = add(fake)
    async with AsyncSession(**fake.session_kwargs(), max_connections=4) as session:
        report = await session.recordings.download_many(
            [recording(fake, rid)], dest, concurrency=32
        )
        assert report.ok
        assert session.http.connector is not None
        assert session.http.connector.limit == 32


async def test_connections_are_reused_across_files(fake: FakeVobiz, dest: Path) -> None:
    """Forty files at concurrency 4 travel over at most four keep-alive connections."""
    rids = add(fake, 40, size=70_000)  # more than one read per body
    async with AsyncSession(**fake.session_kwargs()) as session:
        report = await session.recordings.download_many(
            [recording(fake, rid) for rid in rids], dest, concurrency=4
        )
    assert report.ok
    assert fake.stats.media_requests == 40
    assert 1 <= fake.stats.connections <= 4


async def test_small_existing_pool_is_warned_about(
    fake: FakeVobiz, dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pool already open and smaller than the concurrency is logged, not silently kept."""
    (rid,) = add(fake)
    async with AsyncSession(**fake.session_kwargs(), max_connections=4) as session:
        await session.recordings.list()  # opens the pool at 4
        with caplog.at_level("WARNING", logger="vobiz_async"):
            await session.recordings.download_many([recording(fake, rid)], dest, concurrency=32)
    assert any("below concurrency 32" in r.getMessage() for r in caplog.records)


async def test_skip_removes_a_stale_part(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A .part beside a finished file (an aborted overwrite) is removed when it is skipped."""
    (rid,) = add(fake)
    first = await session.recordings.download_many([recording(fake, rid)], dest)
    assert first.ok
    write_part(dest, rid, b"ID3 stale")

    again = await session.recordings.download_many([recording(fake, rid)], dest)

    assert [r.status for r in again.results] == [DownloadStatus.SKIPPED]
    assert tree(dest) == {f"{rid}.mp3"}
