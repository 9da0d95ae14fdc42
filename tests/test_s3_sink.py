"""S3Sink against moto on 127.0.0.1, with a fault-injecting aiohttp proxy in front of it.

moto verifies neither Content-MD5 nor flexible checksums, so the proxy checks every
Content-MD5 it sees against the body it received, records each request, and can answer in
moto's place (a failing UploadPart, AccessDenied, bad credentials).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
import hashlib
import io
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import attrs
import pytest
from _procs import default_sigint
from aiohttp import ClientSession, web
from hypothesis import given
from hypothesis import strategies as st

from vobiz_async import Recording
from vobiz_async.errors import (
    BucketNotFoundError,
    ConfigurationError,
    IntegrityError,
    InvalidRecordingIdError,
    ObjectStoreError,
    StorageCredentialsError,
    StoragePermissionError,
)
from vobiz_async.sinks import S3Sink, Sink, verify_objects

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

MiB = 1024 * 1024
PART = 5 * MiB
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE-SESSION-TOKEN-1234567890"
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"
WAV = b"RIFF\x00\x00\x00\x00WAVEfmt "


def recording(recording_id: str = "rec1", *, day: int = 5, fmt: str = "mp3") -> Recording:
    return Recording(
        recording_id=recording_id,
        call_uuid="call",
        recording_url="https://media.example/x",
        recording_format=fmt,
        recording_type="trunk",
        add_time=dt.datetime(2026, 11, day, 10, 30, tzinfo=dt.UTC),
        recording_duration_ms=Decimal(1000),
        recording_start_ms=None,
        recording_end_ms=None,
        rounded_recording_duration=1,
        from_number="1",
        to_number="2",
        conference_name=None,
        recording_storage_duration=0,
        recording_storage_rate=Decimal(0),
        monthly_recording_storage_amount=Decimal(0),
        resource_uri="/x",
    )


def body_of(size: int, head: bytes = MP3) -> bytes:
    block = hashlib.sha256(str(size).encode()).digest() * 32  # 1 KiB, not all one byte
    data = head + block * (size // len(block) + 1)
    return data[:size]


async def write_all(writer: Any, data: bytes, chunk: int = 256 * 1024) -> None:
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])


async def store(sink: S3Sink, rec: Recording, data: bytes) -> Any:
    writer = await sink.open(rec, size_hint=len(data))
    await write_all(writer, data)
    return await writer.commit(container=None, size=len(data), sha256=sha(data))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@attrs.frozen
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    md5_ok: bool | None  # None: no Content-MD5 sent


Fault = Callable[[web.Request], web.Response | None]


def s3_error(status: int, code: str) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>refused</Message></Error>"
    )
    return web.Response(status=status, body=xml.encode(), content_type="application/xml")


def operation_of(request: web.Request) -> str:
    """The S3 operation a request is, for the few this sink sends."""
    query, method = request.query, request.method
    if method == "PUT" and "partNumber" in query:
        return "UploadPart"
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    if method == "PUT":
        return "CopyObject" if "x-amz-copy-source" in request.headers else "PutObject"
    if method == "GET" and "list-type" in query:
        return "ListObjectsV2"
    return f"{method} {request.path}"


class S3Proxy:
    """Forwards to moto; records requests; answers in moto's place when `fault` says so."""

    HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "expect"})

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self.fault: Fault | None = None
        #: Set when a request for the operation arrived, and when moto's answer went back.
        self.arrived: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )
        self.forwarded: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )
        #: An operation whose event is here waits for it before it reaches moto.
        self.gates: dict[str, asyncio.Event] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None

    def calls(self, method: str, query_key: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.method == method and (query_key is None or query_key in s.query)
        ]

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._client = ClientSession(auto_decompress=False)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        md5 = request.headers.get("Content-MD5")
        ok = (
            None
            if md5 is None
            else base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode() == md5
        )
        self.seen.append(
            Seen(request.method, request.path, dict(request.query), dict(request.headers), ok)
        )
        if ok is False:
            return s3_error(400, "BadDigest")
        operation = operation_of(request)
        self.arrived[operation].set()
        if self.fault is not None and (answer := self.fault(request)) is not None:
            return answer
        if operation in self.gates:
            await self.gates[operation].wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP}
        assert self._client is not None
        async with self._client.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=io.BytesIO(body)
        ) as upstream:
            data = await upstream.read()
            out = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in self.HOP and k.lower() != "content-encoding"
            }
            self.forwarded[operation].set()
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                # A HEAD answer's Content-Length is the object's size, not this empty body's.
                head = web.StreamResponse(status=upstream.status, headers=out)
                head.content_length = int(upstream.headers["Content-Length"])
                await head.prepare(request)
                await head.write_eof()
                return head
            return web.Response(status=upstream.status, body=data, headers=out)


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Fake credentials; the developer's own AWS config and endpoints stay out."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(name="admin")
def _admin(moto_url: str) -> Any:
    """A plain boto3 client straight to moto, to inspect and tamper with the bucket."""
    return boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    )


@pytest.fixture(name="bucket")
def _bucket(admin: Any) -> str:
    name = f"archive-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=name)
    return name


@pytest.fixture(name="proxy")
async def _proxy(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Proxy]:
    proxy = S3Proxy(moto_url)
    await proxy.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    await proxy.stop()


@pytest.fixture(name="sink")
async def _sink(bucket: str, proxy: S3Proxy) -> AsyncIterator[S3Sink]:
    sink = S3Sink(bucket, prefix="vobiz/", part_size=PART, max_attempts=2)
    await sink.prepare()
    yield sink
    await sink.close()


def incomplete_uploads(admin: Any, bucket: str) -> list[Any]:
    return list(admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def keys(admin: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in admin.list_objects_v2(Bucket=bucket).get("Contents", [])]


async def test_s3sink_is_a_sink(sink: S3Sink) -> None:
    """S3Sink satisfies the Sink protocol and describes itself as an s3:// URL."""
    assert isinstance(sink, Sink)
    assert sink.describe() == f"s3://{sink.bucket}/vobiz/"


async def test_small_put_round_trip(sink: S3Sink, admin: Any, proxy: S3Proxy) -> None:
    """A body under part_size is one verified PUT with metadata and the sniffed media type."""
    data = body_of(300_000)
    stored = await store(sink, recording("rec1", fmt="wav"), data)
    assert stored.key == "rec1.mp3"
    assert stored.location == f"s3://{sink.bucket}/vobiz/rec1.mp3"
    got = admin.get_object(Bucket=sink.bucket, Key="vobiz/rec1.mp3")
    assert got["Body"].read() == data
    assert got["ContentType"] == "audio/mpeg"
    assert got["Metadata"] == {
        "sha256": sha(data),
        "recording-id": "rec1",
        "add-time": "2026-11-05T10:30:00+00:00",
        "container": "mp3",
    }
    (put,) = proxy.calls("PUT")
    assert put.md5_ok is True
    assert not proxy.calls("POST", "uploads")


async def test_custom_endpoint_sends_no_crc_checksums(sink: S3Sink, proxy: S3Proxy) -> None:
    """On a non-AWS endpoint uploads carry Content-MD5 and none of botocore's CRC headers."""
    assert sink.request_checksum_calculation == "when_required"
    await store(sink, recording("rec1"), body_of(2 * PART + 10))
    await store(sink, recording("rec2"), body_of(10))
    uploads = proxy.calls("PUT", "partNumber") + [
        s for s in proxy.calls("PUT") if s.path.endswith("rec2.mp3")
    ]
    assert len(uploads) == 4
    for seen in uploads:
        assert seen.md5_ok is True
        names = {k.lower() for k in seen.headers}
        assert not any(n.startswith("x-amz-checksum-") for n in names)
        assert "x-amz-trailer" not in names


async def test_multipart_round_trip(sink: S3Sink, admin: Any, proxy: S3Proxy) -> None:
    """A body over part_size goes up in parts, each MD5-checked, and keeps its metadata."""
    data = body_of(2 * PART + 123_456, head=WAV)
    stored = await store(sink, recording("big"), data)
    assert stored.key == "big.wav"
    got = admin.get_object(Bucket=sink.bucket, Key="vobiz/big.wav")
    assert got["Body"].read() == data
    assert got["ContentType"] == "audio/wav"
    assert got["Metadata"]["sha256"] == sha(data)
    assert got["Metadata"]["container"] == "wav"
    parts = proxy.calls("PUT", "partNumber")
    assert sorted(int(p.query["partNumber"]) for p in parts) == [1, 2, 3]
    assert all(p.md5_ok for p in parts)
    assert incomplete_uploads(admin, sink.bucket) == []


async def test_abort_leaves_no_upload_and_no_object(sink: S3Sink, admin: Any) -> None:
    """abort() after parts were uploaded leaves no incomplete upload and no object."""
    writer = await sink.open(recording("gone"))
    await write_all(writer, body_of(2 * PART + 1))
    assert incomplete_uploads(admin, sink.bucket)  # the upload really started
    await writer.abort()
    assert incomplete_uploads(admin, sink.bucket) == []
    assert keys(admin, sink.bucket) == []


async def test_source_failing_midway_leaves_nothing(sink: S3Sink, admin: Any) -> None:
    """A media source that fails for good after 6 of 12 MB: the caller aborts, nothing stays."""

    class SourceBroke(Exception):
        pass

    async def transfer() -> None:
        writer = await sink.open(recording("half"), size_hint=12 * MiB)
        try:
            await write_all(writer, body_of(6 * MiB))
            raise SourceBroke
        except BaseException:
            await writer.abort()
            raise

    with pytest.raises(SourceBroke):
        await transfer()
    assert incomplete_uploads(admin, sink.bucket) == []
    assert keys(admin, sink.bucket) == []


async def test_close_aborts_writers_left_open(bucket: str, proxy: S3Proxy, admin: Any) -> None:
    """close() aborts an upload whose caller never committed or aborted (a cancelled task)."""
    sink = S3Sink(bucket, part_size=PART)
    await sink.prepare()
    writer = await sink.open(recording("orphan"))

    async def transfer() -> None:
        await write_all(writer, body_of(PART + 1))
        await asyncio.sleep(3600)

    task = asyncio.create_task(transfer())
    await proxy.forwarded["CreateMultipartUpload"].wait()
    assert incomplete_uploads(admin, bucket)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sink.close()
    assert incomplete_uploads(admin, bucket) == []
    assert keys(admin, bucket) == []


async def test_failing_upload_part_is_retried_then_aborted(
    sink: S3Sink, admin: Any, proxy: S3Proxy
) -> None:
    """An UploadPart the store keeps failing is retried, then the upload is aborted."""
    proxy.fault = lambda r: s3_error(500, "InternalError") if "partNumber" in r.query else None
    writer = await sink.open(recording("flaky"))
    data = body_of(2 * PART + 1)

    async def upload() -> None:
        await write_all(writer, data)
        await writer.commit(container=None, size=len(data), sha256=sha(data))

    with pytest.raises(ObjectStoreError, match="InternalError"):
        await upload()
    await writer.abort()  # what the downloader does after a failed write; idempotent
    part_one = [p for p in proxy.calls("PUT", "partNumber") if p.query["partNumber"] == "1"]
    assert len(part_one) == sink.max_attempts == 2
    assert proxy.calls("DELETE", "uploadId")
    assert incomplete_uploads(admin, sink.bucket) == []
    assert keys(admin, sink.bucket) == []


async def test_continuing_after_a_pause_resends_no_part(
    sink: S3Sink, admin: Any, proxy: S3Proxy
) -> None:
    """A dropped media connection: the same writer continues at its offset, no part twice."""
    data = body_of(3 * PART + 77)
    cut = PART + PART // 2
    writer = await sink.open(recording("resumed"), size_hint=len(data))
    await write_all(writer, data[:cut])
    await proxy.forwarded["UploadPart"].wait()  # part 1 went up while the media was down
    assert writer.offset == cut  # where the downloader's Range request starts
    await write_all(writer, data[writer.offset :])
    await writer.commit(container="mp3", size=len(data), sha256=sha(data))
    numbers = [p.query["partNumber"] for p in proxy.calls("PUT", "partNumber")]
    assert sorted(numbers) == ["1", "2", "3", "4"]
    assert len(proxy.calls("POST", "uploads")) == 1
    got = admin.get_object(Bucket=sink.bucket, Key="vobiz/resumed.mp3")
    assert got["Body"].read() == data


async def test_restart_aborts_and_starts_fresh(sink: S3Sink, admin: Any) -> None:
    """restart() aborts the upload under way; the object holds only what came after."""
    writer = await sink.open(recording("again"))
    await write_all(writer, body_of(PART + 5, head=b"junk-before-restart"))
    await writer.restart()
    assert writer.offset == 0
    assert incomplete_uploads(admin, sink.bucket) == []
    data = body_of(PART + 9)
    await write_all(writer, data)
    await writer.commit(container="mp3", size=len(data), sha256=sha(data))
    got = admin.get_object(Bucket=sink.bucket, Key="vobiz/again.mp3")
    assert got["Body"].read() == data


async def test_commit_refuses_a_short_body(sink: S3Sink, admin: Any) -> None:
    """commit with a size other than the bytes written stores nothing."""
    writer = await sink.open(recording("short"))
    await write_all(writer, body_of(PART + 1))
    with pytest.raises(IntegrityError):
        await writer.commit(container="mp3", size=PART + 2, sha256="0" * 64)
    assert incomplete_uploads(admin, sink.bucket) == []
    assert keys(admin, sink.bucket) == []


async def test_missing_bucket_is_typed_at_prepare(proxy: S3Proxy) -> None:
    """prepare() on a missing bucket raises a destination-wide error naming the bucket."""
    sink = S3Sink("no-such-bucket-here")
    with pytest.raises(BucketNotFoundError) as caught:
        await sink.prepare()
    err = caught.value
    assert err.destination_wide
    assert "no-such-bucket-here" in str(err)
    assert "\n" not in str(err)
    await sink.close()


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("AccessDenied", 403, StoragePermissionError),
        ("InvalidAccessKeyId", 403, StorageCredentialsError),
        ("SignatureDoesNotMatch", 403, StorageCredentialsError),
    ],
)
async def test_refused_credentials_are_typed_at_prepare(
    bucket: str, proxy: S3Proxy, code: str, status: int, kind: type[ObjectStoreError]
) -> None:
    """AccessDenied and refused credentials become destination-wide typed errors."""
    proxy.fault = lambda r: s3_error(status, code)
    sink = S3Sink(bucket)
    with pytest.raises(kind, match=bucket) as caught:
        await sink.prepare()
    assert caught.value.destination_wide
    assert caught.value.code == code


async def test_unreachable_endpoint_is_destination_wide(bucket: str) -> None:
    """An endpoint nobody listens on fails prepare() as a destination-wide error."""
    sink = S3Sink(bucket, endpoint_url="http://127.0.0.1:9", max_attempts=1)
    with pytest.raises(ObjectStoreError) as caught:
        await sink.prepare()
    assert caught.value.destination_wide
    # Not a bucket or permission answer (whose class is destination-wide by itself): nobody
    # answered, so prepare() has to say so on a plain ObjectStoreError with no store code.
    assert type(caught.value) is ObjectStoreError
    assert caught.value.code is None


@pytest.mark.parametrize("hostile", ["../escape", "/etc/passwd", "a/b", "x\n", ".hidden", ""])
async def test_hostile_id_is_refused_before_any_request(
    sink: S3Sink, proxy: S3Proxy, admin: Any, hostile: str
) -> None:
    """A hostile recording id never becomes a key: open() refuses it and sends nothing."""
    before = len(proxy.seen)
    with pytest.raises(InvalidRecordingIdError):
        await sink.open(recording(hostile))
    assert await sink.lookup(hostile, None) is None
    assert len(proxy.seen) == before
    assert keys(admin, sink.bucket) == []


@given(recording_id=st.text(min_size=1, max_size=40))
def test_keys_never_leave_the_prefix(recording_id: str) -> None:
    """Whatever the id, a key is refused or is one plain name under the prefix."""
    for layout in ("flat", "date"):
        sink = S3Sink("bucket", prefix="p/", layout=layout)  # type: ignore[arg-type]
        try:
            key = sink.key_for(recording(recording_id), "mp3")
        except InvalidRecordingIdError:
            continue
        segments = key.split("/")
        assert all(seg not in ("", ".", "..") for seg in segments)
        assert not any(ch < " " or ch == "\x7f" for ch in key)
        assert segments[-1] == f"{recording_id}.mp3"


async def test_lookup_reports_what_the_store_holds(bucket: str, proxy: S3Proxy, admin: Any) -> None:
    """Re-run without an index: each lookup is one narrowed listing, whatever the prefix
    holds, reporting the object's size (a listing has no metadata); with the key an index
    recorded it is one HEAD reporting the object's own sha256 metadata."""
    first = S3Sink(bucket, prefix="vobiz/", part_size=PART)
    await first.prepare()
    small, big = body_of(1000), body_of(PART + 1)
    await store(first, recording("a"), small)
    await store(first, recording("b"), big)
    await first.close()

    rerun = S3Sink(bucket, prefix="vobiz/", part_size=PART)
    await rerun.prepare()
    proxy.seen.clear()
    found_a = await rerun.lookup("a", recording("a"))
    found_b = await rerun.lookup("b", None)
    missing = await rerun.lookup("c", recording("c"))
    keyed = await rerun.lookup("b", None, key="b.mp3")
    await rerun.close()
    assert found_a is not None
    assert (found_a.key, found_a.size, found_a.sha256) == ("a.mp3", 1000, None)
    assert found_a.location == f"s3://{bucket}/vobiz/a.mp3"
    assert found_b is not None
    assert found_b.size == PART + 1
    assert missing is None
    assert keyed is not None
    assert (keyed.size, keyed.sha256) == (PART + 1, sha(big))  # stamped after multipart
    assert [s.query.get("prefix") for s in proxy.calls("GET", "list-type")] == [
        "vobiz/a.",
        "vobiz/b.",
        "vobiz/c.",
    ]
    assert len(proxy.calls("HEAD")) == 1
    # Once a batch, for an object larger than a part (test_s3_versions.py).
    assert len(proxy.calls("GET", "versioning")) == 1
    assert len(proxy.seen) == 5  # no body read


async def test_lookup_by_key_is_one_head(sink: S3Sink, proxy: S3Proxy) -> None:
    """With the key an index recorded, a lookup is one HEAD, found or not."""
    data = body_of(321)
    await store(sink, recording("k"), data)
    proxy.seen.clear()
    found = await sink.lookup("k", None, key="k.mp3")
    gone = await sink.lookup("k", None, key="k.wav")
    assert found is not None
    assert (found.size, found.sha256) == (321, sha(data))
    assert gone is None
    assert [s.method for s in proxy.seen] == ["HEAD", "HEAD"]


async def test_lookup_of_an_overwritten_object_shows_the_new_bytes(
    sink: S3Sink, admin: Any, proxy: S3Proxy
) -> None:
    """An object overwritten without the sha256 metadata (same key, same size) is re-hashed,
    so the lookup reports the bytes the store holds, not what was archived."""
    data = body_of(500)
    await store(sink, recording("o"), data)
    other = body_of(500, head=b"ID3\x04\x00tampered")
    admin.put_object(Bucket=sink.bucket, Key="vobiz/o.mp3", Body=other)
    found = await sink.lookup("o", None, key="o.mp3")
    assert found is not None
    assert (found.size, found.sha256) == (500, sha(other))
    assert found.sha256 != sha(data)


async def test_a_webhook_lookup_never_lists_the_whole_prefix(
    sink: S3Sink, admin: Any, proxy: S3Proxy
) -> None:
    """Single lookups in a prefix of many objects cost one small request each, never a
    listing of the prefix (the receiver looks one recording up per callback)."""
    for i in range(30):
        admin.put_object(Bucket=sink.bucket, Key=f"vobiz/other{i}.mp3", Body=b"x")
    await store(sink, recording("hook"), body_of(10))
    proxy.seen.clear()
    found = await sink.lookup("hook", None)
    missing = await sink.lookup("nohook", None)
    assert found is not None
    assert missing is None
    lists = proxy.calls("GET", "list-type")
    assert [s.query.get("prefix") for s in lists] == ["vobiz/hook.", "vobiz/nohook."]
    assert len(proxy.seen) == 2


async def test_lookup_sees_an_object_committed_in_the_batch(sink: S3Sink) -> None:
    """A listing cached before a commit learns about the committed object."""
    assert await sink.lookup("late", None) is None
    await store(sink, recording("late"), body_of(10))
    found = await sink.lookup("late", None)
    assert found is not None
    assert found.size == 10


async def test_date_layout_lists_only_touched_folders(
    bucket: str, proxy: S3Proxy, admin: Any
) -> None:
    """layout="date" keys by add_time and looks only in the recording's day folder."""
    sink = S3Sink(bucket, prefix="v", layout="date", part_size=PART)
    await sink.prepare()
    stored = await store(sink, recording("d1", day=3), body_of(50))
    assert stored.key == "2026/11/03/d1.mp3"
    await sink.close()
    await sink.prepare()  # the same sink, a second batch
    proxy.seen.clear()
    assert await sink.lookup("d1", recording("d1", day=3)) is not None
    assert await sink.lookup("d2", recording("d2", day=3)) is None
    assert await sink.lookup("d3", recording("d3", day=4)) is None
    assert await sink.lookup("d1", None) is None  # no add_time: no folder to look in
    await sink.close()
    prefixes = [s.query["prefix"] for s in proxy.calls("GET", "list-type")]
    assert prefixes == ["v/2026/11/03/d1.", "v/2026/11/03/d2.", "v/2026/11/04/d3."]
    assert keys(admin, bucket) == ["v/2026/11/03/d1.mp3"]


async def test_lookup_reports_the_object_not_the_index(bucket: str, proxy: S3Proxy) -> None:
    """The sha256 a lookup reports is the object's own metadata, whatever an index says, so
    a batch sees an object that disagrees with its index."""

    @attrs.frozen
    class Entry:
        size: int
        sha256: str

    data = body_of(100)
    index = {"a": Entry(100, sha(data)), "b": Entry(99, "f" * 64)}
    sink = S3Sink(bucket, index=index)
    await sink.prepare()
    await store(sink, recording("a"), data)
    await store(sink, recording("b"), data)
    await sink.close()
    await sink.prepare()
    found_a = await sink.lookup("a", None, key="a.mp3")
    found_b = await sink.lookup("b", None, key="b.mp3")
    await sink.close()
    assert found_a is not None
    assert found_a.sha256 == sha(data)
    assert found_b is not None
    assert found_b.sha256 == sha(data)  # the index disagrees with the store: the store wins


async def test_budget_bounds_concurrent_buffering(bucket: str, proxy: S3Proxy, admin: Any) -> None:
    """Eight concurrent writers never hold more than max_buffer_bytes between them."""
    sink = S3Sink(bucket, part_size=PART, max_buffer_bytes=2 * PART)
    await sink.prepare()
    data = body_of(2 * PART + 1000)
    await asyncio.gather(*(store(sink, recording(f"c{i}"), data) for i in range(8)))
    await sink.close()
    assert PART < sink.budget.high_water <= 2 * PART
    assert sink.budget.used == 0
    assert sorted(keys(admin, bucket)) == sorted(f"c{i}.mp3" for i in range(8))
    assert incomplete_uploads(admin, bucket) == []


async def test_budget_waiter_cancelled_gives_nothing_away() -> None:
    """A writer cancelled while waiting for budget neither holds nor blocks bytes."""
    from vobiz_async.sinks import ByteBudget

    budget = ByteBudget(10)
    await budget.acquire(8)
    waiter = asyncio.create_task(budget.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(8)
    await asyncio.wait_for(budget.acquire(10), 1)
    assert budget.used == 10
    assert budget.high_water == 10


async def test_verify_catches_changed_and_unmarked_objects(sink: S3Sink, admin: Any) -> None:
    """verify_objects reports a changed object and one without sha256 metadata, not good ones."""
    good, changed = body_of(2000), body_of(3000)
    await store(sink, recording("good"), good)
    await store(sink, recording("changed"), changed)
    meta = admin.head_object(Bucket=sink.bucket, Key="vobiz/changed.mp3")["Metadata"]
    admin.put_object(
        Bucket=sink.bucket, Key="vobiz/changed.mp3", Body=b"x" + changed, Metadata=meta
    )
    admin.put_object(Bucket=sink.bucket, Key="vobiz/stray.mp3", Body=b"stray")
    problems = await verify_objects(sink)
    assert [(p.key, p.kind) for p in problems] == [
        ("changed.mp3", "changed"),
        ("stray.mp3", "missing-metadata"),
    ]
    assert problems[0].expected == sha(changed)
    assert problems[0].actual == sha(b"x" + changed)


async def test_verify_prepares_an_unprepared_sink(bucket: str, proxy: S3Proxy) -> None:
    """verify_objects on a fresh sink prepares and closes it itself."""
    sink = S3Sink(bucket)
    assert await verify_objects(sink) == []


async def test_no_secret_in_repr_errors_or_logs(
    bucket: str, proxy: S3Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The AWS secret key and session token appear in no repr, error or log line."""
    caplog.set_level(logging.DEBUG)
    sink = S3Sink(bucket, part_size=PART)
    await sink.prepare()
    writer = await sink.open(recording("s"))
    await write_all(writer, body_of(1000))
    texts = [repr(sink), repr(writer), repr(sink.budget)]
    await writer.commit(container="mp3", size=1000, sha256=sha(body_of(1000)))
    await sink.close()
    for failing in (
        S3Sink("no-such-bucket-at-all"),
        S3Sink(bucket, endpoint_url="http://127.0.0.1:9"),
    ):
        with pytest.raises(ObjectStoreError) as caught:
            await failing.prepare()
        texts += [str(caught.value), repr(caught.value), repr(failing)]
    proxy.fault = lambda r: s3_error(403, "SignatureDoesNotMatch")
    with pytest.raises(StorageCredentialsError) as denied:
        await S3Sink(bucket).prepare()
    texts += [str(denied.value), repr(denied.value)]
    texts.append(caplog.text)
    assert caplog.text  # botocore did log at DEBUG, so the check below means something
    for text in texts:
        assert SECRET not in text
        assert TOKEN not in text


def test_endpoint_comes_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """endpoint_url, then AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL; else AWS over https."""
    assert S3Sink("bucket").endpoint_url is None
    assert S3Sink("bucket").request_checksum_calculation == "when_supported"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert S3Sink("bucket").endpoint_url == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example:8443/")
    assert S3Sink("bucket").endpoint_url == "https://s3.example:8443"
    sink = S3Sink("bucket", endpoint_url="http://127.0.0.1:2")
    assert sink.endpoint_url == "http://127.0.0.1:2"
    assert sink.request_checksum_calculation == "when_required"
    explicit = S3Sink(
        "bucket", endpoint_url="http://x:1", request_checksum_calculation="when_supported"
    )
    assert explicit.request_checksum_calculation == "when_supported"


@pytest.mark.parametrize(
    "endpoint", ["ftp://host", "http://user:pw@host", "https://host/?x=1", "127.0.0.1:9000"]
)
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    """An endpoint that is not plain http(s) without credentials is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        S3Sink("bucket", endpoint_url=endpoint)


def test_region_from_aws_region_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """region falls back to AWS_REGION, then AWS_DEFAULT_REGION."""
    assert S3Sink("bucket").region == "us-east-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert S3Sink("bucket").region == "eu-west-3"
    assert S3Sink("bucket", region="ap-south-1").region == "ap-south-1"


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://my-bucket/vobiz/", "my-bucket", "vobiz/"),
        ("s3://my-bucket/vobiz", "my-bucket", "vobiz/"),
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/a/b/", "my-bucket", "a/b/"),
    ],
)
def test_from_url(url: str, bucket: str, prefix: str) -> None:
    """s3://bucket/prefix parses into bucket and a prefix ending in one slash."""
    sink = S3Sink.from_url(url, part_size=PART)
    assert (sink.bucket, sink.prefix, sink.part_size) == (bucket, prefix, PART)


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "http://bucket/x",
        "s3://b/x",
        "s3://bucket/../up",
        "s3://bucket/a//b",
        "s3://k@bucket/",
    ],
)
def test_from_url_refuses_bad_urls(url: str) -> None:
    """A malformed s3:// URL, bucket or climbing prefix is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        S3Sink.from_url(url)


def test_bad_sizes_are_refused() -> None:
    """part_size under S3's 5 MiB minimum, or a budget under one part, is refused."""
    with pytest.raises(ConfigurationError):
        S3Sink("bucket", part_size=MiB)
    with pytest.raises(ConfigurationError):
        S3Sink("bucket", part_size=PART, max_buffer_bytes=PART - 1)


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without aiobotocore, creating an S3Sink says which extra to install."""
    monkeypatch.setitem(sys.modules, "aiobotocore", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'vobiz-async\[s3\]'"):
        S3Sink.from_url("s3://bucket/p/")


def test_import_does_not_load_the_s3_client() -> None:
    """import vobiz_async (and its sinks) loads neither aiobotocore nor botocore."""
    code = (
        "import sys, vobiz_async, vobiz_async.sinks; "
        "assert not {'aiobotocore', 'botocore'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run(  # noqa: S603 - our interpreter
        [sys.executable, "-c", code], check=True, preexec_fn=default_sigint
    )


async def test_cancelled_commit_still_completes_a_verified_upload(
    sink: S3Sink, admin: Any, proxy: S3Proxy
) -> None:
    """Cancelling commit once every byte is verified leaves a whole object, no upload."""
    data = body_of(2 * PART + 5)
    writer = await sink.open(recording("late-cancel"))
    await write_all(writer, data)
    proxy.gates["CompleteMultipartUpload"] = gate = asyncio.Event()
    task = asyncio.create_task(writer.commit(container="mp3", size=len(data), sha256=sha(data)))
    await proxy.arrived["CompleteMultipartUpload"].wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await sink.close()
    assert incomplete_uploads(admin, sink.bucket) == []
    got = admin.get_object(Bucket=sink.bucket, Key="vobiz/late-cancel.mp3")
    assert got["Body"].read() == data
    assert got["Metadata"]["sha256"] == sha(data)


async def test_cancelled_while_starting_an_upload_leaves_none(
    sink: S3Sink, admin: Any, proxy: S3Proxy
) -> None:
    """A writer cancelled while CreateMultipartUpload is out still has that upload aborted."""
    writer = await sink.open(recording("early"))

    async def transfer() -> None:
        try:
            await write_all(writer, body_of(PART + 1))
        finally:
            await writer.abort()

    proxy.gates["CreateMultipartUpload"] = gate = asyncio.Event()
    task = asyncio.create_task(transfer())
    await proxy.arrived["CreateMultipartUpload"].wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await sink.close()
    assert proxy.calls("DELETE", "uploadId")
    assert incomplete_uploads(admin, sink.bucket) == []
    assert keys(admin, sink.bucket) == []


async def test_failed_metadata_stamp_leaves_no_object(
    sink: S3Sink, admin: Any, proxy: S3Proxy
) -> None:
    """If the sha256 cannot be stamped on a completed upload, the object is taken away."""
    proxy.fault = lambda r: (
        s3_error(500, "InternalError") if "x-amz-copy-source" in r.headers else None
    )
    data = body_of(PART + 3)
    writer = await sink.open(recording("unstamped"))
    await write_all(writer, data)
    with pytest.raises(ObjectStoreError, match="sha256"):
        await writer.commit(container="mp3", size=len(data), sha256=sha(data))
    assert keys(admin, sink.bucket) == []
    assert incomplete_uploads(admin, sink.bucket) == []


async def test_verify_compares_with_the_index_too(bucket: str, proxy: S3Proxy) -> None:
    """An object whose metadata agrees but whose index entry does not is reported changed."""

    @attrs.frozen
    class Entry:
        size: int
        sha256: str

    data = body_of(500)
    index = {"x": Entry(500, "a" * 64), "y": Entry(500, sha(data))}
    sink = S3Sink(bucket, index=index)
    await sink.prepare()
    await store(sink, recording("x"), data)
    await store(sink, recording("y"), data)
    problems = await verify_objects(sink)
    await sink.close()
    assert [(p.key, p.kind, p.expected) for p in problems] == [("x.mp3", "changed", "a" * 64)]


async def test_a_big_batch_lists_a_folder_once(sink: S3Sink, proxy: S3Proxy) -> None:
    """Past `list_after` lookups in one folder, concurrent lookups share one whole listing
    of it, and a recording not stored then costs no request."""
    limit = S3Sink.list_after
    proxy.seen.clear()
    found = await asyncio.gather(*(sink.lookup(f"id{i}", None) for i in range(limit + 50)))
    assert found == [None] * (limit + 50)
    lists = [s.query.get("prefix") for s in proxy.calls("GET", "list-type")]
    assert lists.count("vobiz/") == 1
    assert len(lists) == limit  # the narrowed ones before the whole listing, then none
    assert await sink.lookup("later", None) is None
    assert len(proxy.seen) == limit


async def test_access_denied_on_upload_is_destination_wide(sink: S3Sink, proxy: S3Proxy) -> None:
    """A bucket that refuses writes mid-batch raises a destination-wide typed error."""
    proxy.fault = lambda r: s3_error(403, "AccessDenied") if r.method == "PUT" else None
    data = body_of(100)
    writer = await sink.open(recording("denied"))
    await write_all(writer, data)
    with pytest.raises(StoragePermissionError, match=sink.bucket) as caught:
        await writer.commit(container="mp3", size=len(data), sha256=sha(data))
    assert caught.value.destination_wide
    assert "\n" not in str(caught.value)


async def test_the_manifest_serves_as_the_index(bucket: str, proxy: S3Proxy, tmp_path: Any) -> None:
    """The library's own Manifest (the SQLite index) names the key a lookup checks."""
    from vobiz_async.manifest import Manifest

    data = body_of(700)
    with Manifest(tmp_path / "index.sqlite") as manifest:
        sink = S3Sink(bucket, index=manifest)
        await sink.prepare()
        stored = await store(sink, recording("m1"), data)
        manifest.add(
            manifest.record(
                "m1", stored.key, size=700, sha256=sha(data), container="mp3", add_time=None
            )
        )
        await sink.close()
        await sink.prepare()
        found = await sink.lookup("m1", None, key=manifest.get("m1").path)
        await sink.close()
    assert found is not None
    assert found.sha256 == sha(data)


async def test_date_layout_without_add_time_uses_the_root(bucket: str, proxy: S3Proxy) -> None:
    """A recording without add_time lands at the prefix's root, and lookup finds it there."""
    undated = attrs.evolve(recording("nodate"), add_time=None)
    sink = S3Sink(bucket, prefix="v/", layout="date")
    await sink.prepare()
    stored = await store(sink, undated, body_of(40))
    await sink.close()
    await sink.prepare()
    found = await sink.lookup("nodate", undated)
    await sink.close()
    assert stored.key == "nodate.mp3"
    assert found is not None
    assert found.key == "nodate.mp3"
