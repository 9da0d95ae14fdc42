"""Run one peer as a child process and measure it from outside, then check its output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.data import verify
from harness.peers import Job, Peer

UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class ChildStats:
    exit_code: int
    timed_out: bool
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    #: Page faults served without I/O (wait4's ru_minflt): the cost of fresh memory.
    minor_faults: int


PAGE = os.sysconf("SC_PAGE_SIZE")
#: How often the process tree's summed RSS is sampled.
RSS_SAMPLE_S = 0.005


def tree_rss(pid: int) -> int:
    """Bytes resident in `pid` and all its descendants right now (0 once it is gone)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * PAGE
            tasks = Path(f"/proc/{current}/task").iterdir()
            for task in tasks:
                stack += map(int, (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def high_water(pid: int) -> int:
    """Bytes of `pid`'s own peak RSS so far (VmHWM), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Peak memory of a peer, sampled from /proc every RSS_SAMPLE_S: the larger of its own
    high-water mark (VmHWM, kept by the kernel, so nothing between samples is missed) and
    the summed RSS of it and its children (worker processes).

    Not wait4's ru_maxrss: Linux carries the pre-exec high-water mark into it, and before
    exec the child is a copy of this harness (60 MB on the listing workload), so every
    peer's figure had the harness's size as a floor."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(RSS_SAMPLE_S):
            sample = max(high_water(self.pid), tree_rss(self.pid))
            if sample:
                self.samples += 1
                self.peak = max(self.peak, sample)


def run_child(
    cmd: list[str],
    stdout: Path,
    stderr: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> ChildStats:
    """Start `cmd` (Popen returns once it has exec'd), reap it with wait4 to get its CPU
    time (its reaped children's included), and sample its peak RSS from /proc meanwhile."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        timed_out = not watchdog.is_alive()
        watchdog.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    # A peer gone before the first sample: wait4's figure, an overestimate, is all there is.
    peak = sampler.peak if sampler.samples else usage.ru_maxrss * 1024
    return ChildStats(
        exit_code=proc.returncode,
        timed_out=timed_out,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_rss_mb=peak / 1e6,
        minor_faults=usage.ru_minflt,
    )


def peer_figures(stdout: Path) -> dict[str, Any]:
    """The JSON line a Python peer prints last (its own transfer time), if any."""
    lines = stdout.read_text(errors="replace").strip().splitlines()
    if lines and lines[-1].startswith("{"):
        return dict(json.loads(lines[-1]))
    return {}


def tail(path: Path, limit: int = 600) -> str:
    return path.read_text(errors="replace")[-limit:].strip()


def measure(peer: Peer, job: Job, timeout: float) -> dict[str, Any]:
    """One measured run of `peer`: a record for the results file. Removes the output."""
    job.scratch.mkdir(parents=True, exist_ok=True)
    cmd = peer.command(job)
    stdout, stderr = job.scratch / "stdout.txt", job.scratch / "stderr.txt"
    stats = run_child(cmd, stdout, stderr, timeout)
    figures = peer_figures(stdout)
    record: dict[str, Any] = {
        "workload": job.dataset.workload.name,
        "storage": job.dataset.storage,
        "peer": peer.name,
        **asdict(stats),
        "cpu_s": stats.user_s + stats.sys_s,
        "transfer_s": figures.get("transfer_s"),
    }
    record.update({k: v for k, v in figures.items() if k in ("list_s", "download_s")})
    if "unavailable" in figures:
        record.update(status=UNAVAILABLE, note=figures["unavailable"])
    else:
        record.update(outcome(peer, job, stats, figures, stderr))
        record.update(throughput(peer, job, stats.wall_s))
    if record["status"] not in ("ok", UNAVAILABLE):
        # Keep the evidence of a bad run: the next run of this peer overwrites its logs.
        keep = job.scratch / f"{record['status'].replace(' ', '-')}-{time.strftime('%H%M%S')}"
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(stdout, keep / stdout.name)
        shutil.copy(stderr, keep / stderr.name)
        record["logs"] = str(keep)
    shutil.rmtree(job.out_dir, ignore_errors=True)
    return record


def throughput(peer: Peer, job: Job, wall_s: float) -> dict[str, Any]:
    files = len(job.dataset.recordings)
    bytes_ = job.dataset.total_bytes if peer.downloads else 0
    return {
        "files": files,
        "bytes": bytes_,
        "files_per_s": files / wall_s,
        "mb_per_s": bytes_ / 1e6 / wall_s if peer.downloads else None,
    }


def outcome(
    peer: Peer, job: Job, stats: ChildStats, figures: dict[str, Any], stderr: Path
) -> dict[str, Any]:
    """Status and evidence: exit code, then every output file's sha256 (or the item count)."""
    if stats.timed_out:
        return {"status": "timeout", "note": f"killed after the time limit; {tail(stderr)}"}
    evidence: dict[str, Any] = {}
    if peer.downloads:
        check = verify(job.dataset, job.out_dir, peer.allowed_extra)
        correct = check.ok
        detail = f"missing {check.missing}, wrong {check.mismatched}, extra {check.extra[:5]}"
        # Files that landed whole and right, even when the run as a whole failed.
        evidence["archived"] = len(job.dataset.recordings) - check.missing - check.mismatched
    else:
        correct = figures.get("items") == len(job.dataset.recordings)
        detail = f"listed {figures.get('items')} of {len(job.dataset.recordings)}"
    if stats.exit_code != 0:
        # A Python peer reports its own failures (ids and errors) on its last stdout line.
        reported = f"; reported failures: {figures['failed']}" if figures.get("failed") else ""
        return {
            "status": "failed",
            "correct": correct,
            "note": f"exit {stats.exit_code}; {tail(stderr)}{reported}"[:2000],
            **evidence,
        }
    if not correct:
        return {"status": "wrong output", "correct": False, "note": detail, **evidence}
    return {"status": "ok", "correct": True, "note": "", **evidence}
