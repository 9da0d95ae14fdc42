"""Real-world robustness: payloads written by others, encoded bodies, resume without a
validator, private addresses, a nearly full disk, rate limits (issue 12).

Everything runs against servers on 127.0.0.1: the embedded fake, small aiohttp apps of this
file, and nginx where the behaviour under test is nginx's own.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import random
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _nginx import nginx
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from vobiz_async import (
    AsyncSession,
    DiskError,
    DownloadStatus,
    IntegrityError,
    ProgressEvent,
    RateLimitError,
    Recording,
    ResponseValidationError,
    UnsafeURLError,
)
from vobiz_async import batch as batch_module
from vobiz_async.download import RESUME_OVERLAP
from vobiz_async.sinks.directory import VALIDATOR_SUFFIX
from vobiz_async.testing import FakeVobiz


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=0) as fake:
        yield fake


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finals(root: Path) -> list[str]:
    """Recordings saved under a final name in `root`."""
    if not root.exists():
        return []
    return [p.name for p in root.rglob("*") if p.suffix in (".mp3", ".wav")]


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run `app` on 127.0.0.1; yield its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ odd listed objects


async def test_one_bad_object_never_sinks_a_page(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A listing with an unusable object archives every good recording (odd optional fields
    included) and reports the unusable one, by id, as failed."""
    good = fake.add_recording(size=20_000).recording_id
    odd = fake.add_recording(size=20_000, add_time="yesterday at noon").recording_id
    broken = fake.add_recording(size=20_000, extra_fields={"recording_url": None}).recording_id
    nameless = fake.add_recording(size=20_000, extra_fields={"recording_id": None}).recording_id
    pager = session.recordings.list()

    report = await session.recordings.download_many(pager, tmp_path)

    by_id = {r.recording_id: r for r in report.results}
    assert by_id[good].status is DownloadStatus.DOWNLOADED
    assert by_id[odd].status is DownloadStatus.DOWNLOADED
    assert sha256(tmp_path / f"{odd}.mp3") == fake.sha256(odd)
    assert by_id[broken].status is DownloadStatus.FAILED
    assert isinstance(by_id[broken].error, ResponseValidationError)
    assert "recording_url" in str(by_id[broken].error)
    assert nameless not in by_id
    assert [i.recording_id for i in pager.invalid] == [None, broken]


# ------------------------------------------------------------------ rate limits


async def test_a_rate_limit_never_costs_a_recording(tmp_path: Path) -> None:
    """Far over a media host's rate limit, every recording is archived: an honoured
    Retry-After does not use up max_attempts."""
    async with FakeVobiz(recordings=0, media_rate_limit=60, rate_limit_burst=5) as fake:
        for _ in range(80):
            fake.add_recording(size=4_000)
        async with AsyncSession(**fake.session_kwargs()) as session:
            report = await session.recordings.download_many(
                session.recordings.list(limit=100), tmp_path, concurrency=40, max_attempts=2
            )

        assert fake.stats.rate_limited > 0
        assert report.ok, [str(r.error) for r in report.failed]
        assert len(report.downloaded) == 80
        for result in report.downloaded:
            assert result.path is not None
            assert sha256(result.path) == fake.sha256(result.recording_id)


async def test_a_host_that_only_paces_ends_with_a_clear_error(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A host that answers nothing but 429 fails the item once max_paced_wait is spent."""
    rid = fake.add_recording(size=4_000).recording_id
    fake.media_fault(rid, "status", status=429, retry_after=1, times=50)

    result = await session.recordings.download(rid, tmp_path, max_paced_wait=2.5)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, RateLimitError)
    assert result.attempts == 3  # two honoured waits of 1 s, then the bound


# ------------------------------------------------------------------ encoded bodies


def mp3_bytes(size: int, seed: int = 0) -> bytes:
    """Bytes an MP3 sniff recognises (an ID3 tag), then noise."""
    return b"ID3\x04\x00" + random.Random(seed).randbytes(size - 5)


def fake_recording_at(fake: FakeVobiz, url: str) -> Recording:
    """A recording the fake lists, whose media lives at `url` (another server)."""
    rid = fake.add_recording(size=1, recording_url=url).recording_id
    return Recording.from_dict(fake.recordings[rid].wire())


async def test_a_truncated_gzip_body_is_never_saved(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """nginx's `gzip_static always` encodes despite `Accept-Encoding: identity`: a cut .gz
    (whole by its Content-Length) fails; once the .gz is whole, the decoded audio is saved."""
    body = mp3_bytes(2_000_000)
    packed = gzip.compress(body)
    root = tmp_path / "www"
    root.mkdir()
    (root / "rec.mp3.gz").write_bytes(packed[: len(packed) // 2])
    dest = tmp_path / "archive"
    with nginx(root, tmp_path / "nginx", "gzip_static always;") as base:
        rec = fake_recording_at(fake, f"{base}rec.mp3")

        cut = await session.recordings.download(rec, dest, max_attempts=2)

        assert cut.status is DownloadStatus.FAILED
        assert isinstance(cut.error, IntegrityError)
        assert "encoded body ends before its stream" in str(cut.error)
        assert not finals(dest)

        (root / "rec.mp3.gz").write_bytes(packed)
        whole = await session.recordings.download(rec, dest)

    assert whole.status is DownloadStatus.DOWNLOADED
    assert whole.path is not None
    assert whole.path.read_bytes() == body
    assert whole.sha256 == hashlib.sha256(body).hexdigest()


async def test_an_unknown_content_encoding_fails_clearly(
    session: AsyncSession, fake: FakeVobiz, tmp_path: Path
) -> None:
    """A body in an encoding we cannot undo is refused, never saved as audio."""

    async def brotli(request: web.Request) -> web.Response:
        return web.Response(body=b"\x0b\x02\x80abc", headers={"Content-Encoding": "br"})

    app = web.Application()
    app.router.add_get("/r.mp3", brotli)
    async with serve(app) as base:
        result = await session.recordings.download(
            fake_recording_at(fake, f"{base}/r.mp3"), tmp_path
        )

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, IntegrityError)
    assert "unsupported Content-Encoding 'br'" in str(result.error)
    assert not finals(tmp_path)


# ------------------------------------------------------------------ resume


async def test_a_partial_of_an_older_version_is_never_spliced(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A `.part` without a stored validator (copied by `cp`, or from a file system without
    xattrs) whose bytes came from an older version ends as the new version, whole."""
    old, new = mp3_bytes(1_000_000, seed=1), mp3_bytes(1_000_000, seed=2)
    root = tmp_path / "www"
    root.mkdir()
    (root / "rec.mp3").write_bytes(new)
    dest = tmp_path / "archive"
    with nginx(root, tmp_path / "nginx") as base:
        rec = fake_recording_at(fake, f"{base}rec.mp3")
        dest.mkdir()
        (dest / f"{rec.recording_id}.part").write_bytes(old[:600_000])

        result = await session.recordings.download(rec, dest)

    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.sha256 == hashlib.sha256(new).hexdigest()
    assert (dest / f"{rec.recording_id}.mp3").read_bytes() == new


async def test_a_copied_partial_of_the_same_version_resumes(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Without a validator, a partial whose tail the server sends again resumes: the
    overlap proves it is the same version, and only the rest is fetched."""
    body = mp3_bytes(1_000_000, seed=3)
    app = web.Application()
    ranges: list[str | None] = []

    async def no_etag(request: web.Request) -> web.StreamResponse:
        ranges.append(request.headers.get("Range"))
        return await _serve_ranges(request, body)

    app.router.add_get("/r.mp3", no_etag)
    dest = tmp_path / "archive"
    async with serve(app) as base:
        rec = fake_recording_at(fake, f"{base}/r.mp3")
        dest.mkdir()
        (dest / f"{rec.recording_id}.part").write_bytes(body[:700_000])

        result = await session.recordings.download(rec, dest)

    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert ranges == [f"bytes={700_000 - RESUME_OVERLAP}-"]


async def _serve_ranges(request: web.Request, body: bytes) -> web.StreamResponse:
    """A 206 for `Range: bytes=N-`, else the whole body; no ETag."""
    header = request.headers.get("Range")
    if header is None:
        return web.Response(body=body)
    start = int(header.removeprefix("bytes=").rstrip("-"))
    content_range = f"bytes {start}-{len(body) - 1}/{len(body)}"
    return web.Response(status=206, body=body[start:], headers={"Content-Range": content_range})


async def test_a_complete_partial_is_finished_from_its_416(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A `.part` that already holds every byte (its validator still matching) is verified
    and renamed on the server's 416, without downloading it again."""
    rid = fake.add_recording(size=300_000).recording_id
    (tmp_path / f"{rid}.part").write_bytes(fake.body(rid))
    (tmp_path / f"{rid}.part{VALIDATOR_SUFFIX}").write_text(fake.etag(rid))

    result = await session.recordings.download(rid, tmp_path)

    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.sha256 == fake.sha256(rid)
    statuses = [r.status for r in fake.stats.requests if r.operation == "media"]
    assert statuses == [416]
    assert sorted(os.listdir(tmp_path)) == [f"{rid}.mp3"]


# ------------------------------------------------------------------ private addresses


class MapResolver(AbstractResolver):
    """The test's own DNS: maps names to fixed addresses, nothing else."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        address = self.names[host]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": family,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


def remote_recording(url: str) -> Recording:
    return Recording(recording_id="rec-1", recording_url=url)


@pytest.fixture(name="listener")
def _listener() -> Iterator[socket.socket]:
    """A listening socket of the test's own on 127.0.0.1: it must never be connected."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


def connected(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.mark.parametrize("address", ["169.254.169.254", "10.1.2.3", "192.168.0.7", "fd00::1"])
async def test_dns_cannot_smuggle_a_private_address(address: str, tmp_path: Path) -> None:
    """A media host name that resolves to a private or link-local address is refused in
    the connector, before connecting, as a failed item with UnsafeURLError."""
    resolver = MapResolver({"media.example.test": address})
    async with AsyncSession("MA_TEST", "token", resolver=resolver) as session:
        result = await session.recordings.download(
            remote_recording("https://media.example.test/r.mp3"), tmp_path
        )

    assert resolver.asked == ["media.example.test"]
    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert address in str(result.error)
    assert result.attempts == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/r.mp3",
        "https://[fd00::1]/r.mp3",
        "http://[::ffff:169.254.169.254]/r.mp3",
        "http://0.0.0.0/r.mp3",
        "http://224.0.0.1/r.mp3",
    ],
)
async def test_private_literal_urls_are_refused(url: str, tmp_path: Path) -> None:
    """A recording URL naming a private, link-local, unspecified or multicast address is
    refused before any connection."""
    async with AsyncSession("MA_TEST", "token") as session:
        result = await session.recordings.download(remote_recording(url), tmp_path)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert "refusing to fetch" in str(result.error)


async def test_loopback_is_refused_unless_the_api_is_local(
    listener: socket.socket, tmp_path: Path
) -> None:
    """With the real API, a media name resolving to loopback is refused and nothing
    connects to the machine's own port."""
    port = listener.getsockname()[1]
    resolver = MapResolver({"media.example.test": "127.0.0.1"})
    async with AsyncSession("MA_TEST", "token", resolver=resolver) as session:
        named = await session.recordings.download(
            remote_recording(f"http://media.example.test:{port}/r.mp3"), tmp_path
        )
        literal = await session.recordings.download(
            remote_recording(f"http://127.0.0.1:{port}/r.mp3"), tmp_path
        )

    for result in (named, literal):
        assert isinstance(result.error, UnsafeURLError)
        assert "loopback" in str(result.error)
    assert not connected(listener)


async def test_a_redirect_to_a_private_address_is_refused(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Each redirect hop is checked too: a media host bouncing to cloud metadata fails."""

    async def bounce(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    app = web.Application()
    app.router.add_get("/r.mp3", bounce)
    async with serve(app) as base:
        result = await session.recordings.download(
            fake_recording_at(fake, f"{base}/r.mp3"), tmp_path
        )

    assert isinstance(result.error, UnsafeURLError)
    assert "link-local" in str(result.error)


async def test_private_media_can_be_allowed(fake: FakeVobiz, tmp_path: Path) -> None:
    """`allow_private_media=True` serves on-premise media hosts (here: loopback behind a
    non-local API)."""
    body = mp3_bytes(10_000)

    async def media_file(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/r.mp3", media_file)
    resolver = MapResolver({"media.internal": "127.0.0.1"})
    async with serve(app) as base:
        port = base.rsplit(":", 1)[1]
        async with AsyncSession(
            "MA_TEST", "token", resolver=resolver, allow_private_media=True
        ) as session:
            result = await session.recordings.download(
                remote_recording(f"http://media.internal:{port}/r.mp3"), tmp_path
            )

    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.sha256 == hashlib.sha256(body).hexdigest()


# ------------------------------------------------------------------ a nearly full disk


@pytest.fixture(name="tmpfs")
def _tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs of the test's own (skipped where mounting is not allowed)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if os.geteuid() != 0 or mount is None or umount is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
        [mount, "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run([umount, str(mount_point)], check=True)  # noqa: S603


def grow(mount_point: Path, size: str) -> None:
    mount = shutil.which("mount")
    assert mount is not None
    subprocess.run(  # noqa: S603
        [mount, "-o", f"remount,size={size}", str(mount_point)], check=True
    )


async def test_a_nearly_full_disk_archives_what_fits(
    fake: FakeVobiz, session: AsyncSession, tmpfs: Path
) -> None:
    """7 recordings of 700 KB into 3 MiB at concurrency 8: the 4 that fit are archived and
    verified, the rest are not started and leave no partial behind; once the disk has room,
    a re-run completes them."""
    rids = [fake.add_recording(size=700_000).recording_id for _ in range(7)]

    first = await session.recordings.download_many(rids, tmpfs, concurrency=8)

    assert len(first.downloaded) == 4
    for result in first.downloaded:
        assert result.path is not None
        assert sha256(result.path) == fake.sha256(result.recording_id)
    assert len(first.failed) == 3
    for result in first.failed:
        assert isinstance(result.error, DiskError)
        assert str(result.error).startswith("not started: the destination disk is full")
    assert not [name for name in os.listdir(tmpfs) if ".part" in name]

    grow(tmpfs, "8m")
    second = await session.recordings.download_many(rids, tmpfs, concurrency=8)

    assert len(second.skipped) == 4
    assert len(second.downloaded) == 3
    for rid in rids:
        assert sha256(tmpfs / f"{rid}.mp3") == fake.sha256(rid)


# ------------------------------------------------------------------ a report at scale


async def test_a_large_batch_keeps_failures_and_counts_not_every_result(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past RESULTS_KEPT items the report keeps the first results, every failure and the
    counts; every item's result still reaches on_progress."""
    monkeypatch.setattr(batch_module, "RESULTS_KEPT", 5)
    rids = [fake.add_recording(size=2_000 + i).recording_id for i in range(8)]
    fake.media_fault(rids[7], "status", status=404, times=5)  # gone for good, past the bound
    events: list[ProgressEvent] = []

    report = await session.recordings.download_many(
        rids, tmp_path, concurrency=2, on_progress=events.append
    )

    assert report.truncated
    assert [r.recording_id for r in report.results] == rids[:5]
    assert [r.recording_id for r in report.failed] == [rids[7]]
    assert report.counts[DownloadStatus.DOWNLOADED] == 7
    assert report.counts[DownloadStatus.FAILED] == 1
    assert report.total_bytes == sum(fake.size(rid) for rid in rids[:7])
    finished = {e.result.recording_id for e in events if e.result is not None}
    assert finished == set(rids)


async def test_a_small_batch_keeps_every_result(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Up to RESULTS_KEPT items, `results` is complete and in input order."""
    rids = [fake.add_recording(size=1_000).recording_id for _ in range(4)]

    report = await session.recordings.download_many(rids, tmp_path)

    assert not report.truncated
    assert [r.recording_id for r in report.results] == rids
    assert report.counts[DownloadStatus.DOWNLOADED] == 4
