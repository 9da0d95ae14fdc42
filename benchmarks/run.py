"""Benchmark vobiz_async's bulk downloader against curl, aria2c, wget, httpx, naive aiohttp
and vobiz-python on 127.0.0.1. Normally started by `benchmarks/run`, which installs nginx
(and its echo module), curl, aria2, wget, jq and the bench venv first. `--profile wan` runs
the long-path and rate-limit profile instead of the loopback workloads. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.bench import Settings, run_workload
from harness.data import BENCH_DIR, SMOKE_WORKLOADS, WORK_DIR, WORKLOADS, Workload
from harness.measure import UNAVAILABLE
from harness.peers import CLI, LIBRARY, RAY, Peer, download_peers, listing_peers
from harness.report import (
    GENERATED_NAME,
    add_run_ratios,
    chart,
    summarize,
    write_generated,
    write_results,
)
from harness.services import media_server, nginx_binary, nginx_version, prepare_work_dirs
from harness.wan import WanSettings, library_verdict, medians, render, run_wan, wan_missing

SWEEP = [1, 4, 16, 32, 64]
SMOKE_LATENCY_MS = 5.0
RESULTS_DIR = BENCH_DIR / "results"
PYTHON_PACKAGES = ("vobiz-async", "aiohttp", "httpx", "requests", "vobiz-python", "matplotlib")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long check, for CI")
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help=f"only rewrite {GENERATED_NAME} from results/*.json; run nothing",
    )
    parser.add_argument(
        "--profile",
        choices=["loopback", "wan"],
        default="loopback",
        help="loopback: the workloads below (default); wan: 60 ms to first media byte, "
        "pages at 200 and 50 ms, 64 and 256 in flight, and the 429 host",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions per peer (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="transfers in flight")
    parser.add_argument("--sweep", action="store_true", help=f"concurrency {SWEEP}")
    parser.add_argument(
        "--workload",
        choices=[*WORKLOADS, "all"],
        default="all",
        help="small: 2,000 x 100 KiB; large: 100 x 10 MiB; mix: ~300 log-normal; "
        "listing: 20,000 recordings at 50 ms API latency (default: all)",
    )
    parser.add_argument("--storage", choices=["tmpfs", "disk", "both"], default="tmpfs")
    parser.add_argument("--latency", type=float, help="API latency in ms (listing: 50)")
    parser.add_argument("--server", choices=["auto", "nginx", "aiohttp"], default="auto")
    parser.add_argument(
        "--peer",
        action="append",
        metavar="SLUG",
        help="run only these peers (repeatable): vobiz_async, cli, ray, curl, aria2c, wget, httpx, "
        "aiohttp-naive, requests; listing: sequential, pager, list-then-download, pipelined",
    )
    parser.add_argument("--seed", type=int, default=5, help="seed of the peer order")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    return parser.parse_args()


def tool_version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0]


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(server: str) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    nginx = nginx_binary()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "server": server,
        "nginx": nginx_version(nginx) if nginx else None,
        "curl": tool_version(["curl", "--version"]),
        "aria2c": tool_version(["aria2c", "--version"]),
        "wget": tool_version(["wget", "--version"]),
        "packages": {name: package_version(name) for name in PYTHON_PACKAGES},
    }


def plan(args: argparse.Namespace) -> list[tuple[Workload, list[Peer]]]:
    if args.smoke:
        workloads = [
            (SMOKE_WORKLOADS["smoke"], download_peers()),
            (SMOKE_WORKLOADS["smoke-listing"], listing_peers()),
        ]
    else:
        names = list(WORKLOADS) if args.workload == "all" else [args.workload]
        workloads = [
            (WORKLOADS[name], listing_peers() if name == "listing" else download_peers())
            for name in names
        ]
    chosen = set(args.peer or [])
    return [
        (workload, [peer for peer in peers if not chosen or peer.slug in chosen])
        for workload, peers in workloads
    ]


def settings_for(args: argparse.Namespace, workload: Workload) -> Settings:
    levels = SWEEP if args.sweep and "listing" not in workload.name else [args.concurrency]
    return Settings(
        reps=1 if args.smoke else args.reps,
        levels=levels,
        storages=["tmpfs", "disk"] if args.storage == "both" else [args.storage],
        latency_ms=SMOKE_LATENCY_MS if args.smoke and args.latency is None else args.latency,
        seed=args.seed,
        timeout=60 if args.smoke else args.timeout,
        scratch=WORK_DIR / "runs",
        warmup=not args.smoke,
    )


def payload_for(
    workload: Workload,
    peers: list[Peer],
    settings: Settings,
    runs: list[dict[str, Any]],
    machine: dict[str, Any],
    peer_filter: list[str] | None,
) -> dict[str, Any]:
    add_run_ratios(runs)
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv[1:],
        "workloads": {workload.name: workload.describe()},
        "settings": {
            "reps": settings.reps,
            "concurrency": settings.levels,
            "storages": settings.storages,
            "latency_ms": {workload.name: settings.latency_for(workload) * 1000},
            "seed": settings.seed,
        },
        "peer_filter": peer_filter,
        "machine": machine,
        "medians": summarize(runs, [peer.name for peer in peers]),
        "runs": runs,
    }


def library_worked(runs: list[dict[str, Any]]) -> bool:
    """Smoke verdict: every run of the library (downloads and listing modes) was correct.
    The Ray engine is an optional extra (`vobiz-async[ray]`, not in the bench venv): when it
    is not installed its one "unavailable" record is reported, not a failure."""
    ours = [
        run
        for run in runs
        if (LIBRARY in run["peer"] or run["peer"] == CLI)
        and not (run["peer"] == RAY and run["status"] == UNAVAILABLE)
    ]
    return bool(ours) and all(run["status"] == "ok" for run in ours)


def wan_profile(args: argparse.Namespace, results_dir: Path, stamp: str) -> bool:
    """Sections 1 and 3 of issue 17; returns the smoke verdict (the library's runs)."""
    reps = 1 if args.smoke else args.reps
    settings = WanSettings(
        reps=reps, seed=args.seed, timeout=120 if args.smoke else args.timeout, smoke=args.smoke
    )
    runs, workloads = run_wan(settings)
    payload = {
        "profile": "wan",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv[1:],
        "reps": reps,
        "workloads": workloads,
        "machine": machine_info("nginx + echo module (wan profile)"),
        "medians": medians(runs),
        "runs": runs,
    }
    write_results(results_dir / f"{stamp}-wan.json", payload)
    report = results_dir / f"{stamp}-wan.md"
    report.write_text(render(payload))
    print(report.read_text())
    print(f"[bench] wan profile: {results_dir / f'{stamp}-wan.json'}; tables in {report}")
    return library_verdict(runs)


def regenerate(results_dir: Path, smoke: bool) -> Path:
    """Rewrite the generated tables from every results file (a smoke run: its own, apart)."""
    generated = results_dir / GENERATED_NAME if smoke else BENCH_DIR / GENERATED_NAME
    write_generated(generated, results_dir)
    print(f"[bench] tables regenerated in {generated}")
    return generated


def main() -> int:
    args = parse_args()
    if args.regenerate:
        regenerate(RESULTS_DIR, smoke=False)
        return 0
    prepare_work_dirs()
    results_dir = Path(tempfile.mkdtemp(prefix="vobiz-bench-smoke-")) if args.smoke else RESULTS_DIR
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if args.profile == "wan":
        missing = wan_missing()
        if missing:
            print(f"[bench] wan profile cannot run: {missing}", file=sys.stderr)
            return 1
        worked = wan_profile(args, results_dir, stamp)
        regenerate(results_dir, args.smoke)
        return 0 if worked or not args.smoke else 1
    all_runs: list[dict[str, Any]] = []
    with media_server(args.server) as (media_base, server):
        machine = machine_info(server)
        print(f"[bench] media server: {server} at {media_base}", flush=True)
        for workload, peers in plan(args):
            settings = settings_for(args, workload)
            runs = run_workload(workload, peers, settings, media_base)
            payload = payload_for(workload, peers, settings, runs, machine, args.peer)
            write_results(results_dir / f"{stamp}-{workload.name}.json", payload)
            all_runs += runs
    drew = chart(results_dir, results_dir / "throughput.png")
    print(f"[bench] results in {results_dir}; chart {'written' if drew else 'skipped'}")
    if not args.smoke:
        regenerate(results_dir, smoke=False)
        return 0
    unavailable = sorted({run["peer"] for run in all_runs if run["status"] == UNAVAILABLE})
    print(f"[bench] smoke: unavailable peers: {', '.join(unavailable) or 'none'}")
    worked = library_worked(all_runs)
    print(f"[bench] smoke: library path {'works' if worked else 'FAILED or unavailable'}")
    missing = wan_missing()
    if missing:
        print(f"[bench] smoke: wan profile skipped: {missing}")
    else:
        wan_worked = wan_profile(args, results_dir, stamp)
        print(f"[bench] smoke: wan profile {'works' if wan_worked else 'FAILED'}")
        worked = worked and wan_worked
    regenerate(results_dir, smoke=True)
    return 0 if worked else 1


if __name__ == "__main__":
    sys.exit(main())
