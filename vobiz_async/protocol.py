"""Protocol decisions as pure functions: no I/O, no clock unless passed in.

What a response means, how long to wait before a retry, how to read a page's `meta.next`,
how to parse Vobiz's timestamps and which recording ids are safe in a URL: all decided here,
and tested without a socket.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import zlib
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

import attrs
from yarl import URL

from .errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IntegrityError,
    InvalidRecordingIdError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    UnprocessableEntityError,
    UnsafeURLError,
    VobizError,
)
from .redact import excerpt, redact_urls

__all__ = [
    "CONTENT_TYPES",
    "LAYOUTS",
    "MAX_RETRY_AFTER",
    "MIN_SPEED",
    "MIN_SPEED_WINDOW",
    "REDIRECT_STATUSES",
    "RETRYABLE_STATUSES",
    "STALE_STATUSES",
    "MediaAnswer",
    "SpeedFloor",
    "address_problem",
    "archive_folder",
    "archive_key",
    "backoff_delay",
    "content_decoder",
    "decipher_response",
    "embedded_ipv4",
    "error_details",
    "excerpt",
    "file_extension",
    "format_timestamp",
    "is_retryable_status",
    "make_status_error",
    "media_answer",
    "media_type",
    "next_page_offset",
    "next_page_params",
    "parse_body",
    "parse_content_range",
    "parse_retry_after",
    "parse_timestamp",
    "parse_unsatisfied_range",
    "quote_path_segment",
    "redact_urls",
    "redirect_target",
    "safe_file_stem",
    "sidecar_document",
    "sidecar_key",
    "sniff_container",
]

#: Longest server-requested wait we honour, in seconds.
MAX_RETRY_AFTER = 60.0
#: Statuses worth retrying on an idempotent request.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_STATUS_CLASSES: Mapping[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def is_retryable_status(status: int) -> bool:
    """408, 429 and every 5xx are transient; other statuses are answers."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def parse_body(body: bytes) -> Any:
    """JSON when the bytes are JSON, else the decoded text (HTML error pages), else None.

    JSON nested deeper than Python's recursion allows is `ResponseValidationError`, not the
    `RecursionError` the parser raises.
    """
    if not body:
        return None
    text = body.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
    except RecursionError:
        raise ResponseValidationError("the API's answer is JSON nested too deeply") from None


def error_details(body: Any) -> tuple[str | None, str | None]:
    """Message and correlation id from any of Vobiz's three error shapes.

    `{"api_id", "error": "…"}`, `{"status": "failure", "message": "…"}` and
    `{"status": "error", "error": {"code", "message", "details"}, "requestId"}`.
    """
    if not isinstance(body, Mapping):
        return None, None
    error = body.get("error")
    message: str | None = None
    if isinstance(error, str) and error:
        message = error
    elif isinstance(error, Mapping):
        inner = error.get("message") or error.get("code")
        message = str(inner) if inner else None
    if message is None and isinstance(body.get("message"), str) and body["message"]:
        message = body["message"]
    correlation = body.get("api_id") or body.get("requestId")
    return message, str(correlation) if correlation else None


def _text_snippet(body: Any) -> str | None:
    if isinstance(body, str):
        title = re.search(r"<title>(.*?)</title>|<h1>(.*?)</h1>", body, re.I | re.S)
        text = next((g for g in title.groups() if g), None) if title else body
        snippet = " ".join((text or "").split())
        return excerpt(snippet) or None
    return None


def make_status_error(
    status: int, headers: Mapping[str, str], body: Any, *, reason: str | None = None
) -> APIStatusError:
    """The one place a non-success status becomes an exception class."""
    message, api_id = error_details(body)
    message = message or _text_snippet(body) or reason or f"HTTP {status}"
    cls = _STATUS_CLASSES.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIStatusError
    return cls(message, status_code=status, headers=headers, body=body, api_id=api_id)


def decipher_response(status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """Status, headers and body in; the parsed JSON (None for no content) or a typed error out."""
    parsed = parse_body(body)
    if not 200 <= status < 300:
        raise make_status_error(status, headers, parsed)
    if parsed is None:
        return None
    if isinstance(parsed, str):
        snippet = _text_snippet(parsed)
        raise ResponseValidationError(
            f"expected JSON from Vobiz, got {headers.get('Content-Type', 'no content type')}: "
            f"{snippet}",
            body=parsed,
        )
    return parsed


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, cap: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date), capped.

    None when the header is absent or unreadable, so the caller falls back to backoff.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)


def backoff_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number `attempt` (0-based).

    The server's Retry-After wins when given (already capped); otherwise
    `min(0.5 * 2**attempt, 8)` less up to 25 % jitter, so retrying clients spread out.
    """
    if retry_after is not None:
        return retry_after
    base = min(0.5 * 2.0 ** min(attempt, 10), 8.0)
    return base * (1 - 0.25 * rand())


def next_page_params(next_ref: str | None) -> dict[str, str] | None:
    """The query of a page's `meta.next`, or None on the last page.

    `meta.next` is a path relative to the API root without its `/api` prefix
    (`/v1/Account/MA_…/Recording/?limit=20&offset=20`): joining it onto the host gives a 404,
    so only its query is used and the path is rebuilt by the client.
    """
    if not next_ref:
        return None
    return dict(parse_qsl(urlsplit(next_ref).query, keep_blank_values=True))


_TIMESTAMP = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[ T](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>Z|z|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?)?$"
)

#: Up to 6 fraction digits and a `+HH:MM` (minutes below 60) or `Z` offset, ASCII only.
_PLAIN_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-5][0-9])\Z"
)


def parse_timestamp(value: str) -> datetime:
    """A tz-aware datetime from Vobiz's `add_time`.

    Accepts a space or `T` separator, 0 to 6 fraction digits (more are truncated), and a
    `+HH:MM`, `+HHMM`, `+HH`, `+HH:MM:SS[.ffffff]` (Python's own form) or `Z` offset. A
    value without an offset is taken as UTC.
    """
    text = value.strip() if isinstance(value, str) else ""
    try:
        if _PLAIN_TIMESTAMP.match(text):
            # The shape Vobiz sends, which Python's own parser reads as the rules below do.
            return datetime.fromisoformat(text)
        match = _TIMESTAMP.match(text)
        if match is None:
            raise ValueError
        frac = (match["frac"] or "")[:6].ljust(6, "0")
        naive = datetime.fromisoformat(f"{match['date']}T{match['time']}.{frac}")
    except ValueError:
        # One message whichever check refused it (a month of 13, an offset of +24:00 on the
        # fast path): Python's own ("month must be in 1..12") does not say which value.
        raise ValueError(f"not a Vobiz timestamp: {_quoted(value)}") from None
    tz_text = match["tz"]
    tz: timezone = UTC
    if tz_text and tz_text not in ("Z", "z"):
        sign = -1 if tz_text[0] == "-" else 1
        digits, _, micro = tz_text[1:].replace(":", "").partition(".")
        hours, minutes, seconds = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            raise ValueError(f"not a Vobiz timestamp: {_quoted(value)}")
        offset = timedelta(
            hours=hours, minutes=minutes, seconds=seconds, microseconds=int(micro.ljust(6, "0"))
        )
        tz = timezone(sign * offset)
    return naive.replace(tzinfo=tz)


def format_timestamp(value: datetime) -> str:
    """The wire form of a timestamp: `2026-05-07 09:45:35.792760+05:30`."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat(sep=" ")


def _quoted(value: object) -> str:
    """A value an error names, quoted and escaped, at most `redact.QUOTE_LIMIT` long."""
    return excerpt(repr(value))


_SAFE_ID = re.compile(r"[A-Za-z0-9._~:@+=-]{1,200}")


def quote_path_segment(value: str, *, what: str = "recording id") -> str:
    """Percent-encode one path segment, refusing values that would change the path.

    Ids are opaque strings to us; the ones Vobiz issues are UUIDs. Anything with a slash,
    a dot-only segment, control characters or no characters at all could address another
    resource, so it is refused rather than sent.
    """
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value) or set(value) <= {"."}:
        raise InvalidRecordingIdError(f"unsafe {what}: {_quoted(value)}")
    return quote(value, safe="")


def sniff_container(head: bytes) -> str | None:
    """The audio container from a file's first bytes: "wav", "mp3", or None if unknown.

    `RIFF....WAVE` is WAV; an `ID3` tag or an 11-bit MPEG frame sync (0xFF, then the top
    three bits of the next byte set, e.g. `FF E3` for MPEG-2.5) is MP3.
    """
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "mp3"
    return None


_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_SAFE_EXT = re.compile(r"[a-z0-9]{1,8}")


def safe_file_stem(recording_id: str) -> str:
    """The file name stem for a recording id, or `InvalidRecordingIdError`.

    Only plain names pass: letters, digits, `.`, `_`, `-`, not starting with a dot, at most
    200 characters. Separators, `..`, absolute paths and control characters never reach
    the file system.
    """
    if not isinstance(recording_id, str) or not _SAFE_NAME.fullmatch(recording_id):
        raise InvalidRecordingIdError(
            f"recording id is not a safe file name: {_quoted(recording_id)}"
        )
    return recording_id


def file_extension(container: str | None, recording_format: str | None) -> str:
    """The extension for a saved recording: sniffed container first, then the API's claim."""
    for candidate in (container, (recording_format or "").lower()):
        if candidate and _SAFE_EXT.fullmatch(candidate) and candidate != "part":
            return candidate
    return "bin"


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """`bytes START-END/TOTAL` as (start, end inclusive, total or None); None if malformed."""
    match = _CONTENT_RANGE.match(value or "")
    if match is None:
        return None
    start, end = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if end < start or (total is not None and end >= total):
        return None
    return start, end, total


#: The media type stored with a recording, from its sniffed container.
CONTENT_TYPES: Mapping[str, str] = {"mp3": "audio/mpeg", "wav": "audio/wav"}


def media_type(container: str | None) -> str:
    """`audio/mpeg` or `audio/wav` from the sniffed container, never from the API's claim."""
    return CONTENT_TYPES.get(container or "", "application/octet-stream")


#: The layouts a sink names recordings by (`sinks.base.Layout`).
LAYOUTS = ("flat", "date", "hive")


def archive_folder(add_time: datetime | None, layout: str) -> str:
    """The folder a layout puts a recording in, relative to the archive's root, with a
    trailing `/` (`""` for the root).

    `date`: `YYYY/MM/DD/`; `hive`: `year=YYYY/month=MM/day=DD/`, the partition scheme
    Athena, Glue, Spark and DuckDB read without configuration. Both take the date of
    `add_time` in its own offset (a call at 00:10 +05:30 is filed under that day, not under
    the previous day in UTC); a recording without `add_time` stays at the root.
    """
    if add_time is None or layout == "flat":
        return ""
    if layout == "date":
        return add_time.strftime("%Y/%m/%d/")
    if layout == "hive":
        return add_time.strftime("year=%Y/month=%m/day=%d/")
    raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def archive_key(
    recording_id: str,
    *,
    extension: str,
    add_time: datetime | None = None,
    layout: str = "flat",
) -> str:
    """Where a recording lives inside an archive, relative to its root (folder or prefix).

    `<id>.<ext>` for the flat layout, `<folder><id>.<ext>` for the date and hive layouts
    (`archive_folder`). The id must pass `safe_file_stem`, so a key never climbs out of its
    root: no `..` segment, no leading `/`, no control characters.
    """
    stem = safe_file_stem(recording_id)
    if not _SAFE_EXT.fullmatch(extension) or extension == "part":
        raise ValueError(f"not a recording file extension: {extension!r}")
    return f"{archive_folder(add_time, layout)}{stem}.{extension}"


def sidecar_key(key: str) -> str:
    """The key of a recording's metadata sidecar: its own key without the extension, plus
    `.json` (`2026/05/03/<id>.mp3` -> `2026/05/03/<id>.json`)."""
    folder, _, name = key.rpartition("/")
    stem = name.rpartition(".")[0] or name
    return f"{folder}/{stem}.json" if folder else f"{stem}.json"


def sidecar_document(wire: Mapping[str, Any]) -> bytes:
    """A metadata sidecar's bytes: the recording's wire object (`Recording.to_dict()`) as
    indented JSON, its `recording_url` without query or fragment (a signed URL's signature
    is a credential, and the archive outlives it)."""
    document = dict(wire)
    if isinstance(document.get("recording_url"), str):
        document["recording_url"] = redact_urls(document["recording_url"])
    return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"


#: zlib's window bits for each Content-Encoding it can undo (gzip's header, zlib's header).
_DECODER_BITS: Mapping[str, int] = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def content_decoder(encoding: str | None) -> zlib._Decompress | None:
    """A decoder for a body's `Content-Encoding`, None for an identity body.

    The downloader asks for `identity`, but some servers (nginx's `gzip_static always`)
    encode anyway. Decoding ourselves lets the caller check both the encoded byte count
    against `Content-Length` and that the stream reached its end (`decoder.eof`), which is
    how a truncated `.gz` is told from a whole one. Encodings zlib cannot undo are refused
    with `ValueError`.
    """
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return None
    bits = _DECODER_BITS.get(name)
    if bits is None:
        raise ValueError(f"unsupported Content-Encoding {_quoted(encoding)}")
    return zlib.decompressobj(bits)


_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.I)


def parse_unsatisfied_range(value: str | None) -> int | None:
    """The full size from a 416's `Content-Range: bytes */SIZE`; None if absent or odd."""
    match = _UNSATISFIED_RANGE.match(value or "")
    return int(match[1]) if match else None


#: NAT64's well-known prefix (RFC 6052) and its local-use one (RFC 8215): the IPv4 address
#: is the last 32 bits (of a /96; the local-use prefix's other layouts are refused below).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
#: `::ffff:0:a.b.c.d`, the IPv4-translated form (RFC 2765); `::a.b.c.d`, the deprecated
#: IPv4-compatible one (RFC 4291), whose `::` and `::1` stay IPv6.
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries, when it is one of the forms that reach it:
    IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64, 6to4 (`2002::/16`) or Teredo
    (the client's address); None for any other IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    last32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64 or ip in _NAT64_LOCAL or ip in _TRANSLATED:
        return last32
    if ip in _COMPATIBLE and int(ip) > 1:
        return last32
    return None


def address_problem(address: str, *, allow_loopback: bool) -> str | None:
    """Why a media URL must not be fetched from `address` (an IP), or None when it may.

    A recording URL comes from an API answer, so a hostile or compromised answer could aim
    the archiver at cloud metadata (169.254.169.254), a private network or the machine
    itself, and have the answer saved as a recording. Only globally routable unicast
    addresses are fetched; loopback only when `allow_loopback` (the API itself is local,
    as the embedded fake is). An IPv6 address that carries an IPv4 one (`embedded_ipv4`:
    mapped, translated, compatible, NAT64, 6to4, Teredo) is judged as the IPv4 it carries;
    NAT64's local-use prefix, a site's own, is private whatever it carries.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"not an IP address: {excerpt(repr(address))}"
    local_nat64 = isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL
    if isinstance(ip, ipaddress.IPv6Address) and (carried := embedded_ipv4(ip)) is not None:
        ip = carried
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address"
    if not ip.is_global or local_nat64:
        return "a private address"
    return None


#: A media body slower than this many bytes a second ...
MIN_SPEED = 1024.0
#: ... averaged over this many seconds is given up (and resumed by another attempt).
MIN_SPEED_WINDOW = 60.0


@attrs.define
class SpeedFloor:
    """A transfer's minimum rate, as curl's `--speed-limit`/`--speed-time`: `slow` says
    when fewer than `min_speed` bytes a second arrived over a whole `window` of seconds.

    A read timeout alone resets on every byte, so a body trickled at 10 B/s would hold its
    slot for hours. The clock is the caller's (`now`), so the decision is tested without one.
    """

    min_speed: float
    window: float
    #: When the current window started, and the bytes received since.
    started: float
    received: int = 0

    def slow(self, size: int, now: float) -> bool:
        """Count `size` more bytes arrived at `now`; True when the window that just ended
        averaged below the floor. A window that met it starts the next one."""
        self.received += size
        elapsed = now - self.started
        if elapsed < self.window:
            return False
        if self.received < self.min_speed * elapsed:
            return True
        self.started, self.received = now, 0
        return False

    def message(self) -> str:
        """What the failed attempt says: `transfer slower than 1024 B/s for 60 s`."""
        return f"transfer slower than {self.min_speed:g} B/s for {self.window:g} s"


#: Statuses whose `Location` a download follows (itself: credentials must be re-decided).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def redirect_target(url: URL, status: int, location: str | None) -> URL | None:
    """Where a response sends the client next: None when it is not a redirect, else the
    absolute target, or `UnsafeURLError` for one never to follow (no or a malformed
    `Location`, a non-HTTP scheme, https down to http). Whether credentials may go there
    is the session's separate decision (`AsyncSession.is_trusted`), made again per hop.
    """
    if status not in REDIRECT_STATUSES:
        return None
    if not location:
        raise UnsafeURLError(f"redirect {status} without a Location header")
    try:
        target = url.join(URL(location, encoded=True))
    except ValueError:
        raise UnsafeURLError("malformed redirect Location") from None
    if target.scheme not in ("http", "https"):
        raise UnsafeURLError(f"refusing a redirect to a non-HTTP URL ({target.scheme}:)")
    if url.scheme == "https" and target.scheme == "http":
        raise UnsafeURLError(f"refusing a redirect from https to http ({target.host})")
    return target


#: Media answers that may mean a signed URL went stale: worth one fresh `get()`.
STALE_STATUSES = frozenset({401, 403, 404, 410})


@attrs.frozen
class MediaAnswer:
    """What a media response means for a transfer (`media_answer`).

    `action` is one of: `body` (a whole body follows: start over with it), `resume` (the
    asked range follows), `complete` (the bytes held are already the whole file), `restart`
    (drop what is held and try again), `refresh` (the URL may be stale: fetch the recording
    again), `retry` (try again later), `fail` (give up with `error`).
    """

    action: Literal["body", "resume", "complete", "restart", "refresh", "retry", "fail"]
    #: Body bytes to expect (`body`, `resume`); None when the server did not say.
    expected: int | None = None
    #: The full size of the file, when known.
    total: int | None = None
    #: The strong ETag to keep for later resumes.
    etag: str | None = None
    #: The body's Content-Encoding (`body`): the caller decodes it and checks it is whole.
    encoding: str = "identity"
    error: VobizError | None = None
    retry_after: float | None = None


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() else None


def _strong_etag(headers: Mapping[str, str]) -> str | None:
    sent = headers.get("ETag")
    return sent if sent and not sent.startswith("W/") else None


def _whole_body(headers: Mapping[str, str], encoding: str) -> MediaAnswer:
    """A 200: a whole body, whether or not a range was asked; only known encodings."""
    if encoding != "identity" and encoding not in _DECODER_BITS:
        unsupported = f"unsupported Content-Encoding {_quoted(headers['Content-Encoding'])}"
        return MediaAnswer("fail", error=IntegrityError(unsupported))
    length = _content_length(headers)
    whole = length if encoding == "identity" else None
    return MediaAnswer("body", length, whole, _strong_etag(headers), encoding)


def _version_changed(
    etag: str | None, strong: str | None, total: int | None, size: int | None
) -> bool:
    """Whether a range comes from another version than the bytes held (ETag, size)."""
    etag_differs = etag is not None and strong is not None and strong != etag
    size_differs = total is not None and size is not None and size != total
    return etag_differs or size_differs


def _partial_body(
    headers: Mapping[str, str], encoding: str, asked_from: int, etag: str | None, total: int | None
) -> MediaAnswer:
    """A 206: the asked range of the same version, unencoded, or the transfer starts over."""
    if encoding != "identity":
        return MediaAnswer("restart", error=IntegrityError("a resumed range arrived encoded"))
    content_range = parse_content_range(headers.get("Content-Range"))
    if content_range is None or content_range[0] != asked_from:
        got = headers.get("Content-Range")
        unexpected = f"unexpected Content-Range {_quoted(got)}"
        return MediaAnswer("restart", error=IntegrityError(unexpected))
    start, end, size = content_range
    strong = _strong_etag(headers)
    if _version_changed(etag, strong, total, size):
        return MediaAnswer("restart", error=IntegrityError("the recording changed during resume"))
    return MediaAnswer(
        "resume", end - start + 1, size if size is not None else total, strong or etag
    )


def _range_refused(headers: Mapping[str, str], offset: int, etag: str | None) -> MediaAnswer:
    """A 416: complete when `bytes */SIZE` equals the bytes held of a proven version."""
    size = parse_unsatisfied_range(headers.get("Content-Range"))
    if size == offset and etag is not None and _strong_etag(headers) in (None, etag):
        return MediaAnswer("complete", total=size, etag=etag)
    return MediaAnswer("restart", error=IntegrityError("the server refused the resume range (416)"))


def _error_answer(status: int, headers: Mapping[str, str], reason: str | None) -> MediaAnswer:
    """Any other status: maybe a stale URL, maybe worth a retry, else a failure."""
    error = make_status_error(status, headers, None, reason=reason)
    if status in STALE_STATUSES:
        return MediaAnswer("refresh", error=error)
    if is_retryable_status(status):
        return MediaAnswer(
            "retry", error=error, retry_after=parse_retry_after(headers.get("Retry-After"))
        )
    return MediaAnswer("fail", error=error)


def media_answer(
    status: int,
    headers: Mapping[str, str],
    *,
    offset: int,
    asked_from: int,
    etag: str | None,
    total: int | None,
    reason: str | None = None,
) -> MediaAnswer:
    """What a media response means, for a transfer holding `offset` bytes of a version
    `etag` (None: unproven) of a file of `total` bytes (None: unknown), that asked for the
    range from `asked_from` (its offset, or a little before it to prove the overlap).

    A 200 is a whole body whether or not a range was asked; a 206 must start where it was
    asked and come from the same version (ETag, total size), or the transfer starts over;
    only identity bodies are resumed. A 416 whose `bytes */SIZE` equals the bytes held, of a
    proven version, means they are already the whole file.
    """
    encoding = (headers.get("Content-Encoding") or "identity").strip().lower()
    if status == 200:
        return _whole_body(headers, encoding)
    if status == 206:
        return _partial_body(headers, encoding, asked_from, etag, total)
    if status == 416:
        return _range_refused(headers, offset, etag)
    return _error_answer(status, headers, reason)


def next_page_offset(
    offset: int, count: int, next_ref: str | None, seen: Collection[int] = ()
) -> int | None:
    """Where a listing goes on after the page read at `offset` holding `count` objects: the
    offset of its `meta.next`, or None when the listing ends there.

    It ends on the last page (no `meta.next`) and on an empty page, even one whose `meta.next`
    and `total_count` promise more (a server that counts more than it lists would otherwise
    be asked for empty pages for good). A `meta.next` that does not move past `offset`, or
    goes back to a page already read (`seen`), would loop for good:
    `ResponseValidationError`. A `meta.next` without an offset continues after the page.
    """
    follow = next_page_params(next_ref)
    if follow is None or count == 0:
        return None
    raw = follow.get("offset")
    try:
        after = int(raw) if raw else offset + count
    except ValueError:
        after = -1
    if after < 0:
        raise ResponseValidationError(f"malformed meta.next: {next_ref!r}")
    if after in seen or after == offset:
        raise ResponseValidationError(f"the listing's next page repeats offset {after}: stopping")
    if after < offset:
        raise ResponseValidationError(
            f"the listing's next page goes back from offset {offset} to {after}: stopping"
        )
    return after
