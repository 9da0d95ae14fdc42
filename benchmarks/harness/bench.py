"""The run loop: every peer, every repetition, interleaved in a seeded shuffled order."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data import Dataset, Workload, ensure_dataset, fresh_output_dir
from harness.measure import UNAVAILABLE, measure
from harness.peers import CURL, Job, Peer
from harness.services import fake_api

LISTING_LATENCY_MS = 50.0


@dataclass(frozen=True)
class Settings:
    reps: int
    levels: list[int]
    storages: list[str]
    latency_ms: float | None
    seed: int
    timeout: float
    scratch: Path
    warmup: bool

    def latency_for(self, workload: Workload) -> float:
        """API latency in seconds: 50 ms for the listing benchmark unless told otherwise."""
        if self.latency_ms is not None:
            return self.latency_ms / 1000
        return LISTING_LATENCY_MS / 1000 if "listing" in workload.name else 0.0


def shuffled(peers: list[Peer], *key: object) -> list[Peer]:
    order = list(peers)
    random.Random("-".join(map(str, key))).shuffle(order)
    return order


def progress(record: dict[str, Any]) -> None:
    figures = (
        f"{record['wall_s']:7.2f} s {record['files_per_s']:9.1f} files/s "
        f"{record['mb_per_s'] or 0:8.1f} MB/s  cpu {record['cpu_s']:6.2f} s  "
        f"rss {record['peak_rss_mb']:6.1f} MB"
        if "files_per_s" in record
        else ""
    )
    print(
        f"[bench] {record['workload']} {record['storage']} c={record['concurrency']} "
        f"rep {record['rep']}  {record['peer']:<45} {figures}  {record['status']} "
        f"{record.get('note', '')[:200]}",
        flush=True,
    )


def warm_up(peers: list[Peer], job: Callable[[Peer], Job], timeout: float) -> None:
    """One unrecorded download run (curl's when present) so the first measured run does not
    pay for cold page cache, dentries and first-touch memory of a fresh VM."""
    downloaders = sorted((p for p in peers if p.downloads), key=lambda p: p.name != CURL)
    if downloaders:
        record = measure(downloaders[0], job(downloaders[0]), timeout)
        print(
            f"[bench] warm-up with {record['peer']}: {record['wall_s']:.2f} s, {record['status']}"
        )


def run_workload(
    workload: Workload, peers: list[Peer], settings: Settings, media_base: str
) -> list[dict[str, Any]]:
    """Measure every available peer on `workload`; an unavailable peer gets one record."""
    missing = {peer.name: reason for peer in peers if (reason := peer.missing())}
    runs = [
        {"workload": workload.name, "peer": name, "status": UNAVAILABLE, "note": reason}
        for name, reason in missing.items()
    ]
    for storage in settings.storages:
        dataset = ensure_dataset(workload, storage)
        with fake_api(dataset, media_base, settings.latency_for(workload)) as api_base:
            runs += run_dataset(dataset, peers, missing, settings, media_base, api_base)
    return runs


def run_dataset(
    dataset: Dataset,
    peers: list[Peer],
    missing: dict[str, str],
    settings: Settings,
    media_base: str,
    api_base: str,
) -> list[dict[str, Any]]:
    """Warm up, then every repetition at every concurrency, peers shuffled per repetition."""

    def job(peer: Peer, level: int = settings.levels[0]) -> Job:
        return Job(
            dataset=dataset,
            media_base=media_base,
            api_base=api_base,
            out_dir=fresh_output_dir(dataset.storage, peer.slug),
            scratch=settings.scratch / peer.slug,
            concurrency=level,
        )

    if settings.warmup:
        warm_up([peer for peer in peers if peer.name not in missing], job, settings.timeout)
    runs = []
    for level, rep in itertools.product(settings.levels, range(1, settings.reps + 1)):
        order = shuffled(peers, settings.seed, dataset.storage, level, rep)
        for position, peer in enumerate(order, start=1):
            if peer.name in missing:
                continue
            record = measure(peer, job(peer, level), settings.timeout)
            record.update(concurrency=level, rep=rep, order=position)
            progress(record)
            if record["status"] == UNAVAILABLE:
                missing[peer.name] = record["note"]
            runs.append(record)
    return runs
