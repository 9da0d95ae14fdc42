"""Type-checked usage of the public API: `mypy --strict vobiz_async tests/typing_usage.py`.

Never run, never collected by pytest (no `test_` prefix); every await lives in an
`async def`. If a public signature changes in a way that breaks callers, mypy fails here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiohttp

import vobiz_async
from vobiz_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncPager,
    AsyncSession,
    AuthenticationError,
    ConfigurationError,
    ExportResult,
    InvalidRecordingIdError,
    ManifestError,
    NotFoundError,
    Page,
    PageMeta,
    PermissionDeniedError,
    RateLimitError,
    Recording,
    ResponseValidationError,
    ServerError,
    VobizError,
)
from vobiz_async.download import BatchOptions
from vobiz_async.manifest import Manifest, ManifestEntry, VerifyProblem, verify_manifest
from vobiz_async.scaleout import RayEngine, ShardFailure, WorkerShare, plan_shards

version: str = vobiz_async.__version__
exported: list[str] = vobiz_async.__all__


def build_sessions() -> list[AsyncSession]:
    """Both constructor forms: explicit credentials, and env vars with defaults."""
    explicit = AsyncSession(
        auth_id="MA_XXXXXXXX",
        auth_token="token",
        base_url="https://api.vobiz.ai/api/v1/",
        timeout=30.0,
        max_retries=3,
    )
    from_env = AsyncSession()
    return [explicit, from_env]


async def borrowed(http: aiohttp.ClientSession) -> AsyncSession:
    """A caller-owned aiohttp session."""
    return AsyncSession("MA_XXXXXXXX", "token", http_session=http)


def describe(rec: Recording) -> str:
    """Every Recording field with its declared type."""
    rid: str = rec.recording_id
    url: str = rec.recording_url
    # Only the id and the URL are essential: every other field may be None.
    call_uuid: str | None = rec.call_uuid
    fmt: str | None = rec.recording_format
    kind: str | None = rec.recording_type
    added: datetime | None = rec.add_time
    duration: Decimal | None = rec.recording_duration_ms
    start: Decimal | None = rec.recording_start_ms
    end: Decimal | None = rec.recording_end_ms
    rounded: int | None = rec.rounded_recording_duration
    numbers: tuple[str | None, str | None] = (rec.from_number, rec.to_number)
    conference: str | None = rec.conference_name
    days: int | None = rec.recording_storage_duration
    rate: Decimal | None = rec.recording_storage_rate
    amount: Decimal | None = rec.monthly_recording_storage_amount
    uri: str | None = rec.resource_uri
    api_id: str | None = rec.api_id
    when = added.isoformat() if added is not None else "-"
    parts = [rid, str(call_uuid), url, str(fmt), str(kind), when, str(duration), str(start)]
    parts += [str(end), str(rounded), *map(str, numbers), str(conference), str(days), str(rate)]
    parts += [str(amount), str(uri), str(api_id)]
    return " ".join(parts)


def round_trip(data: Mapping[str, Any]) -> Recording:
    """from_dict / to_dict."""
    rec = Recording.from_dict(data)
    wire: dict[str, Any] = rec.to_dict()
    return Recording.from_dict(wire)


def page_parts(page: Page) -> tuple[str | None, tuple[int, int, int], list[Recording]]:
    """A Page and its PageMeta."""
    meta: PageMeta = page.meta
    counts: tuple[int, int, int] = (meta.limit, meta.offset, meta.total_count)
    links: tuple[str | None, str | None] = (meta.next, meta.previous)
    return links[0] or page.api_id, counts, page.objects


async def walk(session: AsyncSession) -> list[str]:
    """The dual-use pager: await for the first page, async for every item or page."""
    pager: AsyncPager = session.recordings.list(limit=20, recording_type="call")
    first: Page = await pager
    ids = [rec.recording_id for rec in first.objects]
    async for rec in session.recordings.list(add_time__gte=datetime(2026, 1, 1)):
        ids.append(rec.recording_id)
    async for page in session.recordings.list(call_uuid="abc", offset=40).iter_pages():
        ids.extend(rec.recording_id for rec in page.objects)
    return ids


async def manage(session: AsyncSession) -> ExportResult:
    """get, delete, bulk_delete and export."""
    rec: Recording = await session.recordings.get("d7801b2e-5a5c-4c1d-9d4e-1a2b3c4d5e6f")
    await session.recordings.delete(rec.recording_id)
    await session.recordings.bulk_delete(add_time__lte="2026-01-01 00:00:00")
    await session.recordings.bulk_delete(all_recordings=True)
    await session.recordings.export(["ops@example.com"], recording_storage_duration__gte=7)
    return await session.recordings.export(
        ["ops@example.com"], start=datetime(2026, 1, 1), end=datetime(2026, 2, 1)
    )


async def handle_errors() -> str | None:
    """The error tree and the evidence status errors carry."""
    try:
        async with AsyncSession("MA_XXXXXXXX", "token") as session:
            await session.recordings.get("gone")
    except NotFoundError as err:
        status: int = err.status_code
        headers: Mapping[str, str] = err.headers
        body: Any = err.body
        return f"{status} {err.message} {headers} {body} {err.api_id}"
    except (AuthenticationError, PermissionDeniedError, RateLimitError, ServerError) as err:
        return err.api_id
    except APIStatusError as err:
        return str(err.status_code)
    except APITimeoutError:
        return "timeout"
    except APIConnectionError:
        return "connection"
    except ResponseValidationError as err:
        return repr(err.body)
    except (ConfigurationError, InvalidRecordingIdError):
        return "config"
    except VobizError:
        return "other"
    finally:
        pass
    return None


def check_callback(headers: Mapping[str, str], fields: Mapping[str, str]) -> str | None:
    """Webhook signatures and payloads (module-qualified, so this block stands alone)."""
    check: vobiz_async.SignatureCheck = vobiz_async.verify_signature(
        headers, "https://hooks.example.com/vobiz", "token", parent_auth_token=None
    )
    version: vobiz_async.SignatureVersion | None = check.version
    expected: str = vobiz_async.compute_signature("https://hooks.example.com/vobiz", "1", "t", "V3")
    verifier = vobiz_async.WebhookVerifier("https://hooks.example.com/vobiz", "token")
    valid: bool = verifier.check(headers).valid and check.valid and bool(expected)
    try:
        event: vobiz_async.RecordingEvent | None = vobiz_async.parse_callback(fields)
    except vobiz_async.WebhookPayloadError:
        return None
    if event is None or not valid:
        return str(version)
    duration: int | None = event.duration_ms
    return f"{event.recording_id} {event.shape} {event.record_url} {duration}"


def index_usage(path: str) -> tuple[int, str | None]:
    """The archive's index: open, look up, write, iterate, verify."""
    try:
        with Manifest(path, fsync=True, timeout=5.0) as manifest:
            entry: ManifestEntry | None = manifest.get("rid")
            made: ManifestEntry = manifest.record(
                "rid", "rid.mp3", size=3, sha256="0" * 64, container="mp3", add_time=None
            )
            manifest.add(made, remember=False)
            problems: list[VerifyProblem] = verify_manifest("archive/", manifest)
            return len(manifest) + len(problems), entry.sha256 if entry else None
    except ManifestError as err:
        return 0, str(err)


async def archive_to_s3(recording: Recording) -> list[str]:
    """An S3 sink used through the Sink seam, its errors, and verify_objects."""
    from vobiz_async import BucketNotFoundError, ObjectStoreError
    from vobiz_async.sinks import ObjectProblem, S3Sink, Sink, Stored, verify_objects

    sink: Sink = S3Sink.from_url("s3://my-bucket/vobiz/", part_size=8 * 1024**2)
    explicit = S3Sink("my-bucket", prefix="vobiz/", endpoint_url="http://127.0.0.1:9000")
    try:
        await sink.prepare()
        writer = await sink.open(recording, size_hint=10)
        await writer.write(b"0123456789")
        stored: Stored = await writer.commit(container="mp3", size=10, sha256="0" * 64)
        found: Stored | None = await sink.lookup(recording.recording_id, recording)
    except BucketNotFoundError as err:
        return [str(err), str(err.destination_wide)]
    except ObjectStoreError as err:
        return [str(err.code)]
    finally:
        await sink.close()
    problems: list[ObjectProblem] = await verify_objects(explicit)
    high_water: int = explicit.budget.high_water
    return [stored.location, str(found), *(p.kind for p in problems), str(high_water)]


async def scale_out(session: AsyncSession) -> tuple[int, list[str]]:
    """The Ray engine: a ScaleOutReport with where the work ran."""
    engine = RayEngine(address=None, shard_size=2000, concurrency_per_shard=16, max_retries=3)
    report = await engine.run(
        session,
        session.recordings.list(limit=100),
        "archive/",
        BatchOptions(concurrency=16, manifest="archive/vobiz-manifest.jsonl"),
    )
    shares: list[WorkerShare] = report.workers
    failures: list[ShardFailure] = report.failed_shards
    plain = await session.recordings.download_many(["rid"], "archive/", engine=engine)
    keys = [key for key, _ in plan_shards(["a", "b"], 1)]
    return sum(s.recordings for s in shares) + len(failures) + len(plain.results), keys


async def governed_s3() -> tuple[int, list[str]]:
    """An S3 sink with storage class, SSE-KMS and Object Lock, and its audit."""
    from vobiz_async.sinks import ObjectAudit, S3Sink, audit_objects

    sink = S3Sink(
        "my-bucket",
        storage_class="GLACIER_IR",
        sse="aws:kms",
        sse_kms_key_id="alias/recordings",
        object_lock_mode="COMPLIANCE",
        object_lock_retain_days=2555,
        object_lock_legal_hold=True,
    )
    await sink.prepare(writing=False)
    await sink.close()
    audit: ObjectAudit = await audit_objects(sink)
    return audit.checked, [p.kind for p in audit.problems]
