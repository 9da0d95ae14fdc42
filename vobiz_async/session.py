"""`AsyncSession`: credentials, the HTTP connection pool, and the one I/O seam.

Every HTTP request the library makes, API call or media download, goes through
`AsyncSession._send`, which alone decides whether credentials may travel with a request.
`AsyncSession.request` adds JSON decoding and retries for API calls on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp
import attrs
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from ._files import Secret
from ._version import __version__
from .bodyslots import SMALL_READ
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    InvalidRecordingIdError,
    ResponseValidationError,
    SessionClosedError,
    UnsafeURLError,
)
from .pacing import current_gate, passage
from .protocol import (
    address_problem,
    backoff_delay,
    decipher_response,
    is_retryable_status,
    parse_retry_after,
    quote_path_segment,
    redirect_target,
)
from .recordings import Recordings
from .redact import describe

__all__ = ["DEFAULT_BASE_URL", "MAX_API_BODY", "MAX_REDIRECTS", "AsyncSession", "SessionConfig"]

logger = logging.getLogger("vobiz_async")

DEFAULT_BASE_URL = "https://api.vobiz.ai/api/v1/"
#: The largest API answer (not a recording) read, in bytes: a page of 100 recordings is
#: about 100 KiB, so a bigger one is a broken or hostile server, not data.
MAX_API_BODY = 8 * 1024 * 1024
#: Redirects one streamed GET follows before giving up.
MAX_REDIRECTS = 10
#: The path every Vobiz API root ends in.
API_PATH = "/api/v1/"
#: Vobiz's own domain: its media hosts (media., recordings., storage.) live under it.
VOBIZ_DOMAIN = "vobiz.ai"
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
#: API origins outside vobiz.ai already warned about in this process.
_warned_origins: set[str] = set()


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK or host.startswith("127.")


class _GuardedResolver(AbstractResolver):
    """The owned pool's DNS: refuses, before any connection, a name that resolves to an
    address media must not come from (see `protocol.address_problem`), so that DNS cannot
    smuggle a private address past a check of the URL's literal host."""

    def __init__(self, inner: AbstractResolver, session: AsyncSession) -> None:
        self._inner = inner
        self._session = session

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._session.check_address(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """`host` equals a pattern or is a subdomain of one (case-insensitive)."""
    host = host.lower().rstrip(".")
    return any(host == p or host.endswith("." + p) for p in patterns)


def _same_secret(a: Secret, b: Secret) -> bool:
    return a.value == b.value


@attrs.frozen
class SessionConfig:
    """Every setting an `AsyncSession` was built with, to open another one like it (a Ray
    worker's, say): `AsyncSession.from_config(session.config)`. The token is a `Secret`,
    shown in no repr; a borrowed `http_session` is not a setting and is not kept."""

    auth_id: str
    auth_token: Secret = attrs.field(repr=False, eq=attrs.cmp_using(eq=_same_secret), hash=False)
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 60.0
    max_retries: int = 2
    trusted_hosts: frozenset[str] = frozenset({VOBIZ_DOMAIN})
    max_connections: int = 100
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    allow_private_media: bool = False
    #: A caller's DNS resolver object: it cannot travel to another process.
    resolver: AbstractResolver | None = None


def _size_text(size: int) -> str:
    return f"{size // 1024**2} MiB" if size % 1024**2 == 0 else f"{size} bytes"


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of an API answer, read as it arrives, or `ResponseValidationError` (and the
    connection closed) as soon as it is known to exceed `limit` bytes: from its
    Content-Length when it has one, else (and after decoding) from what has arrived."""
    if resp.content_length is None or resp.content_length <= limit:
        body = bytearray()
        async for chunk in resp.content.iter_any():
            body += chunk
            if len(body) > limit:
                break
        else:
            return bytes(body)
    resp.close()
    raise ResponseValidationError(f"the API's answer is larger than {_size_text(limit)}")


@contextlib.contextmanager
def _transport_errors(method: str, url: URL) -> Iterator[None]:
    """Turn aiohttp's transport failures into the library's connection errors."""
    try:
        yield
    except aiohttp.InvalidURL as err:  # before ClientError: retrying cannot fix a bad URL
        raise UnsafeURLError(f"{method}: malformed URL for {url.host}") from err
    except TimeoutError as err:
        raise APITimeoutError(f"{method} {url.host}{url.path} timed out") from err
    except aiohttp.ClientError as err:
        # aiohttp's text quotes the whole URL and any raw bytes its parser choked on.
        raise APIConnectionError(f"{method} {url.host}{url.path} failed: {describe(err)}") from err


class _SmallFirstRead(ResponseHandler):
    """A connection whose socket reads at most `SMALL_READ` bytes at a time from its first
    read on (a response's headers and its body's first bytes); a body holding a slot
    raises it (`bodyslots.py`). asyncio's selector transport reads 256 KiB at a time by
    default (its `max_size`), so without this every new connection's first read could hold
    256 KiB before any flow control applies. A transport without `max_size` (TLS, uvloop)
    is left as it is."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if getattr(transport, "max_size", 0) > SMALL_READ:
            transport.max_size = SMALL_READ  # type: ignore[attr-defined]


class _SmallFirstReads(aiohttp.TCPConnector):
    """The session's own pool: every connection is a `_SmallFirstRead`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        loop = asyncio.get_running_loop()  # as aiohttp's own connector asks for
        self._factory = functools.partial(_SmallFirstRead, loop=loop)  # type: ignore[assignment]


class AsyncSession:
    """An authenticated connection to the Vobiz API.

    Use it as an async context manager. It owns an `aiohttp.ClientSession` unless one is
    passed as `http_session`, which is then borrowed and never closed here.
    """

    #: The largest API answer read, in bytes (`MAX_API_BODY`); a larger one is refused.
    max_api_body: int = MAX_API_BODY

    def __init__(
        self,
        auth_id: str | None = None,
        auth_token: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        http_session: aiohttp.ClientSession | None = None,
        trusted_hosts: Iterable[str] = (VOBIZ_DOMAIN,),
        max_connections: int = 100,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        allow_private_media: bool = False,
        resolver: AbstractResolver | None = None,
    ) -> None:
        auth_id = auth_id or os.environ.get("VOBIZ_AUTH_ID")
        token = auth_token or os.environ.get("VOBIZ_AUTH_TOKEN")
        if not auth_id or not token:
            raise ConfigurationError(
                "Vobiz credentials are missing: pass auth_id and auth_token, or set "
                "VOBIZ_AUTH_ID and VOBIZ_AUTH_TOKEN"
            )
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.auth_id = auth_id
        try:
            self._account_segment = quote_path_segment(auth_id, what="auth id")
        except InvalidRecordingIdError as err:
            raise ConfigurationError(f"auth_id is not a valid Vobiz account id: {err}") from None
        self._token = Secret(token)
        self.base_url = self._check_base_url(
            base_url or os.environ.get("VOBIZ_BASE_URL") or DEFAULT_BASE_URL
        )
        self._warn_foreign_api_host()
        self.max_retries = max_retries
        self.timeout = timeout
        #: Domains (and their subdomains) that receive credentials over https, besides the
        #: API's own origin.
        self.trusted_hosts = frozenset(h.lower().strip(".") for h in trusted_hosts)
        self.max_connections = max_connections
        self._media_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        #: Fetch media from private, link-local and (for a non-local API) loopback
        #: addresses too: for on-premise deployments whose media hosts are internal.
        self.allow_private_media = allow_private_media
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._http = http_session
        self._owns_http = http_session is None
        self._closed = False
        self._seen_advisories: set[tuple[str, str]] = set()
        self.recordings = Recordings(self)

    @classmethod
    def from_config(cls, config: SessionConfig) -> Self:
        """A new session with `config`'s settings (and a pool of its own)."""
        return cls(
            config.auth_id,
            config.auth_token.value,
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
            trusted_hosts=config.trusted_hosts,
            max_connections=config.max_connections,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            allow_private_media=config.allow_private_media,
            resolver=config.resolver,
        )

    @property
    def config(self) -> SessionConfig:
        """This session's settings, whole: `AsyncSession.from_config` opens another."""
        return SessionConfig(
            auth_id=self.auth_id,
            auth_token=self._token,
            base_url=str(self.base_url),
            timeout=self.timeout,
            max_retries=self.max_retries,
            trusted_hosts=self.trusted_hosts,
            max_connections=self.max_connections,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            allow_private_media=self.allow_private_media,
            resolver=self._resolver,
        )

    @staticmethod
    def _check_base_url(raw: str) -> URL:
        url = URL(raw if raw.endswith("/") else raw + "/")
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"base_url must be an http(s) URL, got {raw!r}")
        if url.scheme == "http" and not _is_loopback(url.host):
            raise ConfigurationError(
                f"refusing to send credentials over plain http to {url.host}; use https"
            )
        return url

    def _warn_foreign_api_host(self) -> None:
        """Warn once per process and origin when credentials will go to an API host that is
        neither under vobiz.ai nor loopback (a typo, a proxy, or someone else's server)."""
        host = self.base_url.host or ""
        origin = str(self.base_url.origin())
        if _is_loopback(host) or host_matches(host, (VOBIZ_DOMAIN,)):
            return
        if origin not in _warned_origins:
            _warned_origins.add(origin)
            logger.warning(
                "the API host %s is not under %s; credentials will be sent to it",
                host,
                VOBIZ_DOMAIN,
            )

    def __repr__(self) -> str:
        return f"AsyncSession(auth_id={self.auth_id!r}, base_url={str(self.base_url)!r})"

    async def __aenter__(self) -> Self:
        return self  # the pool is created on first use, so a download can size it first

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this object opened it; a borrowed one stays open.

        A closed session opens no new pool: a request still in flight (a page prefetch
        of an abandoned listing, say) raises `SessionClosedError` instead of leaking one.
        """
        self._closed = True
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.close()

    def reserve_connections(self, count: int) -> int:
        """Make the owned pool hold at least `count` connections if it does not exist yet;
        return the pool's limit (0: unlimited)."""
        if self._owns_http and (self._http is None or self._http.closed):
            self.max_connections = max(self.max_connections, count)
        connector = self.http.connector
        return connector.limit if connector is not None else 0

    @property
    def http(self) -> aiohttp.ClientSession:
        """The underlying aiohttp session, created on first use."""
        if self._http is None or (self._owns_http and self._http.closed):
            if self._closed:
                raise SessionClosedError(
                    "this AsyncSession is closed; create a new one for further requests"
                )
            inner = self._resolver or aiohttp.DefaultResolver()
            connector = _SmallFirstReads(
                limit=self.max_connections,
                limit_per_host=0,
                resolver=_GuardedResolver(inner, self),
            )
            self._http = aiohttp.ClientSession(
                connector=connector,
                timeout=self._media_timeout,
                headers={"User-Agent": f"vobiz-async/{__version__}"},
            )
        return self._http

    def account_url(self, *segments: str) -> URL:
        """`{base}/Account/{auth_id}/{segments…}/`, keeping Vobiz's case and trailing slash."""
        path = "/".join(["Account", self._account_segment, *segments])
        return self.base_url.join(URL(path + "/", encoded=True))

    async def check_credentials(self) -> Any:
        """`GET auth/me`: the account's details, or `AuthenticationError` for bad credentials."""
        return await self.request("GET", self.base_url.join(URL("auth/me", encoded=True)))

    def is_trusted(self, url: URL, trusted_hosts: Iterable[str] | None = None) -> bool:
        """Credentials may go to `url`: the API's exact origin (scheme, host and port), or
        an https URL on a trusted domain (`trusted_hosts`, default the session's)."""
        if (url.scheme, url.host, url.port) == (
            self.base_url.scheme,
            self.base_url.host,
            self.base_url.port,
        ):
            return True
        patterns = self.trusted_hosts if trusted_hosts is None else trusted_hosts
        return url.scheme == "https" and host_matches(url.host or "", patterns)

    def check_address(self, host: str, address: str) -> None:
        """Raise `UnsafeURLError` when `host`, resolved to `address`, may not be fetched.

        The API's own host is whatever the caller configured; every other host (the media
        hosts a recording URL or a redirect names) must be globally routable, loopback only
        when the API is local, unless `allow_private_media`.
        """
        if self.allow_private_media or host.lower() == (self.base_url.host or "").lower():
            return
        problem = address_problem(address, allow_loopback=_is_loopback(self.base_url.host or ""))
        if problem is not None:
            raise UnsafeURLError(
                f"refusing to fetch from {host}: it is {problem} ({address}); pass "
                "allow_private_media=True to AsyncSession for on-premise media hosts"
            )

    async def _check_destination(self, url: URL) -> None:
        """Check a URL's host before connecting: a literal IP always (the connector skips
        DNS for those), a name here only for a borrowed pool, which lacks our resolver."""
        host = url.raw_host or ""
        if self.allow_private_media or host.lower() == (self.base_url.host or "").lower():
            return
        try:
            ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            if self._owns_http:
                return  # the connector's resolver checks what the name resolves to
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, url.port, type=socket.SOCK_STREAM
                )
            except OSError:
                return  # the request itself will fail and say why
            for info in infos:
                self.check_address(host, str(info[4][0]))
            return
        self.check_address(host, host.strip("[]"))

    async def _send(
        self,
        method: str,
        url: URL,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
        read_bufsize: int | None = None,
        trusted_hosts: Iterable[str] | None = None,
        auto_decompress: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send one request without following redirects; the caller releases the response.

        Credentials are attached only when `is_trusted(url)`. Transport failures become
        `APIConnectionError`/`APITimeoutError`; cancellation passes through untouched.
        """
        if url.scheme not in ("http", "https") or not url.host:
            raise UnsafeURLError(f"refusing to fetch a non-HTTP URL ({url.scheme or 'no'} scheme)")
        await self._check_destination(url)
        all_headers = dict(headers or {})
        if self.is_trusted(url, trusted_hosts):
            all_headers["X-Auth-ID"] = self.auth_id
            all_headers["X-Auth-Token"] = self._token.value
        with _transport_errors(method, url):
            return await self.http.request(
                method,
                url,
                params=params,
                json=json,
                headers=all_headers,
                allow_redirects=False,
                timeout=client_timeout or self._media_timeout,
                read_bufsize=read_bufsize,
                auto_decompress=auto_decompress,
            )

    async def stream(
        self,
        method: str,
        url: URL,
        *,
        headers: Mapping[str, str] | None = None,
        read_bufsize: int | None = None,
        trusted_hosts: Iterable[str] | None = None,
        auto_decompress: bool = True,
    ) -> aiohttp.ClientResponse:
        """A streamed request (a media download) that follows up to `MAX_REDIRECTS`
        redirects itself, deciding afresh on every hop whether credentials may go there
        and whether the target may be fetched at all; the caller releases the response.

        aiohttp's own redirect handling would forward `X-Auth-*` headers to any host; here
        they reach a hop only when `is_trusted` says so (`trusted_hosts`, default the
        session's), and a hop to a private address or a downgrade to http is refused.
        """
        for _ in range(MAX_REDIRECTS + 1):
            resp = await self._send(
                method,
                url,
                headers=headers,
                read_bufsize=read_bufsize,
                trusted_hosts=trusted_hosts,
                auto_decompress=auto_decompress,
            )
            # Host and path only: a signed URL's query is a credential of its own.
            logger.debug("%s %s%s -> %d", method, url.host, url.path, resp.status)
            try:
                target = redirect_target(url, resp.status, resp.headers.get("Location"))
            except BaseException:
                resp.release()
                raise
            if target is None:
                return resp
            resp.release()
            url = target
        raise UnsafeURLError(f"more than {MAX_REDIRECTS} redirects")

    def note_advisories(self, headers: Mapping[str, str], path: str) -> None:
        """Log `Deprecation` and `Sunset` headers once per distinct value."""
        for name in ("Deprecation", "Sunset"):
            value = headers.get(name)
            if value and (name, value) not in self._seen_advisories:
                self._seen_advisories.add((name, value))
                logger.warning("Vobiz sent %s: %s for %s", name, value, path)

    async def request(
        self,
        method: str,
        url: URL,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        retry: bool = True,
    ) -> Any:
        """An API call: the parsed JSON body (None for 204) or a typed error.

        With `retry` (idempotent calls) 408/429/5xx and connection errors are retried up to
        `max_retries` times, honouring Retry-After.
        """
        timeout = aiohttp.ClientTimeout(
            total=self.timeout,
            sock_connect=self._media_timeout.sock_connect,
            sock_read=self._media_timeout.sock_read,
        )
        attempts = self.max_retries + 1 if retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            started = time.monotonic()
            try:
                async with passage(current_gate()) as answered:  # the batch's politeness
                    resp = await self._send(
                        method, url, params=params, json=json, client_timeout=timeout
                    )
                    async with resp:
                        with _transport_errors(method, url):
                            body = await _read_capped(resp, self.max_api_body)
                    answered(resp.status, parse_retry_after(resp.headers.get("Retry-After")))
            except APIConnectionError as err:
                if last:
                    raise
                delay = backoff_delay(attempt)
                logger.debug("%s %s failed (%s); retrying in %.2fs", method, url.path, err, delay)
                await asyncio.sleep(delay)
                continue
            logger.debug(
                "%s %s -> %d (attempt %d, %.3fs)",
                method,
                url.path,
                resp.status,
                attempt + 1,
                time.monotonic() - started,
            )
            self.note_advisories(resp.headers, url.path)
            if is_retryable_status(resp.status) and not last:
                delay = backoff_delay(attempt, parse_retry_after(resp.headers.get("Retry-After")))
                logger.debug("retrying %s %s in %.2fs", method, url.path, delay)
                await asyncio.sleep(delay)
                continue
            try:
                return decipher_response(resp.status, resp.headers, body)
            except APIStatusError as err:
                self._note_unexpected_root(err)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _note_unexpected_root(self, err: APIStatusError) -> None:
        """A 401/404/405 under a base URL whose path lacks `/api/v1/` most likely means the
        wrong root (Vobiz and the fake answer 401 on unknown paths): say so on the error."""
        if err.status_code in (401, 404, 405) and not self.base_url.path.endswith(API_PATH):
            err.add_note(
                f"the base URL's path {self.base_url.path!r} does not end in {API_PATH}; "
                f"Vobiz's API root is {DEFAULT_BASE_URL}"
            )
