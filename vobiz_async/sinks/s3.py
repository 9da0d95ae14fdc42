"""`S3Sink`: recordings into S3 or an S3-compatible object store, verified and bounded.

The client is aiobotocore (chosen by measurement, `benchmarks/RESULTS.md` experiment 26),
imported only when a sink is prepared, so `import vobiz_async` stays fast and works without
the `s3` extra.

How a recording lands:

- A body up to `part_size` is one `PutObject` with `Content-MD5`, which every S3-compatible
  store verifies, and the user metadata (`sha256`, `recording-id`, `add-time`, `container`).
- A larger body is a multipart upload: each full part is sent with its own `Content-MD5`
  while the next one fills; the upload is completed only in `commit`, after the downloader
  verified the whole length and sha256, and the sha256 is then stamped onto the object (a
  multipart upload's metadata is fixed when it starts, before the hash is known) with an
  in-place `CopyObject` conditional on the completed upload's ETag (so an object is at most
  5 GiB, S3's limit for one copy; a recording is far smaller). Any failure,
  cancellation, `restart()` or `abort()` aborts the upload; `close()` aborts what a caller
  left open.
- Governance settings (`storage_class`, `sse`/`sse_kms_key_id`, `object_lock_mode` with
  `object_lock_retain_days`, `object_lock_legal_hold`) go on every final object: the single
  PUT, the stamping copy (a copy keeps none of them unless given again) and `put_file`.
  A multipart upload starts encrypted but in the default storage class and without
  retention: the version it completes is an intermediate one, which the copy replaces and
  which is then deleted by its version id (so a versioned bucket keeps one version per
  recording, and a GLACIER/DEEP_ARCHIVE class never has to be read back for the copy).
  Retention ends `retain_days` after the write, never after `add_time`. `prepare()` proves
  the bucket takes the settings before any transfer.
- A run stopped between completing a multipart upload and its stamp leaves an object
  without `sha256` (its ETag still a multipart one, its `recording-id` metadata set): the
  next lookup of that recording re-hashes it and stamps it (`_recover`). A run stopped
  between the stamping copy and the delete of the version it replaced leaves two versions
  in a versioned bucket: the next lookup or `digest` of that recording (by a writer) sees
  the copy's `stamped-by-copy` marker, lists the key's versions once and deletes an older
  one that holds the same bytes (`_settle_versions`); one with other content is kept and
  reported in a warning. A lookup without a key HEADs a listed object larger than a part
  for that, in a versioned bucket only. `audit_objects` reports a key with more than one
  version.
- Within one writer, a dropped media connection costs nothing here: the downloader sends a
  `Range` request and keeps calling `write`; parts already uploaded stay uploaded.
- Bytes waiting for upload (filling parts and parts in flight) are charged to one
  `ByteBudget` per sink, `max_buffer_bytes`, whatever the concurrency: a writer reserves a
  whole part (or the rest of its `size_hint`, if smaller) before filling it and waits when
  the budget is spent.
- `lookup` answers with what the store holds now. Given the key an index recorded, it is
  one `HEAD`: the object's real size and its own `sha256` metadata (a GET re-hash when the
  metadata is missing), never the index's hash, so an object overwritten after archiving
  disagrees with the index. Without a key it is one listing narrowed to `<folder><id>.`
  (a webhook's lookup is one small request whatever the bucket holds), or, once a batch has
  looked up `list_after` recordings in one folder, one whole listing of that folder kept
  until the next `prepare()`; a listing gives sizes, not metadata (an object whose listed
  ETag is a multipart one is looked at with a `HEAD`, in case it lacks its stamp).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import importlib.util
import io
import logging
import mmap
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import attrs

from ..errors import (
    BucketNotFoundError,
    ConfigurationError,
    IntegrityError,
    InvalidRecordingIdError,
    ObjectStoreError,
    StorageCredentialsError,
    StoragePermissionError,
)
from ..models import Recording
from ..protocol import (
    LAYOUTS,
    archive_key,
    file_extension,
    media_type,
    safe_file_stem,
    sniff_container,
)
from .base import Layout, Stored

__all__ = [
    "SETTING_NAMES",
    "ByteBudget",
    "ObjectAudit",
    "ObjectProblem",
    "S3Sink",
    "audit_objects",
    "verify_objects",
]

logger = logging.getLogger(__name__)

_EXTRA_HINT = "pip install 'vobiz-async[s3]'"
_MIN_PART = 5 * 1024**2  # S3's smallest part other than the last
_MAX_PART = 5 * 1024**3
_MAX_PARTS = 10_000  # S3's limit per multipart upload
_HEAD_BYTES = 64  # enough for sniff_container
_READ_CHUNK = 1024 * 1024
_MD5_INLINE = 256 * 1024  # hash smaller bodies on the loop, bigger ones in a thread
_STEM_KEYS = 10  # keys a narrowed listing returns: `<id>.mp3`, `<id>.wav`, ...

_T = TypeVar("_T")
#: A listed object: its extension, its size, and whether its ETag is a multipart upload's
#: (`"...-N"`): one that may still lack its sha256 stamp (a stamped object is a copy).
_Listed = tuple[str, int, bool]
ChecksumPolicy = Literal["when_supported", "when_required"]
Encryption = Literal["AES256", "aws:kms"]
LockMode = Literal["GOVERNANCE", "COMPLIANCE"]
ProblemKind = Literal[
    "missing-metadata",
    "changed",
    "storage-class",
    "encryption",
    "retention",
    "legal-hold",
    "extra-version",
]

_SSE_VALUES = ("AES256", "aws:kms")
_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
_STORAGE_CLASS = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
#: How much earlier than `LastModified + retain_days` an object's retain-until date may be
#: and still count as the retention asked for: the date is computed just before the request.
_RETENTION_SLACK = timedelta(hours=1)
#: The Content-MD5 of an empty body, sent with every CopyObject (which has no body): S3
#: documents a Content-MD5 as required on a write that sets Object Lock retention (or into a
#: bucket with a default retention), and moto enforces it on a copy too. It verifies as is.
_EMPTY_MD5 = base64.b64encode(hashlib.md5(b"", usedforsecurity=False).digest()).decode()

#: User metadata on an object stamped with its sha256 by a copy onto itself (`_stamp`): only
#: such an object can have left an older, unstamped version of itself behind in a versioned
#: bucket, so only its HEAD leads to a look at the key's versions (`_settle_versions`).
_STAMP_MARK = "stamped-by-copy"

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Index(Protocol):
    """What `S3Sink(index=...)` needs: `get(recording_id)` returning an entry with `size`
    and `sha256` attributes, or None (`vobiz_async.manifest.Manifest` fits)."""

    def get(self, recording_id: str) -> Any: ...


@attrs.frozen
class ObjectProblem:
    """One object `verify_objects` found wanting."""

    key: str
    location: str
    #: "missing-metadata" (no `sha256` user metadata) or "changed" (the bytes disagree);
    #: with settings on the sink, also "storage-class", "encryption", "retention" or
    #: "legal-hold" (the object's setting differs from the sink's); in a versioned bucket,
    #: "extra-version" (the key keeps more than one version; `actual` says how many).
    kind: ProblemKind
    expected: str | None
    actual: str


@attrs.frozen
class ObjectAudit:
    """What `audit_objects` found: how many objects it checked, and their problems; `keys`,
    every key it listed, relative to the sink's prefix (what an index's `path` holds)."""

    checked: int
    problems: list[ObjectProblem]
    keys: frozenset[str] = frozenset()


class ByteBudget:
    """Bytes a sink's writers may hold for uploads at once, shared and FIFO-fair.

    `acquire(n)` waits until `n` more bytes fit under `limit`; `release(n)` gives them back.
    `high_water` is the most ever held at once, for tests and benchmarks.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.high_water = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def __repr__(self) -> str:
        return f"ByteBudget(limit={self.limit}, used={self.used}, high_water={self.high_water})"

    async def acquire(self, n: int) -> None:
        """Hold `n` more bytes, waiting for other writers to release when they do not fit."""
        if n > self.limit:
            raise ValueError(f"cannot hold {n} bytes under a budget of {self.limit}")
        if not self._waiters and self.used + n <= self.limit:
            self._take(n)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(n)  # granted, then cancelled before the caller saw it
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, n: int) -> None:
        """Give back `n` bytes and wake the writers that now fit, oldest first."""
        self.used -= n
        self._wake()

    def _take(self, n: int) -> None:
        self.used += n
        self.high_water = max(self.high_water, self.used)

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            n, future = self._waiters.popleft()
            if not future.done():
                self._take(n)
                future.set_result(None)


_TOKEN_HEADER = re.compile(
    r"(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)([^'\"\s,}&\n]+)", re.IGNORECASE
)


class _RedactSecrets(logging.Filter):
    """Blanks AWS secrets in botocore's own DEBUG lines: it logs request headers and the
    canonical request, which carry the session token. Known secret values are replaced
    wherever they appear, and any `x-amz-security-token` value (a refreshed token too)."""

    def __init__(self) -> None:
        super().__init__("vobiz-redact")
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _TOKEN_HEADER.sub(r"\1<redacted>", message)
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, "<redacted>")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_REDACT = _RedactSecrets()


def _guard_client_logs(secrets: tuple[str | None, ...]) -> None:
    """Put `_REDACT` on every botocore and aiobotocore logger (filters are not inherited)."""
    _REDACT.secrets.update(s for s in secrets if s and len(s) >= 8)
    names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in _CLIENT_LOGGERS]
    for name in [*_CLIENT_LOGGERS, *names]:
        log = logging.getLogger(name)
        if _REDACT not in log.filters:
            log.addFilter(_REDACT)


_CLIENT_LOGGERS = ("botocore", "aiobotocore", "urllib3")


def _client_installed() -> bool:
    try:
        return importlib.util.find_spec("aiobotocore") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def _check_bucket(bucket: str) -> str:
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigurationError(f"not an S3 bucket name: {bucket!r}")
    return bucket


def _check_prefix(prefix: str) -> str:
    """`prefix` with one trailing `/`, or "" (the bucket's root); never a climbing path."""
    if not isinstance(prefix, str) or _CONTROL.search(prefix):
        raise ConfigurationError(f"not a usable S3 prefix: {prefix!r}")
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    if prefix.startswith("/") or any(seg in ("", ".", "..") for seg in stripped.split("/")):
        raise ConfigurationError(f"not a usable S3 prefix: {prefix!r}")
    return stripped + "/"


def _check_endpoint(url: str, source: str) -> str:
    """An explicit endpoint: http or https, a host, no credentials, query or fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{source}: the S3 endpoint must be an http(s) URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigurationError(
            f"{source}: the S3 endpoint must not carry credentials, a query or a fragment"
        )
    return url.rstrip("/")


def _resolve_endpoint(endpoint_url: str | None) -> str | None:
    """The argument, then `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`; else None, which
    means AWS itself over https. Each of these is explicit, so each may be plain http."""
    if endpoint_url:
        return _check_endpoint(endpoint_url, "endpoint_url")
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name)
        if value:
            return _check_endpoint(value, name)
    return None


def _copy_md5(request: Any, **_: Any) -> None:
    """Give a CopyObject the Content-MD5 of its empty body (`_EMPTY_MD5`)."""
    if "Content-MD5" not in request.headers:
        request.headers["Content-MD5"] = _EMPTY_MD5


def _check_storage(storage_class: str | None, sse: str | None, sse_kms_key_id: str | None) -> None:
    if storage_class is not None and (
        not isinstance(storage_class, str) or not _STORAGE_CLASS.fullmatch(storage_class)
    ):
        raise ConfigurationError(f"not an S3 storage class: {storage_class!r}")
    if sse is not None and sse not in _SSE_VALUES:
        raise ConfigurationError(f"sse must be 'AES256' or 'aws:kms', not {sse!r}")
    if sse_kms_key_id is None:
        return
    if sse != "aws:kms":
        raise ConfigurationError("sse_kms_key_id needs sse='aws:kms'")
    if not isinstance(sse_kms_key_id, str) or not sse_kms_key_id or _CONTROL.search(sse_kms_key_id):
        raise ConfigurationError("sse_kms_key_id must be a KMS key id, ARN or alias")


def _check_lock(object_lock_mode: str | None, object_lock_retain_days: int | None) -> None:
    if object_lock_mode is not None and object_lock_mode not in _LOCK_MODES:
        raise ConfigurationError(
            f"object_lock_mode must be 'GOVERNANCE' or 'COMPLIANCE', not {object_lock_mode!r}"
        )
    if (object_lock_mode is None) != (object_lock_retain_days is None):
        raise ConfigurationError(
            "object_lock_mode and object_lock_retain_days go together: a retention needs both"
        )
    if object_lock_retain_days is not None and (
        isinstance(object_lock_retain_days, bool)
        or not isinstance(object_lock_retain_days, int)
        or object_lock_retain_days < 1
    ):
        raise ConfigurationError("object_lock_retain_days must be a whole number of days >= 1")


#: The keywords of `S3Sink` that every object it writes carries (storage, encryption,
#: Object Lock): `settings()`'s keys, and `ServeConfig`'s fields of the same names.
SETTING_NAMES = (
    "storage_class",
    "sse",
    "sse_kms_key_id",
    "object_lock_mode",
    "object_lock_retain_days",
    "object_lock_legal_hold",
)


def retain_until(now: datetime, days: int) -> datetime:
    """The retain-until date of an object uploaded at `now` for `days` days: counted from
    the upload, never from the recording's `add_time`."""
    return now + timedelta(days=days)


def _multipart(item: Mapping[str, Any]) -> bool:
    """Whether a listed object's ETag is a multipart upload's (`"<md5>-<parts>"`)."""
    return "-" in str(item.get("ETag", ""))


def _real_version(version_id: str | None) -> bool:
    """A version id naming one version of a versioned bucket ("null": the unversioned one)."""
    return bool(version_id) and version_id != "null"


def _checksum_policy(given: ChecksumPolicy | None, endpoint_url: str | None) -> ChecksumPolicy:
    """`request_checksum_calculation`: as given, else botocore's default on AWS and
    "when_required" on any custom endpoint."""
    if given is None:
        return "when_supported" if endpoint_url is None else "when_required"
    if given not in ("when_supported", "when_required"):
        raise ConfigurationError(
            "request_checksum_calculation must be 'when_supported' or 'when_required'"
        )
    return given


def _error_code(err: BaseException) -> tuple[str | None, int | None]:
    response = getattr(err, "response", None)
    if not isinstance(response, Mapping):
        return None, None
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return (str(code) if code is not None else None), status


_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
    }
)
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket"})


def classify_s3_error(code: str | None, status: int | None) -> type[ObjectStoreError]:
    """Which error class an S3 error code (or bare status, for HEAD) maps to."""
    if code in _NO_BUCKET_CODES:
        return BucketNotFoundError
    if code in _CREDENTIAL_CODES:
        return StorageCredentialsError
    if code in _DENIED_CODES or status == 403:
        return StoragePermissionError
    return ObjectStoreError


def _recording(extension: str) -> bool:
    """Whether an object named `<id>.<extension>` may be a recording: a metadata sidecar
    (`<id>.json`, `protocol.sidecar_key`) beside it is not."""
    return extension != "json"


class S3Sink:
    """Archive recordings into an S3 bucket (or an S3-compatible store) under `prefix`.

    Keys are `<prefix><id>.<ext>` (`layout="flat"`), `<prefix>YYYY/MM/DD/<id>.<ext>`
    (`layout="date"`) or `<prefix>year=YYYY/month=MM/day=DD/<id>.<ext>` (`layout="hive"`),
    by `add_time` in its own offset, the extension from the sniffed container.

    Credentials, region and profile come from the standard AWS chain (`AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE` or `profile=`, the shared
    config and credentials files, instance roles). `region` falls back to `AWS_REGION`, then
    `AWS_DEFAULT_REGION` and the profile. `endpoint_url` falls back to `AWS_ENDPOINT_URL_S3`,
    then `AWS_ENDPOINT_URL`; without any, the endpoint is AWS over https. Plain http is used
    only when one of those names it. A custom endpoint is addressed path-style, which every
    S3-compatible store accepts.

    `request_checksum_calculation`: botocore sends a CRC32 checksum with every upload by
    default (`"when_supported"`), in a form (aws-chunked bodies with trailing checksums)
    that several S3-compatible stores reject. The default here is `"when_supported"` on AWS
    and `"when_required"` on any custom endpoint: integrity does not depend on that CRC,
    because every `PutObject` and `UploadPart` carries its own `Content-MD5`, the one
    checksum all S3-compatible stores verify. Pass it explicitly to override.

    `part_size` (5 MiB to 5 GiB) is both the largest single PUT and the multipart part
    size; `max_buffer_bytes` (at least `part_size`) bounds the bytes held for uploads
    across every writer of the sink (`budget`). `max_attempts` counts tries per request
    (botocore's standard retry mode). `index` optionally supplies known sha256s to
    `lookup`.

    `storage_class` (`GLACIER_IR`, `STANDARD_IA`, ...), `sse` (`"AES256"` or `"aws:kms"`,
    with `sse_kms_key_id` for a key of your own), `object_lock_mode` (`"GOVERNANCE"` or
    `"COMPLIANCE"`, with `object_lock_retain_days`: retention until the upload plus that many
    days) and `object_lock_legal_hold` go on every object the sink writes, recordings and
    `put_file` alike. `prepare()` refuses, in one destination-wide `ObjectStoreError`, a
    bucket that does not take them; `audit_objects` reports objects whose own differ.
    """

    #: Lookups in one folder after which a batch lists that folder whole, once: from then on
    #: a recording costs no request (measured on moto: 2,000 lookups 2.8 s against 42 s).
    list_after: ClassVar[int] = 100

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        layout: Layout = "flat",
        part_size: int = 8 * 1024**2,
        max_buffer_bytes: int = 64 * 1024**2,
        request_checksum_calculation: ChecksumPolicy | None = None,
        profile: str | None = None,
        max_attempts: int = 4,
        index: _Index | None = None,
        storage_class: str | None = None,
        sse: Encryption | None = None,
        sse_kms_key_id: str | None = None,
        object_lock_mode: LockMode | None = None,
        object_lock_retain_days: int | None = None,
        object_lock_legal_hold: bool = False,
    ) -> None:
        if not _client_installed():
            raise ConfigurationError(f"S3 destinations need the optional S3 client: {_EXTRA_HINT}")
        self.bucket = _check_bucket(bucket)
        self.prefix = _check_prefix(prefix)
        if layout not in LAYOUTS:
            raise ConfigurationError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        self.layout: Layout = layout
        if not _MIN_PART <= part_size <= _MAX_PART:
            raise ConfigurationError("part_size must be between 5 MiB and 5 GiB")
        if max_buffer_bytes < part_size:
            raise ConfigurationError("max_buffer_bytes must be at least part_size")
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        self.part_size = part_size
        self.max_buffer_bytes = max_buffer_bytes
        self.max_attempts = max_attempts
        self.endpoint_url = _resolve_endpoint(endpoint_url)
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self.request_checksum_calculation = _checksum_policy(
            request_checksum_calculation, self.endpoint_url
        )
        self.profile = profile
        self.index = index
        self._govern(storage_class, sse, sse_kms_key_id)
        self._lock_settings(object_lock_mode, object_lock_retain_days, object_lock_legal_hold)
        self._settings_checked = False
        self._writing = True
        self._versioned: bool | None = None  # learnt once per batch, when first needed
        self._versioning_lock = asyncio.Lock()
        self._settled: set[str] = set()  # full keys whose versions this batch looked at
        self._version_refusal_told = False
        self.budget = ByteBudget(max_buffer_bytes)
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._listings: dict[str, dict[str, _Listed]] = {}  # folder -> stem -> ...
        self._listing_locks: dict[str, asyncio.Lock] = {}
        self._lookups: dict[str, int] = {}  # folder -> uncached lookups since prepare()
        self._open_writers: set[_S3Writer] = set()
        self._cleanup: set[asyncio.Future[Any]] = set()

    def _govern(
        self, storage_class: str | None, sse: Encryption | None, sse_kms_key_id: str | None
    ) -> None:
        """Check and keep the storage class and encryption every object gets."""
        _check_storage(storage_class, sse, sse_kms_key_id)
        self.storage_class = storage_class
        self.sse = sse
        self.sse_kms_key_id = sse_kms_key_id

    def _lock_settings(
        self, mode: LockMode | None, retain_days: int | None, legal_hold: bool
    ) -> None:
        """Check and keep the retention and legal hold every final object gets."""
        _check_lock(mode, retain_days)
        self.object_lock_mode = mode
        self.object_lock_retain_days = retain_days
        self.object_lock_legal_hold = bool(legal_hold)

    def settings(self) -> dict[str, Any]:
        """The storage, encryption and Object Lock keywords this sink was made with (none of
        them secret), to make another sink that writes objects alike."""
        return {name: getattr(self, name) for name in SETTING_NAMES}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3Sink:
        """`s3://bucket/prefix/` as a sink; `options` are the constructor's keywords."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigurationError(f"not an s3://bucket/prefix URL: {url!r}")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ConfigurationError(f"an s3:// URL names a bucket and a prefix only: {url!r}")
        return cls(parts.netloc, parts.path.lstrip("/"), **options)

    def __repr__(self) -> str:
        return (
            f"S3Sink(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"layout={self.layout!r})"
        )

    def describe(self) -> str:
        """`s3://bucket/prefix`, for messages."""
        return f"s3://{self.bucket}/{self.prefix}"

    def location(self, key: str) -> str:
        """Where a person finds the object for a key relative to the prefix."""
        return f"s3://{self.bucket}/{self.prefix}{key}"

    # -- batch lifecycle ------------------------------------------------------------------

    async def prepare(self, *, writing: bool = True) -> None:
        """Open the client and check, with one listing request, that the bucket exists and
        the credentials may list it; a new batch also starts a new lookup cache.

        A writer (the default) with storage, encryption or Object Lock settings also proves
        that the bucket takes them, once per sink (`check_settings_once`). A reader
        (`writing=False`: `audit_objects`, `verify`) writes nothing: no probe upload, and an
        object found without its sha256 is re-hashed but not stamped (`_recover`)."""
        self._writing = writing
        self._versioned = None
        self._versioning_lock = asyncio.Lock()
        self._settled.clear()
        self._version_refusal_told = False
        self._listings.clear()
        self._listing_locks.clear()
        self._lookups.clear()
        if self.budget.used == 0:
            self.budget = ByteBudget(self.max_buffer_bytes)  # bound to this batch's loop
        if self._client is None:
            await self._open_client()
        try:
            await self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
            if writing:
                await self.check_settings_once()
        except Exception as err:
            await self.close()
            failure = self._translate(err, "checking the bucket")
            failure.destination_wide = True  # at prepare, nothing in the batch could work
            raise failure from None

    @property
    def has_settings(self) -> bool:
        """Whether the sink sets a storage class, encryption, retention or a legal hold."""
        return bool(
            self.storage_class or self.sse or self.object_lock_mode or self.object_lock_legal_hold
        )

    async def check_settings_once(self) -> None:
        """Prove that the bucket takes the sink's settings, before any transfer: Object Lock
        enabled on it (for a retention or a legal hold), and an upload with the storage class
        and encryption accepted, through a one-byte multipart upload that is aborted (it
        leaves no object and no version, even in a bucket that locks every object it keeps,
        and it needs what a recording's upload needs: `kms:GenerateDataKey` and
        `kms:Decrypt` for SSE-KMS). A refusal is one `ObjectStoreError`, destination-wide."""
        if self._settings_checked or not self.has_settings:
            return
        if self.object_lock_mode or self.object_lock_legal_hold:
            await self._check_object_lock()
        if self.storage_class or self.sse:
            await self._probe_upload()
        self._settings_checked = True

    def _refused(self, what: str, err: BaseException | None = None) -> ObjectStoreError:
        """The destination-wide error of a bucket that refuses the sink's settings (refused
        credentials stay themselves)."""
        if err is not None:
            translated = self._translate(err, what)
            if isinstance(translated, StorageCredentialsError):
                return translated
            code = _error_code(err)[0] or type(err).__name__
            failure = ObjectStoreError(f"{self.describe()}: {what} ({code})", code=code)
        else:
            failure = ObjectStoreError(f"{self.describe()}: {what}")
        failure.destination_wide = True
        return failure

    async def _check_object_lock(self) -> None:
        client = self._require_client()
        try:
            answer = await client.get_object_lock_configuration(Bucket=self.bucket)
        except Exception as err:
            if _error_code(err)[0] == "ObjectLockConfigurationNotFoundError":
                raise self._refused(
                    "the bucket has no Object Lock, which a retention or legal hold needs "
                    "(it is enabled when the bucket is created)"
                ) from None
            raise self._refused("cannot read the bucket's Object Lock configuration", err) from None
        config = answer.get("ObjectLockConfiguration") or {}
        if config.get("ObjectLockEnabled") != "Enabled":
            raise self._refused("the bucket has no Object Lock enabled")
        if config.get("Rule"):
            logger.warning(
                "%s: the bucket's default retention also locks the version a multipart "
                "upload leaves before its sha256 is stamped; such versions stay until it ends",
                self.describe(),
            )

    async def _probe_upload(self) -> None:
        client = self._require_client()
        key = f"{self.prefix}.vobiz-settings-check-{uuid.uuid4().hex}"
        settings = {**self._encryption()}
        if self.storage_class:
            settings["StorageClass"] = self.storage_class
        what = f"the bucket refuses an upload with {self._describe_settings()}"
        try:
            created = await client.create_multipart_upload(Bucket=self.bucket, Key=key, **settings)
        except Exception as err:
            raise self._refused(what, err) from None
        try:
            await client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=created["UploadId"],
                PartNumber=1,
                Body=b"\0",
                ContentMD5=await _content_md5(memoryview(b"\0")),
            )
        except Exception as err:
            raise self._refused(what, err) from None
        finally:
            await self._abort_upload_quietly(key, created["UploadId"])

    async def _abort_upload_quietly(self, full_key: str, upload_id: str) -> None:
        try:
            await self._require_client().abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )
        except Exception as err:
            logger.warning(
                "could not abort the upload of s3://%s/%s: %s (a lifecycle rule for "
                "incomplete multipart uploads cleans it up)",
                self.bucket,
                full_key,
                self._translate(err, "aborting the upload"),
            )

    def _describe_settings(self) -> str:
        parts = []
        if self.storage_class:
            parts.append(f"storage class {self.storage_class}")
        if self.sse:
            key = f" key {self.sse_kms_key_id}" if self.sse_kms_key_id else ""
            parts.append(f"encryption {self.sse}{key}")
        return " and ".join(parts)

    # -- the settings each object carries -------------------------------------------------

    def _encryption(self, kept: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The encryption arguments of a write: the sink's, else (for a copy) the object's
        own, which a copy would otherwise reset to the bucket's default."""
        sse = self.sse or (kept or {}).get("ServerSideEncryption")
        if not sse:
            return {}
        args: dict[str, Any] = {"ServerSideEncryption": sse}
        key = self.sse_kms_key_id if self.sse else (kept or {}).get("SSEKMSKeyId")
        if key and sse == "aws:kms":
            args["SSEKMSKeyId"] = key
        return args

    def _lock(self) -> dict[str, Any]:
        """The Object Lock arguments of a final object's write: the retention counted from
        now (the upload), and the legal hold."""
        args: dict[str, Any] = {}
        if self.object_lock_mode is not None and self.object_lock_retain_days is not None:
            args["ObjectLockMode"] = self.object_lock_mode
            args["ObjectLockRetainUntilDate"] = retain_until(
                datetime.now(UTC), self.object_lock_retain_days
            )
        if self.object_lock_legal_hold:
            args["ObjectLockLegalHoldStatus"] = "ON"
        return args

    def _final_settings(self, kept: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every setting a final object carries: storage class, encryption, retention and
        legal hold (`kept`: the object's own storage class and encryption, for a copy)."""
        args = {**self._encryption(kept), **self._lock()}
        storage = self.storage_class or (kept or {}).get("StorageClass")
        if storage:
            args["StorageClass"] = storage
        return args

    async def close(self) -> None:
        """Abort uploads a caller left open, then close the client."""
        await self._settle()
        for writer in list(self._open_writers):
            await writer.abort()
        await self._settle()
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _open_client(self) -> None:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import AioSession
            from botocore.exceptions import BotoCoreError
        except ImportError:
            raise ConfigurationError(
                f"S3 destinations need the optional S3 client: {_EXTRA_HINT}"
            ) from None
        config = AioConfig(
            request_checksum_calculation=self.request_checksum_calculation,
            response_checksum_validation="when_required",
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            s3={"addressing_style": "path"} if self.endpoint_url else None,
            connect_timeout=20,
            read_timeout=120,
            max_pool_connections=32,
        )
        stack = contextlib.AsyncExitStack()
        try:
            session = AioSession(profile=self.profile)
            region = self.region or session.get_config_variable("region")
            if region is None and self.endpoint_url is not None:
                region = "us-east-1"  # S3-compatible stores sign with any region
            creator = session.create_client(
                "s3", region_name=region, endpoint_url=self.endpoint_url, config=config
            )
            self._client = await stack.enter_async_context(creator)
            self._client.meta.events.register("before-sign.s3.CopyObject", _copy_md5)
            credentials = await session.get_credentials()
            if credentials is not None:
                frozen = await credentials.get_frozen_credentials()
                _guard_client_logs((frozen.secret_key, frozen.token))
            else:
                _guard_client_logs(())
        except BotoCoreError as err:
            await stack.aclose()
            failure = ConfigurationError(
                f"{self.describe()}: cannot set up the S3 client ({type(err).__name__})"
            )
            raise failure from None
        self._stack = stack

    async def _shielded(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run `coro` to its end even if the caller is cancelled; `close()` waits for it."""
        task = asyncio.ensure_future(coro)
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)
        return await asyncio.shield(task)

    async def _settle(self) -> None:
        while self._cleanup:
            await asyncio.gather(*list(self._cleanup), return_exceptions=True)

    def _require_client(self) -> Any:
        if self._client is None:
            raise ObjectStoreError(f"{self.describe()}: S3Sink used before prepare()")
        return self._client

    def _translate(self, err: BaseException, doing: str) -> ObjectStoreError:
        """A one-line, secret-free `ObjectStoreError` naming the bucket, from a client error."""
        if isinstance(err, ObjectStoreError):
            return err
        code, status = _error_code(err)
        name = type(err).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
            return StorageCredentialsError(
                f"{self.describe()}: no usable AWS credentials ({name})", code=name
            )
        cls = classify_s3_error(code, status)
        what = {
            BucketNotFoundError: f"bucket {self.bucket!r} does not exist",
            StorageCredentialsError: "the store refused the AWS credentials",
            StoragePermissionError: f"access to bucket {self.bucket!r} denied",
        }.get(cls, f"{doing} failed")
        detail = code or name
        return cls(f"{self.describe()}: {what} ({detail})", code=code)

    # -- lookup ---------------------------------------------------------------------------

    def _folder(self, recording_id: str, recording: Recording | None) -> str | None:
        """The folder a recording's key is in, as `archive_key` decides (a date layout
        without `add_time` falls back to the root); None when that cannot be known."""
        if self.layout == "flat":
            return ""
        if recording is None:
            return None
        key = archive_key(
            recording_id, extension="bin", add_time=recording.add_time, layout=self.layout
        )
        return key[: key.rfind("/") + 1]

    def key_for(self, recording: Recording, container: str | None) -> str:
        """The key relative to the prefix for `recording` with the sniffed `container`."""
        return archive_key(
            recording.recording_id,
            extension=file_extension(container, recording.recording_format),
            add_time=recording.add_time,
            layout=self.layout,
        )

    async def lookup(
        self, recording_id: str, recording: Recording | None, *, key: str | None = None
    ) -> Stored | None:
        """The object stored for the recording as the store has it now, or None.

        With `key` (where an index says the recording was stored): one `HEAD`, giving the
        object's real size and its own `sha256` metadata (re-hashed with a GET when the
        metadata is missing), never the index's hash, so an object overwritten after
        archiving disagrees with the index. Without `key` there is nothing to compare a hash
        with: the object is found by one listing narrowed to `<folder><id>.` (one small
        request whatever the prefix holds) and reported with its size and no sha256; once a
        batch has looked up `list_after` recordings in one folder, that folder is listed
        whole once and answers every later lookup without a request until `prepare()`.
        """
        try:
            stem = safe_file_stem(recording_id)
        except InvalidRecordingIdError:
            return None
        if key is not None:
            return await self._inspect(key)
        folder = self._folder(stem, recording)
        if folder is None:
            return None
        found = await self._find(folder, stem)
        if found is None:
            return None
        extension, size, unstamped = found
        key = f"{folder}{stem}.{extension}"
        if unstamped:  # completed, maybe never stamped: its HEAD tells, and it gets its sha256
            return await self._inspect(key, rehash=False)
        if await self._may_have_left_a_version(size):  # its HEAD settles its versions
            return await self._inspect(key, rehash=False)
        return Stored(
            key=key,
            location=self.location(key),
            size=size,
            container=extension if extension in ("mp3", "wav") else None,
        )

    async def _find(self, folder: str, stem: str) -> _Listed | None:
        """The extension and size of `stem`'s object directly under `folder`, and whether it
        may lack its sha256 stamp."""
        listing = self._listings.get(folder)
        if listing is None:
            self._lookups[folder] = self._lookups.get(folder, 0) + 1
            if self._lookups[folder] >= self.list_after:
                listing = await self._listing(folder)
        if listing is not None:
            return listing.get(stem)
        named = f"{self.prefix}{folder}{stem}."
        try:
            page = await self._require_client().list_objects_v2(
                Bucket=self.bucket, Prefix=named, MaxKeys=_STEM_KEYS
            )
        except Exception as err:
            raise self._translate(err, f"listing {named!r}") from None
        for item in page.get("Contents", ()):
            extension = item["Key"][len(named) :]
            if (
                extension
                and "/" not in extension
                and "." not in extension
                and _recording(extension)
            ):
                return sys.intern(extension), int(item["Size"]), _multipart(item)
        return None

    async def _inspect(self, key: str, *, rehash: bool = True) -> Stored | None:
        """The object at `key` (relative to the prefix) by one `HEAD`; None if absent. An
        object without `sha256` metadata is re-hashed (and stamped, if ours: `_recover`);
        without `rehash`, only if ours, else it is reported with no sha256, as a listing
        would."""
        full = self.prefix + key
        try:
            head = await self._require_client().head_object(Bucket=self.bucket, Key=full)
        except Exception as err:
            if _error_code(err)[1] == 404:
                return None
            raise self._translate(err, f"checking {full!r}") from None
        metadata = head.get("Metadata") or {}
        sha256 = (metadata.get("sha256") or "").lower()
        if not sha256 and (rehash or metadata.get("recording-id")):
            sha256 = await self._recover(full, head)
        elif sha256:
            await self._settle_versions(full, head)
        extension = key.rpartition(".")[2]
        return Stored(
            key=key,
            location=self.location(key),
            size=int(head["ContentLength"]),
            sha256=sha256 or None,
            container=extension if extension in ("mp3", "wav") else None,
        )

    async def digest(self, key: str) -> Stored:
        """The object under `key` with its sha256: its `sha256` metadata, or (when absent)
        the sha256 of its bytes, read back once (for an object an index does not know), and
        stamped on an object this library uploaded (`_recover`)."""
        client = self._require_client()
        full_key = self.prefix + key
        try:
            head = await client.head_object(Bucket=self.bucket, Key=full_key)
            sha256 = head.get("Metadata", {}).get("sha256")
            size = int(head["ContentLength"])
        except Exception as err:
            raise self._translate(err, f"reading {full_key!r}") from None
        if not sha256:
            sha256 = await self._recover(full_key, head)
        else:
            await self._settle_versions(full_key, head)
        extension = key.rpartition(".")[2]
        container = head.get("Metadata", {}).get("container") or (
            extension if extension in ("mp3", "wav") else None
        )
        return Stored(key, self.location(key), size, sha256=sha256.lower(), container=container)

    async def _rehash(self, full_key: str, etag: str | None = None) -> str:
        """The sha256 of the object's bytes, streamed (for an object without the metadata);
        with `etag`, of that version of the object only."""
        logger.info("s3://%s/%s has no sha256 metadata: re-hashing it", self.bucket, full_key)
        return (await _hash_object(self, self._require_client(), full_key, etag))[0]

    async def _recover(self, full_key: str, head: Mapping[str, Any]) -> str:
        """The sha256 of an object without the metadata (`head`: its HEAD), re-hashed.

        An object this library uploaded (its `recording-id` metadata, set when the upload
        started) lacks it only when a run stopped between completing the multipart upload
        and stamping it; its bytes were verified before the upload was completed, so it is
        stamped now with that hash and the sink's settings, as the run would have done. A
        failed stamp is logged: the hash is still returned."""
        etag = head.get("ETag")
        sha256 = await self._rehash(full_key, etag)
        metadata = dict(head.get("Metadata") or {})
        if not metadata.get("recording-id") or not etag or not self._writing:
            return sha256  # not ours (or a reader): `verify` reports it, nothing rewrites it
        try:
            await self._stamp(
                full_key,
                etag,
                head.get("VersionId"),
                head.get("ContentType") or "application/octet-stream",
                {**metadata, "sha256": sha256},
                kept=head,
            )
        except Exception as err:
            logger.warning(
                "s3://%s/%s: could not record its sha256: %s",
                self.bucket,
                full_key,
                self._translate(err, "recording the object's sha256"),
            )
        else:
            logger.info(
                "s3://%s/%s: recorded its sha256 (a run stopped before it could)",
                self.bucket,
                full_key,
            )
        return sha256

    async def _listing(self, folder: str) -> dict[str, _Listed]:
        if folder in self._listings:
            return self._listings[folder]
        lock = self._listing_locks.setdefault(folder, asyncio.Lock())
        async with lock:
            if folder not in self._listings:
                self._listings[folder] = await self._list_folder(folder)
        return self._listings[folder]

    async def _list_folder(self, folder: str) -> dict[str, _Listed]:
        """stem -> (extension, size) for the objects directly under `folder`. About 210
        bytes an object with UUID ids (tracemalloc), so a flat prefix of a million
        recordings costs about 210 MB for a batch; `layout="date"` lists only the days a
        batch touches."""
        client = self._require_client()
        full = self.prefix + folder
        entries: dict[str, _Listed] = {}
        token: str | None = None
        try:
            while True:
                kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full, "Delimiter": "/"}
                if token:
                    kwargs["ContinuationToken"] = token
                page = await client.list_objects_v2(**kwargs)
                for item in page.get("Contents", ()):
                    name = item["Key"][len(full) :]
                    stem, dot, extension = name.rpartition(".")
                    if dot and stem and stem not in entries and _recording(extension):
                        entries[stem] = (sys.intern(extension), int(item["Size"]), _multipart(item))
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
        except Exception as err:
            raise self._translate(err, f"listing {full!r}") from None
        logger.debug("listed %d objects under %s", len(entries), self.location(folder))
        return entries

    def _remember(self, key: str, size: int) -> None:
        folder, _, name = key.rpartition("/")
        listing = self._listings.get(folder + "/" if folder else "")
        if listing is not None:
            stem, _, extension = name.rpartition(".")
            listing[stem] = (sys.intern(extension), size, False)

    # -- writing --------------------------------------------------------------------------

    async def open(self, recording: Recording, *, size_hint: int | None = None) -> _S3Writer:
        """A writer for `recording`; an object store holds nothing from earlier runs, so it
        always starts at offset 0."""
        self._require_client()
        safe_file_stem(recording.recording_id)  # a hostile id fails before any byte
        writer = _S3Writer(self, recording, size_hint)
        self._open_writers.add(writer)
        return writer

    async def put_file(self, key: str, data: bytes, *, content_type: str) -> Stored:
        """One `PutObject` of `data` at `prefix + key` with `Content-MD5`, its sha256 and the
        sink's settings (storage class, encryption, retention, legal hold), as a recording."""
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            await self._require_client().put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                ContentMD5=await _content_md5(memoryview(data)),
                ContentType=content_type,
                Metadata={"sha256": sha256},
                **self._final_settings(),
            )
        except Exception as err:
            raise self._translate(err, "storing the object") from None
        return Stored(key=key, location=self.location(key), size=len(data), sha256=sha256)

    async def _stamp_completed(
        self, key: str, done: Mapping[str, Any], content_type: str, metadata: dict[str, str]
    ) -> None:
        """Stamp a just-completed multipart object (`done`: CompleteMultipartUpload's answer)
        with its sha256; if that fails, take the object away: without its sha256 it would
        pass for unverified (unless the precondition failed: the object under the key is
        then no longer ours)."""
        full_key = self.prefix + key
        version = done.get("VersionId")
        try:
            await self._stamp(full_key, done["ETag"], version, content_type, metadata)
        except Exception as err:
            if _error_code(err)[0] != "PreconditionFailed":
                which = {"VersionId": version} if _real_version(version) else {}
                with contextlib.suppress(Exception):
                    await self._require_client().delete_object(
                        Bucket=self.bucket, Key=full_key, **which
                    )
            raise self._translate(err, "recording the object's sha256") from None

    async def _stamp(
        self,
        full_key: str,
        etag: str,
        version: str | None,
        content_type: str,
        metadata: dict[str, str],
        kept: Mapping[str, Any] | None = None,
    ) -> None:
        """Copy an object onto itself with `metadata` (its sha256 in it) and every setting,
        conditional on its ETag, then remove the version the copy replaced.

        A multipart upload's metadata is fixed when it starts, before the hash is known, so
        the sha256 comes by this copy, which also sets the storage class, retention and
        legal hold: a copy keeps none of them unless given again (`kept`: the object's own
        storage class and encryption, for an object the sink did not just upload). In a
        versioned bucket (Object Lock implies one) the copy is a new version: the one it
        replaces, which carries no retention, is deleted by its id, so each recording ends
        as one version. The copy carries `_STAMP_MARK`: a run stopped before that delete
        leaves the replaced version behind, which the next run removes (`_settle_versions`)."""
        source = {"Bucket": self.bucket, "Key": full_key}
        if _real_version(version):
            source["VersionId"] = str(version)
        copied = await self._require_client().copy_object(
            Bucket=self.bucket,
            Key=full_key,
            CopySource=source,
            CopySourceIfMatch=etag,
            MetadataDirective="REPLACE",
            ContentType=content_type,
            Metadata={**metadata, _STAMP_MARK: "1"},
            **self._final_settings(kept),
        )
        if _real_version(version) and copied.get("VersionId") != version:
            await self._drop_version(full_key, str(version))

    async def _drop_version(self, full_key: str, version: str) -> None:
        try:
            await self._require_client().delete_object(
                Bucket=self.bucket, Key=full_key, VersionId=version
            )
        except Exception as err:
            logger.warning(
                "s3://%s/%s: could not remove version %s, which its sha256 stamp replaced: %s",
                self.bucket,
                full_key,
                version,
                self._translate(err, "removing the replaced version"),
            )

    # -- one version per key, also after a stopped run ----------------------------------

    async def _is_versioned(self) -> bool:
        """Whether the bucket keeps versions (versioning enabled or suspended), for
        `audit_objects` and a lookup without a key: one GetBucketVersioning per batch,
        asked when first needed. A refusal counts as no, once said: then no key's versions
        are looked at."""
        async with self._versioning_lock:
            if self._versioned is None:
                try:
                    answer = await self._require_client().get_bucket_versioning(Bucket=self.bucket)
                except Exception as err:
                    logger.warning(
                        "%s: cannot tell whether the bucket keeps versions (%s): keys with "
                        "more than one version are not looked for",
                        self.describe(),
                        self._translate(err, "reading the bucket's versioning"),
                    )
                    self._versioned = False
                else:
                    self._versioned = answer.get("Status") in ("Enabled", "Suspended")
            return self._versioned

    async def _may_have_left_a_version(self, size: int) -> bool:
        """Whether a listed object (a listing shows no metadata) is worth a HEAD for the
        version a stopped run may have left beside it: for a writer, only an object larger
        than a part (so a stamped multipart one, at this sink's part size) in a bucket that
        keeps versions."""
        return self._writing and size > self.part_size and await self._is_versioned()

    async def _settle_versions(self, full_key: str, head: Mapping[str, Any]) -> None:
        """Remove the unstamped version a run stopped between the stamping copy and the
        delete of the version it replaced (`_stamp`) left behind, so the key ends as one
        version again (`head`: the current version's HEAD, stamped with its sha256).

        Looked at only by a writer, only for an object stamped by a copy (`_STAMP_MARK`)
        whose HEAD names a version (so written while the bucket kept versions; no
        GetBucketVersioning needed), once per key and batch: one ListObjectVersions per such
        object, nothing for a single-PUT object or in a bucket without versioning.

        An older version is deleted by its id only when it holds the same bytes (the same
        size, and its own sha256 metadata or, without it, its re-hashed bytes equal to the
        current one's); any other is reported in a warning and kept. The current version is
        never deleted."""
        metadata = head.get("Metadata") or {}
        current = head.get("VersionId")
        sha256 = (metadata.get("sha256") or "").lower()
        if (
            not self._writing
            or not metadata.get(_STAMP_MARK)
            or not sha256
            or not _real_version(current)
            or full_key in self._settled
        ):
            return
        self._settled.add(full_key)
        for version in await self._older_versions(full_key, str(current)):
            size = int(version.get("Size", -1))
            if size == int(head["ContentLength"]) and await self._same_bytes(
                full_key, str(version["VersionId"]), sha256
            ):
                await self._drop_leftover(full_key, str(version["VersionId"]))
            else:
                logger.warning(
                    "s3://%s/%s: an older version (%s, %d bytes) holds other content than the "
                    "current one; kept, not deleted",
                    self.bucket,
                    full_key,
                    version.get("VersionId"),
                    size,
                )

    async def _older_versions(self, full_key: str, current: str) -> list[Mapping[str, Any]]:
        """The versions of `full_key` other than `current` (delete markers left out)."""
        client = self._require_client()
        found: list[Mapping[str, Any]] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full_key}
        try:
            while True:
                page = await client.list_object_versions(**kwargs)
                keys = [v for v in page.get("Versions", ()) if v.get("Key") == full_key]
                found += [v for v in keys if v.get("VersionId") != current]
                if not page.get("IsTruncated") or page.get("NextKeyMarker") != full_key:
                    break  # the key's versions come first: a later page holds other keys
                kwargs["KeyMarker"] = page["NextKeyMarker"]
                kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")
        except Exception as err:
            logger.warning(
                "s3://%s/%s: cannot list its versions: %s",
                self.bucket,
                full_key,
                self._translate(err, "listing the object's versions"),
            )
            return []
        return found

    async def _same_bytes(self, full_key: str, version: str, sha256: str) -> bool:
        """Whether a version of `full_key` holds the bytes whose sha256 is `sha256`: its own
        `sha256` metadata says so or, without that metadata, its bytes re-hashed (one GET,
        only for a version a stopped run left). Unreadable: no."""
        client = self._require_client()
        try:
            response = await client.get_object(Bucket=self.bucket, Key=full_key, VersionId=version)
            async with response["Body"] as body:
                own = ((response.get("Metadata") or {}).get("sha256") or "").lower()
                if own:
                    return own == sha256
                hasher = hashlib.sha256()
                while chunk := await body.read(_READ_CHUNK):
                    hasher.update(chunk)
        except Exception as err:
            logger.info(
                "s3://%s/%s: cannot read its version %s: %s",
                self.bucket,
                full_key,
                version,
                self._translate(err, "reading an older version"),
            )
            return False
        return hasher.hexdigest() == sha256

    async def _drop_leftover(self, full_key: str, version: str) -> None:
        """Delete the version a stopped run left; a refusal (a lock, AccessDenied) is said
        once a batch at warning level: the recording itself, its current version, is safe."""
        try:
            await self._require_client().delete_object(
                Bucket=self.bucket, Key=full_key, VersionId=version
            )
        except Exception as err:
            level = logging.DEBUG if self._version_refusal_told else logging.WARNING
            self._version_refusal_told = True
            logger.log(
                level,
                "s3://%s/%s: could not remove version %s, left by a run stopped after its "
                "sha256 stamp: %s (the recording itself is safe)",
                self.bucket,
                full_key,
                version,
                self._translate(err, "removing the older version"),
            )
            return
        logger.info(
            "s3://%s/%s: removed version %s, left by a run stopped after its sha256 stamp",
            self.bucket,
            full_key,
            version,
        )

    def _metadata(self, recording: Recording, container: str | None) -> dict[str, str]:
        return {
            "recording-id": recording.recording_id,
            "add-time": recording.add_time.isoformat() if recording.add_time else "",
            "container": container or "",
        }


class _PartBuffer:
    """One part's bytes in an anonymous mmap, handed back to the OS when closed.

    Not a `bytearray`: glibc serves 8 MiB blocks from its heap once one was freed and keeps
    what is freed there, which cost about 30 MB of peak RSS in a 16-upload batch
    (`benchmarks/RESULTS.md`, experiment 26). Pages are touched only as bytes arrive.
    """

    def __init__(self, size: int) -> None:
        self._map = mmap.mmap(-1, max(size, 1))
        self.length = 0

    def append(self, piece: memoryview) -> None:
        self._map[self.length : self.length + len(piece)] = piece
        self.length += len(piece)

    def grown(self, size: int) -> _PartBuffer:
        """A bigger buffer holding the same bytes; this one is closed."""
        bigger = _PartBuffer(size)
        with memoryview(self._map) as whole, whole[: self.length] as held:
            bigger.append(held)
        self.close()
        return bigger

    def view(self) -> memoryview:
        """The held bytes, without a copy; release the view before `close`."""
        with memoryview(self._map) as whole:
            return whole[: self.length]

    def data(self) -> bytes:
        return self._map[: self.length]

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a view still out: the GC unmaps it later
            self._map.close()


class _PartBody(io.RawIOBase):
    """A part's buffer as a seekable stream, without copying it: aiohttp streams a file-like
    body in pieces (it warns about big `bytes` bodies), and botocore rewinds it to retry."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), len(self._view) - self._pos))
        buffer[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:  # aiohttp closes a payload it sent; a retry still rewinds it
        pass


async def _content_md5(body: memoryview) -> str:
    def digest() -> str:
        return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()

    return digest() if len(body) <= _MD5_INLINE else await asyncio.to_thread(digest)


class _S3Writer:
    """One recording on its way into the bucket: a part filling, parts in flight, and the
    multipart upload they belong to (started only when the first part is full)."""

    def __init__(self, sink: S3Sink, recording: Recording, size_hint: int | None) -> None:
        self._sink = sink
        self._recording = recording
        self._size_hint = size_hint
        self._validator: str | None = None
        self._reset()
        self._finished = False

    def _reset(self) -> None:
        self._offset = 0
        self._head = b""
        self._buf: _PartBuffer | None = None  # the part being filled
        self._pos = 0  # bytes in _buf
        self._reserved = 0  # budget held for _buf
        self._upload_id: str | None = None
        self._key: str | None = None
        self._started_container: str | None = None
        self._next_part = 1
        self._parts: dict[int, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: ObjectStoreError | None = None
        self._completing = False

    def __repr__(self) -> str:
        return (
            f"<S3 writer {self._recording.recording_id!r} offset={self._offset} "
            f"parts={len(self._parts)} in {self._sink.describe()}>"
        )

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def validator(self) -> str | None:
        return self._validator

    async def remember(self, validator: str | None) -> None:
        self._validator = validator  # within this run only: an upload restarts across runs

    async def read_back(self) -> AsyncIterator[bytes]:
        """The held bytes while they are all still here; once parts left for the store
        they cannot be read back (an unfinished upload is not readable), and an object
        store writer never starts with bytes from an earlier run, so nothing needs to."""
        if self._upload_id is not None:
            raise ObjectStoreError(
                f"{self._sink.describe()}: an unfinished upload cannot be read back"
            )
        if self._buf is not None and self._pos:
            yield self._buf.data()

    async def write(self, chunk: bytes) -> None:
        self._check_usable()
        view = memoryview(chunk)
        while view:
            if self._pos == self._reserved:
                await self._reserve()
            room = self._reserved - self._pos
            piece, view = view[:room], view[room:]
            assert self._buf is not None  # reserved above
            self._buf.append(piece)
            self._pos += len(piece)
            if len(self._head) < _HEAD_BYTES:
                self._head += bytes(piece[: _HEAD_BYTES - len(self._head)])
            self._offset += len(piece)
            if self._pos >= self._sink.part_size:
                await self._send_part()

    def _check_usable(self) -> None:
        if self._finished:
            raise ObjectStoreError(f"{self._sink.describe()}: writer already finished")
        if self._failure is not None:
            raise self._failure

    async def _reserve(self) -> None:
        """Budget for the part being filled: the rest of the size hint if that is smaller
        than a part, else a whole part (also when the body outgrew its hint)."""
        part = self._sink.part_size
        target = part
        if self._size_hint is not None:
            left = self._size_hint - (self._offset - self._pos)
            if left > self._pos:
                target = min(part, left)
        if target <= self._reserved:
            target = part
        await self._sink.budget.acquire(target - self._reserved)
        if self._buf is None:
            self._buf = _PartBuffer(target)
        else:
            self._buf = self._buf.grown(target)
        self._reserved = target

    async def _send_part(self) -> None:
        if self._next_part > _MAX_PARTS:
            self._failure = ObjectStoreError(
                f"{self._sink.describe()}: more than {_MAX_PARTS} parts; raise part_size"
            )
            raise self._failure
        if self._upload_id is None:
            await self._start_upload()
        body, reserved = self._take_buffer()
        number = self._next_part
        self._next_part += 1
        task = asyncio.create_task(self._upload_part(number, body, reserved))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_buffer(self) -> tuple[_PartBuffer, int]:
        body, reserved = self._buf or _PartBuffer(0), self._reserved
        self._buf, self._pos, self._reserved = None, 0, 0
        return body, reserved

    async def _start_upload(self) -> None:
        sink = self._sink
        container = sniff_container(self._head)
        key = sink.key_for(self._recording, container)
        self._key = key
        self._started_container = container
        # Shielded: an upload the store created must be known here even if the caller is
        # cancelled meanwhile, or nothing would ever abort it.
        await sink._shielded(self._create_upload(key, container))
        if self._failure is not None:
            raise self._failure

    async def _create_upload(self, key: str, container: str | None) -> None:
        sink = self._sink
        try:
            created = await sink._require_client().create_multipart_upload(
                Bucket=sink.bucket,
                Key=sink.prefix + key,
                ContentType=media_type(container),
                Metadata=sink._metadata(self._recording, container),
                # Encrypted from the first byte; the storage class, retention and legal hold
                # go on the stamped copy only (`_complete_upload`).
                **sink._encryption(),
            )
        except Exception as err:
            self._failure = sink._translate(err, "starting an upload")
            return
        self._upload_id = created["UploadId"]
        logger.debug("started upload of %s", sink.location(key))
        if self._finished:  # aborted while the request was out: abort what it created
            self._upload_id = None
            await self._abort_upload(key, created["UploadId"])

    async def _upload_part(self, number: int, buffer: _PartBuffer, reserved: int) -> None:
        sink = self._sink
        view = buffer.view()
        try:
            response = await sink._require_client().upload_part(
                Bucket=sink.bucket,
                Key=sink.prefix + (self._key or ""),
                UploadId=self._upload_id,
                PartNumber=number,
                Body=_PartBody(view),
                ContentMD5=await _content_md5(view),
            )
            self._parts[number] = response["ETag"]
        except asyncio.CancelledError:
            raise
        except Exception as err:
            logger.debug("part %d of %s failed: %s", number, self._key, type(err).__name__)
            if self._failure is None:
                self._failure = sink._translate(err, f"uploading part {number}")
        finally:
            view.release()
            buffer.close()
            sink.budget.release(reserved)

    async def restart(self) -> None:
        """Abort the upload under way and hold nothing; the next `write` is byte 0."""
        self._check_finished()
        await self._discard()
        self._reset()

    def _check_finished(self) -> None:
        if self._finished:
            raise ObjectStoreError(f"{self._sink.describe()}: writer already finished")

    async def commit(self, *, container: str | None, size: int, sha256: str) -> Stored:
        self._check_finished()
        sink = self._sink
        try:
            if self._failure is not None:
                raise self._failure
            if size != self._offset:
                raise IntegrityError(
                    f"{sink.describe()}: {size} bytes verified but {self._offset} written"
                )
            if container is None:
                container = sniff_container(self._head)
            if self._upload_id is None:
                key = sink.key_for(self._recording, container)
                await self._put_whole(key, container, sha256)
            else:
                # Every byte is verified by now: a cancellation must not strand the upload
                # half-completed, so completing it (or aborting on failure) runs to the end.
                self._completing = True
                key = await sink._shielded(self._complete(container, sha256))
        except asyncio.CancelledError:
            if self._completing:  # the completion runs on and cleans up after itself
                self._finished = True
                sink._open_writers.discard(self)
            else:
                await self.abort()
            raise
        except BaseException:
            await self.abort()
            raise
        self._finished = True
        sink._open_writers.discard(self)
        sink._remember(key, size)
        logger.debug("stored %s (%d bytes)", sink.location(key), size)
        return Stored(
            key=key, location=sink.location(key), size=size, sha256=sha256, container=container
        )

    async def _put_whole(self, key: str, container: str | None, sha256: str) -> None:
        sink = self._sink
        buffer, reserved = self._take_buffer()
        view = buffer.view()
        try:
            await sink._require_client().put_object(
                Bucket=sink.bucket,
                Key=sink.prefix + key,
                Body=_PartBody(view),
                ContentMD5=await _content_md5(view),
                ContentType=media_type(container),
                Metadata={**sink._metadata(self._recording, container), "sha256": sha256},
                **sink._final_settings(),
            )
        except Exception as err:
            raise sink._translate(err, "storing the object") from None
        finally:
            view.release()
            buffer.close()
            sink.budget.release(reserved)

    async def _complete(self, container: str | None, sha256: str) -> str:
        try:
            return await self._complete_upload(container, sha256)
        except BaseException:
            await self._discard()
            raise

    async def _complete_upload(self, container: str | None, sha256: str) -> str:
        sink = self._sink
        key = self._key or ""
        if container != self._started_container:
            raise ObjectStoreError(
                f"{sink.location(key)}: the container ({container}) differs from the one the "
                f"upload started with ({self._started_container})"
            )
        await self._send_last_parts()
        parts = [{"PartNumber": n, "ETag": self._parts[n]} for n in sorted(self._parts)]
        if len(parts) != self._next_part - 1:
            raise ObjectStoreError(f"{sink.location(key)}: a part went missing")
        try:
            done = await sink._require_client().complete_multipart_upload(
                Bucket=sink.bucket,
                Key=sink.prefix + key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
        except Exception as err:
            raise sink._translate(err, "completing the upload") from None
        self._upload_id = None  # completed: nothing left to abort
        metadata = {**sink._metadata(self._recording, container), "sha256": sha256}
        await sink._stamp_completed(key, done, media_type(container), metadata)
        return key

    async def _send_last_parts(self) -> None:
        if self._pos:
            await self._send_part()
        if self._tasks:
            await asyncio.gather(*list(self._tasks))
        if self._failure is not None:
            raise self._failure

    async def abort(self) -> None:
        """Stop: cancel parts in flight, abort the multipart upload, hold nothing."""
        if self._finished:
            return
        self._finished = True
        self._sink._open_writers.discard(self)
        await self._discard()

    async def _discard(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._reserved:
            self._sink.budget.release(self._reserved)
        if self._buf is not None:
            self._buf.close()
        self._buf, self._pos, self._reserved = None, 0, 0
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        # Shielded: a second Ctrl-C must not leave the upload behind; close() awaits it.
        await self._sink._shielded(self._abort_upload(self._key or "", upload_id))

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        sink = self._sink
        try:
            await sink._require_client().abort_multipart_upload(
                Bucket=sink.bucket, Key=sink.prefix + key, UploadId=upload_id
            )
            logger.debug("aborted upload of %s", sink.location(key))
        except Exception as err:
            logger.warning(
                "could not abort the upload of %s: %s (a lifecycle rule for incomplete "
                "multipart uploads cleans it up)",
                sink.location(key),
                sink._translate(err, "aborting the upload"),
            )


async def verify_objects(sink: S3Sink) -> list[ObjectProblem]:
    """The problems `audit_objects` finds (without the count of objects it checked)."""
    return (await audit_objects(sink)).problems


async def audit_objects(sink: S3Sink) -> ObjectAudit:
    """Stream every object under the sink's prefix, recompute its sha256 and compare it with
    the object's `sha256` metadata (and the sink's `index`, when it has one and knows the
    recording); report the objects without that metadata or whose bytes changed and, for
    each setting the sink has (storage class, encryption, retention, legal hold), the
    objects whose own differs. Counts the objects it checked.

    Prepares (as a reader: `prepare(writing=False)`) and closes the sink itself when it is
    not prepared already.
    """
    owned = sink._client is None
    if owned:
        await sink.prepare(writing=False)
    try:
        client = sink._require_client()
        problems: list[ObjectProblem] = []
        checked = 0
        keys: set[str] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": sink.bucket, "Prefix": sink.prefix}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = await client.list_objects_v2(**kwargs)
            except Exception as err:
                raise sink._translate(err, "listing the prefix") from None
            for item in page.get("Contents", ()):
                problems += await _verify_one(sink, client, item["Key"])
                keys.add(item["Key"][len(sink.prefix) :])
                checked += 1
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
        if await sink._is_versioned():
            problems += await _extra_versions(sink, client)
        return ObjectAudit(checked=checked, problems=problems, keys=frozenset(keys))
    finally:
        if owned:
            await sink.close()


async def _extra_versions(sink: S3Sink, client: Any) -> list[ObjectProblem]:
    """The keys under the sink's prefix that keep more than one version while their current
    one is an object (not a delete marker): one ListObjectVersions pass over the prefix,
    counted key by key as the listing streams (a key's versions come together)."""
    problems: list[ObjectProblem] = []
    counted: tuple[str, int, bool] = ("", 0, False)  # key, versions, current one an object

    def close(key: str, versions: int, live: bool) -> None:
        if live and versions > 1:
            relative = key[len(sink.prefix) :]
            problems.append(
                ObjectProblem(
                    relative,
                    sink.location(relative),
                    "extra-version",
                    "1 version",
                    f"{versions} versions",
                )
            )

    kwargs: dict[str, Any] = {"Bucket": sink.bucket, "Prefix": sink.prefix}
    while True:
        try:
            page = await client.list_object_versions(**kwargs)
        except Exception as err:
            raise sink._translate(err, "listing the prefix's versions") from None
        for version in page.get("Versions", ()):
            key, versions, live = counted
            if version["Key"] != key:
                close(key, versions, live)
                key, versions, live = version["Key"], 0, False
            counted = (key, versions + 1, live or bool(version.get("IsLatest")))
        if not page.get("IsTruncated"):
            break
        kwargs["KeyMarker"] = page.get("NextKeyMarker")
        kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")
    close(*counted)
    return problems


async def _hash_object(
    sink: S3Sink, client: Any, full_key: str, etag: str | None = None
) -> tuple[str, Mapping[str, Any]]:
    """The sha256 of an object's bytes, streamed, and GetObject's answer (its metadata,
    storage class, encryption and Object Lock fields); with `etag`, of that version only."""
    condition = {"IfMatch": etag} if etag else {}
    try:
        response = await client.get_object(Bucket=sink.bucket, Key=full_key, **condition)
        hasher = hashlib.sha256()
        async with response["Body"] as body:
            while chunk := await body.read(_READ_CHUNK):
                hasher.update(chunk)
    except Exception as err:
        raise sink._translate(err, f"reading {full_key!r}") from None
    return hasher.hexdigest(), response


async def _verify_one(sink: S3Sink, client: Any, full_key: str) -> list[ObjectProblem]:
    key = full_key[len(sink.prefix) :]
    actual, response = await _hash_object(sink, client, full_key)
    metadata = response.get("Metadata") or {}
    where = sink.location(key)
    found = [
        ObjectProblem(key, where, kind, expected, got)
        for kind, expected, got in settings_differences(sink, response)
    ]
    expected = metadata.get("sha256")
    if not expected:
        return [ObjectProblem(key, where, "missing-metadata", None, actual), *found]
    if expected.lower() != actual:
        return [ObjectProblem(key, where, "changed", expected, actual), *found]
    if sink.index is not None and _recording(key.rpartition(".")[2]):  # not a sidecar
        recording_id = metadata.get("recording-id") or key.rpartition("/")[2].rpartition(".")[0]
        known = getattr(sink.index.get(recording_id), "sha256", None)
        if known and known.lower() != actual:
            return [ObjectProblem(key, where, "changed", known, actual), *found]
    return found


def settings_differences(
    sink: S3Sink, got: Mapping[str, Any]
) -> list[tuple[ProblemKind, str, str]]:
    """How an object (`got`: its GetObject or HeadObject answer) differs from the sink's
    settings, each as (kind, expected, actual); a setting the sink does not have is not
    compared."""
    found: list[tuple[ProblemKind, str, str]] = []
    if sink.storage_class:
        actual = got.get("StorageClass") or "STANDARD"  # S3 leaves STANDARD out
        if actual != sink.storage_class:
            found.append(("storage-class", sink.storage_class, actual))
    if sink.sse:
        encryption = _encryption_difference(sink.sse, sink.sse_kms_key_id, got)
        if encryption is not None:
            found.append(("encryption", *encryption))
    if sink.object_lock_mode and sink.object_lock_retain_days:
        retention = _retention_difference(sink.object_lock_mode, sink.object_lock_retain_days, got)
        if retention is not None:
            found.append(("retention", *retention))
    if sink.object_lock_legal_hold and got.get("ObjectLockLegalHoldStatus") != "ON":
        found.append(("legal-hold", "ON", got.get("ObjectLockLegalHoldStatus") or "OFF"))
    return found


def _encryption_difference(
    sse: str, key_id: str | None, got: Mapping[str, Any]
) -> tuple[str, str] | None:
    actual = got.get("ServerSideEncryption") or "none"
    actual_key = got.get("SSEKMSKeyId")
    if actual == sse and (key_id is None or _same_kms_key(key_id, actual_key)):
        return None
    expected = f"{sse} {key_id}" if key_id else sse
    return expected, f"{actual} {actual_key}" if actual_key else actual


def _same_kms_key(given: str, actual: str | None) -> bool:
    """Whether an object's KMS key (S3 answers with its ARN) is the one given as an id or
    an ARN. An alias cannot be resolved without KMS itself: any key passes for it."""
    if "alias/" in given:
        return True
    if actual is None:
        return False
    return given == actual or actual.endswith("/" + given) or given.endswith("/" + actual)


def _retention_difference(mode: str, days: int, got: Mapping[str, Any]) -> tuple[str, str] | None:
    """A retention in `mode` that ends at least `days` after the object was written (less
    `_RETENTION_SLACK`), or what the object has instead."""
    actual_mode = got.get("ObjectLockMode")
    until = got.get("ObjectLockRetainUntilDate")
    written = got.get("LastModified")
    long_enough = (
        isinstance(until, datetime)
        and isinstance(written, datetime)
        and until >= retain_until(written, days) - _RETENTION_SLACK
    )
    if actual_mode == mode and long_enough:
        return None
    shown = until.isoformat() if isinstance(until, datetime) else "no date"
    return f"{mode} for {days} days", f"{actual_mode or 'none'} until {shown}"
