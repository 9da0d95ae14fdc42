"""Interleaved A/B of library trees (or environments) through the real peer scripts.

Each variant is a fresh peer process, as in `benchmarks/run`, so start-up, the allocator's
state and page faults count; variants alternate run by run, and each run's output is checked
as `benchmarks/run` checks it. Prints every run and the medians of wall time, CPU, minor
page faults and peak RSS. A variant is `LABEL=PATH` (a checkout put
first on PYTHONPATH, e.g. a `git worktree` of the commit before a change) or `LABEL=` (the
tree the bench venv has installed), optionally followed by `:NAME=VALUE,...` environment:

    git worktree add /tmp/before HEAD~1
    benchmarks/work/venv/bin/python benchmarks/experiments/ab.py small --reps 5 \
        before=/tmp/before after=
    benchmarks/work/venv/bin/python benchmarks/experiments/ab.py small \
        plain= tuned=:MALLOC_TOP_PAD_=67108864
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: the harness

from harness import data, peers, services
from harness.measure import RSS_SAMPLE_S, outcome, peer_figures, run_child

OUT = Path("/dev/shm/vobiz-ab-out")
SCRATCH = Path("/dev/shm/vobiz-ab-scratch")
TIMEOUT_S = 900.0


def environment(variant: str) -> tuple[str, dict[str, str]]:
    """The variant's label and the environment its peer runs in."""
    label, _, rest = variant.partition("=")
    tree, _, extra = rest.partition(":")
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree
    for pair in filter(None, extra.split(",")):
        name, _, value = pair.partition("=")
        env[name] = value
    return label, env


def run(peer: peers.Peer, job: peers.Job, env: dict[str, str]) -> tuple[float, float, int, float]:
    """Wall seconds, CPU seconds, minor page faults and peak RSS (MB) of one peer run, whose
    exit code and output the harness's own `outcome` must find ok."""
    stdout, stderr = SCRATCH / "stdout.txt", SCRATCH / "stderr.txt"
    stats = run_child(peer.command(job), stdout, stderr, TIMEOUT_S, env)
    verdict = outcome(peer, job, stats, peer_figures(stdout), stderr)
    if verdict["status"] != "ok":
        raise SystemExit(f"{peer.name}: {verdict['status']}: {verdict['note']}")
    cpu = stats.user_s + stats.sys_s
    return stats.wall_s, cpu, stats.minor_faults, stats.peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(data.WORKLOADS))
    parser.add_argument("variants", nargs="+", help="LABEL=[PATH][:NAME=VALUE,...]")
    parser.add_argument("--peer", default="vobiz_async", help="peer slug (default vobiz_async)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.0, help="ms per fake API response")
    args = parser.parse_args()
    by_slug = {peer.slug: peer for peer in peers.download_peers() + peers.listing_peers()}
    peer = by_slug[args.peer]
    dataset = data.ensure_dataset(data.WORKLOADS[args.workload], "tmpfs")
    services.prepare_work_dirs()
    variants = [environment(variant) for variant in args.variants]
    runs: dict[str, list[tuple[float, float, int, float]]] = {label: [] for label, _ in variants}
    with (
        services.media_server("nginx") as (media_base, _),
        services.fake_api(dataset, media_base, args.latency / 1000) as api,
    ):
        for rep in range(1, args.reps + 1):
            for label, env in variants:
                shutil.rmtree(OUT, ignore_errors=True)
                OUT.mkdir(parents=True)
                SCRATCH.mkdir(parents=True, exist_ok=True)
                job = peers.Job(dataset, media_base, api, OUT, SCRATCH, args.concurrency)
                figures = run(peer, job, env)
                runs[label].append(figures)
                wall, cpu, faults, rss = figures
                print(
                    f"rep {rep} {label:>12}: wall {wall:.3f} s  cpu {cpu:.2f} s  "
                    f"faults {faults:>7,}  rss {rss:.1f} MB",
                    flush=True,
                )
    shutil.rmtree(OUT, ignore_errors=True)
    print(
        f"medians of {args.reps} ({args.workload}, {args.peer}, RSS sampled every "
        f"{RSS_SAMPLE_S * 1000:.0f} ms):"
    )
    for label, rows in runs.items():
        wall, cpu, faults, rss = (statistics.median(column) for column in zip(*rows, strict=True))
        print(
            f"  {label:>12}: wall {wall:.3f} s  cpu {cpu:.2f} s  faults {faults:>9,.0f}  "
            f"rss {rss:.1f} MB"
        )


if __name__ == "__main__":
    main()
