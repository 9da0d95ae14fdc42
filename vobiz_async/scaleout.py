"""Scale-out on Ray: one archive job's shards run as Ray tasks, on one machine or a cluster.

`RayEngine` is a thin adapter under the one batch engine (`download_many`), after
img2dataset's distributor: the driver lists once with the pager, cuts the listing into
shards, and keeps a bounded number of shard tasks in flight. Each task runs its own event
loop, `AsyncSession` and `download_many` on a Ray worker, writing into the same destination
(a folder every node mounts at the same path), and sends its results back as plain data.

The driver is the only writer of the index: it records every recording from the shard
results, then records the shard itself as finished in the shard journal, a small SQLite
file beside the index (`<index>.shards`, table `shards`). Completion is recorded last, so a
re-run of the same command after the driver died skips every finished shard and redoes the
rest; a redone shard re-checks the destination and fetches only what is not stored yet.

Exactly once: a shard task retried after its worker or node died finds the files the lost
worker finished (download_many skips final files that exist) and re-hashes those the index
does not know, so the driver still records them; only the recordings that were in flight
when the node died are fetched again (resumed from their `.part` where the server allows).
Task retries are bounded (`max_retries`); a shard that still fails is reported in
`ScaleOutReport.failed_shards` and its recordings as failed.

Credentials never travel in a task's arguments, its name, a runtime environment or a
closure: the session's settings are put into Ray's object store once (`ray.put`) and every
task gets that object by reference. Ray stores a driver's command line in its job table, so
on Ray the token belongs in `VOBIZ_AUTH_TOKEN`, not on the command line.

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
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from . import ray_runtime
from .download import (
    RESULTS_KEPT,
    BatchOptions,
    Destination,
)
from .errors import ConfigurationError, DownloadError, ManifestError, ResponseValidationError
from .manifest import Manifest, ManifestEntry
from .models import InvalidRecording, Recording
from .pager import AsyncPager
from .protocol import format_timestamp, sniff_container
from .results import (
    DownloadReport,
    DownloadResult,
    DownloadStatus,
    Layout,
    ProgressCallback,
    ProgressEvent,
    ProgressKind,
    Source,
)
from .sinks import S3Sink
from .sinks.s3 import ChecksumPolicy

if TYPE_CHECKING:
    from .session import AsyncSession

__all__ = [
    "SHARDS_SUFFIX",
    "Engine",
    "RayEngine",
    "ScaleOutReport",
    "ShardFailure",
    "WorkerShare",
    "plan_shards",
    "split_concurrency",
]

logger = logging.getLogger("vobiz_async")

#: The shard journal lives beside the index, at `<index path><SHARDS_SUFFIX>`.
SHARDS_SUFFIX = ".shards"
_JOURNAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (
    key TEXT PRIMARY KEY NOT NULL,
    size INTEGER NOT NULL,
    first_id TEXT NOT NULL,
    last_id TEXT NOT NULL,
    finished_at TEXT NOT NULL
)
"""
_RAY_MISSING = "the Ray engine needs Ray: pip install 'vobiz-async[ray]'"

Item = Recording | str


class Engine(Protocol):
    """Where a batch's shards run; `download_many(..., engine=...)` hands the job over."""

    async def run(
        self,
        session: AsyncSession,
        source: Source,
        dest: Destination,
        options: BatchOptions,
    ) -> DownloadReport:
        """Run the whole job and return its report, results in listing order."""
        ...


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
class _SessionConfig:
    """Everything a worker needs to open its own session; travels only by reference."""

    auth_id: str
    auth_token: str = attrs.field(repr=False)
    base_url: str
    trusted_hosts: frozenset[str]
    timeout: float
    max_retries: int
    connect_timeout: float
    read_timeout: float


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


@attrs.frozen
class _ShardOutcome:
    node_id: str
    pid: int
    results: list[DownloadResult]
    seconds: float


# -- pure parts -----------------------------------------------------------------------------


def _item_id(item: Item) -> str:
    return item if isinstance(item, str) else item.recording_id


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
        digest = hashlib.sha256("\n".join(_item_id(i) for i in chunk).encode()).hexdigest()
        shards.append((digest[:32], chunk))
    return shards


def split_concurrency(total: int, per_shard: int, shards: int, cpus: int) -> tuple[int, int]:
    """`(shards at once, transfers per shard)`: at most `total` transfers in flight in all,
    at most `per_shard` in each shard, and no more shards at once than there are CPUs."""
    slots = max(1, min(shards, cpus, total))
    return slots, max(1, min(per_shard, total // slots))


# -- the shard journal ----------------------------------------------------------------------


class _Journal:
    """Finished shards, by key, beside the index (written only by the driver)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_JOURNAL_SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise ManifestError(f"cannot open the shard journal {path}: {err}") from err

    def finished(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM shards")}

    def finish(self, key: str, items: Sequence[Item]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?)",
            (
                key,
                len(items),
                _item_id(items[0]),
                _item_id(items[-1]),
                datetime.now(UTC).isoformat(),
            ),
        )

    def close(self) -> None:
        self._db.close()


# -- the worker side ------------------------------------------------------------------------


def _run_shard(config: _SessionConfig, job: _ShardJob) -> _ShardOutcome:
    """One shard on a Ray worker: its own event loop, session and `download_many`."""
    import ray  # a Ray worker has Ray

    started = time.monotonic()
    results = asyncio.run(_shard_main(config, job))
    node_id = ray.get_runtime_context().get_node_id()
    seconds = time.monotonic() - started
    return _ShardOutcome(node_id=node_id, pid=os.getpid(), results=results, seconds=seconds)


async def _shard_main(config: _SessionConfig, job: _ShardJob) -> list[DownloadResult]:
    from .session import AsyncSession

    session = AsyncSession(
        config.auth_id,
        config.auth_token,
        base_url=config.base_url,
        trusted_hosts=config.trusted_hosts,
        timeout=config.timeout,
        max_retries=config.max_retries,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
    )
    results: list[DownloadResult] = []

    def collect(event: ProgressEvent) -> None:
        # Every item's result, whatever the shard's size (a report keeps RESULTS_KEPT).
        if event.result is not None:
            results.append(event.result)

    with tempfile.TemporaryDirectory(prefix="vobiz-shard-") as scratch:
        manifest: Manifest | None = None
        if job.known:
            # The index's entries for this shard, so a stored file is skipped with its
            # sha256 after a stat; the index itself stays the driver's alone.
            manifest = Manifest(Path(scratch) / "known.sqlite")
            for entry in job.known:
                manifest.add(entry)
        try:
            async with session:
                options = attrs.evolve(job.options, on_progress=collect, manifest=manifest)
                await session.recordings.download_many(
                    job.items,
                    job.dest if job.s3 is None else job.s3.sink(options.layout),
                    **attrs.asdict(options, recurse=False),
                )
        finally:
            if manifest is not None:
                manifest.close()
    return [_proven(result) for result in results]


def _proven(result: DownloadResult) -> DownloadResult:
    """A skipped file the index did not know (stored by a worker that died before the driver
    heard of it) is re-hashed, so that the driver can record it."""
    if result.status is not DownloadStatus.SKIPPED or result.sha256 or result.path is None:
        return result
    try:
        with result.path.open("rb") as file:
            head = file.read(16)
            file.seek(0)
            digest = hashlib.file_digest(file, "sha256").hexdigest()
            size = file.tell()
    except OSError as err:
        logger.warning("cannot re-hash %s: %s", result.path, err)
        return result
    return attrs.evolve(result, size=size, sha256=digest, container=sniff_container(head))


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


async def _listing(source: Source) -> tuple[list[Item], list[DownloadResult]]:
    """The whole listing, once, and failed results for listed objects that are unusable."""
    items: list[Item] = []
    invalid: list[DownloadResult] = []
    if isinstance(source, AsyncIterable):
        entries = source.entries() if isinstance(source, AsyncPager) else aiter(source)
        async for entry in entries:
            if isinstance(entry, InvalidRecording):
                if entry.recording_id is not None:
                    error = ResponseValidationError(
                        f"the listing's object is unusable: {entry.problem}"
                    )
                    invalid.append(
                        DownloadResult(entry.recording_id, DownloadStatus.FAILED, error=error)
                    )
                continue
            items.append(entry)
    else:
        items.extend(source)
    return items, invalid


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
        session: AsyncSession,
        source: Source,
        dest: Destination,
        options: BatchOptions,
    ) -> ScaleOutReport:
        """List once, cut shards, run them on Ray, record results; see the module doc."""
        if options.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        s3 = _s3_target(dest)
        ray = _ray()
        started = time.monotonic()
        items, invalid = await _listing(source)
        order, unique = _first_of_each(items)
        with self._joined_to_size(ray, len(unique)):
            size = ray_runtime.shard_size_for(
                len(unique), ray_runtime.planning_cpus(ray), self.shard_size
            )
            shards = [
                _Shard(index, key, tuple(chunk))
                for index, (key, chunk) in enumerate(plan_shards(unique, size))
            ]
            index = _open_index(options.manifest)
            journal = None if index is None else _Journal(Path(str(index.path) + SHARDS_SUFFIX))
            job_args = _job_args(dest, s3, options)
            try:
                run = _Run(self, ray, session, index, journal, job_args, options.on_progress)
                finished = set() if journal is None or options.overwrite else journal.finished()
                pending = [s for s in shards if s.key not in finished]
                results = [
                    run.finished_result(i) for s in shards if s.key in finished for i in s.items
                ]
                if pending:
                    results += await run.execute(pending, options.concurrency)
            finally:
                if journal is not None:
                    journal.close()
                if index is not None and index is not options.manifest:
                    index.close()
        results.sort(key=lambda r: order[r.recording_id])
        results += [*_repeats(items), *invalid]
        return _report(
            results, time.monotonic() - started, run, len(shards), len(shards) - len(pending)
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


def _first_of_each(items: Sequence[Item]) -> tuple[dict[str, int], list[Item]]:
    """Each id's place in the listing, and the items without repeats (first one kept)."""
    order: dict[str, int] = {}
    unique: list[Item] = []
    for item in items:
        if _item_id(item) not in order:
            order[_item_id(item)] = len(order)
            unique.append(item)
    return order, unique


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


def _report(
    results: list[DownloadResult], elapsed: float, run: _Run, shards: int, skipped: int
) -> ScaleOutReport:
    """The job's report from every result in order, as the local engine reports."""
    tally = dict.fromkeys(DownloadStatus, 0)
    for result in results:
        tally[result.status] += 1
    return ScaleOutReport(
        # As the local engine does: the first RESULTS_KEPT results, every failure.
        results=results[:RESULTS_KEPT],
        elapsed=elapsed,
        truncated=len(results) > RESULTS_KEPT,
        later_failures=[r for r in results[RESULTS_KEPT:] if not r.ok],
        tally=tally,
        bytes_downloaded=sum(r.size for r in results if r.status is DownloadStatus.DOWNLOADED),
        workers=run.worker_shares(),
        failed_shards=run.failures,
        shards=shards,
        shards_skipped=skipped,
        shard_seconds=run.shard_seconds,
    )


def _repeats(items: Sequence[Item]) -> list[DownloadResult]:
    """A skipped result per repeated id in the listing, as the local engine gives."""
    seen: set[str] = set()
    repeated = []
    for item in items:
        rid = _item_id(item)
        if rid in seen:
            repeated.append(DownloadResult(rid, DownloadStatus.SKIPPED))
        seen.add(rid)
    return repeated


@attrs.frozen
class _JobArgs:
    dest: str
    s3: _S3Target | None
    options: BatchOptions


class _Run:
    """One job's driver state: the Ray connection, the index, the journal, the tallies."""

    def __init__(
        self,
        engine: RayEngine,
        ray: Any,
        session: AsyncSession,
        index: Manifest | None,
        journal: _Journal | None,
        args: _JobArgs,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.engine = engine
        self.ray = ray
        self.session = session
        self.index = index
        self.journal = journal
        self.args = args
        self.on_progress = on_progress
        self.failures: list[ShardFailure] = []
        self.shard_seconds: list[float] = []
        self._shares: dict[tuple[str, int], int] = {}

    def worker_shares(self) -> list[WorkerShare]:
        return [WorkerShare(node, pid, count) for (node, pid), count in self._shares.items()]

    def finished_result(self, item: Item) -> DownloadResult:
        """The result of a recording in a shard that an earlier run finished."""
        rid = _item_id(item)
        entry = None if self.index is None else self.index.get(rid)
        if entry is None:
            return DownloadResult(rid, DownloadStatus.SKIPPED)
        on_s3 = self.args.s3 is not None
        where = self.args.dest + entry.path if on_s3 else os.path.join(self.args.dest, entry.path)
        return DownloadResult(
            rid,
            DownloadStatus.SKIPPED,
            path=None if on_s3 else where,
            location=where,
            size=entry.size,
            sha256=entry.sha256,
            container=entry.container,
        )

    def _connect(self) -> bool:
        """Connect to Ray unless this process already is; whether we must disconnect."""
        return ray_runtime.connect(self.ray, self.engine.address)

    async def execute(self, shards: list[_Shard], concurrency: int) -> list[DownloadResult]:
        ray = self.ray
        owned = self._connect()
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            slots, per_shard = split_concurrency(
                concurrency, self.engine.concurrency_per_shard, len(shards), cpus
            )
            logger.info("%d shards, %d at once, %d transfers each", len(shards), slots, per_shard)
            config_ref = ray.put(_session_config(self.session))
            task = ray.remote(
                num_cpus=1, max_retries=self.engine.max_retries, retry_exceptions=False
            )(_run_shard)
            results: list[DownloadResult] = []
            waiting = list(reversed(shards))
            running: dict[asyncio.Future[Any], tuple[_Shard, Any]] = {}
            try:
                while waiting or running:
                    while waiting and len(running) < slots:
                        shard = waiting.pop()
                        job_ref = ray.put(self._job(shard, per_shard))
                        ref = task.options(name=f"vobiz-shard-{shard.index}").remote(
                            config_ref, job_ref
                        )
                        running[asyncio.wrap_future(ref.future())] = (shard, ref)
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        shard, _ = running.pop(future)
                        results += await self._collect(shard, future)
            finally:
                for future, (_, ref) in running.items():  # cancelled, or a failure here
                    future.cancel()
                    with contextlib.suppress(Exception):
                        ray.cancel(ref)  # its .part files stay for the re-run to resume
        finally:
            if owned:
                ray.shutdown()
        return results

    def _job(self, shard: _Shard, concurrency: int) -> _ShardJob:
        known: list[ManifestEntry] = []
        if self.index is not None and not self.args.options.overwrite:
            for item in shard.items:
                entry = self.index.get(_item_id(item))
                if entry is not None:
                    known.append(entry)
        return _ShardJob(
            items=shard.items,
            dest=self.args.dest,
            options=attrs.evolve(self.args.options, concurrency=concurrency),
            known=tuple(known),
            s3=self.args.s3,
        )

    async def _collect(self, shard: _Shard, future: asyncio.Future[Any]) -> list[DownloadResult]:
        """A finished task's results, recorded in the index; or its shard failed."""
        try:
            outcome: _ShardOutcome = future.result()
        except Exception as err:
            reason = _task_error(err)
            logger.warning("shard %d failed: %s", shard.index, reason)
            self.failures.append(ShardFailure(shard.index, shard.key, len(shard.items), reason))
            error = DownloadError(f"shard {shard.index} failed: {reason}")
            results = [
                DownloadResult(_item_id(i), DownloadStatus.FAILED, error=error) for i in shard.items
            ]
            self._emit(results)
            return results
        self.shard_seconds.append(outcome.seconds)
        share = (outcome.node_id, outcome.pid)
        self._shares[share] = self._shares.get(share, 0) + len(outcome.results)
        await asyncio.to_thread(self._record, shard, outcome.results)
        self._emit(outcome.results)
        return outcome.results

    def _record(self, shard: _Shard, results: list[DownloadResult]) -> None:
        """Index every verified recording of a shard, then the shard, last."""
        if self.index is None or self.journal is None:
            return
        add_times = {i.recording_id: i.add_time for i in shard.items if isinstance(i, Recording)}
        for result in results:
            path = self._key(result)
            if result.status is DownloadStatus.FAILED or not result.sha256 or path is None:
                continue
            known = self.index.get(result.recording_id)
            if known is not None and (known.path, known.size, known.sha256) == (
                path,
                result.size,
                result.sha256,
            ):
                continue
            add_time = add_times.get(result.recording_id)
            self.index.record(
                result.recording_id,
                path,
                size=result.size,
                sha256=result.sha256,
                container=result.container,
                add_time=None if add_time is None else format_timestamp(add_time),
            )
        if all(r.ok for r in results) and len(results) == len(shard.items):
            self.journal.finish(shard.key, shard.items)

    def _key(self, result: DownloadResult) -> str | None:
        """Where a result's recording is, relative to the destination: the index's path."""
        if result.path is not None:
            return os.path.relpath(result.path, self.args.dest).replace(os.sep, "/")
        if result.location is not None and result.location.startswith(self.args.dest):
            return result.location[len(self.args.dest) :]
        return None

    def _emit(self, results: list[DownloadResult]) -> None:
        if self.on_progress is None:
            return
        kinds = {
            DownloadStatus.DOWNLOADED: ProgressKind.FINISHED,
            DownloadStatus.SKIPPED: ProgressKind.SKIPPED,
            DownloadStatus.FAILED: ProgressKind.FAILED,
        }
        for result in results:
            events = []
            if result.status is DownloadStatus.DOWNLOADED:
                events.append(ProgressEvent(ProgressKind.BYTES, result.recording_id, result.size))
            events.append(
                ProgressEvent(
                    kinds[result.status], result.recording_id, total=result.size, result=result
                )
            )
            for event in events:
                try:
                    self.on_progress(event)
                except Exception:
                    logger.exception("on_progress callback failed; progress reporting continues")


def _session_config(session: AsyncSession) -> _SessionConfig:
    media_timeout = session._media_timeout
    return _SessionConfig(
        auth_id=session.auth_id,
        auth_token=session._token.value,
        base_url=str(session.base_url),
        trusted_hosts=session.trusted_hosts,
        timeout=session.timeout,
        max_retries=session.max_retries,
        connect_timeout=media_timeout.sock_connect or 0.0,
        read_timeout=media_timeout.sock_read or 0.0,
    )


def _task_error(err: BaseException) -> str:
    """One line for a failed task: Ray's exception type and the first line of its text."""
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first.strip()}"[:500]
