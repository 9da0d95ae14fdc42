"""Fallback media server (aiohttp static files) for machines without nginx.

Serves the same URL layout as the nginx config: /tmpfs/... and /disk/... Prints the port on
its first stdout line, then serves until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket

from aiohttp import web


def make_app(roots: list[str]) -> web.Application:
    app = web.Application()
    for spec in roots:
        prefix, _, directory = spec.partition("=")
        app.router.add_static(f"/{prefix}/", directory)
    return app


async def serve_until_terminated(app: web.Application) -> None:
    """Serve `app` on a free 127.0.0.1 port until SIGTERM; print the port first."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print(sock.getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("roots", nargs="+", help="PREFIX=DIRECTORY pairs")
    asyncio.run(serve_until_terminated(make_app(parser.parse_args().roots)))


if __name__ == "__main__":
    main()
