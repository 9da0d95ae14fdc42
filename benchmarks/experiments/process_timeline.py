"""Where the process engine's wall time goes on the wan profile: a timeline per run.

Runs the library peer on `ProcessEngine()` (`peer_vobiz_async.py --engine process`) against
the wan profile's servers (as `wan_ab.py`), with a `sitecustomize` (written into `--site`,
put on PYTHONPATH after the tree) that appends, when `VOBIZ_TIMELINE` names a file, the
driver's start, the listing, a shard cut while it runs, the pool's start, each worker's
initializer, each shard's run in its worker and each shard's collection in the driver
(`time.monotonic`, one clock for every process of the machine). Prints, per run, seconds
from the driver's start: the listing's end, the pool ready, each worker's shards
(start-end, CPU) and idle tail, and the driver's exit.

    .venv/bin/python benchmarks/experiments/process_timeline.py --tree $PWD --level 256 \\
        --reps 3 --out /dev/shm/perf23-out --site /dev/shm/perf23-site
    .venv/bin/python benchmarks/experiments/process_timeline.py --ratelimit --level 64 ...
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

SITECUSTOMIZE = """
import os, time, json
_F = os.environ.get("VOBIZ_TIMELINE")
if _F:
    T0 = time.monotonic()
    def _rec(**kw):
        with open(_F, "a") as f:
            f.write(json.dumps(kw) + "\\n")
    _rec(ev="proc", pid=os.getpid(), t=T0)
    import vobiz_async.engines as e
    orig_run = e._run_shard
    def _run_shard(job):
        s = time.monotonic(); c = time.process_time()
        out = orig_run(job)
        _rec(ev="shard", pid=os.getpid(), s=s, e=time.monotonic(), n=len(job.items),
             cpu=time.process_time() - c)
        return out
    _run_shard.__qualname__ = "_run_shard"
    e._run_shard = _run_shard
    ws = e._worker_start
    def _worker_start(*a):
        _rec(ev="winit", pid=os.getpid(), t=time.monotonic())
        return ws(*a)
    _worker_start.__qualname__ = "_worker_start"
    e._worker_start = _worker_start
    R = e._Run
    name = "_list" if hasattr(R, "_list") else "admit"
    adm = getattr(R, name)
    async def listed(self, *a):
        s = time.monotonic()
        await adm(self, *a)
        _rec(ev="list", pid=os.getpid(), s=s, e=time.monotonic(), n=len(self.places))
    setattr(R, name, listed)
    if hasattr(R, "_cut_early"):
        cut = R._cut_early
        def _cut_early(self, *a):
            done = cut(self, *a)
            if done:
                _rec(ev="early", pid=os.getpid(), t=time.monotonic(), n=len(self.places))
            return done
        R._cut_early = _cut_early
    op = R._open_pool
    async def _open_pool(self, w):
        s = time.monotonic()
        p = await op(self, w)
        _rec(ev="pool", pid=os.getpid(), s=s, e=time.monotonic())
        return p
    R._open_pool = _open_pool
    col = R._collect
    def _collect(self, shard, outcome):
        s = time.monotonic()
        col(self, shard, outcome)
        _rec(ev="collect", pid=os.getpid(), s=s, e=time.monotonic(), n=len(shard.items))
    R._collect = _collect
    import atexit
    atexit.register(lambda: _rec(ev="exit", pid=os.getpid(), t=time.monotonic()))
"""


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
        elif e["ev"] == "early":
            print(f"  early shard cut at {rel(e['t'])} ({e['n']} listed)")
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
    parser.add_argument("--site", type=Path, default=Path("/dev/shm/vobiz-timeline-site"))
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
    args.site.mkdir(parents=True, exist_ok=True)
    (args.site / "sitecustomize.py").write_text(SITECUSTOMIZE)
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
