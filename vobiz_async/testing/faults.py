"""The fake's programmable faults: what each kind does, when it fires, and the rate limit.

Pure: the decisions (which fault a request meets, whether a signed URL is stale, what an
error body looks like, whether the token bucket has a token) return values; `app` turns them
into responses. A new fault kind goes here (its name in `MediaFaultKind` or `ApiOperation`,
its decision below) plus the few lines in `app` that act on it.
"""

from __future__ import annotations

import datetime as dt
import http
import time
import uuid
from collections import deque
from typing import Any, Final, Literal, get_args

import attrs

from .catalogue import FakeRecording

MediaFaultKind = Literal["drop", "short", "status", "no_range", "etag_change", "expired", "slow"]
ApiOperation = Literal["list", "get", "delete", "bulk_delete", "export", "auth_me"]
ErrorBody = Literal["json", "generic", "export", "html"]
#: How list pages lie: "self_next" points every page's `meta.next` back at the page itself;
#: "lying_total" claims a `total_count` far above the recordings listed and always gives a
#: `meta.next`, so pages past the end come back empty.
ListingFault = Literal["self_next", "lying_total"]

_MEDIA_KINDS: Final = frozenset(get_args(MediaFaultKind))
_API_OPERATIONS: Final = frozenset(get_args(ApiOperation))
_ERROR_BODIES: Final = frozenset(get_args(ErrorBody))
_LISTING_FAULTS: Final = frozenset(get_args(ListingFault))
#: How many recordings a "lying_total" listing claims beyond those it has.
LYING_TOTAL_EXTRA: Final = 1_000_000
# What a generated recording's seeded fault is: (kind, status), by its seeded_fault number.
_SEEDED: Final = (("drop", 503), ("short", 503), ("status", 503), ("status", 429))


@attrs.define
class MediaFault:
    """A queued media fault: ``remaining`` more requests meet it."""

    kind: str
    remaining: int
    status: int
    retry_after: str | None


@attrs.define
class ApiFault:
    """A queued API fault: ``remaining`` more calls answer ``status`` with a ``body`` shape."""

    status: int
    remaining: int
    retry_after: str | None
    body: str


@attrs.define
class UrlState:
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


def check_media_fault(kind: str, times: int) -> None:
    """Raise ValueError unless ``kind`` and ``times`` make a media fault."""
    if kind not in _MEDIA_KINDS:
        raise ValueError(f"unknown media fault kind {kind!r}")
    if times < 1:
        raise ValueError("times must be at least 1")


def check_listing_fault(fault: str | None) -> None:
    """Raise ValueError unless ``fault`` is None or a `ListingFault`."""
    if fault is not None and fault not in _LISTING_FAULTS:
        raise ValueError(f"unknown listing fault {fault!r}")


def page_links(fault: str | None, offset: int, limit: int, total: int) -> tuple[int | None, int]:
    """What a list page at ``offset`` of ``total`` recordings reports under ``fault``: the
    offset its ``meta.next`` points at (None on the last page) and its ``total_count``."""
    if fault == "self_next":
        return offset, total
    if fault == "lying_total":
        return offset + limit, total + LYING_TOTAL_EXTRA
    return (offset + limit if offset + limit < total else None), total


def _take(queue: deque[Any]) -> Any:
    """Use the head of a fault queue once; drop it when it is used up."""
    fault = queue[0]
    fault.remaining -= 1
    if fault.remaining <= 0:
        queue.popleft()
    return fault


class Faults:
    """The faults programmed into one fake, and the state they leave behind."""

    def __init__(self) -> None:
        self._media: dict[str, deque[MediaFault]] = {}
        self._seeded_used: set[str] = set()
        self._url_states: dict[str, UrlState] = {}
        self._api: dict[str, deque[ApiFault]] = {}

    def add_media(
        self, rid: str, kind: str, times: int, status: int | None, retry_after: str | int | None
    ) -> None:
        """Queue a media fault (see `FakeVobiz.media_fault`)."""
        check_media_fault(kind, times)
        if kind == "expired":
            state = self._url_states.setdefault(rid, UrlState())
            state.stale_before = state.token + 1
            state.more = times - 1
            state.status = status or 403
            return
        fault = MediaFault(
            kind, times, status or 503, None if retry_after is None else str(retry_after)
        )
        self._media.setdefault(rid, deque()).append(fault)

    def add_api(
        self, operation: str, status: int, times: int, retry_after: str | int | None, body: str
    ) -> None:
        """Queue an API fault (see `FakeVobiz.api_fault`)."""
        if operation not in _API_OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        if body not in _ERROR_BODIES:
            raise ValueError(f"unknown error body {body!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = ApiFault(status, times, None if retry_after is None else str(retry_after), body)
        self._api.setdefault(operation, deque()).append(fault)

    def take_api(self, operation: str) -> ApiFault | None:
        """The fault the next call of ``operation`` meets, if any."""
        queue = self._api.get(operation)
        return _take(queue) if queue else None

    def take_media(self, rec: FakeRecording, *, status_only: bool) -> MediaFault | None:
        """The fault this media request of ``rec`` meets, if any.

        A generated recording's seeded fault joins its queue on the first request.
        ``status_only`` leaves a non-status fault at the head of the queue for a later hop.
        """
        rid = rec.recording_id
        if rec.seeded_fault is not None and rid not in self._seeded_used:
            self._seeded_used.add(rid)
            kind, status = _SEEDED[rec.seeded_fault]
            retry_after = "0" if kind == "status" else None
            self._media.setdefault(rid, deque()).append(MediaFault(kind, 1, status, retry_after))
        queue = self._media.get(rid)
        if not queue or (status_only and queue[0].kind != "status"):
            return None
        fault: MediaFault = _take(queue)
        if not queue:
            del self._media[rid]
        return fault

    def url_token(self, rid: str) -> int:
        """The signed-URL token the API hands out for ``rid`` now (1 until it expires)."""
        state = self._url_states.get(rid)
        return 1 if state is None else state.token

    def url_refusal(self, rid: str, ticket: str) -> int | None:
        """The status that refuses a media URL with token ``ticket``, or None to serve it."""
        state = self._url_states.get(rid)
        if state is None:
            return None if ticket == "1" else 403
        return None if state.accepts(ticket) else state.status

    def retrieved(self, rid: str) -> None:
        """A client retrieved ``rid``: an expired URL gets its fresh token."""
        state = self._url_states.get(rid)
        if state is not None:
            state.refresh()


class TokenBucket:
    """A token bucket of ``rate`` per second holding at most ``burst``; None means no limit."""

    def __init__(self, rate: float | None, burst: int) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("a rate limit must be positive")
        if burst < 1:
            raise ValueError("rate_limit_burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens, self._then = float(burst), time.monotonic()

    def take(self) -> bool:
        """Whether one more request may go through now."""
        if self.rate is None:
            return True
        now = time.monotonic()
        tokens = min(float(self.burst), self._tokens + (now - self._then) * self.rate)
        allowed = tokens >= 1.0
        self._tokens, self._then = (tokens - 1.0 if allowed else tokens), now
        return allowed


def phrase(status: int) -> str:
    """The reason phrase of ``status``, or ``Error`` for a status HTTP does not name."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def html_page(status: int) -> str:
    """A proxy's gateway page for ``status``, as nginx writes it."""
    name = phrase(status)
    return (
        f"<html><head><title>{status} {name}</title></head><body>"
        f"<h1>{status} {name}</h1><hr><center>nginx</center></body></html>"
    )


def error_payload(status: int, body: str) -> dict[str, Any]:
    """The JSON body of an API fault in shape ``body`` (``json``, ``generic`` or ``export``)."""
    name = phrase(status)
    if body == "generic":
        return {
            "status": "error",
            "error": {"code": name.upper().replace(" ", "_"), "message": name, "details": {}},
            "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "requestId": f"req_{uuid.uuid4().hex[:20]}",
        }
    if body == "export":
        return {"status": "failure", "message": name}
    message = "Recording not found" if status == 404 else name
    return {"api_id": str(uuid.uuid4()), "error": message}
