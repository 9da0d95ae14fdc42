"""Scale-out on Ray: one archive job's shards run as Ray tasks, on one machine or a cluster.

`RayEngine` decides only where a batch's items run, after img2dataset's distributor: the
driver's batch core (`batch.Batch`) takes the listing once (ids, repeats, unusable
entries), the engine cuts it into shards and keeps a bounded number of shard tasks in
flight. Each task runs the local engine (its own event loop, `AsyncSession` opened from the
session's `SessionConfig`, and `Downloader`, with no index) on a Ray worker, writing into
the same destination (a folder every node mounts at the same path, or `s3://`), and sends
its results back as plain data.

The driver's batch core is the only writer of the index: it records every recording from
the shard results (and emits their progress), then the engine records the shard itself as
finished in the shard journal, a small SQLite file beside the index (`<index>.shards`,
table `shards`). Completion is recorded last, so a
re-run of the same command after the driver died skips every finished shard and redoes the
rest; a redone shard re-checks the destination and fetches only what is not stored yet.

Exactly once: a shard task retried after its worker or node died finds the files the lost
worker finished (the batch core skips final files that exist) and hashes those the index
does not know, so the driver still records them; only the recordings that were in flight
when the node died are fetched again (resumed from their `.part` where the server allows).
Task retries are bounded (`max_retries`); a shard that still fails is reported in
`ScaleOutReport.failed_shards` and its recordings as failed.

Credentials never travel in a task's arguments, its name, a runtime environment or a
closure: the session's `SessionConfig` is put into Ray's object store once (`ray.put`) and
every task gets that object by reference. A setting that cannot travel (a custom DNS
`resolver` object) is refused with a `ConfigurationError` before anything starts. Ray
stores a driver's command line in its job table, so on Ray the token belongs in
`VOBIZ_AUTH_TOKEN`, not on the command line.

Ray is imported only when an engine runs: `import vobiz_async` and the CLI do not pay for
it. Install it with `pip install 'vobiz-async[ray]'`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import ray_runtime
from .batch import Batch, BatchOptions, Engine, item_id
from .download import Downloader
from .errors import ConfigurationError, DownloadError
from .journal import SHARDS_SUFFIX
from .journal import ShardJournal as _Journal
from .manifest import Manifest, ManifestEntry
from .models import Recording
from .results import (
    DownloadReport,
    DownloadResult,
    DownloadStatus,
    ProgressEvent,
    ProgressKind,
)
from .session import AsyncSession, SessionConfig
from .sinks import DirectorySink, S3Sink, Sink
from .sinks.s3 import ChecksumPolicy
from .types import ApiClient, Destination, Item, Layout, Source

__all__ = [
    "SHARDS_SUFFIX",
    "BatchOptions",
    "Engine",
    "RayEngine",
    "ScaleOutReport",
    "ShardFailure",
    "WorkerShare",
    "plan_shards",
    "split_concurrency",
]

logger = logging.getLogger("vobiz_async")

_RAY_MISSING = "the Ray engine needs Ray: pip install 'vobiz-async[ray]'"


@attrs.frozen
class WorkerShare:
    """What one Ray worker process did: its node, its pid and the recordings it reported."""

    node_id: str
    pid: int
    recordings: int


@attrs.frozen
class ShardFailure:
    """A shard whose task failed even after its retries; its recordings are failed."""

    index: int
    key: str
    size: int
    error: str


@attrs.frozen
class ScaleOutReport(DownloadReport):
    """A `DownloadReport` with where the work ran and which shards failed."""

    workers: list[WorkerShare] = attrs.Factory(list)
    failed_shards: list[ShardFailure] = attrs.Factory(list)
    #: Shards cut from the listing, and how many of them a finished earlier run covered.
    shards: int = 0
    shards_skipped: int = 0
    #: Seconds each shard's task spent in `download_many` (its throughput, for planning).
    shard_seconds: list[float] = attrs.Factory(list)


@attrs.frozen
class _Shard:
    index: int
    key: str
    items: tuple[Item, ...]


@attrs.frozen
class _S3Target:
    """An `S3Sink`'s settings, none of them secret: each worker builds its own sink from
    them, with the credentials of its node's AWS environment."""

    bucket: str
    prefix: str
    endpoint_url: str | None
    region: str | None
    part_size: int
    max_buffer_bytes: int
    request_checksum_calculation: ChecksumPolicy
    profile: str | None
    max_attempts: int
    #: What every object gets (storage class, encryption, Object Lock): `S3Sink`'s keywords.
    settings: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, sink: S3Sink) -> _S3Target:
        return cls(
            sink.bucket,
            sink.prefix,
            sink.endpoint_url,
            sink.region,
            sink.part_size,
            sink.max_buffer_bytes,
            sink.request_checksum_calculation,
            sink.profile,
            sink.max_attempts,
            tuple(sink.settings().items()),
        )

    def sink(self, layout: Layout) -> S3Sink:
        return S3Sink(
            self.bucket,
            self.prefix,
            endpoint_url=self.endpoint_url,
            region=self.region,
            layout=layout,
            part_size=self.part_size,
            max_buffer_bytes=self.max_buffer_bytes,
            request_checksum_calculation=self.request_checksum_calculation,
            profile=self.profile,
            max_attempts=self.max_attempts,
            **dict(self.settings),
        )


@attrs.frozen
class _ShardJob:
    """A shard's work, as the task receives it (from the object store, by reference)."""

    items: tuple[Item, ...]
    #: A folder every node mounts at this path, or `s3://bucket/prefix/` with `s3` set.
    dest: str
    #: The batch's options for this shard: its share of the concurrency, no callback and
    #: no index (the driver's alone).
    options: BatchOptions
    #: Index entries of this shard's recordings, so the worker skips them by a stat.
    known: tuple[ManifestEntry, ...]
    s3: _S3Target | None = None
    #: The driver keeps an index: a stored file it does not know is hashed, to be indexed.
    prove: bool = False


@attrs.frozen
class _ShardOutcome:
    node_id: str
    pid: int
    results: list[DownloadResult]
    seconds: float


# -- pure parts -----------------------------------------------------------------------------


def plan_shards(items: Sequence[Item], shard_size: int) -> list[tuple[str, list[Item]]]:
    """Cut a listing into shards of up to `shard_size` recordings: `(key, items)` each.

    Recordings are put oldest first (by `add_time`, then id) when every item has a time, so
    recordings that arrive later fall into new shards at the end and the earlier shards keep
    their boundaries, and thus their keys, from one run to the next. A key is the sha256 of
    the shard's ids: the same recordings make the same shard.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    ordered = list(items)
    if ordered and all(isinstance(i, Recording) and i.add_time is not None for i in ordered):
        ordered.sort(key=lambda r: (r.add_time, r.recording_id))  # type: ignore[union-attr]
    shards = []
    for start in range(0, len(ordered), shard_size):
        chunk = ordered[start : start + shard_size]
        digest = hashlib.sha256("\n".join(item_id(i) for i in chunk).encode()).hexdigest()
        shards.append((digest[:32], chunk))
    return shards


def split_concurrency(total: int, per_shard: int, shards: int, cpus: int) -> tuple[int, int]:
    """`(shards at once, transfers per shard)`: at most `total` transfers in flight in all,
    at most `per_shard` in each shard, and no more shards at once than there are CPUs."""
    slots = max(1, min(shards, cpus, total))
    return slots, max(1, min(per_shard, total // slots))


# -- the worker side ------------------------------------------------------------------------


def _run_shard(config: SessionConfig, job: _ShardJob) -> _ShardOutcome:
    """One shard on a Ray worker: its own event loop, session and local engine."""
    import ray  # a Ray worker has Ray

    started = time.monotonic()
    results = asyncio.run(_shard_main(config, job))
    node_id = ray.get_runtime_context().get_node_id()
    seconds = time.monotonic() - started
    return _ShardOutcome(node_id=node_id, pid=os.getpid(), results=results, seconds=seconds)


async def _shard_main(config: SessionConfig, job: _ShardJob) -> list[DownloadResult]:
    """The local engine over the shard's items, with no index (the driver's alone): the
    index's entries for them come along, so a stored file is skipped after a stat."""
    results: list[DownloadResult] = []

    def collect(event: ProgressEvent) -> None:
        # Every item's result, whatever the shard's size (a report keeps RESULTS_KEPT).
        if event.result is not None:
            results.append(event.result)

    async with AsyncSession.from_config(config) as session:
        options = attrs.evolve(job.options, on_progress=collect, manifest=None)
        downloader = Downloader(
            session,
            job.dest if job.s3 is None else job.s3.sink(options.layout),
            lookup=session.recordings.get,
            known={entry.recording_id: entry for entry in job.known},
            prove_stored=job.prove,
            **attrs.asdict(options, recurse=False),
        )
        await downloader.run(job.items)
    return results


# -- the driver -----------------------------------------------------------------------------


def _s3_target(dest: Destination) -> _S3Target | None:
    """The object storage a job archives into, or None for a folder every node mounts."""
    if isinstance(dest, str) and dest.startswith("s3://"):
        return _S3Target.of(S3Sink.from_url(dest))
    if isinstance(dest, S3Sink):
        return _S3Target.of(dest)
    if not isinstance(dest, str | os.PathLike):
        # Another Sink would be pickled to every worker, with whatever it holds.
        raise ConfigurationError(
            "the Ray engine archives into a folder every node mounts at the same path, or "
            "into s3://; other Sink objects are not supported on Ray"
        )
    return None


def _ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigurationError(_RAY_MISSING) from None


class RayEngine:
    """Runs a `download_many` job's shards as Ray tasks.

    `address=None` starts a local Ray on this machine's cores for the job (and stops it
    after); `"auto"` or `"HOST:PORT"` joins a running cluster. When this process is already
    connected to Ray (`ray.init` was called), that connection is used and left open.
    `shard_size` recordings make a shard, one task each (default: sized from the job and the
    cluster's CPUs, `ray_runtime.shard_size_for`); `concurrency_per_shard` caps the
    transfers in one shard, and the job's `concurrency` caps them across the job. A task
    whose worker or node dies is retried up to `max_retries` times (never forever).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        shard_size: int | None = None,
        concurrency_per_shard: int = 16,
        max_retries: int = 3,
    ) -> None:
        if shard_size is not None and shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        if concurrency_per_shard < 1:
            raise ValueError("concurrency_per_shard must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0 (Ray's -1, retry forever, is refused)")
        self.address = address
        self.shard_size = shard_size
        self.concurrency_per_shard = concurrency_per_shard
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return (
            f"RayEngine(address={self.address!r}, shard_size={self.shard_size}, "
            f"concurrency_per_shard={self.concurrency_per_shard})"
        )

    async def run(
        self,
        session: ApiClient,
        source: Source,
        dest: Destination,
        options: BatchOptions,
    ) -> ScaleOutReport:
        """List once, cut shards, run them on Ray, record results; see the module doc."""
        if options.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        config = _travelling_config(session)
        s3 = _s3_target(dest)
        ray = _ray()
        started = time.monotonic()
        job_args = _job_args(dest, s3, options)
        index = _open_index(options.manifest)
        batch = Batch(
            _driver_sink(job_args, options.layout),
            index=index,
            on_progress=options.on_progress,
            overwrite=options.overwrite,
        )
        journal = None
        try:
            places = await _admit(batch, source)
            with self._joined_to_size(ray, len(places)):
                size = ray_runtime.shard_size_for(
                    len(places), ray_runtime.planning_cpus(ray), self.shard_size
                )
                shards = [
                    _Shard(number, key, tuple(chunk))
                    for number, (key, chunk) in enumerate(
                        plan_shards([item for item, _ in places], size)
                    )
                ]
                journal = None if index is None else _Journal(Path(str(index.path) + SHARDS_SUFFIX))
                run = _Run(self, ray, config, batch, places, journal, job_args)
                finished = set() if journal is None or options.overwrite else journal.finished()
                pending = [s for s in shards if s.key not in finished]
                run.skip([s for s in shards if s.key in finished])
                if pending:
                    await run.execute(pending, options.concurrency)
        finally:
            if journal is not None:
                journal.close()
            if index is not None and index is not options.manifest:
                index.close()
        return batch.report(
            time.monotonic() - started,
            cls=ScaleOutReport,
            workers=run.worker_shares(),
            failed_shards=run.failures,
            shards=len(shards),
            shards_skipped=len(shards) - len(pending),
            shard_seconds=run.shard_seconds,
        )

    @contextlib.contextmanager
    def _joined_to_size(self, ray: Any, total: int) -> Iterator[None]:
        """A cluster's CPUs size the shards: join it before cutting them, and leave it after
        the job (a local Ray's CPUs are this machine's, known without starting it)."""
        if self.shard_size is not None or self.address is None or total == 0:
            yield
            return
        owned = ray_runtime.connect(ray, self.address)
        try:
            yield
        finally:
            if owned:
                ray.shutdown()


def _travelling_config(session: ApiClient) -> SessionConfig:
    """The session's settings, as they travel to the workers; refused, with one line,
    when a setting cannot travel (before anything is listed or started)."""
    if not isinstance(session, AsyncSession):
        raise ConfigurationError("the Ray engine needs an AsyncSession, to open one per worker")
    config = session.config
    if config.resolver is not None:
        raise ConfigurationError(
            "the session's custom resolver cannot travel to Ray workers; run this job "
            "without --engine ray (the local engine) or without a resolver"
        )
    return config


async def _admit(batch: Batch, source: Source) -> list[tuple[Item, int]]:
    """The listing, once, through the batch core (which fails unusable entries and skips
    repeated ids): each item to run, with its place in the report, in listing order."""
    places: list[tuple[Item, int]] = []
    async with contextlib.aclosing(batch.admitted(source)) as items:
        async for place, item in items:
            places.append((item, place))
    return places


def _open_index(manifest: Manifest | str | os.PathLike[str] | None) -> Manifest | None:
    """The job's index: the caller's open `Manifest`, one opened from a path, or none."""
    if isinstance(manifest, Manifest) or manifest is None:
        return manifest
    return Manifest(manifest)


def _job_args(dest: Destination, s3: _S3Target | None, options: BatchOptions) -> _JobArgs:
    """What travels to the workers: nothing they cannot pickle, nothing of the driver's."""
    if s3 is None:
        assert isinstance(dest, str | os.PathLike)
        base = str(Path.cwd() / dest)  # workers do not share the driver's working directory
    else:
        base = f"s3://{s3.bucket}/{s3.prefix}"
    hosts = None if options.trusted_hosts is None else frozenset(options.trusted_hosts)
    shard_options = attrs.evolve(options, on_progress=None, manifest=None, trusted_hosts=hosts)
    return _JobArgs(dest=base, s3=s3, options=shard_options)


def _driver_sink(args: _JobArgs, layout: Layout) -> Sink:
    """The destination as the driver's batch core sees it, to name where results are (it
    is never prepared: the workers store)."""
    if args.s3 is None:
        return DirectorySink(args.dest, layout=layout)
    return args.s3.sink(layout)


@attrs.frozen
class _JobArgs:
    dest: str
    s3: _S3Target | None
    options: BatchOptions


class _Run:
    """One job's driver state: the Ray connection, the batch core, the journal."""

    def __init__(
        self,
        engine: RayEngine,
        ray: Any,
        config: SessionConfig,
        batch: Batch,
        places: Sequence[tuple[Item, int]],
        journal: _Journal | None,
        args: _JobArgs,
    ) -> None:
        self.engine = engine
        self.ray = ray
        self.config = config
        self.batch = batch
        self.places = {item_id(item): place for item, place in places}
        self.journal = journal
        self.args = args
        self.failures: list[ShardFailure] = []
        self.shard_seconds: list[float] = []
        self._shares: dict[tuple[str, int], int] = {}

    def worker_shares(self) -> list[WorkerShare]:
        return [WorkerShare(node, pid, count) for (node, pid), count in self._shares.items()]

    def settle(self, item: Item, result: DownloadResult) -> None:
        """Hand one result to the batch core at its item's place."""
        place = self.places[item_id(item)]
        self.batch.settle(place, result, item if isinstance(item, Recording) else None)

    def skip(self, shards: list[_Shard]) -> None:
        """Shards an earlier run finished: their recordings as the index records them."""
        for shard in shards:
            for item in shard.items:
                self.settle(item, self.batch.indexed(item_id(item)))

    def _connect(self) -> bool:
        """Connect to Ray unless this process already is; whether we must disconnect."""
        return ray_runtime.connect(self.ray, self.engine.address)

    async def execute(self, shards: list[_Shard], concurrency: int) -> None:
        """Run `shards` on Ray, a bounded number at once, each result to the batch core;
        after a destination-wide stop, the shards not started yet fail unstarted."""
        ray = self.ray
        owned = self._connect()
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            slots, per_shard = split_concurrency(
                concurrency, self.engine.concurrency_per_shard, len(shards), cpus
            )
            logger.info("%d shards, %d at once, %d transfers each", len(shards), slots, per_shard)
            config_ref = ray.put(self.config)
            task = ray.remote(
                num_cpus=1, max_retries=self.engine.max_retries, retry_exceptions=False
            )(_run_shard)
            waiting = list(reversed(shards))
            running: dict[asyncio.Future[Any], tuple[_Shard, Any]] = {}
            try:
                while running or (waiting and self.batch.stopped_by is None):
                    while waiting and len(running) < slots and self.batch.stopped_by is None:
                        shard = waiting.pop()
                        job_ref = ray.put(self._job(shard, per_shard))
                        ref = task.options(name=f"vobiz-shard-{shard.index}").remote(
                            config_ref, job_ref
                        )
                        running[asyncio.wrap_future(ref.future())] = (shard, ref)
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        shard, _ = running.pop(future)
                        await self._collect(shard, future)
            finally:
                for future, (_, ref) in running.items():  # cancelled, or a failure here
                    future.cancel()
                    with contextlib.suppress(Exception):
                        ray.cancel(ref)  # its .part files stay for the re-run to resume
        finally:
            if owned:
                ray.shutdown()
        for shard in waiting:  # never started: the batch stopped
            for item in shard.items:
                error = self.batch.not_started()
                self.settle(item, DownloadResult(item_id(item), DownloadStatus.FAILED, error=error))

    def _job(self, shard: _Shard, concurrency: int) -> _ShardJob:
        known: list[ManifestEntry] = []
        if not self.args.options.overwrite:
            for item in shard.items:
                entry = self.batch.entry(item_id(item))
                if entry is not None:
                    known.append(entry)
        return _ShardJob(
            items=shard.items,
            dest=self.args.dest,
            options=attrs.evolve(self.args.options, concurrency=concurrency),
            known=tuple(known),
            s3=self.args.s3,
            prove=self.batch.index is not None,
        )

    async def _collect(self, shard: _Shard, future: asyncio.Future[Any]) -> None:
        """A finished task's results, to the batch core (which indexes them); then the
        shard, last, to the journal. Or the shard failed: its recordings with it."""
        try:
            outcome: _ShardOutcome = future.result()
        except Exception as err:
            reason = _task_error(err)
            logger.warning("shard %d failed: %s", shard.index, reason)
            self.failures.append(ShardFailure(shard.index, shard.key, len(shard.items), reason))
            error = DownloadError(f"shard {shard.index} failed: {reason}")
            for item in shard.items:
                self.settle(item, DownloadResult(item_id(item), DownloadStatus.FAILED, error=error))
            return
        self.shard_seconds.append(outcome.seconds)
        share = (outcome.node_id, outcome.pid)
        self._shares[share] = self._shares.get(share, 0) + len(outcome.results)
        self._settle_shard(shard, outcome.results)
        whole = len(outcome.results) == len(shard.items) and all(r.ok for r in outcome.results)
        if self.journal is not None and whole and self.batch.stopped_by is None:
            self.journal.finish(shard.key, shard.items)

    def _settle_shard(self, shard: _Shard, results: list[DownloadResult]) -> None:
        """Each of the shard's recordings to the batch core, with its worker's result (a
        recording the worker did not report fails rather than going missing)."""
        items = {item_id(item): item for item in shard.items}
        for result in results:
            item = items.pop(result.recording_id, None)
            if item is None:
                continue  # not one of this shard's recordings, or reported twice
            if result.status is DownloadStatus.DOWNLOADED:
                self.batch.emit(ProgressEvent(ProgressKind.BYTES, result.recording_id, result.size))
            self.settle(item, result)
        for rid, left in items.items():
            error = DownloadError(f"shard {shard.index} reported no result for {rid}")
            self.settle(left, DownloadResult(rid, DownloadStatus.FAILED, error=error))


def _task_error(err: BaseException) -> str:
    """One line for a failed task: Ray's exception type and the first line of its text."""
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first.strip()}"[:500]
