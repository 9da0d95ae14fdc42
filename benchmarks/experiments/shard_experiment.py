"""Experiment 11's first step: would several processes help at all?

Runs the same job as one process and as N independent processes that each list everything
and download the recordings whose crc32(id) % N is theirs, interleaved, and prints the wall
time of each run (interpreter start-up included) and the medians:

    benchmarks/work/venv/bin/python benchmarks/experiments/shard_experiment.py small --reps 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: the harness

from harness import data, services
from harness.peers import AUTH_ID, AUTH_TOKEN

from vobiz_async import AsyncSession, Recording

OUT = Path("/dev/shm/vobiz-shard-out")


async def shard(api: str, out: Path, mine: int, shards: int, concurrency: int) -> None:
    async with AsyncSession(AUTH_ID, AUTH_TOKEN, base_url=api) as session:

        async def recordings() -> AsyncIterator[Recording]:
            async for recording in session.recordings.list(limit=100):
                if zlib.crc32(recording.recording_id.encode()) % shards == mine:
                    yield recording

        manifest = out / f"manifest-{mine}.jsonl"
        report = await session.recordings.download_many(
            recordings(), out, concurrency=concurrency, manifest=manifest
        )
        assert report.ok, report.failed[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", nargs="?", choices=sorted(data.WORKLOADS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--child", nargs=5, metavar=("API", "OUT", "K", "N", "C"))
    args = parser.parse_args()
    if args.child:
        api, out, k, n, c = args.child
        asyncio.run(shard(api, Path(out), int(k), int(n), int(c)))
        return
    dataset = data.ensure_dataset(data.WORKLOADS[args.workload], "tmpfs")
    services.prepare_work_dirs()
    walls: dict[tuple[int, int], list[float]] = {}
    with (
        services.media_server("nginx") as (media_base, _),
        services.fake_api(dataset, media_base, 0.0) as api,
    ):
        for rep in range(args.reps):
            for shards, concurrency in ((1, 16), (2, 8), (2, 16), (3, 8)):
                shutil.rmtree(OUT, ignore_errors=True)
                OUT.mkdir(parents=True)
                child = [sys.executable, __file__, "--child", api, str(OUT)]
                started = time.perf_counter()
                procs = [
                    subprocess.Popen([*child, str(k), str(shards), str(concurrency)])
                    for k in range(shards)
                ]
                assert all(proc.wait() == 0 for proc in procs)
                wall = time.perf_counter() - started
                walls.setdefault((shards, concurrency), []).append(wall)
                print(f"rep {rep + 1}: {shards} process(es) x {concurrency}: {wall:.3f} s")
    for (shards, concurrency), runs in walls.items():
        median = statistics.median(runs)
        files = len(dataset.recordings)
        print(f"{shards} x {concurrency}: median {median:.3f} s, {files / median:.0f} files/s")
    shutil.rmtree(OUT, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
