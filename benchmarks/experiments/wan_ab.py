"""Interleaved A/B of library trees on the wan profile (or a loopback workload), beside peers.

The wan profile's servers and data (`harness/wan.py`: nginx waiting 60 ms before each media
response's first byte, FakeVobiz answering each page of 100 after `--page-ms`, 2,000
recordings of median 300 KB), but only the peers asked for: each variant is the library
peer (`peers/peer_vobiz_async.py`, a fresh process per run, wall time from spawn to exit)
with a tree put first on PYTHONPATH, optionally with environment of its own; `expert=` runs
the expert curl script; with `--loopback WORKLOAD`, the loopback servers and data of
`benchmarks/run` instead (nginx, the fake API at 0 ms), where a label without a tree names
any download peer by slug (`curl=`, `aiohttp-naive=`). Every (level, repetition) runs every
variant once, in a seeded shuffle, after one unrecorded run of the first peer; prints every
run and the medians (wall, CPU, peak RSS) with each variant's ratio to the first peer's
median wall time. Output is checked as `benchmarks/run` checks it, into a folder of its own.

    git archive 202d768 | tar -x -C /tmp/before
    .venv/bin/python benchmarks/experiments/wan_ab.py --reps 3 --levels 64 256 \\
        before=/tmp/before after=$PWD expert=
    .venv/bin/python benchmarks/experiments/wan_ab.py k8=$PWD:VOBIZ_BENCH_SLOTS=8 ...
    .venv/bin/python benchmarks/experiments/wan_ab.py --loopback small --levels 16 \
        aiohttp-naive= curl= before=/tmp/before after=$PWD

`VOBIZ_BENCH_SLOTS=N` in a variant's environment sets `bodyslots.DEFAULT_SLOTS`, and
`VOBIZ_BENCH_SMALL=N` every small read (a waiting body's buffer, each new connection's
first read), and `VOBIZ_BENCH_NOGROUP=1` commits each index entry alone, through a
`sitecustomize` this script writes into a scratch folder; the library reads no such
variable itself. `VOBIZ_BENCH_ENGINE=process` in a variant's environment runs the library
peer on `ProcessEngine()` (`peer_vobiz_async.py --engine process`) instead of the local
engine, and `VOBIZ_BENCH_ENGINE=cli` the shipped command line with its defaults (the
CLI peer of `benchmarks/run --profile wan`), given `VOBIZ_BENCH_CLI_ARGS` (split on blanks,
such as `--engine=process`) as more options. `--out DIR` (or `VOBIZ_WAN_AB_OUT`) puts the
peers' outputs in a folder of one's own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: the harness

from harness import data
from harness.data import Dataset, ensure_dataset
from harness.measure import measure
from harness.peers import Peer, download_peers, process_peer
from harness.services import fake_api, media_server
from harness.wan import (
    EXPERT_SCRIPT,
    RATE,
    WAN,
    cli_peer,
    library_peer,
    scripted,
    wan_job,
    wan_nginx,
)

SITE = Path("/dev/shm/vobiz-wan-ab-site")
#: The wan server's count of 429s answered so far, once it runs.
COUNT_429: list[Callable[[], int]] = []
SITECUSTOMIZE = """
import os
if os.environ.get("VOBIZ_BENCH_SLOTS"):
    import vobiz_async.bodyslots as b
    b.DEFAULT_SLOTS = int(os.environ["VOBIZ_BENCH_SLOTS"])
if os.environ.get("VOBIZ_BENCH_SMALL"):
    import vobiz_async.download as d, vobiz_async.session as s
    n = int(os.environ["VOBIZ_BENCH_SMALL"])
    s.SMALL_READ = n
    init = d.Downloader.__init__
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._small_read = n  # waiting bodies' buffer, and each connection's next first read
    d.Downloader.__init__ = patched
if os.environ.get("VOBIZ_BENCH_NOGROUP"):
    import contextlib
    import vobiz_async.manifest as m
    m.Manifest.grouped = lambda self, *args, **kwargs: contextlib.nullcontext()
"""


def variant(text: str) -> tuple[str, str | None, dict[str, str]]:
    """LABEL=[TREE][:NAME=VALUE,...]: the label, the tree (None: the peer whose slug is
    LABEL, such as `expert`, `curl`, `aiohttp-naive`), and environment."""
    label, _, rest = text.partition("=")
    tree, _, extra = rest.partition(":")
    env = dict(pair.partition("=")[::2] for pair in filter(None, extra.split(",")))
    return label, tree or None, env


@contextlib.contextmanager
def servers(args: argparse.Namespace) -> Iterator[tuple[Dataset, str, str, dict[str, Peer]]]:
    """The dataset, media base, API base and peers by label of the profile asked for."""
    if args.loopback is None:
        dataset = ensure_dataset(RATE if args.ratelimit else WAN, "tmpfs")
        path, page_s = ("/limited", 0.0) if args.ratelimit else ("/delay", args.page_ms / 1000)
        peers = {"expert": Peer(EXPERT_SCRIPT, "expert-script", scripted("expert"), "jq")}
        with wan_nginx() as server, fake_api(dataset, server.base + path, page_s) as api:
            COUNT_429.append(server.count_429)
            yield dataset, server.base + path, api, peers
        return
    dataset = ensure_dataset(data.WORKLOADS[args.loopback], "tmpfs")
    peers = {peer.slug: peer for peer in download_peers()}
    with media_server("nginx") as (media_base, _), fake_api(dataset, media_base, 0.0) as api:
        yield dataset, media_base, api, peers


def run_one(
    job_args: tuple[Dataset, str, str],
    peer: Peer,
    tree: str | None,
    env: dict[str, str],
    level: int,
) -> dict[str, Any]:
    """One measured run, the tree first on PYTHONPATH."""
    dataset, media_base, api = job_args
    base_env, base_dir = dict(os.environ), os.getcwd()
    os.environ.update(env)
    if tree is not None:
        os.environ["PYTHONPATH"] = f"{tree}:{SITE}"
        os.chdir(tree)  # `python -m` (the CLI peer) puts the working folder first on sys.path
    try:
        before = COUNT_429[0]() if COUNT_429 else 0
        record = measure(peer, wan_job(dataset, media_base, api, peer, level), 600)
        record["http_429"] = COUNT_429[0]() - before if COUNT_429 else 0
        return record
    finally:
        os.chdir(base_dir)
        os.environ.clear()
        os.environ.update(base_env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="LABEL=[TREE][:NAME=VALUE,...]")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--levels", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--page-ms", type=float, default=200.0)
    parser.add_argument("--loopback", choices=sorted(data.WORKLOADS), help="a loopback workload")
    parser.add_argument(
        "--ratelimit",
        action="store_true",
        help="the wan profile's 429 host instead (600 x 50 KB, 150 requests/s, pages at 0 ms)",
    )
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("VOBIZ_WAN_AB_OUT", "/dev/shm/vobiz-wan-ab-out")),
        help="the peers' output folder (tmpfs)",
    )
    args = parser.parse_args()
    # Outputs of its own: another checkout's `benchmarks/run` may use the shared one.
    data.OUTPUT_ROOTS["tmpfs"] = args.out
    SITE.mkdir(parents=True, exist_ok=True)
    (SITE / "sitecustomize.py").write_text(SITECUSTOMIZE)
    variants = [variant(v) for v in args.variants]
    library, process, cli = library_peer(), process_peer(), cli_peer()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with servers(args) as (dataset, media_base, api, peers):
        job_args = (dataset, media_base, api)
        first = next(label for label, tree, _ in variants if tree is None)
        run_one(job_args, peers[first], None, {}, args.levels[0])  # warm-up, not recorded
        for level in args.levels:
            for rep in range(1, args.reps + 1):
                order = list(variants)
                random.Random(f"{args.seed}-{level}-{rep}").shuffle(order)
                for label, tree, env in order:
                    peer = peers[label] if tree is None else library
                    if tree is not None and env.get("VOBIZ_BENCH_ENGINE") == "process":
                        peer = process
                    if tree is not None and env.get("VOBIZ_BENCH_ENGINE") == "cli":
                        peer = cli
                    record = run_one(job_args, peer, tree, env, level)
                    runs.setdefault((label, level), []).append(record)
                    print(
                        f"c={level} rep {rep} {label:>13}: {record['status']:<6} "
                        f"wall {record['wall_s']:.2f} s  cpu {record['cpu_s']:.2f} s  "
                        f"rss {record['peak_rss_mb']:.1f} MB  429s {record['http_429']}",
                        flush=True,
                    )
    summary(args, variants, runs)


def summary(
    args: argparse.Namespace,
    variants: list[tuple[str, str | None, dict[str, str]]],
    runs: dict[tuple[str, int], list[dict[str, Any]]],
) -> None:
    """Medians per variant and level; the ratio is the first peer's median wall time over
    the variant's (above 1: faster than that peer)."""
    reference = next(label for label, tree, _ in variants if tree is None)
    profile = args.loopback or (
        "ratelimit" if args.ratelimit else f"wan, pages at {args.page_ms:g} ms"
    )
    print(f"medians of {args.reps} ({profile}; ratio: {reference} wall / wall)")
    for level in args.levels:
        ok_ref = [r["wall_s"] for r in runs[(reference, level)] if r["status"] == "ok"]
        ref_wall = statistics.median(ok_ref) if ok_ref else None
        for label, _, _ in variants:
            ok = [r for r in runs[(label, level)] if r["status"] == "ok"]
            if not ok:
                print(f"  c={level} {label:>13}: no successful run")
                continue
            wall = statistics.median(r["wall_s"] for r in ok)
            cpu = statistics.median(r["cpu_s"] for r in ok)
            rss = statistics.median(r["peak_rss_mb"] for r in ok)
            limited = statistics.median(r["http_429"] for r in ok)
            ratio = f"  x{ref_wall / wall:.2f}" if ref_wall else ""
            print(
                f"  c={level} {label:>13}: wall {wall:.2f} s  cpu {cpu:.2f} s  "
                f"rss {rss:.1f} MB  429s {limited:g}  ({len(ok)} ok){ratio}"
            )


if __name__ == "__main__":
    main()
