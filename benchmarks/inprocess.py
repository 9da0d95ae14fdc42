"""Time (or profile) `download_many` in-process against nginx and the benchmark fake API.

The tuning loop: no interpreter start-up in the figure, the same data and servers as
`benchmarks/run`, and cProfile on demand. Run with the bench venv after `benchmarks/run` has
installed nginx and generated the data:

    benchmarks/work/venv/bin/python benchmarks/inprocess.py small --reps 3
    benchmarks/work/venv/bin/python benchmarks/inprocess.py large --chunk 1048576
    benchmarks/work/venv/bin/python benchmarks/inprocess.py small --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import data, services
from harness.peers import AUTH_ID, AUTH_TOKEN

from vobiz_async import AsyncSession, DownloadReport
from vobiz_async.download import CHUNK_SIZE, Downloader

OUT = Path("/dev/shm/vobiz-inprocess-out")


async def download(api: str, chunk: int, concurrency: int) -> tuple[DownloadReport, float]:
    async with AsyncSession(AUTH_ID, AUTH_TOKEN, base_url=api) as session:
        started = time.perf_counter()
        downloader = Downloader(
            session, OUT, concurrency=concurrency, manifest=OUT / "manifest.jsonl", chunk_size=chunk
        )
        report = await downloader.run(session.recordings.list(limit=100))
        return report, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(data.WORKLOADS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=CHUNK_SIZE, help="read size in bytes")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profile", action="store_true", help="one run under cProfile")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    dataset = data.ensure_dataset(data.WORKLOADS[args.workload], "tmpfs")
    services.prepare_work_dirs()
    with (
        services.media_server("nginx") as (media_base, _),
        services.fake_api(dataset, media_base, 0.0) as api,
    ):
        for _ in range(1 if args.profile else args.reps):
            shutil.rmtree(OUT, ignore_errors=True)
            profiler = cProfile.Profile() if args.profile else None
            cpu = time.process_time()
            if profiler:
                profiler.enable()
            coroutine = download(api, args.chunk, args.concurrency)
            if args.uvloop:
                import uvloop

                report, wall = uvloop.run(coroutine)
            else:
                report, wall = asyncio.run(coroutine)
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"{args.workload}: ok={report.ok} files={len(report.results)} "
                f"wall={wall:.3f}s cpu={time.process_time() - cpu:.3f}s "
                f"files/s={len(report.results) / wall:.0f} "
                f"MB/s={report.total_bytes / wall / 1e6:.0f} peak_rss={rss:.1f}MB",
                flush=True,
            )
    shutil.rmtree(OUT, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
