"""Fallback media server (aiohttp static files) for machines without nginx.

Serves the same URL layout as the nginx config: /tmpfs/... and /disk/... Prints the port on
its first stdout line, then serves until terminated.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web
from loopback import serve_until_terminated


def make_app(roots: list[str]) -> web.Application:
    app = web.Application()
    for spec in roots:
        prefix, _, directory = spec.partition("=")
        app.router.add_static(f"/{prefix}/", directory)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("roots", nargs="+", help="PREFIX=DIRECTORY pairs")
    asyncio.run(serve_until_terminated(make_app(parser.parse_args().roots)))


if __name__ == "__main__":
    main()
