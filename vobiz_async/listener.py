"""The receiver's listening side, bounded against clients that hold connections open.

aiohttp's server has no header timeout of its own and keeps an idle connection for an hour
(`keepalive_timeout=3630`), so 1,100 clients that never finish their request headers exhaust
the receiver's file limit and `/healthz` stops answering. Here:

- `keepalive_timeout` is `HEADER_TIMEOUT`: aiohttp (>= 3.14.5, the pinned floor) arms that
  timer when a connection is made and again after each response, and closes the connection
  when it fires while no whole request has arrived. So it bounds both the time to send a
  request's headers and an idle keep-alive (`aiohttp/web_protocol.py`,
  `RequestHandler.connection_made` and `_process_keepalive`).
- At most `MAX_CONNECTIONS` connections are served at once; a connection beyond them is
  answered `503` with `Connection: close` at once, and the others are served as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

__all__ = ["HEADER_TIMEOUT", "MAX_CONNECTIONS", "ConnectionCap", "GuardedRunner"]

logger = logging.getLogger("vobiz_async")

#: Seconds a connection may take to send a whole request (line and headers), and may stay
#: idle between requests.
HEADER_TIMEOUT = 10.0
#: Connections served at once; beyond it a new one gets a 503 and is closed.
MAX_CONNECTIONS = 512

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 12\r\n"
    b"Retry-After: 30\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"server busy\n"
)


class _Refused(asyncio.Protocol):
    """A connection beyond the cap: a 503, then closed, without reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


class ConnectionCap:
    """A protocol factory in front of aiohttp's `web.Server` that serves at most `limit`
    connections at once.

    The server counts a connection once it is made; one accepted but not yet made is
    counted here until then (`connection_made` runs a loop turn after the factory, so the
    count is released two turns later: never too low, briefly one too high).
    """

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server = server
        self.limit = limit
        self.refused = 0
        self._pending = 0
        self._full = False

    def __call__(self) -> asyncio.BaseProtocol:
        loop = asyncio.get_running_loop()
        if len(self.server.connections) + self._pending >= self.limit:
            self.refused += 1
            if not self._full:
                self._full = True
                logger.warning(
                    "%d connections open: refusing new ones with 503 until some close",
                    self.limit,
                )
            return _Refused()
        self._full = False
        self._pending += 1
        loop.call_soon(loop.call_soon, self._made)
        return self.server()

    def _made(self) -> None:
        self._pending -= 1


class GuardedRunner(web.AppRunner):
    """An `AppRunner` whose sites accept through a `ConnectionCap` and whose connections
    must send a request within `header_timeout` seconds (see the module's docstring)."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float | None = None,
        max_connections: int | None = None,
        **kwargs: Any,
    ) -> None:
        timeout = HEADER_TIMEOUT if header_timeout is None else header_timeout
        super().__init__(app, keepalive_timeout=timeout, **kwargs)
        self.max_connections = MAX_CONNECTIONS if max_connections is None else max_connections
        self.cap: ConnectionCap | None = None

    @property
    def server(self) -> Any:
        """The protocol factory a site listens with: the server behind the cap.

        aiohttp's sites call `runner.server()` once per accepted connection; the runner's
        own shutdown uses the server itself, so closing and draining are unchanged.
        """
        inner = super().server
        if inner is None:
            return None
        if self.cap is None or self.cap.server is not inner:
            self.cap = ConnectionCap(inner, self.max_connections)
        return self.cap
