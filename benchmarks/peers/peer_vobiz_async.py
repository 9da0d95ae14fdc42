"""Peer: this library, `download_many(session.recordings.list(limit=100), ...)`, manifest on.

Lists through the fake API (so the real code path runs), then streams every recording with
verification, sha256 and atomic rename, as shipped. `--engine ray` runs the same job on a
local Ray started for it (`RayEngine(address=None)`): its start-up is part of the time;
`--engine process` on `ProcessEngine()` (one worker process per CPU, at most 8), its
workers' start-up timed too.
"""

from __future__ import annotations

import asyncio
import os
import time

from peer_common import parse_args, report, unavailable

try:
    from vobiz_async import AsyncSession
except ImportError as err:
    unavailable(f"vobiz_async.AsyncSession not importable ({err})")


#: Keep Ray on 127.0.0.1: advertise loopback, no usage report, and the cloud-metadata probe
#: of its usage-stats process (requests honours the proxy variables) goes to a closed port.
RAY_LOOPBACK_ONLY = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost",
}


async def main() -> int:
    args = parse_args(
        __doc__, ("--engine", {"choices": ["local", "process", "ray"], "default": "local"})
    )
    engine = None
    if args.engine == "ray":
        os.environ.update(RAY_LOOPBACK_ONLY)
        from vobiz_async.scaleout import RayEngine

        engine = RayEngine(address=None)
    elif args.engine == "process":
        from vobiz_async.engines import ProcessEngine

        engine = ProcessEngine()
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
            engine=engine,
        )
    failed = [(r.recording_id, repr(r.error)) for r in result.failed]
    report(transfer_s=time.perf_counter() - started, ok=result.ok, failed=failed[:5])
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
