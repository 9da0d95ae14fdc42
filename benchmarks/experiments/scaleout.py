"""Scale-out on Ray: the default local engine against `RayEngine`, side by side.

Peers, interleaved per repetition, each run a fresh child process (interpreter start-up,
and Ray's, included): `local` is `download_many` in one process; `ray` is the same job on a
local Ray started for it (`RayEngine(address=None)`); `cluster` is a two-node
`ray.cluster_utils.Cluster` on this machine (one CPU per node), started inside the run.
Media come from nginx and the listing from the harness's fake API, as in `benchmarks/run`;
16 transfers in flight in all, shards of an eighth of the workload. Prints every run, then
medians, the ratio to the best peer, the per-shard throughput Ray measured, and the peak
memory of the whole process tree (PSS summed, Ray's own processes included):

    .venv/bin/python benchmarks/experiments/scaleout.py small large mix --reps 3

Every Ray process is kept on 127.0.0.1 (see RAY_LOOPBACK_ONLY).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: the harness

from harness import data, services
from harness.peers import AUTH_ID, AUTH_TOKEN

OUT = Path("/dev/shm/vobiz-scaleout-out")
PEERS = ("local", "ray", "cluster")
CONCURRENCY = 16
#: Ray advertises loopback only, reports no usage, and its usage-stats process's probe of the
#: cloud metadata address goes to a closed local port (requests honours the proxy variables).
RAY_LOOPBACK_ONLY = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost",
}


async def child(peer: str, api: str, out: Path, shard_size: int) -> dict[str, Any]:
    """One run: the job, and what the engine saw."""
    from vobiz_async import AsyncSession

    engine: Any = None
    cluster: Any = None
    ray_start = 0.0
    if peer != "local":
        from vobiz_async.scaleout import RayEngine

        started = time.perf_counter()
        import ray

        if peer == "cluster":
            from ray.cluster_utils import Cluster

            cluster = Cluster(
                initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
            )
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - started
        engine = RayEngine(shard_size=shard_size)
    started = time.perf_counter()
    async with AsyncSession(AUTH_ID, AUTH_TOKEN, base_url=api) as session:
        report = await session.recordings.download_many(
            session.recordings.list(limit=100),
            out,
            concurrency=CONCURRENCY,
            manifest=out / "manifest.jsonl",
            engine=engine,
        )
    transfer = time.perf_counter() - started
    figures: dict[str, Any] = {
        "ok": report.ok,
        "files": len(report.results),
        "bytes": report.total_bytes,
        "ray_start_s": ray_start,
        "transfer_s": transfer,
    }
    if engine is not None:
        import ray

        figures["shard_seconds"] = getattr(report, "shard_seconds", [])
        figures["nodes"] = len({w.node_id for w in getattr(report, "workers", [])})
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    return figures


def _pss(pid: int) -> int:
    """A process's proportional set size in bytes: shared pages (Ray's object store, its
    libraries) count once across the processes that map them, as RSS would not."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_memory_mb(root: int) -> float:
    """The memory of `root` and all its descendants (the sum of their PSS), in MB."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(stat[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(kids)
        frontier += kids
    return sum(_pss(pid) for pid in tree) / 1e6


def measure(peer: str, api: str, shard_size: int) -> dict[str, Any]:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--child", peer, api, str(OUT), str(shard_size)]
    peak = 0.0
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, **RAY_LOOPBACK_ONLY})
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_memory_mb(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{peer} exited {proc.returncode}")
    figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    figures.update(peer=peer, wall_s=wall, peak_mb=peak)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=["small", "large", "mix"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--peer", action="append", choices=PEERS)
    parser.add_argument("--child", nargs=4, metavar=("PEER", "API", "OUT", "SHARD"))
    args = parser.parse_args()
    if args.child:
        peer, api, out, shard = args.child
        print(json.dumps(asyncio.run(child(peer, api, Path(out), int(shard)))), flush=True)
        return
    services.prepare_work_dirs()
    peers = args.peer or list(PEERS)
    with services.media_server("nginx") as (media_base, server):
        print(f"media server: {server}")
        for name in args.workloads:
            dataset = data.ensure_dataset(data.WORKLOADS[name], "tmpfs")
            shard_size = math.ceil(len(dataset.recordings) / 8)
            total_mb = dataset.total_bytes / 1e6
            runs: list[dict[str, Any]] = []
            with services.fake_api(dataset, media_base, 0.0) as api:
                for rep in range(args.reps):
                    order = peers[rep % len(peers) :] + peers[: rep % len(peers)]
                    for peer in order:
                        run = measure(peer, api, shard_size)
                        if not run["ok"] or run["files"] != len(dataset.recordings):
                            raise RuntimeError(f"{peer} did not archive everything: {run}")
                        runs.append(run)
                        print(
                            f"{name} rep {rep + 1} {peer:8s} wall {run['wall_s']:6.2f} s "
                            f"(ray start {run['ray_start_s']:5.2f} s, job "
                            f"{run['transfer_s']:6.2f} s) peak PSS {run['peak_mb']:6.0f} MB",
                            flush=True,
                        )
            described = f"{dataset.workload.describe()}, {total_mb:.0f} MB"
            print(f"\n{name}: {described}, shards of {shard_size}")
            medians = {
                peer: {
                    key: statistics.median(r[key] for r in runs if r["peer"] == peer)
                    for key in ("wall_s", "transfer_s", "ray_start_s", "peak_mb")
                }
                for peer in peers
            }
            best = min(m["wall_s"] for m in medians.values())
            for peer, m in medians.items():
                shards = [s for r in runs if r["peer"] == peer for s in r.get("shard_seconds", [])]
                per_shard = (
                    f", per shard {total_mb / 8 / statistics.median(shards):.0f} MB/s "
                    f"({len(dataset.recordings) / 8 / statistics.median(shards):.0f} files/s)"
                    if shards
                    else ""
                )
                print(
                    f"  {peer:8s} median wall {m['wall_s']:6.2f} s ({best / m['wall_s']:.2f}x "
                    f"best), job {m['transfer_s']:.2f} s, Ray start {m['ray_start_s']:.2f} s, "
                    f"{len(dataset.recordings) / m['wall_s']:.0f} files/s, "
                    f"{total_mb / m['wall_s']:.0f} MB/s, peak PSS {m['peak_mb']:.0f} MB"
                    f"{per_shard}"
                )
            print(flush=True)
    shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
