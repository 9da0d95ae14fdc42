"""Listing benchmark modes, one per run.

- sequential: aiohttp, one page (limit=100) at a time, following `meta.next`.
- pager: `async for rec in session.recordings.list(limit=100)` (concurrent page fetching).
- list-then-download: collect the pager into a list, then `download_many(list, ...)`.
- pipelined: `download_many(session.recordings.list(limit=100), ...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from peer_common import auth_headers, parse_args, report, unavailable

# Imported here, before any clock starts, as every other peer does; the sequential mode
# needs only aiohttp, so a missing library fails the library modes alone.
try:
    from vobiz_async import AsyncSession
except ImportError as err:
    IMPORT_ERROR: ImportError | None = err
else:
    IMPORT_ERROR = None

MODES = ("sequential", "pager", "list-then-download", "pipelined")
PAGE = 100


async def sequential(args: argparse.Namespace) -> dict[str, Any]:
    """Follow `meta.next` one request at a time: read its limit/offset, keep our own base."""
    listing = f"{args.api.rstrip('/')}/Account/{args.auth_id}/Recording/"
    params = {"limit": str(PAGE), "offset": "0"}
    items = 0
    async with aiohttp.ClientSession(headers=auth_headers(args)) as http:
        while True:
            async with http.get(listing, params=params) as resp:
                resp.raise_for_status()
                page = await resp.json()
            items += len(page["objects"])
            if not page["meta"]["next"]:
                return {"items": items}
            query = parse_qs(urlsplit(page["meta"]["next"]).query)
            params = {"limit": query["limit"][0], "offset": query["offset"][0]}


def library_session(args: argparse.Namespace) -> Any:
    if IMPORT_ERROR is not None:
        unavailable(f"vobiz_async.AsyncSession not importable ({IMPORT_ERROR})")
    return AsyncSession(auth_id=args.auth_id, auth_token=args.auth_token, base_url=args.api)


async def pager(args: argparse.Namespace) -> dict[str, Any]:
    async with library_session(args) as session:
        items = 0
        async for _ in session.recordings.list(limit=PAGE):
            items += 1
    return {"items": items}


async def download(session: Any, source: Any, args: argparse.Namespace) -> dict[str, Any]:
    if not hasattr(session.recordings, "download_many"):
        unavailable("session.recordings.download_many does not exist yet")
    result = await session.recordings.download_many(
        source, args.out, concurrency=args.concurrency, manifest=args.out / "manifest.jsonl"
    )
    return {"ok": result.ok, "failed": len(result.failed)}


async def list_then_download(args: argparse.Namespace) -> dict[str, Any]:
    async with library_session(args) as session:
        started = time.perf_counter()
        recordings = [rec async for rec in session.recordings.list(limit=PAGE)]
        listed = time.perf_counter()
        figures = await download(session, recordings, args)
    return {**figures, "list_s": listed - started, "download_s": time.perf_counter() - listed}


async def pipelined(args: argparse.Namespace) -> dict[str, Any]:
    async with library_session(args) as session:
        return await download(session, session.recordings.list(limit=PAGE), args)


async def main() -> int:
    args = parse_args(__doc__, ("--mode", {"choices": MODES, "required": True}))
    run = {
        "sequential": sequential,
        "pager": pager,
        "list-then-download": list_then_download,
        "pipelined": pipelined,
    }[args.mode]
    started = time.perf_counter()
    figures = await run(args)
    report(transfer_s=time.perf_counter() - started, **figures)
    return 0 if figures.get("ok", True) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
