"""The process engine's crossover: from how many recordings `download --engine process`
beats `--engine local` on this machine (issue 23 item 2; `engines.PROCESS_MIN_RECORDINGS`).

The shipped command line (`python -m vobiz_async download --out ... --concurrency N
--engine local|process`, a fresh interpreter per run, its start-up timed) on jobs of
growing size, the two engines interleaved in a seeded shuffle per size and repetition, the
harness's measurement (wall from spawn to exit, CPU of the process tree, summed peak RSS,
every file's sha256 checked). Two profiles, as `benchmarks/run` has them:

- `wan`: the wan profile's nginx (60 ms before each media response's first byte) and the
  fake API at 200 ms per page of 100; log-normal sizes around 300 KB (the wan workload's
  spec, cut to each size);
- `loopback`: plain nginx and the fake API at 0 ms; the same sizes;
- `ratelimit`: the wan profile's rate-limit section alone (150 requests/s, 429 +
  Retry-After 1, 600 x 50 KB, 64 in flight) for the library peer on the local engine and
  on the process engine (`--counts` does not apply).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/experiments/engine_crossover.py \\
        --profile wan --counts 100 250 500 1000 2000 --reps 3

Prints every run, then per size the medians and the ratio process/local (below 1: the
process engine is faster); `--json FILE` keeps every run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: the harness

from harness.data import WORK_DIR, Workload, ensure_dataset, fresh_output_dir
from harness.measure import measure
from harness.peers import CLI_MANIFEST, LIBRARY, Job, Peer, process_peer
from harness.services import AUTH_ID, AUTH_TOKEN, fake_api, media_server, prepare_work_dirs
from harness.wan import RATE, WanSettings, library_peer, run_section, wan_nginx

KB = 1000
ENGINES = ("local", "process")


def workload(count: int) -> Workload:
    """The wan workload's sizes (median 300 KB), `count` recordings."""
    return Workload(
        f"crossover{count}", count, median=300 * KB, sigma=0.8, low=20 * KB, high=10_000 * KB
    )


def cli_peer(engine: str) -> Peer:
    def command(job: Job) -> list[str]:
        return [
            sys.executable,
            *("-m", "vobiz_async", "download", "--out", str(job.out_dir)),
            *("--concurrency", str(job.concurrency), "--engine", engine),
            *("--auth-id", AUTH_ID, "--auth-token", AUTH_TOKEN, "--base-url", job.api_base),
        ]

    return Peer(
        f"CLI --engine {engine}",
        f"cli-{engine}",
        command,
        LIBRARY,
        python=True,
        allowed_extra=CLI_MANIFEST | {"vobiz-manifest.jsonl.shards"},
    )


def rate_limited(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The wan profile's rate-limit section, local against process."""
    settings = WanSettings(reps=args.reps, seed=args.seed, timeout=600, smoke=False)
    with wan_nginx() as server:
        peers = [library_peer(), process_peer()]
        return run_section("ratelimit", RATE, peers, (0.0,), (64,), settings, server, "/limited")


def rate_summary(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| peer | wall s (every run) | median | 429s (every run) | archived |",
        "|---|---|---|---|---|",
    ]
    for peer in sorted({r["peer"] for r in runs}):
        mine = [r for r in runs if r["peer"] == peer]
        walls = " / ".join(f"{r['wall_s']:.2f}" for r in mine)
        limited = " / ".join(str(r.get("http_429")) for r in mine)
        median = statistics.median(r["wall_s"] for r in mine)
        archived = " / ".join(str(r.get("archived")) for r in mine)
        lines.append(f"| {peer} | {walls} | {median:.2f} | {limited} | {archived} |")
    return lines


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    prepare_work_dirs()
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack:
        if args.profile == "wan":
            media_base = stack.enter_context(wan_nginx()).base + "/delay"
            page_latency = 0.2
        else:
            media_base = stack.enter_context(media_server("nginx"))[0]
            page_latency = 0.0
        for count in args.counts:
            dataset = ensure_dataset(workload(count), "tmpfs")
            with fake_api(dataset, media_base, page_latency) as api_base:
                peers = [cli_peer(engine) for engine in ENGINES]
                for rep in range(1, args.reps + 1):
                    order = peers[:]
                    random.Random(f"{args.seed}-{count}-{rep}").shuffle(order)
                    for peer in order:
                        job = Job(
                            dataset=dataset,
                            media_base=media_base,
                            api_base=api_base,
                            out_dir=fresh_output_dir("tmpfs", peer.slug),
                            scratch=WORK_DIR / "runs" / peer.slug,
                            concurrency=args.concurrency,
                        )
                        record = measure(peer, job, 600)
                        record.update(count=count, rep=rep, profile=args.profile)
                        runs.append(record)
                        print(
                            f"{args.profile} n={count:>5} rep {rep} {peer.name:<22} "
                            f"{record['status']:<8} wall {record['wall_s']:.2f} s "
                            f"cpu {record['cpu_s']:.2f} s rss {record['peak_rss_mb']:.0f} MB",
                            flush=True,
                        )
    return runs


def summary(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| recordings | MB | local wall s | process wall s | process/local | "
        "local CPU s | process CPU s | local RSS MB | process RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for count in sorted({r["count"] for r in runs}):
        ok = [r for r in runs if r["count"] == count and r["status"] == "ok"]
        med = {
            engine: {
                key: statistics.median(r[key] for r in ok if r["peer"].endswith(engine))
                for key in ("wall_s", "cpu_s", "peak_rss_mb", "bytes")
            }
            for engine in ENGINES
            if any(r["peer"].endswith(engine) for r in ok)
        }
        if len(med) < 2:
            lines.append(f"| {count} | - | incomplete | | | | | | |")
            continue
        loc, pro = med["local"], med["process"]
        lines.append(
            f"| {count} | {loc['bytes'] / 1e6:.0f} | {loc['wall_s']:.2f} | {pro['wall_s']:.2f} "
            f"| {pro['wall_s'] / loc['wall_s']:.2f} | {loc['cpu_s']:.2f} | {pro['cpu_s']:.2f} "
            f"| {loc['peak_rss_mb']:.0f} | {pro['peak_rss_mb']:.0f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("wan", "loopback", "ratelimit"), default="wan")
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 250, 500, 1000, 2000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", type=Path, help="keep every run here")
    args = parser.parse_args()
    if args.profile == "ratelimit":
        runs = rate_limited(args)
        print("\n".join(rate_summary(runs)))
    else:
        runs = run(args)
        print("\n".join(summary(runs)))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
