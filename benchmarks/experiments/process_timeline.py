"""Where the process engine's wall time goes on the wan profile: a timeline per run.

Runs the library peer on `ProcessEngine()` (`peer_vobiz_async.py --engine process`) against
the wan profile's servers (as `wan_ab.py`), with a `sitecustomize` (from `--site`, put on
PYTHONPATH after the tree) that appends, when `VOBIZ_TIMELINE` names a file, the driver's
start, the listing, the pool's start, each worker's initializer, each shard's run in its
worker and each shard's collection in the driver (`time.monotonic`, one clock for every
process of the machine). Prints, per run, seconds from the driver's start: the listing's
end, the pool ready, each worker's shards (start-end) and idle tail, and the driver's exit.

    .venv/bin/python benchmarks/experiments/process_timeline.py --site /dev/shm/perf23-site \\
        --tree $PWD --level 256 --reps 3 --out /dev/shm/perf23-out
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: the harness

from harness import data
from harness.data import ensure_dataset
from harness.measure import measure
from harness.peers import process_peer
from harness.services import fake_api
from harness.wan import RATE, WAN, wan_job, wan_nginx


def show(path: Path, record: dict[str, object]) -> None:
    events = [json.loads(line) for line in path.read_text().splitlines()]
    start = min(e["t"] for e in events if e["ev"] == "proc")
    driver = next(e["pid"] for e in events if e["ev"] == "list")

    def rel(t: float) -> str:
        return f"{t - start:5.2f}"

    print(
        f"wall {record['wall_s']:.2f} s cpu {record['cpu_s']:.2f} s  {record['status']}"
        f"  429s {record.get('http_429')}"
    )
    for e in events:
        if e["ev"] == "list":
            print(f"  listing {rel(e['s'])}-{rel(e['e'])} ({e['n']} items)")
        elif e["ev"] == "pool":
            print(f"  pool    {rel(e['s'])}-{rel(e['e'])}")
    end = max(e.get("e", e.get("t", 0)) for e in events if e["pid"] != driver)
    for pid in sorted({e["pid"] for e in events if e["ev"] == "shard"}):
        shards = sorted(
            (e["s"], e["e"], e["n"], e.get("cpu", 0.0))
            for e in events
            if e["ev"] == "shard" and e["pid"] == pid
        )
        init = [e["t"] for e in events if e["ev"] == "winit" and e["pid"] == pid]
        spans = " ".join(f"{rel(s)}-{rel(t)}({n}, cpu {c:.2f})" for s, t, n, c in shards)
        last = max(e["e"] for e in events if e["ev"] == "shard")
        first = rel(init[0]) if init else "?"
        print(f"  worker {pid}: init {first}; {spans}; idle tail {last - shards[-1][1]:.2f} s")
    collects = [e for e in events if e["ev"] == "collect"]
    spent = sum(e["e"] - e["s"] for e in collects)
    print(f"  collect total {spent:.3f} s over {len(collects)} shards")
    exits = [e["t"] for e in events if e["ev"] == "exit" and e["pid"] == driver]
    if exits:
        print(f"  driver exit {rel(exits[0])}; last shard end {rel(end)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--tree", default=str(Path.cwd()))
    parser.add_argument("--level", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--page-ms", type=float, default=200.0)
    parser.add_argument(
        "--ratelimit", action="store_true", help="the 429 host (600 x 50 KB) instead"
    )
    parser.add_argument("--out", type=Path, default=Path("/dev/shm/vobiz-timeline-out"))
    args = parser.parse_args()
    data.OUTPUT_ROOTS["tmpfs"] = args.out
    dataset = ensure_dataset(RATE if args.ratelimit else WAN, "tmpfs")
    path, page_s = ("/limited", 0.0) if args.ratelimit else ("/delay", args.page_ms / 1000)
    peer = process_peer()
    timeline = args.out.parent / f"{args.out.name}-timeline.jsonl"
    os.environ["PYTHONPATH"] = f"{args.tree}:{args.site}"
    os.environ["VOBIZ_TIMELINE"] = str(timeline)
    with wan_nginx() as server, fake_api(dataset, server.base + path, page_s) as api:
        for _ in range(args.reps):
            timeline.unlink(missing_ok=True)
            before = server.count_429()
            record = measure(peer, wan_job(dataset, server.base + path, api, peer, args.level), 600)
            record["http_429"] = server.count_429() - before
            show(timeline, record)


if __name__ == "__main__":
    main()
