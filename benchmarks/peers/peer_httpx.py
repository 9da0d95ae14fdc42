"""Peer: httpx AsyncClient, streaming each body to its file, N transfers in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from peer_common import auth_headers, load_jobs, parse_args, report, unavailable

try:
    import httpx
except ImportError as err:
    unavailable(f"httpx not installed ({err})")


async def fetch(client: httpx.AsyncClient, gate: asyncio.Semaphore, url: str, path: Path) -> None:
    async with gate, client.stream("GET", url) as resp:
        resp.raise_for_status()
        with path.open("wb") as f:
            async for chunk in resp.aiter_bytes():
                f.write(chunk)


async def main() -> None:
    args = parse_args(__doc__)
    jobs = load_jobs(args)
    started = time.perf_counter()
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    gate = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(
        headers=auth_headers(args), limits=limits, timeout=httpx.Timeout(120)
    ) as client:
        await asyncio.gather(*(fetch(client, gate, url, path) for url, path in jobs))
    report(transfer_s=time.perf_counter() - started)


if __name__ == "__main__":
    asyncio.run(main())
