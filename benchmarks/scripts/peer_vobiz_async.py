"""Peer: this library, `download_many(session.recordings.list(limit=100), ...)`, manifest on.

Lists through the fake API (so the real code path runs), then streams every recording with
verification, sha256 and atomic rename, as shipped.
"""

from __future__ import annotations

import asyncio
import time

from peer_common import parse_args, report, unavailable

try:
    from vobiz_async import AsyncSession
except ImportError as err:
    unavailable(f"vobiz_async.AsyncSession not importable ({err})")


async def main() -> int:
    args = parse_args(__doc__)
    started = time.perf_counter()
    async with AsyncSession(
        auth_id=args.auth_id, auth_token=args.auth_token, base_url=args.api
    ) as session:
        if not hasattr(session.recordings, "download_many"):
            unavailable("session.recordings.download_many does not exist yet")
        result = await session.recordings.download_many(
            session.recordings.list(limit=100),
            args.out,
            concurrency=args.concurrency,
            manifest=args.out / "manifest.jsonl",
        )
    failed = [(r.recording_id, repr(r.error)) for r in result.failed]
    report(transfer_s=time.perf_counter() - started, ok=result.ok, failed=failed[:5])
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
