"""Vobiz recording callbacks: signature checks, payload parsing, and the receiver's web app.

The protocol decisions are pure functions, tested without a socket:

- `signed_url` / `compute_signature`: Vobiz's "Validating Callbacks" formula.
  `X-Vobiz-Signature-V3` is base64(HMAC-SHA256(auth token, base_url + "." + nonce)),
  `X-Vobiz-Signature-V2` the same over base_url + nonce; the `-MA-` variants are signed with
  the parent account's token and share those nonces. `base_url` is the configured public
  callback URL without its query: the body is never signed, so nothing of it is used.
- `verify_signature`: V3, then V2 (each also as MA with a parent token), constant-time.
- `parse_callback`: the form `RecordStop` shape and the snake_case REST shape into a
  `RecordingEvent`, or None for a callback that is not a finished recording.
- `parse_transcription`: Vobiz's transcription callback (`transcriptionUrl`: fields
  `transcription`, `transcription_id`, `recording_id`, `error`, ...) into a
  `TranscriptEvent` that keeps every field as sent, or None for any other callback.

`create_app` wraps them in an aiohttp application that hands each verified finished recording
and each transcript to an `EventSink` (see `vobiz_async.receiver`), which records it durably
before the 200.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from yarl import URL

from ._files import Secret
from .errors import ConfigurationError, InvalidRecordingIdError, VobizError
from .protocol import redact_urls, safe_file_stem

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "BODY_TIMEOUT",
    "MAX_BODY",
    "MAX_TRANSCRIPTION_ID",
    "REPLAY_WINDOW",
    "Counters",
    "EventSink",
    "NonceCache",
    "RecordingEvent",
    "SignatureCheck",
    "SignatureVersion",
    "SubmitOutcome",
    "TranscriptEvent",
    "WebhookPayloadError",
    "WebhookVerifier",
    "compute_signature",
    "create_app",
    "healthz_body",
    "parse_callback",
    "parse_transcription",
    "request_nonces",
    "signed_url",
    "verify_signature",
]

logger = logging.getLogger("vobiz_async")

#: Largest callback body accepted (a RecordStop form is about 1 KiB).
MAX_BODY = 64 * 1024
#: Nonces are remembered at least this long (seconds) to refuse replays.
REPLAY_WINDOW = 15 * 60.0
#: Most nonces remembered at once; past it the oldest are forgotten first.
MAX_NONCES = 200_000
#: Seconds a signed callback's body may take to arrive whole.
BODY_TIMEOUT = 10.0
#: Seconds a caller is asked to wait when the queue is full.
RETRY_AFTER = 30


class WebhookPayloadError(VobizError, ValueError):
    """A callback claims a finished recording but its fields cannot be used."""


# -- signatures ---------------------------------------------------------------------------


class SignatureVersion(enum.StrEnum):
    """Which signature header validated a callback."""

    V3 = "V3"
    MA_V3 = "MA-V3"
    V2 = "V2"
    MA_V2 = "MA-V2"


_SIGNATURE_HEADERS: Mapping[SignatureVersion, tuple[str, str]] = {
    SignatureVersion.V3: ("X-Vobiz-Signature-V3", "X-Vobiz-Signature-V3-Nonce"),
    SignatureVersion.MA_V3: ("X-Vobiz-Signature-MA-V3", "X-Vobiz-Signature-V3-Nonce"),
    SignatureVersion.V2: ("X-Vobiz-Signature-V2", "X-Vobiz-Signature-V2-Nonce"),
    SignatureVersion.MA_V2: ("X-Vobiz-Signature-MA-V2", "X-Vobiz-Signature-V2-Nonce"),
}
#: The order signatures are tried in: V3 first; V2 only when no V3 validates.
_ORDER = (SignatureVersion.V3, SignatureVersion.MA_V3, SignatureVersion.V2, SignatureVersion.MA_V2)
_PARENT = frozenset({SignatureVersion.MA_V3, SignatureVersion.MA_V2})


def signed_url(public_url: str) -> str:
    """The string Vobiz signs for a callback URL: the URL as configured, query and fragment
    removed, port (default or not) and path kept exactly as written.

    Raises `ConfigurationError` for a URL that is not absolute http(s) or that carries
    credentials (give those to the receiver separately; they are never part of what is signed
    here).
    """
    try:
        url = URL(public_url)
    except ValueError:
        raise ConfigurationError("the public URL is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("the public URL must be an absolute http(s) URL")
    if url.user is not None or url.password is not None:
        raise ConfigurationError(
            "the public URL must not carry credentials; pass them as Basic auth instead"
        )
    text = public_url.split("#", 1)[0]
    return text.split("?", 1)[0]


def compute_signature(
    public_url: str, nonce: str, token: str, version: SignatureVersion | str
) -> str:
    """The base64 signature Vobiz sends for `public_url` and `nonce` under `token`."""
    version = SignatureVersion(version)
    base = signed_url(public_url)
    if version in (SignatureVersion.V3, SignatureVersion.MA_V3):
        message = f"{base}.{nonce}"
    else:
        message = f"{base}{nonce}"
    mac = hmac.new(token.encode(), message.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def _candidates(header: str) -> list[bytes]:
    """The signatures in one header (comma-separated during a token rotation), decoded."""
    found = []
    for part in header.split(","):
        try:
            found.append(base64.b64decode(part.strip(), validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


@attrs.frozen
class SignatureCheck:
    """The verdict on one callback's signature headers."""

    valid: bool
    version: SignatureVersion | None = None
    #: The nonce of the signature that validated (for replay detection).
    nonce: str | None = None


def verify_signature(
    headers: Mapping[str, str],
    public_url: str,
    auth_token: str,
    parent_auth_token: str | None = None,
) -> SignatureCheck:
    """Check the `X-Vobiz-Signature-*` headers against the configured public URL.

    Tries V3 and (with a parent token) MA-V3, then V2 and MA-V2; the first that validates
    wins. Every comparison is constant-time. A missing header or nonce fails closed.
    `headers` must look names up case-insensitively (aiohttp's request headers do).
    """
    base = signed_url(public_url)
    for version in _ORDER:
        token = parent_auth_token if version in _PARENT else auth_token
        if not token:
            continue
        header, nonce_header = _SIGNATURE_HEADERS[version]
        sent = headers.get(header)
        nonce = headers.get(nonce_header)
        if not sent or not nonce:
            continue
        expected = base64.b64decode(compute_signature(base, nonce, token, version))
        # Every candidate is compared, so timing does not tell which one matched.
        matched = False
        for candidate in _candidates(sent):
            matched |= hmac.compare_digest(candidate, expected)
        if matched:
            return SignatureCheck(True, version, nonce)
    return SignatureCheck(False)


def check_basic_auth(header: str | None, user: str, password: str) -> bool:
    """Whether an `Authorization` header carries exactly these Basic credentials."""
    if not header or header[:6].lower() != "basic ":
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    sent_user, sep, sent_password = decoded.partition(b":")
    user_ok = hmac.compare_digest(sent_user, user.encode())
    password_ok = hmac.compare_digest(sent_password, password.encode())
    return bool(sep) and user_ok and password_ok


class WebhookVerifier:
    """The receiver's credentials and public URL: decides whether a request is Vobiz's."""

    def __init__(
        self,
        public_url: str,
        auth_token: str,
        *,
        parent_auth_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        if not auth_token:
            raise ConfigurationError("the auth token is needed to verify callback signatures")
        self.public_url = signed_url(public_url)
        self._token = Secret(auth_token)
        self._parent = Secret(parent_auth_token) if parent_auth_token else None
        self.basic_user = basic_auth[0] if basic_auth else None
        self._basic_password = Secret(basic_auth[1]) if basic_auth else None

    def __repr__(self) -> str:
        return (
            f"WebhookVerifier(public_url={self.public_url!r}, "
            f"parent_auth_token={'set' if self._parent else None}, "
            f"basic_auth={'set' if self._basic_password else None})"
        )

    def check(self, headers: Mapping[str, str]) -> SignatureCheck:
        """The signature verdict, failing also when configured Basic credentials are wrong."""
        if self.basic_user is not None and self._basic_password is not None:
            authorized = check_basic_auth(
                headers.get("Authorization"), self.basic_user, self._basic_password.value
            )
            if not authorized:
                return SignatureCheck(False)
        return verify_signature(
            headers,
            self.public_url,
            self._token.value,
            self._parent.value if self._parent else None,
        )


# -- replay -------------------------------------------------------------------------------


class NonceCache:
    """Nonces seen within `window` seconds (at most `max_size` of them)."""

    def __init__(self, window: float = REPLAY_WINDOW, max_size: int = MAX_NONCES) -> None:
        self.window = window
        self.max_size = max_size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _prune(self, now: float) -> None:
        while self._seen:
            nonce, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self.window and len(self._seen) <= self.max_size:
                break
            del self._seen[nonce]

    def seen(self, nonce: str, now: float | None = None) -> bool:
        """Whether `nonce` was added within the window."""
        now = time.time() if now is None else now
        self._prune(now)
        return nonce in self._seen

    def add(self, nonce: str, now: float | None = None) -> None:
        """Remember `nonce` as seen at `now` (default: the current time)."""
        now = time.time() if now is None else now
        self._seen[nonce] = max(now, self._seen.get(nonce, now))
        self._seen.move_to_end(nonce)
        self._prune(now)


# -- payloads -----------------------------------------------------------------------------


def _optional_int(value: Any) -> int | None:
    """An int from an int or a decimal string ("7880", "7880.00000"); None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return int(number) if number.is_finite() else None


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@attrs.frozen
class RecordingEvent:
    """A finished recording, as one callback announced it.

    `shape` is "record" for the `<Record callbackUrl>` form (PascalCase, `Event=RecordStop`)
    and "rest" for the start-recording API's `callback_url` (snake_case).
    """

    recording_id: str
    shape: str
    record_url: str | None = None
    call_uuid: str | None = None
    duration_ms: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    end_reason: str | None = None
    api_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the spool's form)."""
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordingEvent:
        """The inverse of `to_dict`; unknown keys are ignored."""
        names = {field.name for field in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _recording_id(value: Any) -> str:
    text = _optional_str(value)
    if text is None:
        raise WebhookPayloadError("the callback names no recording id")
    try:
        return safe_file_stem(text)
    except InvalidRecordingIdError:
        raise WebhookPayloadError("the callback's recording id is not a usable id") from None


@attrs.frozen
class _Shape:
    """Where one callback shape keeps each field of a `RecordingEvent`."""

    name: str
    recording_id: str
    record_urls: tuple[str, ...]
    call_uuid: str
    duration_ms: str
    duration_s: str
    start_ms: str
    end_ms: str
    end_reason: str | None = None
    api_id: str | None = None


_RECORD_XML = _Shape(
    "record",
    "RecordingID",
    ("RecordUrl", "RecordFile"),
    "CallUUID",
    "RecordingDurationMs",
    "RecordingDuration",
    "RecordingStartMs",
    "RecordingEndMs",
    end_reason="RecordingEndReason",
)
_REST = _Shape(
    "rest",
    "recording_id",
    ("record_url",),
    "call_uuid",
    "recording_duration_ms",
    "recording_duration",
    "recording_start_ms",
    "recording_end_ms",
    api_id="api_id",
)


def parse_callback(fields: Mapping[str, Any]) -> RecordingEvent | None:
    """The finished recording a callback announces, or None when it announces none.

    Finished: `Event=RecordStop` with a `RecordingID` (the `<Record>` form; its `RecordUrl`
    or `RecordFile` is kept when sent, but downloads go by id, so a callback without one is
    still a finished recording), or no `Event` with `recording_id` and `record_url` (the
    REST callback). Everything else, such as `Event=Record` or the `<Record action>` request
    made when recording starts, is None. A finished shape whose recording id is missing or
    unsafe is `WebhookPayloadError`.
    """
    event = _optional_str(fields.get("Event"))
    if event is not None and event != "RecordStop":
        return None
    shape = _RECORD_XML if event is not None else _REST
    record_url = next(
        (url for name in shape.record_urls if (url := _optional_str(fields.get(name)))), None
    )
    if shape is _REST and (
        record_url is None or _optional_str(fields.get(shape.recording_id)) is None
    ):
        return None
    duration_ms = _optional_int(fields.get(shape.duration_ms))
    if duration_ms is None and (seconds := _optional_int(fields.get(shape.duration_s))):
        duration_ms = seconds * 1000
    return RecordingEvent(
        recording_id=_recording_id(fields.get(shape.recording_id)),
        shape=shape.name,
        # It is spooled and logged without its query; downloads go by id.
        record_url=None if record_url is None else redact_urls(record_url),
        call_uuid=_optional_str(fields.get(shape.call_uuid)),
        duration_ms=duration_ms,
        start_ms=_optional_int(fields.get(shape.start_ms)),
        end_ms=_optional_int(fields.get(shape.end_ms)),
        end_reason=_optional_str(fields.get(shape.end_reason)) if shape.end_reason else None,
        api_id=_optional_str(fields.get(shape.api_id)) if shape.api_id else None,
    )


#: Longest `transcription_id` accepted (Vobiz's are UUIDs).
MAX_TRANSCRIPTION_ID = 200


@attrs.frozen
class TranscriptEvent:
    """A transcript Vobiz posted to a recording's `transcriptionUrl`.

    `fields` is the callback's body as sent (strings from a form, JSON values from JSON):
    what the archive stores beside the recording, `error` included. `transcription_id`
    makes it idempotent: the id Vobiz sent or, when it sent none, a digest of the fields.
    """

    transcription_id: str
    recording_id: str
    fields: dict[str, Any] = attrs.field(factory=dict, eq=True, hash=False)

    def document(self) -> bytes:
        """What the archive stores: the fields as one JSON object, UTF-8, indented."""
        return (json.dumps(self.fields, ensure_ascii=False, indent=2) + "\n").encode()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the spool's form)."""
        return {
            "transcription_id": self.transcription_id,
            "recording_id": self.recording_id,
            "fields": self.fields,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TranscriptEvent:
        """The inverse of `to_dict`."""
        fields = data.get("fields")
        if not isinstance(fields, dict):
            raise TypeError("a spooled transcript holds no fields")
        return cls(str(data["transcription_id"]), str(data["recording_id"]), dict(fields))


def _is_transcription(fields: Mapping[str, Any]) -> bool:
    """A `transcription` or `transcription_id` field and no `Event=RecordStop`."""
    if _optional_str(fields.get("Event")) == "RecordStop":
        return False
    return "transcription" in fields or "transcription_id" in fields


def parse_transcription(fields: Mapping[str, Any]) -> TranscriptEvent | None:
    """The transcript a callback carries, or None when it is not a transcription callback.

    One whose `error` is set is a transcript too (it says why there is no text). A
    transcript must name its recording (`recording_id`, a safe id), any `transcription_id`
    it sends must be printable and at most `MAX_TRANSCRIPTION_ID` characters, and its
    fields must make a JSON document: otherwise `WebhookPayloadError`.
    """
    if not _is_transcription(fields):
        return None
    try:
        return _transcript(fields)
    except RecursionError:
        raise WebhookPayloadError("the callback's JSON is nested too deeply") from None


def _transcript(fields: Mapping[str, Any]) -> TranscriptEvent:
    recording_id = _recording_id(fields.get("recording_id"))
    transcription_id = _optional_str(fields.get("transcription_id"))
    if transcription_id is None:
        canonical = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
        transcription_id = "sha256-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
    elif len(transcription_id) > MAX_TRANSCRIPTION_ID or not transcription_id.isprintable():
        raise WebhookPayloadError("the callback's transcription id is not a usable id")
    event = TranscriptEvent(transcription_id, recording_id, dict(fields))
    event.document()  # refused here (a 400), not when it is stored
    return event


def _parse(content_type: str, body: bytes) -> RecordingEvent | TranscriptEvent | None:
    """What a callback body announces: a transcript, a finished recording, or nothing.
    A value nested too deeply to read (`str()` of it recurses past the limit) is a
    `WebhookPayloadError` too, so a 400, never a 500."""
    try:
        fields = parse_body(content_type, body)
        return parse_transcription(fields) or parse_callback(fields)
    except RecursionError:
        raise WebhookPayloadError("the callback's JSON is nested too deeply") from None


def parse_body(content_type: str, body: bytes) -> Mapping[str, Any]:
    """The fields of a callback body: JSON object or url-encoded form."""
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            data = json.loads(body)
        except ValueError:
            raise WebhookPayloadError("the callback body is not valid JSON") from None
        except RecursionError:
            raise WebhookPayloadError("the callback's JSON is nested too deeply") from None
        if not isinstance(data, dict):
            raise WebhookPayloadError("the callback's JSON body is not an object")
        return data
    from urllib.parse import parse_qsl

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookPayloadError("the callback body is not UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


# -- the application ----------------------------------------------------------------------


class SubmitOutcome(enum.StrEnum):
    """What the sink did with a finished recording."""

    ACCEPTED = "accepted"  #: durably recorded and queued
    DUPLICATE = "duplicate"  #: already queued or archived (or stored): nothing to do
    BUSY = "busy"  #: the queue is full: ask Vobiz to come back


@attrs.define
class Counters:
    """What the receiver has done since it started; `/healthz` shows all but `ignored`.

    `duplicate` counts callbacks that changed nothing (a recording already queued or
    archived, a transcript already spooled, or a replayed nonce); `rejected` counts refusals
    (403, 413, 408, 400, and 503 for a full queue); `transcripts` counts transcripts stored
    beside their recordings.
    """

    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    archived: int = 0
    failed: int = 0
    ignored: int = 0
    transcripts: int = 0


class EventSink(Protocol):
    """Where the app hands finished recordings (`vobiz_async.receiver.Receiver`)."""

    counters: Counters

    async def submit(self, event: RecordingEvent, nonces: Sequence[str]) -> SubmitOutcome:
        """Record `event` (with the request's nonces) durably and queue it, or say why not;
        fast, never downloads."""
        ...

    async def submit_transcript(
        self, event: TranscriptEvent, nonces: Sequence[str]
    ) -> SubmitOutcome:
        """Record a transcript durably (to be placed beside its recording once that is
        archived), or say why not; fast."""
        ...

    def pending(self) -> int:
        """Events accepted and not yet archived or failed."""
        ...

    def transcripts_waiting(self) -> int:
        """Transcripts spooled and not stored yet (their recordings not archived yet)."""
        ...

    def recent_nonces(self) -> Iterable[tuple[str, float]]:
        """Nonces of recorded events with the time they were seen (to refuse replays)."""
        ...


def healthz_body(counters: Counters, pending: int, transcripts_waiting: int = 0) -> dict[str, int]:
    """The `/healthz` answer: one flat object of integer counters (`queued`: recordings
    pending; `transcripts_waiting`: transcripts spooled whose recordings are not archived
    yet)."""
    return {
        "accepted": counters.accepted,
        "duplicate": counters.duplicate,
        "rejected": counters.rejected,
        "queued": pending,
        "archived": counters.archived,
        "failed": counters.failed,
        "transcripts": counters.transcripts,
        "transcripts_waiting": transcripts_waiting,
    }


def request_nonces(headers: Mapping[str, str], check: SignatureCheck) -> tuple[str, ...]:
    """Every nonce a verified request carries, the validated one first.

    A captured request holds a V3 and a V2 signature with their own nonces; remembering
    both means stripping the V3 headers does not turn a replay into a new request.
    """
    found = [check.nonce] if check.nonce else []
    for name in ("X-Vobiz-Signature-V3-Nonce", "X-Vobiz-Signature-V2-Nonce"):
        value = headers.get(name)
        if value and value not in found:
            found.append(value)
    return tuple(found)


def create_app(
    verifier: WebhookVerifier,
    sink: EventSink,
    *,
    max_body: int = MAX_BODY,
    nonces: NonceCache | None = None,
) -> web.Application:
    """The receiver: POST on the public URL's path, `GET /healthz` for counters.

    Per POST: verify (403), size (413), replay (200, nothing done), parse (a transcript, a
    finished recording, else 200 and ignored; 400 when unusable), then the sink's decision:
    200 once recorded or for a duplicate, 503 with `Retry-After` when its queue is full.
    """
    from aiohttp import web  # here: the CLI's other commands do not pay for its import

    cache = nonces if nonces is not None else NonceCache()
    for nonce, seen_at in sink.recent_nonces():
        cache.add(nonce, seen_at)
    endpoint = _Endpoint(verifier, sink, cache, max_body)
    app = web.Application(client_max_size=max_body)
    app.router.add_post(URL(verifier.public_url).path or "/", endpoint.callback)
    app.router.add_get("/healthz", endpoint.healthz)
    return app


def _reply(text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    from aiohttp import web

    return web.Response(status=status, text=text + "\n", headers=headers)


class _Endpoint:
    """The receiver's handlers and what they share: the cache, the counters, the in-flight."""

    def __init__(
        self, verifier: WebhookVerifier, sink: EventSink, cache: NonceCache, max_body: int
    ) -> None:
        self.verifier = verifier
        self.sink = sink
        self.cache = cache
        self.max_body = max_body
        self.counters = sink.counters
        self.in_flight: set[str] = set()  # nonces of requests being handled right now

    def _refuse(self, status: int, text: str) -> web.Response:
        self.counters.rejected += 1
        return _reply(text, status)

    async def callback(self, request: web.Request) -> web.Response:
        from aiohttp import web

        check = self.verifier.check(request.headers)
        if not check.valid:
            logger.warning("refused a callback from %s: bad or missing signature", request.remote)
            return self._refuse(403, "forbidden")
        if request.content_length is not None and request.content_length > self.max_body:
            return self._refuse(413, "request body too large")
        try:
            async with asyncio.timeout(BODY_TIMEOUT):  # a trickled body holds no slot for long
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(413, "request body too large")
        except TimeoutError:
            return self._refuse(408, "request body too slow")
        if check.version in (SignatureVersion.V2, SignatureVersion.MA_V2):
            logger.warning("callback accepted on a %s signature only (no V3)", check.version)
        nonces = request_nonces(request.headers, check)
        if any(n in self.in_flight or self.cache.seen(n) for n in nonces):
            self.counters.duplicate += 1
            logger.info("replayed callback nonce; nothing done")
            return _reply("ok")
        self.in_flight.update(nonces)
        try:
            return await self._handle(body, request.content_type, nonces)
        finally:
            self.in_flight.difference_update(nonces)

    def _remember(self, nonces: Sequence[str]) -> None:
        for nonce in nonces:
            self.cache.add(nonce)

    async def _handle(self, body: bytes, content_type: str, nonces: Sequence[str]) -> web.Response:
        try:
            event = _parse(content_type, body)
        except WebhookPayloadError as err:
            logger.warning("refused a callback: %s", err)
            return self._refuse(400, str(err))
        if event is None:
            self.counters.ignored += 1
            self._remember(nonces)
            return _reply("ignored")
        if isinstance(event, TranscriptEvent):
            outcome = await self.sink.submit_transcript(event, nonces)
        else:
            outcome = await self.sink.submit(event, nonces)
        if outcome is SubmitOutcome.BUSY:
            # The nonces are not remembered: Vobiz's retry may reuse them and must get in.
            self.counters.rejected += 1
            return _reply("queue full", 503, {"Retry-After": str(RETRY_AFTER)})
        self._remember(nonces)
        return _reply(f"{outcome}")

    async def healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = healthz_body(self.counters, self.sink.pending(), self.sink.transcripts_waiting())
        return web.json_response(body)
