"""Peer: naive aiohttp, `await resp.read()` then a blocking file write, N in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from peer_common import auth_headers, load_jobs, parse_args, report


async def fetch(
    session: aiohttp.ClientSession, gate: asyncio.Semaphore, url: str, path: Path
) -> None:
    async with gate, session.get(url) as resp:
        resp.raise_for_status()
        body = await resp.read()
    path.write_bytes(body)  # noqa: ASYNC240 - blocking write in the loop: the naive way


async def main() -> None:
    args = parse_args(__doc__)
    jobs = load_jobs(args)
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    async with aiohttp.ClientSession(
        headers=auth_headers(args), connector=connector, timeout=timeout
    ) as session:
        gate = asyncio.Semaphore(args.concurrency)
        await asyncio.gather(*(fetch(session, gate, url, path) for url, path in jobs))
    report(transfer_s=time.perf_counter() - started)


if __name__ == "__main__":
    asyncio.run(main())
