"""Per-file costs of the folder sink's `.part.etag` and `fallocate`, and per-entry cost of
the index with and without grouped commits (issue 23 item 4), in-process, 5 repetitions.

    .venv/bin/python benchmarks/experiments/small_costs.py /dev/shm /tmp

Each ROOT is a folder on the file system to measure (tmpfs, ext4, ...). Sink: 1,000
bodies of 300 KB each, open, [reserve], [remember an ETag], write, commit. Index: 2,000
`get` + `record` pairs, each committed alone or grouped (`Manifest.grouped()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time

from vobiz_async.manifest import Manifest
from vobiz_async.models import Recording
from vobiz_async.sinks.directory import DirectorySink

BODY = os.urandom(300_000)
REPS = 5


def recording(n: int) -> Recording:
    return Recording.from_dict(
        {
            "recording_id": f"r{n:05d}",
            "recording_url": "https://media.vobiz.ai/r.mp3",
            "recording_format": "mp3",
        }
    )


async def sink_run(root: str, etag: bool, reserve: bool, count: int = 1000) -> tuple[float, float]:
    folder = tempfile.mkdtemp(dir=root)
    sink = DirectorySink(folder)
    await sink.prepare()
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(count):
        writer = await sink.open(recording(n))
        if reserve:
            await writer.reserve(len(BODY))
        if etag:
            await writer.remember('"an-etag"')
        writer.write_blocking(BODY)
        await writer.commit(container="mp3", size=len(BODY), sha256="0" * 64)
    figures = (
        (time.process_time() - cpu) / count * 1e6,
        (time.perf_counter() - wall) / count * 1e6,
    )
    shutil.rmtree(folder)
    return figures


def index_run(root: str, grouped: bool, count: int = 2000) -> tuple[float, float]:
    folder = tempfile.mkdtemp(dir=root)
    index = Manifest(os.path.join(folder, "index.db"))
    index.record("warm", "warm.mp3", size=1, sha256="0" * 64, container="mp3", add_time=None)
    cpu, wall = time.process_time(), time.perf_counter()
    with index.grouped() if grouped else contextlib.nullcontext():
        for n in range(count):
            index.get(f"r{n}")
            index.record(
                f"r{n}", f"r{n}.mp3", size=n, sha256="0" * 64, container="mp3", add_time=None
            )
    index.close()
    figures = (
        (time.process_time() - cpu) / count * 1e6,
        (time.perf_counter() - wall) / count * 1e6,
    )
    shutil.rmtree(folder)
    return figures


def show(label: str, runs: list[tuple[float, float]], unit: str) -> None:
    cpu = statistics.median(r[0] for r in runs)
    wall = statistics.median(r[1] for r in runs)
    print(f"  {label:<32} cpu {cpu:7.1f} us/{unit}  wall {wall:7.1f} us/{unit}")


def main() -> None:
    for root in sys.argv[1:] or ["/dev/shm"]:
        print(root)
        sink: dict[tuple[bool, bool], list[tuple[float, float]]] = {}
        index: dict[bool, list[tuple[float, float]]] = {}
        for _ in range(REPS):  # interleaved
            for variant in ((False, False), (True, False), (False, True), (True, True)):
                sink.setdefault(variant, []).append(asyncio.run(sink_run(root, *variant)))
            for grouped in (False, True):
                index.setdefault(grouped, []).append(index_run(root, grouped))
        for (etag, reserve), runs in sink.items():
            show(f"sink etag={etag} fallocate={reserve}", runs, "file")
        for grouped, runs in index.items():
            show(f"index grouped={grouped}", runs, "entry")


if __name__ == "__main__":
    main()
