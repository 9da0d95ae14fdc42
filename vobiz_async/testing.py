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
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import functools
import hashlib
import hmac
import http
import json
import math
import random
import struct
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Final, Literal, TypedDict, get_args
from urllib.parse import quote, urlencode

import attrs
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

__all__ = [
    "DEFAULT_AUTH_ID",
    "DEFAULT_AUTH_TOKEN",
    "ApiOperation",
    "ErrorBody",
    "FakeRecording",
    "FakeStats",
    "FakeVobiz",
    "MediaFaultKind",
    "RequestRecord",
    "SessionKwargs",
]


class SessionKwargs(TypedDict):
    """What `FakeVobiz.session_kwargs` returns: `AsyncSession(**kwargs)` connects to the fake."""

    auth_id: str
    auth_token: str
    base_url: str


DEFAULT_AUTH_ID: Final = "MA_FAKE00000000000000"
DEFAULT_AUTH_TOKEN: Final = "fake-token-not-a-secret-0123456789"  # noqa: S105 - a public fixture

MediaFaultKind = Literal["drop", "short", "status", "no_range", "etag_change", "expired", "slow"]
ApiOperation = Literal["list", "get", "delete", "bulk_delete", "export", "auth_me"]
ErrorBody = Literal["json", "generic", "export", "html"]

_MEDIA_KINDS: Final = frozenset(get_args(MediaFaultKind))
_API_OPERATIONS: Final = frozenset(get_args(ApiOperation))
_ERROR_BODIES: Final = frozenset(get_args(ErrorBody))

_BLOCK: Final = 64 * 1024  # body generation unit: any block can be made without the earlier ones
_SLOW_CHUNK: Final = 4 * 1024
_SLOW_DELAY: Final = 0.05  # "slow" streams about 80 KB/s
_SHUTDOWN_TIMEOUT: Final = 0.25

_M64: Final = (1 << 64) - 1
_M62: Final = (1 << 62) - 1
_MUL: Final = 0x2545F4914F6CDD1D & _M62  # odd, so invertible modulo 2**62
_MUL_INV: Final = pow(_MUL, -1, 1 << 62)

_UTC: Final = dt.UTC
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_IST_MINUTES: Final = 330
# The newest generated recording: 2026-05-07 09:45:35.79276+05:30.
_ANCHOR_US: Final = 1_778_127_335_792_760
_NOW_US: Final = _ANCHOR_US + 6 * 3600 * 1_000_000
_OFFSETS: Final = (330, 330, 330, 330, 330, 330, 330, 0, 240, -300)
_CONFERENCES: Final = ("standup", "sales-sync", "support-bridge", "ops-review", "board")

_NO_CREDENTIALS: Final = "Authentication credentials were not provided."
_BAD_CREDENTIALS: Final = "Incorrect authentication credentials."


# --------------------------------------------------------------------------- pure helpers


def _mix64(x: int) -> int:
    """Return the splitmix64 finaliser of ``x``: a cheap, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _scramble(x: int) -> int:
    """Permute 62-bit integers invertibly (see :func:`_unscramble`)."""
    for _ in range(2):
        x = (x * _MUL) & _M62
        x ^= x >> 31
    return x


def _unscramble(y: int) -> int:
    """Invert :func:`_scramble`."""
    for _ in range(2):
        y ^= y >> 31
        y = (y * _MUL_INV) & _M62
    return y


def _encode_uuid(index: int, key: int) -> str:
    """Return a uuid4-shaped id from which :func:`_decode_uuid` recovers ``index``."""
    low = _scramble((index ^ key) & _M62)
    high = (_mix64(low ^ key) & ~0xF000 & _M64) | 0x4000
    return str(uuid.UUID(int=(high << 64) | (0b10 << 62) | low))


def _decode_uuid(text: str, key: int) -> int | None:
    """Return the index :func:`_encode_uuid` would have built ``text`` from (unverified)."""
    if len(text) != 36:
        return None
    try:
        value = uuid.UUID(text).int
    except ValueError:
        return None
    return (_unscramble(value & _M62) ^ key) & _M62


def _seed_bytes(*parts: object) -> bytes:
    return ":".join(str(p) for p in parts).encode("utf-8", "surrogatepass")


def _format_add_time(instant_us: int, offset_minutes: int) -> str:
    """Format an instant the way Vobiz does: ``2026-05-07 09:45:35.79276+05:30``."""
    tz = dt.timezone(dt.timedelta(minutes=offset_minutes))
    moment = (_EPOCH + dt.timedelta(microseconds=instant_us)).astimezone(tz)
    fraction = f"{moment.microsecond:06d}".rstrip("0") or "0"
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{fraction}{sign}{hours:02d}:{minutes:02d}"


def _instant_of(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone(dt.timedelta(minutes=_IST_MINUTES)))
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _parse_instant(text: str) -> int:
    """Parse a filter or ``add_time`` value to epoch microseconds; naive means IST."""
    return _instant_of(dt.datetime.fromisoformat(text.strip()))


class _Unsatisfiable(Exception):
    """The Range header asks only for bytes past the end."""


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return ``(start, stop)`` for a single byte range, None to ignore the header.

    Raise ``_Unsatisfiable`` when the range starts past the end (RFC 9110 section 14.1.2).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - suffix), size
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    stop = size if not last else int(last) + 1
    if last and stop <= start:
        return None  # an invalid range is ignored, not refused
    if start >= size:
        raise _Unsatisfiable
    return start, min(stop, size)


def _parse_page(query: Mapping[str, str], max_limit: int) -> tuple[int, int] | str:
    """Return ``(limit, offset)`` from a list query, or the 400 message."""
    values = {"limit": 20, "offset": 0}
    for name in values:
        raw = query.get(name, "")
        if raw == "":
            continue
        if not raw.isdigit():
            return f"Invalid value for {name}: {raw!r}; expected a non-negative integer."
        values[name] = int(raw)
    if values["limit"] < 1:
        return "limit must be at least 1."
    return min(values["limit"], max_limit), values["offset"]


def _wav_header(size: int) -> bytes:
    """Return a 44-byte RIFF/WAVE header for 8 kHz 16-bit mono PCM of ``size`` bytes in all."""
    data = max(0, size - 44)
    return (
        b"RIFF"
        + struct.pack("<I", min(size - 8, 0xFFFFFFFF) if size >= 8 else 0)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
        + b"data"
        + struct.pack("<I", min(data, 0xFFFFFFFF))
    )


# ID3v2.3 tag with no frames, then an MPEG-2.5 layer III frame header (FF E3), 8 kHz mono.
_ID3_HEADER: Final = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xe3\x88\xc4"
_SYNC_HEADER: Final = b"\xff\xe3\x88\xc4"
_BYTES_PER_MS: Final = {"wav": 16, "mp3": 8}  # 8 kHz 16-bit PCM; 64 kbit/s MP3


def _header_for(container: str, header: str, size: int) -> bytes:
    if container == "wav":
        return _wav_header(size)
    return _ID3_HEADER if header == "id3" else _SYNC_HEADER


def _draw_duration_ms(rng: random.Random) -> int:
    """Draw a call length like real ones: median 40 s, from a few seconds to ten minutes."""
    seconds = min(600.0, max(3.0, rng.lognormvariate(math.log(40.0), 0.85)))
    return int(seconds * 1000) // 10 * 10


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --------------------------------------------------------------------------- records


@attrs.define
class RequestRecord:
    """One request the fake received."""

    method: str
    path: str  #: path and query as sent (percent-encoded)
    host: str  #: the Host header
    operation: str  #: list, get, delete, bulk_delete, export, auth_me, media, storage, unknown
    status: int
    credentials: bool  #: whether X-Auth-ID, X-Auth-Token or Authorization was present


@attrs.define
class FakeStats:
    """Counters a test can assert on; :meth:`reset` zeroes them (in-flight gauges excepted)."""

    requests: list[RequestRecord] = attrs.Factory(list)
    api_requests: int = 0
    media_requests: int = 0  #: Vobiz media and foreign storage requests
    foreign_requests: int = 0
    media_bytes_sent: int = 0
    media_in_flight: int = 0
    media_in_flight_max: int = 0
    api_in_flight: int = 0
    api_in_flight_max: int = 0
    #: TCP connections (to the API, media and foreign hosts) that carried their first
    #: request since the last reset; a client that reuses its connections keeps this low
    connections: int = 0
    foreign_credentials_seen: int = 0
    #: Media requests answered 429 by the ``media_rate_limit`` token bucket
    rate_limited: int = 0
    bulk_delete_queries: list[dict[str, str]] = attrs.Factory(list)
    export_bodies: list[Any] = attrs.Factory(list)

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.requests.clear()
        self.bulk_delete_queries.clear()
        self.export_bodies.clear()
        self.api_requests = self.media_requests = self.foreign_requests = 0
        self.media_bytes_sent = self.foreign_credentials_seen = self.connections = 0
        self.rate_limited = 0
        self.media_in_flight_max = self.media_in_flight
        self.api_in_flight_max = self.api_in_flight


@attrs.frozen
class FakeRecording:
    """One recording of the fake: its wire fields plus the facts behind its media body."""

    recording_id: str
    call_uuid: str
    recording_format: str  #: what the API claims
    container: str  #: what the bytes really are: "mp3" or "wav"
    recording_type: str
    add_time: str
    recording_duration_ms: str
    recording_start_ms: str | None
    recording_end_ms: str | None
    rounded_recording_duration: int
    from_number: str
    to_number: str
    conference_name: str | None
    recording_storage_duration: int
    recording_storage_rate: float
    monthly_recording_storage_amount: int | float
    extra_fields: Mapping[str, Any] = attrs.field(hash=False)
    size: int
    redirect_foreign: bool
    extra_hops: int
    url_override: str | None
    header: str = attrs.field(repr=False)  #: "id3", "sync" or "riff"
    instant_us: int = attrs.field(repr=False)
    seeded_fault: int | None = attrs.field(repr=False)
    _owner: FakeVobiz = attrs.field(repr=False, eq=False)

    @property
    def recording_url(self) -> str:
        """The URL the API currently hands out (it changes after an ``expired`` fault)."""
        return self._owner.recording_url(self.recording_id)

    def wire(self) -> dict[str, Any]:
        """Return the object as the list endpoint sends it (retrieve adds ``api_id``)."""
        data: dict[str, Any] = {
            "add_time": self.add_time,
            "call_uuid": self.call_uuid,
            "conference_name": self.conference_name,
            "from_number": self.from_number,
            "monthly_recording_storage_amount": self.monthly_recording_storage_amount,
            "recording_duration_ms": self.recording_duration_ms,
            "recording_end_ms": self.recording_end_ms,
            "recording_format": self.recording_format,
            "recording_id": self.recording_id,
            "recording_start_ms": self.recording_start_ms,
            "recording_storage_duration": self.recording_storage_duration,
            "recording_storage_rate": self.recording_storage_rate,
            "recording_type": self.recording_type,
            "recording_url": self.recording_url,
            "resource_uri": (
                f"/v1/Account/{self._owner.auth_id}/Recording/{quote(self.recording_id, safe='')}/"
            ),
            "rounded_recording_duration": self.rounded_recording_duration,
            "to_number": self.to_number,
        }
        data.update(self.extra_fields)
        return data

    def body(self) -> bytes:
        """Return the exact bytes the media URL serves."""
        return self._owner.body(self.recording_id)

    def sha256(self) -> str:
        """Return the hex sha256 of :meth:`body`."""
        return self._owner.sha256(self.recording_id)


@attrs.define
class _MediaFault:
    kind: str
    remaining: int
    status: int
    retry_after: str | None


@attrs.define
class _ApiFault:
    status: int
    remaining: int
    retry_after: str | None
    body: str


@attrs.define
class _UrlState:
    """Signed-URL tokens of one recording: tokens below ``stale_before`` are refused."""

    token: int = 1
    stale_before: int = 0
    more: int = 0
    status: int = 403

    def accepts(self, raw: str) -> bool:
        return raw.isdigit() and self.stale_before <= int(raw) <= self.token

    def refresh(self) -> None:
        if self.token < self.stale_before:
            self.token += 1
            if self.more > 0:
                self.more -= 1
                self.stale_before = self.token + 1


@attrs.frozen
class _Traits:
    recording_type: str
    container: str
    recording_format: str
    header: str
    redirect_foreign: bool
    seeded_fault: int | None
    instant_us: int
    offset_minutes: int


@attrs.frozen
class _BulkFilter:
    gte: int | None = None
    gt: int | None = None
    lte: int | None = None
    lt: int | None = None
    call_uuid: str | None = None
    recording_type: str | None = None
    recording_format: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    conference_name: str | None = None

    @property
    def needs_full(self) -> bool:
        return any(v is not None for v in (self.from_number, self.to_number, self.conference_name))

    def cheap_ok(self, instant_us: int, recording_type: str, recording_format: str) -> bool:
        return (
            (self.gte is None or instant_us >= self.gte)
            and (self.gt is None or instant_us > self.gt)
            and (self.lte is None or instant_us <= self.lte)
            and (self.lt is None or instant_us < self.lt)
            and (self.recording_type is None or recording_type == self.recording_type)
            and (self.recording_format is None or recording_format == self.recording_format)
        )

    def full_ok(self, rec: FakeRecording) -> bool:
        return (
            self.cheap_ok(rec.instant_us, rec.recording_type, rec.recording_format)
            and (self.call_uuid is None or rec.call_uuid == self.call_uuid)
            and (self.from_number is None or rec.from_number == self.from_number)
            and (self.to_number is None or rec.to_number == self.to_number)
            and (self.conference_name is None or rec.conference_name == self.conference_name)
        )


def _bulk_filter(query: Mapping[str, str]) -> _BulkFilter | str:
    """Build the bulk-delete filter from a query, or return the 400 message."""
    times: dict[str, int] = {}
    for suffix in ("gte", "gt", "lte", "lt"):
        raw = query.get(f"add_time__{suffix}")
        if raw is None:
            continue
        try:
            times[suffix] = _parse_instant(raw)
        except ValueError:
            return f"Invalid value for add_time__{suffix}: {raw!r}."
    return _BulkFilter(
        gte=times.get("gte"),
        gt=times.get("gt"),
        lte=times.get("lte"),
        lt=times.get("lt"),
        call_uuid=query.get("call_uuid"),
        recording_type=query.get("recording_type"),
        recording_format=query.get("recording_format"),
        from_number=query.get("from_number"),
        to_number=query.get("to_number"),
        conference_name=query.get("conference_name"),
    )


def _export_problem(body: Any) -> str | None:
    """Return why an export request body is invalid, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    recipient = body.get("recipient")
    emails = recipient.get("customer_account") if isinstance(recipient, dict) else None
    if (
        not isinstance(emails, list)
        or not emails
        or not all(isinstance(e, str) and "@" in e for e in emails)
    ):
        return "recipient.customer_account must be a non-empty list of e-mail addresses."
    has_range = "from" in body or "to" in body
    durations = [k for k in body if k.startswith("recording_storage_duration")]
    if has_range and durations:
        return "Use either from/to or recording_storage_duration, not both."
    if not has_range and not durations:
        return "Either from/to or recording_storage_duration is required."
    if has_range:
        try:
            start = dt.datetime.strptime(str(body.get("from")), "%Y-%m-%d %H:%M:%S")
            stop = dt.datetime.strptime(str(body.get("to")), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return "from and to must both be given as YYYY-MM-DD HH:MM:SS."
        if stop < start:
            return "from must not be later than to."
    allowed = {"recording_storage_duration"} | {
        f"recording_storage_duration__{op}" for op in ("gt", "gte", "lt", "lte")
    }
    for key in durations:
        value = body[key]
        if key not in allowed or not isinstance(value, int) or isinstance(value, bool):
            return f"Invalid filter {key}."
    return None


class _RecordingsView(Mapping[str, FakeRecording]):
    """The live recordings in list order, materialised only as far as a caller looks."""

    def __init__(self, owner: FakeVobiz) -> None:
        self._owner = owner

    def __getitem__(self, rid: str) -> FakeRecording:
        rec = self._owner._lookup(rid)
        if rec is None:
            raise KeyError(rid)
        return rec

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, str) and self._owner._lookup(rid) is not None

    def __iter__(self) -> Iterator[str]:
        return self._owner._iter_ids()

    def __len__(self) -> int:
        return self._owner._live_count()


# --------------------------------------------------------------------------- the fake


class FakeVobiz:
    """The Vobiz Recording API and its media hosts on 127.0.0.1, with faults and counters.

    ``recordings`` synthetic recordings are generated from ``seed``; ``latency`` is added to
    every API response and ``media_latency`` before every media response; ``fault_rate``,
    ``wav_as_mp3_rate`` and ``foreign_redirect_rate`` are the fractions of generated
    recordings that get one transient media fault, WAV bytes under ``.mp3``, and a redirect to
    the foreign storage host. After a successful export the next ``export_busy_calls`` exports
    answer 403. ``port`` / ``foreign_port`` 0 pick free ports.

    ``media_rate_limit`` (requests per second, with bursts of ``rate_limit_burst``) makes
    the media hosts behave like a rate-limited CDN: a media request beyond the token bucket
    is answered 429 with ``Retry-After: rate_limit_retry_after`` and counted in
    ``stats.rate_limited``.
    """

    def __init__(
        self,
        recordings: int = 100,
        *,
        seed: int = 0,
        auth_id: str = DEFAULT_AUTH_ID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        latency: float = 0.0,
        media_latency: float = 0.0,
        fault_rate: float = 0.0,
        wav_as_mp3_rate: float = 0.0,
        foreign_redirect_rate: float = 0.0,
        max_limit: int = 100,
        export_busy_calls: int = 1,
        record_requests: bool = True,
        port: int = 0,
        foreign_port: int = 0,
        media_rate_limit: float | None = None,
        rate_limit_burst: int = 20,
        rate_limit_retry_after: int = 1,
    ) -> None:
        if media_rate_limit is not None and media_rate_limit <= 0:
            raise ValueError("media_rate_limit must be positive")
        if rate_limit_burst < 1:
            raise ValueError("rate_limit_burst must be at least 1")
        if recordings < 0 or recordings >= 1 << 40:
            raise ValueError(f"recordings out of range: {recordings}")
        for name, rate in (
            ("fault_rate", fault_rate),
            ("wav_as_mp3_rate", wav_as_mp3_rate),
            ("foreign_redirect_rate", foreign_redirect_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}")
        self.seed = seed
        self.auth_id = auth_id
        self.auth_token = auth_token
        self.latency = latency
        self.media_latency = media_latency
        self.max_limit = max_limit
        self.export_busy_calls = export_busy_calls
        self.record_requests = record_requests
        self.stats = FakeStats()
        self.media_rate_limit = media_rate_limit
        self.rate_limit_burst = rate_limit_burst
        self.rate_limit_retry_after = rate_limit_retry_after
        self._bucket = (float(rate_limit_burst), time.monotonic())  # tokens, when counted
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

        self._count = recordings
        self._port = port
        self._foreign_port_wanted = foreign_port
        key = _mix64(seed & _M64) ^ _mix64((seed >> 64) & _M64)
        self._key = key
        self._id_key = _mix64(key ^ 0x1D) & _M62
        self._call_key = _mix64(key ^ 0xCA11) & _M62
        self._thresholds = (
            int(wav_as_mp3_rate * 0x10000),
            int(foreign_redirect_rate * 0x10000),
            int(fault_rate * 0x10000),
        )
        day_us = 86_400 * 1_000_000
        self._gap_us = min(3600 * 1_000_000, max(20 * 1_000_000, 29 * day_us // max(1, recordings)))
        self._secret = hashlib.sha256(_seed_bytes("sig", seed, auth_token)).digest()

        self._added: dict[str, FakeRecording] = {}  # every added recording, removed ones too
        self._added_live: list[str] = []  # newest first
        self._added_removed: set[str] = set()
        self._added_counter = 0
        self._newest_us = _ANCHOR_US
        self._removed: set[int] = set()
        self._removed_sorted: list[int] | None = []
        self._version = 0
        self._ids_cache: tuple[int, list[str]] | None = None
        self._filter_cache: dict[tuple[str | None, str | None], tuple[int, list[str | int]]] = {}
        self._generate = functools.lru_cache(maxsize=4096)(self._generate_uncached)

        self._media_faults: dict[str, deque[_MediaFault]] = {}
        self._seeded_used: set[str] = set()
        self._url_states: dict[str, _UrlState] = {}
        self._etag_gen: dict[str, int] = {}
        self._sha_cache: dict[tuple[str, int], str] = {}
        self._api_faults: dict[str, deque[_ApiFault]] = {}
        self._export_busy = 0

        self._runners: list[web.AppRunner] = []
        self._ops: dict[object, str] = {}
        self._api_port: int | None = None
        self._foreign_port: int | None = None

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> FakeVobiz:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start both servers on 127.0.0.1."""
        if self._runners:
            raise RuntimeError("FakeVobiz is already started")
        api_app = web.Application(middlewares=[self._middleware(foreign=False)])
        self._add_route(api_app, "GET", "/api/v1/auth/me", self._handle_auth_me, "auth_me")
        account = "/api/v1/Account/{auth_id}"
        self._add_route(api_app, "GET", f"{account}/Recording/", self._handle_list, "list")
        self._add_route(
            api_app,
            "DELETE",
            f"{account}/Recording/BulkDelete/",
            self._handle_bulk_delete,
            "bulk_delete",
        )
        one = f"{account}/Recording/{{rid}}/"
        self._add_route(api_app, "GET", one, self._handle_get, "get")
        self._add_route(api_app, "DELETE", one, self._handle_delete, "delete")
        self._add_route(
            api_app, "POST", f"{account}/export/recording/", self._handle_export, "export"
        )
        for method in ("GET", "HEAD"):
            self._add_route(api_app, method, "/media/{name}", self._handle_media, "media")

        foreign_app = web.Application(middlewares=[self._middleware(foreign=True)])
        for method in ("GET", "HEAD"):
            self._add_route(foreign_app, method, "/storage/{name}", self._handle_storage, "storage")

        try:
            self._api_port = await self._serve(api_app, self._port)
            self._foreign_port = await self._serve(foreign_app, self._foreign_port_wanted)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop both servers; in-flight responses get a quarter second to finish."""
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        self._api_port = self._foreign_port = None

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return int(runner.addresses[0][1])

    def _add_route(
        self, app: web.Application, method: str, path: str, handler: Handler, operation: str
    ) -> None:
        route = app.router.add_route(method, path, handler)
        self._ops[route] = operation

    # ----------------------------------------------------------------- public surface

    @property
    def base_url(self) -> str:
        """The API root, ``http://127.0.0.1:PORT/api/v1/``."""
        return f"{self._api_root()}api/v1/"

    @property
    def foreign_base_url(self) -> str:
        """The foreign storage host, ``http://localhost:PORT2/``."""
        if self._foreign_port is None:
            raise RuntimeError("FakeVobiz is not started")
        return f"http://localhost:{self._foreign_port}/"

    def session_kwargs(self) -> SessionKwargs:
        """Return ``auth_id``, ``auth_token`` and ``base_url`` for ``AsyncSession(**...)``."""
        return {"auth_id": self.auth_id, "auth_token": self.auth_token, "base_url": self.base_url}

    @property
    def recording_ids(self) -> list[str]:
        """The live recording ids in list order (newest first); a fresh list each time."""
        if self._ids_cache is None or self._ids_cache[0] != self._version:
            self._ids_cache = (self._version, list(self._iter_ids()))
        return list(self._ids_cache[1])

    @property
    def recordings(self) -> Mapping[str, FakeRecording]:
        """The live recordings by id, in list order; a lazy read-only view."""
        return _RecordingsView(self)

    def recording_url(self, rid: str) -> str:
        """Return the ``recording_url`` the API currently hands out for ``rid``."""
        rec = self._require(rid, live=False)
        if rec.url_override is not None:
            return rec.url_override
        state = self._url_states.get(rid)
        token = f"?token={state.token}" if state is not None and state.token > 1 else ""
        return f"{self._api_root()}media/{quote(rid, safe='')}.{rec.recording_format}{token}"

    def body(self, rid: str) -> bytes:
        """Return the exact bytes the media URL of ``rid`` serves (removed ones too)."""
        rec = self._require(rid, live=False)
        return b"".join(self._iter_bytes(rec, 0, rec.size))

    def sha256(self, rid: str) -> str:
        """Return the hex sha256 of :meth:`body`, computed block by block and cached."""
        rec = self._require(rid, live=False)
        key = (rid, rec.size)
        if key not in self._sha_cache:
            digest = hashlib.sha256()
            for piece in self._iter_bytes(rec, 0, rec.size):
                digest.update(piece)
            self._sha_cache[key] = digest.hexdigest()
        return self._sha_cache[key]

    def size(self, rid: str) -> int:
        """Return the byte count of :meth:`body`."""
        return self._require(rid, live=False).size

    def etag(self, rid: str) -> str:
        """Return the strong ETag the media URL of ``rid`` currently sends."""
        return self._etag(self._require(rid, live=False))

    def add_recording(
        self,
        recording_id: str | None = None,
        *,
        size: int | None = None,
        container: str = "mp3",
        recording_format: str | None = None,
        recording_type: str = "call",
        call_uuid: str | None = None,
        redirect_foreign: bool = False,
        recording_url: str | None = None,
        extra_fields: Mapping[str, Any] | None = None,
        add_time: str | dt.datetime | None = None,
        extra_hops: int = 0,
    ) -> FakeRecording:
        """Add a recording at the front of the list (the newest) and return it.

        ``container`` is the real byte format; ``recording_format`` what the API claims
        (defaults to ``container``). ``recording_url`` replaces the URL verbatim;
        ``extra_fields`` are merged into the wire object last, so they may override fields.
        ``add_time`` is sent verbatim when a string. ``extra_hops`` adds same-host redirects
        before the body (or before the foreign redirect). Any id is stored as is.
        """
        if container not in ("mp3", "wav"):
            raise ValueError(f"container must be 'mp3' or 'wav', not {container!r}")
        if size is not None and size < 0:
            raise ValueError("size must not be negative")
        if recording_id is not None and self._lookup(recording_id, live=False) is not None:
            raise ValueError(f"recording {recording_id!r} already exists")
        counter = self._added_counter
        self._added_counter += 1
        rng = random.Random(_seed_bytes(self.seed, "added", counter))
        rid = recording_id or str(uuid.UUID(int=rng.getrandbits(128), version=4))
        offset = _IST_MINUTES
        text: str | None = None
        if add_time is None:
            self._newest_us += rng.randint(1_000_000, 59_000_000)
            instant = self._newest_us
        elif isinstance(add_time, dt.datetime):
            instant = _instant_of(add_time)
            delta = add_time.utcoffset()
            offset = _IST_MINUTES if delta is None else int(delta.total_seconds()) // 60
        else:
            text = add_time
            try:
                instant = _parse_instant(add_time)
            except ValueError:
                instant = self._newest_us
        rec = self._build(
            rng,
            recording_id=rid,
            call_uuid=call_uuid or str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            recording_type=recording_type,
            container=container,
            recording_format=recording_format or container,
            header="riff" if container == "wav" else rng.choice(("id3", "sync")),
            instant_us=instant,
            add_time=text or _format_add_time(instant, offset),
            size=size,
            redirect_foreign=redirect_foreign,
            extra_hops=extra_hops,
            url_override=recording_url,
            extra_fields=extra_fields or {},
            seeded_fault=None,
        )
        self._added[rid] = rec
        self._added_live.insert(0, rid)
        self._version += 1
        return rec

    def remove_recording(self, rid: str) -> None:
        """Delete ``rid`` as the API's DELETE would; raise KeyError if it is not there."""
        if rid in self._added:
            if rid in self._added_removed:
                raise KeyError(rid)
            self._added_live.remove(rid)
            self._added_removed.add(rid)
        else:
            index = self._gen_index_of(rid)
            if index is None or index in self._removed:
                raise KeyError(rid)
            self._removed.add(index)
            self._removed_sorted = None
        self._version += 1

    def media_fault(
        self,
        rid: str,
        kind: MediaFaultKind,
        *,
        times: int = 1,
        status: int | None = None,
        retry_after: str | int | None = None,
    ) -> None:
        """Make the next ``times`` media requests of ``rid`` misbehave, then heal.

        Faults queue up in the order given. ``drop`` aborts the connection after half the
        body; ``short`` declares the full length, sends half and ends normally; ``status``
        answers ``status`` (default 503) with ``Retry-After: retry_after`` if given;
        ``no_range`` ignores Range; ``etag_change`` gives the recording a new ETag for good;
        ``slow`` trickles the body. ``expired`` refuses the current URL with ``status``
        (default 403) until the client retrieves the recording again, which hands out a fresh
        URL; with ``times=n`` the next ``n - 1`` fresh URLs are refused too. On a redirecting
        recording only ``status`` faults act on the Vobiz host; the rest act where the body is
        served.
        """
        if kind not in _MEDIA_KINDS:
            raise ValueError(f"unknown media fault kind {kind!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        self._require(rid)
        if kind == "expired":
            state = self._url_states.setdefault(rid, _UrlState())
            state.stale_before = state.token + 1
            state.more = times - 1
            state.status = status or 403
            return
        fault = _MediaFault(
            kind, times, status or 503, None if retry_after is None else str(retry_after)
        )
        self._media_faults.setdefault(rid, deque()).append(fault)

    def api_fault(
        self,
        operation: ApiOperation,
        status: int,
        *,
        times: int = 1,
        retry_after: str | int | None = None,
        body: ErrorBody = "json",
    ) -> None:
        """Make the next ``times`` authenticated calls of ``operation`` answer ``status``.

        ``body`` picks the shape: ``json`` ``{"api_id", "error"}``, ``generic``
        ``{"status": "error", "error": {...}, "timestamp", "requestId"}``, ``export``
        ``{"status": "failure", "message"}`` or ``html`` (a proxy's gateway page).
        """
        if operation not in _API_OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        if body not in _ERROR_BODIES:
            raise ValueError(f"unknown error body {body!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = _ApiFault(status, times, None if retry_after is None else str(retry_after), body)
        self._api_faults.setdefault(operation, deque()).append(fault)

    def finish_export(self) -> None:
        """End the running export at once, so the next export call succeeds."""
        self._export_busy = 0

    # ----------------------------------------------------------------- generation

    def _api_root(self) -> str:
        if self._api_port is None:
            raise RuntimeError("FakeVobiz is not started")
        return f"http://127.0.0.1:{self._api_port}/"

    def _hash(self, index: int, salt: int) -> int:
        return _mix64(self._key ^ ((index * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03) & _M64))

    def _gen_id(self, index: int) -> str:
        return _encode_uuid(index, self._id_key)

    def _gen_index_of(self, rid: str) -> int | None:
        index = _decode_uuid(rid, self._id_key)
        if index is None or index >= self._count or self._gen_id(index) != rid:
            return None
        return index

    def _gen_type(self, index: int) -> str:
        roll = self._hash(index, 1) & 0xFFFF
        if roll < 52429:  # 80 %
            return "call"
        return "conference" if roll < 60293 else "trunk"  # 12 %, 8 %

    def _shares_call(self, index: int) -> bool:
        return index > 0 and self._hash(index, 3) & 0xF == 0

    def _call_index(self, index: int) -> int:
        if self._shares_call(index) and not self._shares_call(index - 1):
            return index - 1
        return index

    def _call_indices(self, call_uuid: str) -> list[int]:
        """Generated indices whose call_uuid is ``call_uuid``."""
        call = _decode_uuid(call_uuid, self._call_key)
        if call is None or call >= self._count or _encode_uuid(call, self._call_key) != call_uuid:
            return []
        return [i for i in (call, call + 1) if i < self._count and self._call_index(i) == call]

    def _traits(self, index: int) -> _Traits:
        wav_as_mp3, foreign, faulty = self._thresholds
        h = self._hash(index, 2)
        wav_mp3 = (h & 0xFFFF) < wav_as_mp3
        container = "wav" if wav_mp3 or (h >> 52) & 0xF < 4 else "mp3"
        time_h = self._hash(index, 4)
        gap = self._gap_us
        instant = _ANCHOR_US - index * gap - time_h % (gap - 100)
        if (time_h >> 40) % 3 == 0:  # five fraction digits
            instant -= instant % 10
            if instant % 100 == 0:
                instant -= 10
        elif instant % 10 == 0:
            instant -= 1
        return _Traits(
            recording_type=self._gen_type(index),
            container=container,
            recording_format="mp3" if wav_mp3 else container,
            header="riff" if container == "wav" else ("id3" if (h >> 56) & 1 else "sync"),
            redirect_foreign=((h >> 16) & 0xFFFF) < foreign,
            seeded_fault=(h >> 48) % 4 if ((h >> 32) & 0xFFFF) < faulty else None,
            instant_us=instant,
            offset_minutes=_OFFSETS[(time_h >> 50) % len(_OFFSETS)],
        )

    def _generate_uncached(self, index: int) -> FakeRecording:
        t = self._traits(index)
        return self._build(
            random.Random(_seed_bytes(self.seed, "rec", index)),
            recording_id=self._gen_id(index),
            call_uuid=_encode_uuid(self._call_index(index), self._call_key),
            recording_type=t.recording_type,
            container=t.container,
            recording_format=t.recording_format,
            header=t.header,
            instant_us=t.instant_us,
            add_time=_format_add_time(t.instant_us, t.offset_minutes),
            size=None,
            redirect_foreign=t.redirect_foreign,
            extra_hops=0,
            url_override=None,
            extra_fields={},
            seeded_fault=t.seeded_fault,
        )

    def _build(
        self,
        rng: random.Random,
        *,
        recording_id: str,
        call_uuid: str,
        recording_type: str,
        container: str,
        recording_format: str,
        header: str,
        instant_us: int,
        add_time: str,
        size: int | None,
        redirect_foreign: bool,
        extra_hops: int,
        url_override: str | None,
        extra_fields: Mapping[str, Any],
        seeded_fault: int | None,
    ) -> FakeRecording:
        rate = _BYTES_PER_MS[container]
        head = len(_header_for(container, header, 0))
        if size is None:
            duration_ms = _draw_duration_ms(rng)
            size = head + duration_ms * rate
        else:
            duration_ms = max(0, size - head) // rate
        end_ms = instant_us // 1000 - rng.randint(200, 3000)
        no_times = recording_type == "trunk" and rng.random() < 0.5
        to_digits = f"91{rng.randint(6_000_000_000, 9_999_999_999)}"
        if recording_type == "conference":
            conference: str | None = f"{rng.choice(_CONFERENCES)}-{rng.randint(100, 999)}"
        elif recording_type == "call":
            conference = rng.choice((None, ""))
        else:
            conference = None
        extras: dict[str, Any] = {"recording_region": "ap-south-1"}
        if rng.random() < 0.3:
            extras["recording_channels"] = 1
        extras.update(extra_fields)
        monthly: int | float = 0 if rng.random() < 0.6 else round(size / 1e6 * 0.004, 6)
        return FakeRecording(
            recording_id=recording_id,
            call_uuid=call_uuid,
            recording_format=recording_format,
            container=container,
            recording_type=recording_type,
            add_time=add_time,
            recording_duration_ms=f"{duration_ms:.5f}",
            recording_start_ms=None if no_times else f"{end_ms - duration_ms:.5f}",
            recording_end_ms=None if no_times else f"{end_ms:.5f}",
            rounded_recording_duration=max(60, math.ceil(duration_ms / 60_000) * 60),
            from_number=f"+91{rng.randint(6_000_000_000, 9_999_999_999)}",
            to_number=to_digits if rng.random() < 0.3 else f"+{to_digits}",
            conference_name=conference,
            recording_storage_duration=max(0, (_NOW_US - instant_us) // 86_400_000_000),
            recording_storage_rate=0.004,
            monthly_recording_storage_amount=monthly,
            extra_fields=extras,
            size=size,
            redirect_foreign=redirect_foreign,
            extra_hops=extra_hops,
            url_override=url_override,
            header=header,
            instant_us=instant_us,
            seeded_fault=seeded_fault,
            owner=self,
        )

    # ----------------------------------------------------------------- lookup and order

    def _lookup(self, rid: str, *, live: bool = True) -> FakeRecording | None:
        rec = self._added.get(rid)
        if rec is not None:
            return None if live and rid in self._added_removed else rec
        index = self._gen_index_of(rid)
        if index is None or (live and index in self._removed):
            return None
        return self._generate(index)

    def _require(self, rid: str, *, live: bool = True) -> FakeRecording:
        rec = self._lookup(rid, live=live)
        if rec is None:
            raise KeyError(rid)
        return rec

    def _live_count(self) -> int:
        return len(self._added_live) + self._count - len(self._removed)

    def _sorted_removed(self) -> list[int]:
        if self._removed_sorted is None:
            self._removed_sorted = sorted(self._removed)
        return self._removed_sorted

    def _iter_ids(self) -> Iterator[str]:
        yield from list(self._added_live)
        removed = self._removed
        for index in range(self._count):
            if index not in removed:
                yield self._gen_id(index)

    def _gen_index_at(self, position: int) -> int:
        """Return the generated index at ``position`` among the live generated ones."""
        removed = self._sorted_removed()
        low, high = position, position + len(removed)
        while low < high:
            mid = (low + high) // 2
            if mid + 1 - bisect.bisect_right(removed, mid) > position:
                high = mid
            else:
                low = mid + 1
        return low

    def _page(self, offset: int, limit: int) -> list[FakeRecording]:
        added = self._added_live
        page = [self._added[rid] for rid in added[offset : offset + limit]]
        position = max(0, offset - len(added))
        if len(page) < limit and position < self._count - len(self._removed):
            index = self._gen_index_at(position)
            while len(page) < limit and index < self._count:
                if index not in self._removed:
                    page.append(self._generate(index))
                index += 1
        return page

    def _matching(self, call_uuid: str | None, recording_type: str | None) -> list[str | int]:
        """Live entries (added ids, generated indices) matching the list filters, cached."""
        key = (call_uuid, recording_type)
        cached = self._filter_cache.get(key)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        result: list[str | int] = [
            rid
            for rid in self._added_live
            if (call_uuid is None or self._added[rid].call_uuid == call_uuid)
            and (recording_type is None or self._added[rid].recording_type == recording_type)
        ]
        candidates = range(self._count) if call_uuid is None else self._call_indices(call_uuid)
        removed = self._removed
        result.extend(
            i
            for i in candidates
            if i not in removed and (recording_type is None or self._gen_type(i) == recording_type)
        )
        if len(self._filter_cache) > 32:
            self._filter_cache.clear()
        self._filter_cache[key] = (self._version, result)
        return result

    def _entry(self, entry: str | int) -> FakeRecording:
        return self._added[entry] if isinstance(entry, str) else self._generate(entry)

    # ----------------------------------------------------------------- bodies

    def _etag(self, rec: FakeRecording) -> str:
        generation = self._etag_gen.get(rec.recording_id, 0)
        seed = _seed_bytes(self.seed, rec.recording_id, rec.size, generation)
        return f'"{hashlib.sha256(seed).hexdigest()[:32]}"'

    def _block(self, rec: FakeRecording, block: int) -> bytes:
        start = block * _BLOCK
        length = min(_BLOCK, rec.size - start)
        data = random.Random(_seed_bytes(self.seed, rec.recording_id, block)).randbytes(length)
        if block == 0:
            head = _header_for(rec.container, rec.header, rec.size)[:length]
            data = head + data[len(head) :]
        return data

    def _iter_bytes(self, rec: FakeRecording, start: int, stop: int) -> Iterator[bytes]:
        block = start // _BLOCK
        while start < stop:
            data = self._block(rec, block)
            base = block * _BLOCK
            yield data[start - base : min(len(data), stop - base)]
            block += 1
            start = block * _BLOCK

    def _sig(self, rid: str) -> str:
        mac = hmac.new(self._secret, rid.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return mac.hexdigest()[:32]

    def _take_media_fault(self, rec: FakeRecording, *, status_only: bool) -> _MediaFault | None:
        rid = rec.recording_id
        if rec.seeded_fault is not None and rid not in self._seeded_used:
            self._seeded_used.add(rid)
            kind, status = (
                ("drop", 503),
                ("short", 503),
                ("status", 503),
                ("status", 429),
            )[rec.seeded_fault]
            retry_after = "0" if kind == "status" else None
            seeded = _MediaFault(kind, 1, status, retry_after)
            self._media_faults.setdefault(rid, deque()).append(seeded)
        queue = self._media_faults.get(rid)
        if not queue or (status_only and queue[0].kind != "status"):
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.popleft()
            if not queue:
                del self._media_faults[rid]
        return fault

    # ----------------------------------------------------------------- responses

    @staticmethod
    def _api_id() -> str:
        return str(uuid.uuid4())

    def _error(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.json_response(
            {"api_id": self._api_id(), "error": message}, status=status, headers=headers
        )

    def _auth_failure(self, request: web.Request) -> web.Response | None:
        given_id = request.headers.get("X-Auth-ID")
        given_token = request.headers.get("X-Auth-Token")
        if given_id is None or given_token is None:
            return self._error(401, _NO_CREDENTIALS)
        if given_id != self.auth_id or given_token != self.auth_token:
            return self._error(401, _BAD_CREDENTIALS)
        return None

    def _fault_response(self, fault: _ApiFault | _MediaFault, body: str) -> web.Response:
        status = fault.status
        headers = {} if fault.retry_after is None else {hdrs.RETRY_AFTER: fault.retry_after}
        phrase = _phrase(status)
        if body == "html":
            page = (
                f"<html><head><title>{status} {phrase}</title></head><body>"
                f"<h1>{status} {phrase}</h1><hr><center>nginx</center></body></html>"
            )
            return web.Response(status=status, text=page, content_type="text/html", headers=headers)
        if body == "generic":
            payload: dict[str, Any] = {
                "status": "error",
                "error": {
                    "code": phrase.upper().replace(" ", "_"),
                    "message": phrase,
                    "details": {},
                },
                "timestamp": dt.datetime.now(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "requestId": f"req_{uuid.uuid4().hex[:20]}",
            }
        elif body == "export":
            payload = {"status": "failure", "message": phrase}
        else:
            message = "Recording not found" if status == 404 else phrase
            payload = {"api_id": self._api_id(), "error": message}
        return web.json_response(payload, status=status, headers=headers)

    def _api_guard(
        self, request: web.Request, operation: str, *, account: bool = True
    ) -> web.Response | None:
        """Return the response that ends an API call early (auth, account, fault), or None."""
        refused = self._auth_failure(request)
        if refused is not None:
            return refused
        if account and request.match_info["auth_id"] != self.auth_id:
            return self._error(403, "You do not have permission to access this account.")
        queue = self._api_faults.get(operation)
        if queue:
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.popleft()
            return self._fault_response(fault, fault.body)
        return None

    def _middleware(self, *, foreign: bool) -> Middleware:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            operation = self._ops.get(request.match_info.route, "unknown")
            media = operation in ("media", "storage")
            stats = self.stats
            transport = request.transport
            if transport is not None and transport not in self._transports:
                self._transports.add(transport)
                stats.connections += 1
            if media:
                stats.media_requests += 1
                stats.media_in_flight += 1
                stats.media_in_flight_max = max(stats.media_in_flight_max, stats.media_in_flight)
            else:
                stats.api_requests += 1
                stats.api_in_flight += 1
                stats.api_in_flight_max = max(stats.api_in_flight_max, stats.api_in_flight)
            if foreign:
                stats.foreign_requests += 1
            headers = request.headers
            credentials = any(
                name in headers for name in ("X-Auth-ID", "X-Auth-Token", hdrs.AUTHORIZATION)
            )
            status = 500
            try:
                if not media and self.latency > 0:
                    await asyncio.sleep(self.latency)
                missing = request.match_info.http_exception
                response: web.StreamResponse
                if media and not self._take_token():
                    stats.rate_limited += 1
                    retry_after = {"Retry-After": str(self.rate_limit_retry_after)}
                    response = self._error(429, "Too many requests", retry_after)
                elif missing is not None and missing.status == 404:
                    # Unknown paths, such as a lower-cased one, look like auth failures.
                    response = (
                        self._storage_error(404, "NoSuchKey", "The specified key does not exist.")
                        if foreign
                        else self._error(
                            401, _NO_CREDENTIALS if not credentials else _BAD_CREDENTIALS
                        )
                    )
                else:
                    response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                if media:
                    stats.media_in_flight -= 1
                else:
                    stats.api_in_flight -= 1
                if self.record_requests:
                    stats.requests.append(
                        RequestRecord(
                            method=request.method,
                            path=request.raw_path,
                            host=request.host,
                            operation=operation,
                            status=status,
                            credentials=credentials,
                        )
                    )

        return middleware

    def _take_token(self) -> bool:
        """Whether the media token bucket lets one more request through now."""
        if self.media_rate_limit is None:
            return True
        tokens, then = self._bucket
        now = time.monotonic()
        tokens = min(float(self.rate_limit_burst), tokens + (now - then) * self.media_rate_limit)
        allowed = tokens >= 1.0
        self._bucket = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    # ----------------------------------------------------------------- API handlers

    async def _handle_auth_me(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "auth_me", account=False)
        if refused is not None:
            return refused
        return web.json_response(
            {
                "api_id": self._api_id(),
                "auth_id": self.auth_id,
                "name": "Fake Vobiz account",
                "account_type": "standard",
                "status": "active",
            }
        )

    async def _handle_list(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "list")
        if refused is not None:
            return refused
        query = request.query
        page = _parse_page(query, self.max_limit)
        if isinstance(page, str):
            return self._error(400, page)
        limit, offset = page
        call_uuid = query.get("call_uuid") or None
        recording_type = query.get("recording_type") or None
        if call_uuid is None and recording_type is None:
            total = self._live_count()
            records = self._page(offset, limit)
        else:
            matching = self._matching(call_uuid, recording_type)
            total = len(matching)
            records = [self._entry(e) for e in matching[offset : offset + limit]]
        kept = [(k, v) for k, v in query.items() if k not in ("limit", "offset")]
        path = f"/v1/Account/{self.auth_id}/Recording/?"

        def link(to: int) -> str:
            return path + urlencode([("limit", limit), ("offset", to), *kept])

        meta = {
            "limit": limit,
            "next": link(offset + limit) if offset + limit < total else None,
            "offset": offset,
            "previous": link(max(0, offset - limit)) if offset > 0 else None,
            "total_count": total,
        }
        objects = [rec.wire() for rec in records]
        return web.json_response({"api_id": self._api_id(), "meta": meta, "objects": objects})

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "get")
        if refused is not None:
            return refused
        rid = request.match_info["rid"]
        rec = self._lookup(rid)
        if rec is None:
            return self._error(404, "Recording not found")
        state = self._url_states.get(rid)
        if state is not None:
            state.refresh()
        return web.json_response({"api_id": self._api_id(), **rec.wire()})

    async def _handle_delete(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "delete")
        if refused is not None:
            return refused
        rid = request.match_info["rid"]
        if self._lookup(rid) is None:
            return self._error(404, "Recording not found")
        self.remove_recording(rid)
        return web.Response(status=204)

    async def _handle_bulk_delete(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "bulk_delete")
        if refused is not None:
            return refused
        self.stats.bulk_delete_queries.append(dict(request.query))
        flt = _bulk_filter(request.query)
        if isinstance(flt, str):
            return self._error(400, flt)
        doomed = [rid for rid in self._added_live if flt.full_ok(self._added[rid])]
        candidates = (
            range(self._count) if flt.call_uuid is None else self._call_indices(flt.call_uuid)
        )
        removed = self._removed
        for index in candidates:
            if index in removed:
                continue
            t = self._traits(index)
            if not flt.cheap_ok(t.instant_us, t.recording_type, t.recording_format):
                continue
            if flt.needs_full and not flt.full_ok(self._generate_uncached(index)):
                continue
            doomed.append(self._gen_id(index))
        for rid in doomed:
            self.remove_recording(rid)
        return web.json_response(
            {"api_id": self._api_id(), "message": "Bulk delete of recordings has been initiated."},
            status=202,
        )

    async def _handle_export(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "export")
        if refused is not None:
            return refused
        text = await request.text()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = None
        self.stats.export_bodies.append(body if body is not None else text)
        problem = _export_problem(body)
        if problem is not None:
            return web.json_response({"status": "failure", "message": problem}, status=400)
        if self._export_busy > 0:
            self._export_busy -= 1
            return web.json_response(
                {"status": "failure", "message": "An export is already in progress"}, status=403
            )
        self._export_busy = self.export_busy_calls
        emails = ", ".join(body["recipient"]["customer_account"])
        return web.json_response(
            {
                "api_id": self._api_id(),
                "status": "success",
                "message": f"Export started; the link will be e-mailed to {emails}.",
            },
            status=202,
        )

    # ----------------------------------------------------------------- media handlers

    def _split_name(self, name: str) -> FakeRecording | None:
        rid, dot, ext = name.rpartition(".")
        rec = self._lookup(rid) if dot else None
        return rec if rec is not None and ext == rec.recording_format else None

    async def _handle_media(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth_failure(request)
        if refused is not None:
            return refused
        rec = self._split_name(request.match_info["name"])
        if rec is None:
            return self._error(404, "Recording not found")
        rid = rec.recording_id
        ticket = request.query.get("token", "1")
        state = self._url_states.get(rid)
        if not (state.accepts(ticket) if state is not None else ticket == "1"):
            return self._error(state.status if state is not None else 403, "URL expired")
        hop_raw = request.query.get("hop", "0")
        hop = int(hop_raw) if hop_raw.isdigit() else 0
        redirects = hop < rec.extra_hops or rec.redirect_foreign
        fault = None
        if hop == 0 or not redirects:  # a redirecting URL answers status faults on its first hop
            fault = self._take_media_fault(rec, status_only=redirects)
        if fault is not None and fault.kind == "status":
            return self._fault_response(fault, "json")
        if self.media_latency > 0:
            await asyncio.sleep(self.media_latency)
        if hop < rec.extra_hops:
            query = urlencode(
                [(k, v) for k, v in request.query.items() if k != "hop"] + [("hop", hop + 1)]
            )
            location = (
                f"{self._api_root()}media/{quote(request.match_info['name'], safe='')}?{query}"
            )
            raise web.HTTPFound(location)
        if rec.redirect_foreign:
            location = (
                f"{self.foreign_base_url}storage/{quote(rid, safe='')}.{rec.recording_format}"
                f"?sig={self._sig(rid)}&expires=3600"
            )
            raise web.HTTPFound(location)
        return await self._serve_body(request, rec, fault)

    def _storage_error(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        )
        return web.Response(
            status=status, text=xml, content_type="application/xml", headers=headers
        )

    async def _handle_storage(self, request: web.Request) -> web.StreamResponse:
        headers = request.headers
        if any(name in headers for name in ("X-Auth-ID", "X-Auth-Token", hdrs.AUTHORIZATION)):
            self.stats.foreign_credentials_seen += 1
        rec = self._split_name(request.match_info["name"])
        if rec is None:
            return self._storage_error(404, "NoSuchKey", "The specified key does not exist.")
        if not hmac.compare_digest(request.query.get("sig", ""), self._sig(rec.recording_id)):
            return self._storage_error(403, "AccessDenied", "Request signature does not match.")
        fault = self._take_media_fault(rec, status_only=False)
        if fault is not None and fault.kind == "status":
            extra: dict[str, str] = {}
            if fault.retry_after is not None:
                extra[hdrs.RETRY_AFTER] = fault.retry_after
            return self._storage_error(
                fault.status, "ServiceUnavailable", _phrase(fault.status), extra
            )
        if self.media_latency > 0:
            await asyncio.sleep(self.media_latency)
        return await self._serve_body(request, rec, fault)

    async def _serve_body(
        self, request: web.Request, rec: FakeRecording, fault: _MediaFault | None
    ) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        rid = rec.recording_id
        if kind == "etag_change":
            self._etag_gen[rid] = self._etag_gen.get(rid, 0) + 1
        etag = self._etag(rec)
        size = rec.size
        start, stop = 0, size
        partial = False
        range_header = request.headers.get(hdrs.RANGE)
        if range_header is not None and kind != "no_range":
            if_range = request.headers.get(hdrs.IF_RANGE)
            if if_range is None or if_range == etag:
                try:
                    wanted = _parse_range(range_header, size)
                except _Unsatisfiable:
                    return web.Response(
                        status=416,
                        headers={
                            hdrs.CONTENT_RANGE: f"bytes */{size}",
                            hdrs.ETAG: etag,
                            hdrs.ACCEPT_RANGES: "bytes",
                        },
                    )
                if wanted is not None:
                    (start, stop), partial = wanted, True
        response = web.StreamResponse(status=206 if partial else 200)
        response.headers[hdrs.CONTENT_TYPE] = (
            "audio/wav" if rec.recording_format == "wav" else "audio/mpeg"
        )
        response.headers[hdrs.ETAG] = etag
        response.headers[hdrs.ACCEPT_RANGES] = "bytes"
        if partial:
            response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{stop - 1}/{size}"
        response.content_length = stop - start
        send_stop = stop
        if kind in ("drop", "short"):
            send_stop = start + (stop - start) // 2
            response.force_close()
        await response.prepare(request)
        if request.method == hdrs.METH_HEAD:
            return response
        chunk = _SLOW_CHUNK if kind == "slow" else _BLOCK
        try:
            for piece in self._iter_bytes(rec, start, send_stop):
                for offset in range(0, len(piece), chunk):
                    part = piece[offset : offset + chunk]
                    await response.write(part)
                    self.stats.media_bytes_sent += len(part)
                    if kind == "slow":
                        await asyncio.sleep(_SLOW_DELAY)
        except ConnectionResetError:
            return response  # the client went away
        if kind == "drop":
            transport = request.transport
            if transport is not None:
                transport.close()
        elif kind == "short":
            await response.write_eof()
        return response
