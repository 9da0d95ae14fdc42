"""`FakeVobiz`: the aiohttp servers, their routes, middleware and handlers.

The decisions live below this module: which recordings exist and in what order
(`catalogue`), which fault a request meets (`faults`), what a request asks for (`queries`).
Here they become HTTP: counting, authentication, redirects, byte ranges and streaming.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import uuid
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, TypedDict
from urllib.parse import quote, urlencode

import attrs
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from .catalogue import (
    BLOCK,
    Added,
    Catalogue,
    FakeRecording,
    RecordingsView,
    bulk_filter,
    seed_bytes,
)
from .faults import (
    ApiFault,
    ApiOperation,
    ErrorBody,
    Faults,
    ListingFault,
    MediaFault,
    MediaFaultKind,
    TokenBucket,
    check_listing_fault,
    check_media_fault,
    error_payload,
    html_page,
    page_links,
    phrase,
)
from .queries import (
    PLIVO_FILTERS,
    Unsatisfiable,
    export_problem,
    parse_page,
    parse_range,
    plivo_filters_keep,
)

logger = logging.getLogger(__name__)

DEFAULT_AUTH_ID: Final = "MA_FAKE00000000000000"
DEFAULT_AUTH_TOKEN: Final = "fake-token-not-a-secret-0123456789"  # noqa: S105 - a public fixture

_SLOW_CHUNK: Final = 4 * 1024
_SLOW_DELAY: Final = 0.05  # "slow" streams about 80 KB/s
_SHUTDOWN_TIMEOUT: Final = 0.25
_CREDENTIAL_HEADERS: Final = ("X-Auth-ID", "X-Auth-Token", hdrs.AUTHORIZATION)

_NO_CREDENTIALS: Final = "Authentication credentials were not provided."
_BAD_CREDENTIALS: Final = "Incorrect authentication credentials."


class SessionKwargs(TypedDict):
    """What `FakeVobiz.session_kwargs` returns: `AsyncSession(**kwargs)` connects to the fake."""

    auth_id: str
    auth_token: str
    base_url: str


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
    #: DELETEs of one recording answered 429 by the ``delete_rate_limit`` token bucket
    delete_rate_limited: int = 0
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
        self.delete_rate_limited = 0
        self.media_in_flight_max = self.media_in_flight
        self.api_in_flight_max = self.api_in_flight


def _check_rates(recordings: int, rates: Mapping[str, float]) -> None:
    if recordings < 0 or recordings >= 1 << 40:
        raise ValueError(f"recordings out of range: {recordings}")
    for name, rate in rates.items():
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, not {rate}")


def _api_id() -> str:
    return str(uuid.uuid4())


def _storage_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=xml, content_type="application/xml", headers=headers)


def _fault_response(fault: ApiFault | MediaFault, body: str) -> web.Response:
    headers = {} if fault.retry_after is None else {hdrs.RETRY_AFTER: fault.retry_after}
    if body == "html":
        page = html_page(fault.status)
        return web.Response(
            status=fault.status, text=page, content_type="text/html", headers=headers
        )
    return web.json_response(
        error_payload(fault.status, body), status=fault.status, headers=headers
    )


def _has_credentials(request: web.Request) -> bool:
    return any(name in request.headers for name in _CREDENTIAL_HEADERS)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"api_id": _api_id(), "error": message}, status=status, headers=headers
    )


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
    ``stats.rate_limited``. ``delete_rate_limit`` does the same for the API's DELETE of
    one recording (its own bucket, the same burst and Retry-After), counted in
    ``stats.delete_rate_limited``.

    ``listing_fault`` (also settable later) makes list pages lie: ``"self_next"`` points
    every page's ``meta.next`` back at that page; ``"lying_total"`` claims a million more
    recordings than it has in ``total_count`` and always gives a ``meta.next``, so the pages
    past the end come back empty.
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
        delete_rate_limit: float | None = None,
        listing_fault: ListingFault | None = None,
        honour_filters: bool = False,
        on_delete: Callable[[str], object] | None = None,
    ) -> None:
        #: On: Plivo-style `add_time__gte/__gt/__lte/__lt`, `from_number` and `to_number`
        #: list filters are applied server-side; off (default): ignored, as Vobiz documents.
        self.honour_filters = honour_filters
        check_listing_fault(listing_fault)
        #: Called with the id inside a DELETE before removal (a test checks the archive then).
        self.delete_hook: Callable[[str], object] | None = on_delete
        self._listing_fault: ListingFault | None = listing_fault
        self._bucket = TokenBucket(media_rate_limit, rate_limit_burst)
        self._delete_bucket = TokenBucket(delete_rate_limit, rate_limit_burst)
        rates = dict(
            fault_rate=fault_rate,
            wav_as_mp3_rate=wav_as_mp3_rate,
            foreign_redirect_rate=foreign_redirect_rate,
        )
        _check_rates(recordings, rates)
        self.seed, self.auth_id, self.auth_token = seed, auth_id, auth_token
        self.latency, self.media_latency = latency, media_latency
        self.max_limit = max_limit
        self.export_busy_calls = export_busy_calls
        self.record_requests = record_requests
        self.stats = FakeStats()
        self.rate_limit_retry_after = rate_limit_retry_after
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._port = port
        self._foreign_port_wanted = foreign_port
        self._secret = hashlib.sha256(seed_bytes("sig", seed, auth_token)).digest()
        self._catalogue = Catalogue(self, recordings, seed=seed, **rates)
        self._ids_cache: tuple[int, list[str]] | None = None
        self._faults = Faults()
        self._export_busy = 0
        self._runners: list[web.AppRunner] = []
        self._ops: dict[object, str] = {}
        self._api_port: int | None = None
        self._foreign_port: int | None = None

    @property
    def listing_fault(self) -> ListingFault | None:
        """How list pages lie (``"self_next"``, ``"lying_total"``), or None for honest pages."""
        return self._listing_fault

    @listing_fault.setter
    def listing_fault(self, fault: ListingFault | None) -> None:
        check_listing_fault(fault)
        self._listing_fault = fault

    @property
    def media_rate_limit(self) -> float | None:
        """Media requests per second the token bucket lets through; None for no limit."""
        return self._bucket.rate

    @property
    def rate_limit_burst(self) -> int:
        """How many media requests the token bucket lets through at once."""
        return self._bucket.burst

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
        version = self._catalogue.version
        if self._ids_cache is None or self._ids_cache[0] != version:
            self._ids_cache = (version, list(self._catalogue.iter_ids()))
        return list(self._ids_cache[1])

    @property
    def recordings(self) -> Mapping[str, FakeRecording]:
        """The live recordings by id, in list order; a lazy read-only view."""
        return RecordingsView(self._catalogue)

    def recording_url(self, rid: str) -> str:
        """Return the ``recording_url`` the API currently hands out for ``rid``."""
        rec = self._catalogue.require(rid, live=False)
        if rec.url_override is not None:
            return rec.url_override
        token = self._faults.url_token(rid)
        query = f"?token={token}" if token > 1 else ""
        return f"{self._api_root()}media/{quote(rid, safe='')}.{rec.recording_format}{query}"

    def body(self, rid: str) -> bytes:
        """Return the exact bytes the media URL of ``rid`` serves (removed ones too)."""
        return self._catalogue.body(self._catalogue.require(rid, live=False))

    def sha256(self, rid: str) -> str:
        """Return the hex sha256 of :meth:`body`, computed block by block and cached."""
        return self._catalogue.sha256(self._catalogue.require(rid, live=False))

    def size(self, rid: str) -> int:
        """Return the byte count of :meth:`body`."""
        return self._catalogue.require(rid, live=False).size

    def etag(self, rid: str) -> str:
        """Return the strong ETag the media URL of ``rid`` currently sends."""
        return self._catalogue.etag(self._catalogue.require(rid, live=False))

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
        spec = Added(
            recording_id=recording_id,
            size=size,
            container=container,
            recording_format=recording_format,
            recording_type=recording_type,
            call_uuid=call_uuid,
            redirect_foreign=redirect_foreign,
            recording_url=recording_url,
            extra_fields=extra_fields,
            add_time=add_time,
            extra_hops=extra_hops,
        )
        return self._catalogue.add(spec)

    def remove_recording(self, rid: str) -> None:
        """Delete ``rid`` as the API's DELETE would; raise KeyError if it is not there."""
        self._catalogue.remove(rid)

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
        check_media_fault(kind, times)
        self._catalogue.require(rid)
        self._faults.add_media(rid, kind, times, status, retry_after)

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
        self._faults.add_api(operation, status, times, retry_after, body)

    def finish_export(self) -> None:
        """End the running export at once, so the next export call succeeds."""
        self._export_busy = 0

    def _api_root(self) -> str:
        if self._api_port is None:
            raise RuntimeError("FakeVobiz is not started")
        return f"http://127.0.0.1:{self._api_port}/"

    def _sig(self, rid: str) -> str:
        mac = hmac.new(self._secret, rid.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return mac.hexdigest()[:32]

    # ----------------------------------------------------------------- middleware

    def _auth_failure(self, request: web.Request) -> web.Response | None:
        given_id = request.headers.get("X-Auth-ID")
        given_token = request.headers.get("X-Auth-Token")
        if given_id is None or given_token is None:
            return _error(401, _NO_CREDENTIALS)
        if given_id != self.auth_id or given_token != self.auth_token:
            return _error(401, _BAD_CREDENTIALS)
        return None

    def _api_guard(
        self, request: web.Request, operation: str, *, account: bool = True
    ) -> web.Response | None:
        """Return the response that ends an API call early (auth, account, fault), or None."""
        refused = self._auth_failure(request)
        if refused is not None:
            return refused
        if account and request.match_info["auth_id"] != self.auth_id:
            return _error(403, "You do not have permission to access this account.")
        fault = self._faults.take_api(operation)
        return None if fault is None else _fault_response(fault, fault.body)

    def _arrived(self, request: web.Request, *, media: bool, foreign: bool) -> None:
        """Count a request as it arrives: its connection, its kind, the in-flight gauges."""
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

    def _done(self, request: web.Request, operation: str, status: int, *, media: bool) -> None:
        """Count a request as it ends, and record it when ``record_requests``."""
        if media:
            self.stats.media_in_flight -= 1
        else:
            self.stats.api_in_flight -= 1
        if self.record_requests:
            self.stats.requests.append(
                RequestRecord(
                    method=request.method,
                    path=request.raw_path,
                    host=request.host,
                    operation=operation,
                    status=status,
                    credentials=_has_credentials(request),
                )
            )

    def _too_many(self) -> web.Response:
        return _error(429, "Too many requests", {"Retry-After": str(self.rate_limit_retry_after)})

    def _refusal(self, request: web.Request, *, media: bool, foreign: bool) -> web.Response | None:
        """The answer before any handler: the media rate limit, or an unknown path."""
        if media and not self._bucket.take():
            self.stats.rate_limited += 1
            return self._too_many()
        deleting = self._ops.get(request.match_info.route) == "delete"
        if deleting and not self._delete_bucket.take():
            self.stats.delete_rate_limited += 1
            return self._too_many()
        missing = request.match_info.http_exception
        if missing is None or missing.status != 404:
            return None
        if foreign:
            return _storage_error(404, "NoSuchKey", "The specified key does not exist.")
        # Unknown paths, such as a lower-cased one, look like auth failures.
        return _error(401, _BAD_CREDENTIALS if _has_credentials(request) else _NO_CREDENTIALS)

    def _middleware(self, *, foreign: bool) -> Middleware:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            operation = self._ops.get(request.match_info.route, "unknown")
            media = operation in ("media", "storage")
            self._arrived(request, media=media, foreign=foreign)
            status = 500
            try:
                if not media and self.latency > 0:
                    await asyncio.sleep(self.latency)
                response = self._refusal(request, media=media, foreign=foreign)
                answer = response if response is not None else await handler(request)
                status = answer.status
                return answer
            except ConnectionError:  # reset, or aiohttp's "Connection lost" while draining
                # The client went away (a download stopped, a process killed): one line, and
                # a response aiohttp drops quietly, instead of its "Error handling request".
                logger.warning(
                    "client %s went away during %s %s", request.remote, request.method, request.path
                )
                return web.Response(status=status)
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                self._done(request, operation, status, media=media)

        return middleware

    async def _handle_auth_me(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "auth_me", account=False)
        if refused is not None:
            return refused
        return web.json_response(
            {
                "api_id": _api_id(),
                "auth_id": self.auth_id,
                "name": "Fake Vobiz account",
                "account_type": "standard",
                "status": "active",
            }
        )

    def _listed(self, query: Mapping[str, str], offset: int, limit: int) -> tuple[int, list[Any]]:
        """`(total, one page of records)` for a list request's filters."""
        call_uuid = query.get("call_uuid") or None
        recording_type = query.get("recording_type") or None
        if self.honour_filters and any(k in query for k in PLIVO_FILTERS):
            matching = self._catalogue.matching(call_uuid, recording_type)
            entries = [self._catalogue.entry(e) for e in matching]
            chosen = [rec for rec in entries if plivo_filters_keep(query, rec.wire())]
            total = len(chosen)
            records = chosen[offset : offset + limit]
        elif call_uuid is None and recording_type is None:
            total = self._catalogue.live_count()
            records = self._catalogue.page(offset, limit)
        else:
            matching = self._catalogue.matching(call_uuid, recording_type)
            total = len(matching)
            records = [self._catalogue.entry(e) for e in matching[offset : offset + limit]]
        return total, records

    async def _handle_list(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "list")
        if refused is not None:
            return refused
        query = request.query
        page = parse_page(query, self.max_limit)
        if isinstance(page, str):
            return _error(400, page)
        limit, offset = page
        total, records = self._listed(query, offset, limit)
        kept = [(k, v) for k, v in query.items() if k not in ("limit", "offset")]
        path = f"/v1/Account/{self.auth_id}/Recording/?"
        after, claimed = page_links(self.listing_fault, offset, limit, total)

        def link(to: int) -> str:
            return path + urlencode([("limit", limit), ("offset", to), *kept])

        meta = {
            "limit": limit,
            "next": None if after is None else link(after),
            "offset": offset,
            "previous": link(max(0, offset - limit)) if offset > 0 else None,
            "total_count": claimed,
        }
        objects = [rec.wire() for rec in records]
        return web.json_response({"api_id": _api_id(), "meta": meta, "objects": objects})

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "get")
        if refused is not None:
            return refused
        rid = request.match_info["rid"]
        rec = self._catalogue.lookup(rid)
        if rec is None:
            return _error(404, "Recording not found")
        self._faults.retrieved(rid)
        return web.json_response({"api_id": _api_id(), **rec.wire()})

    async def _handle_delete(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "delete")
        if refused is not None:
            return refused
        rid = request.match_info["rid"]
        if self._catalogue.lookup(rid) is None:
            return _error(404, "Recording not found")
        if self.delete_hook is not None:
            self.delete_hook(rid)
        self.remove_recording(rid)
        return web.Response(status=204)

    async def _handle_bulk_delete(self, request: web.Request) -> web.StreamResponse:
        refused = self._api_guard(request, "bulk_delete")
        if refused is not None:
            return refused
        self.stats.bulk_delete_queries.append(dict(request.query))
        flt = bulk_filter(request.query)
        if isinstance(flt, str):
            return _error(400, flt)
        doomed = self._catalogue.matching_bulk(flt)
        for rid in doomed:
            self.remove_recording(rid)
        return web.json_response(
            {"api_id": _api_id(), "message": "Bulk delete of recordings has been initiated."},
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
        problem = export_problem(body)
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
                "api_id": _api_id(),
                "status": "success",
                "message": f"Export started; the link will be e-mailed to {emails}.",
            },
            status=202,
        )

    # ----------------------------------------------------------------- media handlers

    def _split_name(self, name: str) -> FakeRecording | None:
        rid, dot, ext = name.rpartition(".")
        rec = self._catalogue.lookup(rid) if dot else None
        return rec if rec is not None and ext == rec.recording_format else None

    def _media_refusal(self, request: web.Request) -> FakeRecording | web.Response:
        """The recording a Vobiz media request names, or the answer refusing it."""
        refused = self._auth_failure(request)
        if refused is not None:
            return refused
        rec = self._split_name(request.match_info["name"])
        if rec is None:
            return _error(404, "Recording not found")
        status = self._faults.url_refusal(rec.recording_id, request.query.get("token", "1"))
        return rec if status is None else _error(status, "URL expired")

    def _redirect(self, request: web.Request, rec: FakeRecording, hop: int) -> str | None:
        """Where a Vobiz media request is sent on: the next same-host hop, or foreign storage."""
        if hop < rec.extra_hops:
            query = urlencode(
                [(k, v) for k, v in request.query.items() if k != "hop"] + [("hop", hop + 1)]
            )
            return f"{self._api_root()}media/{quote(request.match_info['name'], safe='')}?{query}"
        if rec.redirect_foreign:
            rid = rec.recording_id
            return (
                f"{self.foreign_base_url}storage/{quote(rid, safe='')}.{rec.recording_format}"
                f"?sig={self._sig(rid)}&expires=3600"
            )
        return None

    async def _handle_media(self, request: web.Request) -> web.StreamResponse:
        rec = self._media_refusal(request)
        if isinstance(rec, web.Response):
            return rec
        hop_raw = request.query.get("hop", "0")
        hop = int(hop_raw) if hop_raw.isdigit() else 0
        redirects = hop < rec.extra_hops or rec.redirect_foreign
        fault = None
        if hop == 0 or not redirects:  # a redirecting URL answers status faults on its first hop
            fault = self._faults.take_media(rec, status_only=redirects)
        if fault is not None and fault.kind == "status":
            return _fault_response(fault, "json")
        if self.media_latency > 0:
            await asyncio.sleep(self.media_latency)
        location = self._redirect(request, rec, hop)
        if location is not None:
            raise web.HTTPFound(location)
        return await self._serve_body(request, rec, fault)

    async def _handle_storage(self, request: web.Request) -> web.StreamResponse:
        if _has_credentials(request):
            self.stats.foreign_credentials_seen += 1
        rec = self._split_name(request.match_info["name"])
        if rec is None:
            return _storage_error(404, "NoSuchKey", "The specified key does not exist.")
        if not hmac.compare_digest(request.query.get("sig", ""), self._sig(rec.recording_id)):
            return _storage_error(403, "AccessDenied", "Request signature does not match.")
        fault = self._faults.take_media(rec, status_only=False)
        if fault is not None and fault.kind == "status":
            extra: dict[str, str] = {}
            if fault.retry_after is not None:
                extra[hdrs.RETRY_AFTER] = fault.retry_after
            return _storage_error(fault.status, "ServiceUnavailable", phrase(fault.status), extra)
        if self.media_latency > 0:
            await asyncio.sleep(self.media_latency)
        return await self._serve_body(request, rec, fault)

    async def _serve_body(
        self, request: web.Request, rec: FakeRecording, fault: MediaFault | None
    ) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        if kind == "etag_change":
            self._catalogue.bump_etag(rec.recording_id)
        etag = self._catalogue.etag(rec)
        wanted = _wanted_range(request, rec.size, etag, honour=kind != "no_range")
        if isinstance(wanted, web.Response):
            return wanted
        response = _body_response(rec, etag, wanted)
        start, stop = (0, rec.size) if wanted is None else wanted
        if kind in ("drop", "short"):
            stop = start + (stop - start) // 2
            response.force_close()
        await response.prepare(request)
        if request.method == hdrs.METH_HEAD:
            return response
        # A client that goes away meanwhile: the middleware says so in one line.
        await self._stream(response, rec, start, stop, slow=kind == "slow")
        if kind == "drop":
            transport = request.transport
            if transport is not None:
                transport.close()
        elif kind == "short":
            await response.write_eof()
        return response

    async def _stream(
        self, response: web.StreamResponse, rec: FakeRecording, start: int, stop: int, *, slow: bool
    ) -> None:
        chunk = _SLOW_CHUNK if slow else BLOCK
        for piece in self._catalogue.iter_bytes(rec, start, stop):
            for offset in range(0, len(piece), chunk):
                part = piece[offset : offset + chunk]
                await response.write(part)
                self.stats.media_bytes_sent += len(part)
                if slow:
                    await asyncio.sleep(_SLOW_DELAY)


def _wanted_range(
    request: web.Request, size: int, etag: str, *, honour: bool
) -> tuple[int, int] | web.Response | None:
    """The byte range to send, None for the whole body, or the 416 refusing the Range."""
    range_header = request.headers.get(hdrs.RANGE)
    if range_header is None or not honour:
        return None
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None and if_range != etag:
        return None
    try:
        return parse_range(range_header, size)
    except Unsatisfiable:
        headers = {
            hdrs.CONTENT_RANGE: f"bytes */{size}",
            hdrs.ETAG: etag,
            hdrs.ACCEPT_RANGES: "bytes",
        }
        return web.Response(status=416, headers=headers)


def _body_response(
    rec: FakeRecording, etag: str, wanted: tuple[int, int] | None
) -> web.StreamResponse:
    """The unprepared 200 or 206 for ``rec``'s body, with its headers and length."""
    start, stop = (0, rec.size) if wanted is None else wanted
    response = web.StreamResponse(status=200 if wanted is None else 206)
    response.headers[hdrs.CONTENT_TYPE] = (
        "audio/wav" if rec.recording_format == "wav" else "audio/mpeg"
    )
    response.headers[hdrs.ETAG] = etag
    response.headers[hdrs.ACCEPT_RANGES] = "bytes"
    if wanted is not None:
        response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{stop - 1}/{rec.size}"
    response.content_length = stop - start
    return response
