"""Time (or profile) `download_many` in-process against nginx and the benchmark fake API.

The tuning loop: no interpreter start-up in the figure, the same data and servers as
`benchmarks/run`, and cProfile on demand. Run with the bench venv after `benchmarks/run` has
installed nginx and generated the data:

    benchmarks/work/venv/bin/python benchmarks/experiments/inprocess.py small --reps 3
    benchmarks/work/venv/bin/python benchmarks/experiments/inprocess.py large --chunk 1048576
    benchmarks/work/venv/bin/python benchmarks/experiments/inprocess.py small --profile
    benchmarks/work/venv/bin/python benchmarks/experiments/inprocess.py listing \
        --latency 50 --reps 4 --ab

`--list-first` lists everything before the clock starts (downloading alone); `--ab` runs
each repetition both ways, interleaved, and prints the ratio of their medians: how much a
pipelined listing adds to downloading alone.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: the harness

from harness import data, services
from harness.peers import AUTH_ID, AUTH_TOKEN

from vobiz_async import AsyncSession, DownloadReport
from vobiz_async.download import CHUNK_SIZE, Downloader

OUT = Path("/dev/shm/vobiz-inprocess-out")


async def download(
    api: str, chunk: int, concurrency: int, list_first: bool
) -> tuple[DownloadReport, float, float]:
    """The report, the wall time and the CPU time of one download_many-style run."""
    async with AsyncSession(AUTH_ID, AUTH_TOKEN, base_url=api) as session:
        source: Any = session.recordings.list(limit=100)
        if list_first:
            source = [recording async for recording in source]
        started, cpu = time.perf_counter(), time.process_time()
        downloader = Downloader(
            session,
            OUT,
            lookup=session.recordings.get,
            concurrency=concurrency,
            manifest=OUT / "manifest.jsonl",
            chunk_size=chunk,
        )
        report = await downloader.run(source)
        return report, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(data.WORKLOADS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=CHUNK_SIZE, help="read size in bytes")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profile", action="store_true", help="one run under cProfile")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    parser.add_argument("--latency", type=float, default=0.0, help="ms per fake API response")
    parser.add_argument("--list-first", action="store_true", help="time downloading alone")
    parser.add_argument("--ab", action="store_true", help="pipelined vs --list-first")
    args = parser.parse_args()
    dataset = data.ensure_dataset(data.WORKLOADS[args.workload], "tmpfs")
    services.prepare_work_dirs()
    with (
        services.media_server("nginx") as (media_base, _),
        services.fake_api(dataset, media_base, args.latency / 1000) as api,
    ):
        modes = (False, True) if args.ab else (args.list_first,)
        walls: dict[bool, list[float]] = {mode: [] for mode in modes}
        for _ in range(1 if args.profile else args.reps):
            for list_first in modes:
                shutil.rmtree(OUT, ignore_errors=True)
                profiler = cProfile.Profile() if args.profile else None
                if profiler:
                    profiler.enable()
                coroutine = download(api, args.chunk, args.concurrency, list_first)
                if args.uvloop:
                    import uvloop

                    report, wall, cpu = uvloop.run(coroutine)
                else:
                    report, wall, cpu = asyncio.run(coroutine)
                if profiler:
                    profiler.disable()
                    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
                walls[list_first].append(wall)
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(
                    f"{args.workload}{' (listed first)' if list_first else ''}: ok={report.ok} "
                    f"files={len(report.results)} wall={wall:.3f}s cpu={cpu:.3f}s "
                    f"idle={wall - cpu:.3f}s files/s={len(report.results) / wall:.0f} "
                    f"MB/s={report.total_bytes / wall / 1e6:.0f} peak_rss={rss:.1f}MB",
                    flush=True,
                )
        if args.ab:
            pipelined, alone = statistics.median(walls[False]), statistics.median(walls[True])
            print(
                f"pipelined {pipelined:.3f}s / downloading alone {alone:.3f}s = "
                f"{pipelined / alone:.3f}x (medians of {args.reps})"
            )
    shutil.rmtree(OUT, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
