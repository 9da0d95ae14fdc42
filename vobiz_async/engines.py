"""Every core of one machine: `ProcessEngine`, an archive job's shards in worker processes.

The engine decides only where a batch's items run, as `scaleout.RayEngine` does on Ray: the
driver's batch core (`batch.Batch`) takes the listing once (ids, repeats, unusable entries),
the engine cuts it into shards (`scaleout.plan_shards`) and runs them on the standard
library's `ProcessPoolExecutor` (spawn context), one shard per worker at a time. The pool
starts while the driver lists; a worker that is ready while the listing still runs gets a
shard of what is listed so far (in listing order, in a job whose shard journal has no
finished shard yet), and the rest is cut by `plan_shards` at the listing's end. Such a
shard's key is its ids' as any other's, but its boundaries follow the listing's timing: a
re-run cuts the whole plan and skips by the journal only shards that match it; the others
are sent again, and their workers skip what is stored with a stat (nothing is fetched
twice). Each worker
has its own event loop, `AsyncSession` (opened with `AsyncSession.from_config`) and local
engine (`Downloader`, no index), writing into the same destination, and sends its results
back as plain data. The driver's batch core is the only writer of the index; a shard is
recorded as finished in the shard journal (`journal.ShardJournal`, beside the index) after
its recordings are indexed, so a re-run skips finished shards and redoes the rest (a
redone shard fetches only what is not stored yet, resuming `.part` files).

The driver's lane (`in_driver=True`, the CLI's way): the driver is one of the workers. It
runs shards with the local engine on its own loop and session, beside its listing and
index writes, and one process fewer is spawned; its results reach the batch core as a
worker's do. Helper threads (`offload.py`) are left out of every lane when the lanes cover
every CPU: each core then runs a lane of its own, and a hand-over only costs.

Credentials: the session's `SessionConfig` reaches the workers through the pool's
initializer, pickled over the pipe a spawned worker reads at start: never in a command line
(`/proc/<pid>/cmdline` is `python -c 'from multiprocessing.spawn import spawn_main; ...'`),
a process name or a log. A worker inherits its parent's environment, so every environment
variable holding the token is left out while the workers are spawned (they all are before
the first shard: `_spawn`), and while the pool is made, whose first lock starts
multiprocessing's resource tracker, another process inheriting the environment.

One politeness: the workers of a job share a `SharedPace` (three numbers in shared memory:
the rate-limit decreases seen so far, the time new requests are held until, and the rate
the latest signalling worker had measured). A 429 on one worker's request holds every
worker's new requests for its Retry-After and lowers each worker's limit and start rate
once (`SharedGate`); a worker that has measured no success yet sets its start rate from the
signalling worker's rate instead of starting unpaced after the hold.

Stops: the workers ignore SIGINT (the driver decides) and die with the driver
(`PR_SET_PDEATHSIG`); a cancelled run (Ctrl-C, SIGTERM in the CLI) terminates them, and
their `.part` files stay for a re-run. A worker that dies (kill -9) breaks the pool: the
shards in flight then are retried in a fresh pool up to `max_retries` times, after which
their recordings fail (a re-run resumes them); shards already finished stay recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

import attrs

from .batch import Batch, BatchOptions, item_id
from .download import Downloader
from .errors import ConfigurationError, DownloadError
from .journal import SHARDS_SUFFIX, ShardJournal
from .manifest import Manifest, ManifestEntry
from .models import Recording
from .offload import OffloadPolicy
from .pacing import PacingGate, PacingPolicy, PacingReport
from .results import DownloadResult, DownloadStatus, ProgressEvent, ProgressKind
from .scaleout import ScaleOutReport, WorkerShare, plan_shards
from .session import AsyncSession, SessionConfig
from .sinks import DirectorySink, sink_for
from .types import ApiClient, Destination, Item, Source

__all__ = [
    "MAX_WORKERS",
    "PROCESS_MIN_CONCURRENCY",
    "PROCESS_MIN_RECORDINGS",
    "ProcessEngine",
    "SharedGate",
    "SharedPace",
    "choose_engine",
    "default_workers",
    "shard_size_for",
    "usable_cpus",
]

logger = logging.getLogger("vobiz_async")

#: `ProcessEngine(workers=None)` runs one worker per CPU, at most this many.
MAX_WORKERS = 8
_PR_SET_PDEATHSIG = 1


#: The job size (recordings) and the transfers in flight from which `choose_engine` picks
#: the process engine. A second interpreter pays only when one process is short of CPU:
#: many transfers at once on a job long enough to amortise spawning, imports and the
#: listing taken whole before the first shard. Measured with the CLI on this project's
#: 2-CPU machine, quiet (load under 1), wan profile, medians of 3 interleaved runs,
#: process/local wall time: 16 in flight 1.08x at 2,000 recordings and 1.07x at 5,000;
#: 64 in flight 1.24x at 1,000, 1.07x at 2,000; 128 in flight 1.10x at 500, 0.94x at
#: 1,000, 0.79x at 2,000; 256 in flight 0.81x at 1,000, 0.72x at 2,000
#: (benchmarks/RESULTS.md, "The process engine's crossover").
PROCESS_MIN_RECORDINGS = 1000
PROCESS_MIN_CONCURRENCY = 128


def usable_cpus() -> int:
    """The CPUs this process may run on: `os.process_cpu_count()` (Python 3.13), else the
    affinity mask (Linux), else every CPU of the machine."""
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        return int(counter() or 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """One worker per CPU this process may use, at most MAX_WORKERS."""
    return max(1, min(MAX_WORKERS, usable_cpus()))


#: Shards per worker `shard_size_for` aims at, and the sizes it picks from: a fixed ladder
#: (as `ray_runtime.shard_size_for`'s), so a re-run of a job that grew a little cuts the
#: same shards and the shard journal still knows the finished ones.
SHARDS_PER_WORKER = 4
SHARD_SIZES = (10, 25, 50, 100, 250, 500)


def shard_size_for(recordings: int | None, workers: int) -> int:
    """A shard size for a job of `recordings` on `workers` workers: the largest of
    SHARD_SIZES giving about SHARDS_PER_WORKER shards each (a shard's results, and with
    them the progress display and the index, arrive when it ends, and a last slow shard
    holds the end of the job); the largest when the size is unknown."""
    if recordings is None:
        return SHARD_SIZES[-1]
    target = -(-recordings // (max(1, workers) * SHARDS_PER_WORKER))
    fitting = [size for size in SHARD_SIZES if size <= target]
    return fitting[-1] if fitting else SHARD_SIZES[0]


def choose_engine(cpus: int, recordings: int | None, concurrency: int) -> str:
    """The CLI's default engine: `"process"` when this machine has 2 CPUs or more, the job
    is known to hold at least PROCESS_MIN_RECORDINGS recordings and at least
    PROCESS_MIN_CONCURRENCY transfers run at once; else `"local"` (a job of unknown size
    stays local: the wrong guess costs less there)."""
    if cpus < 2 or recordings is None or recordings < PROCESS_MIN_RECORDINGS:
        return "local"
    if concurrency < PROCESS_MIN_CONCURRENCY:
        return "local"
    return "process"


# -- one politeness across processes ---------------------------------------------------------


class SharedPace:
    """What the workers of one job share of their pacing, in shared memory: how many fresh
    rate-limit decreases any worker applied, until when (`time.monotonic`, the same clock
    in every process of the machine) new requests are held, and the successes per second
    the worker that published the latest fresh one had measured. It travels to a worker
    only when the worker is spawned (the pool's initializer)."""

    def __init__(self, context: SpawnContext) -> None:
        self._cells = context.Array("d", 3)

    def publish(self, fresh: bool, hold_until: float, rate: float = 0.0) -> None:
        """A worker saw a rate-limit signal: count it if it lowered that worker's pace (with
        the rate it measured then), and hold everyone's new requests until `hold_until` at
        least."""
        with self._cells.get_lock():
            if fresh:
                self._cells[0] += 1
                self._cells[2] = rate
            self._cells[1] = max(self._cells[1], hold_until)

    def read(self) -> tuple[int, float, float]:
        """`(fresh decreases published by every worker, hold until, the latest one's
        measured rate)`."""
        with self._cells.get_lock():
            return int(self._cells[0]), self._cells[1], self._cells[2]


class SharedGate(PacingGate):
    """A worker's pacing gate that shares its signals through a `SharedPace`: a signal here
    is published; before each request, another worker's news is taken in, one decrease per
    fresh signal published elsewhere, and their hold; a gate that has measured no success
    yet takes the signalling gate's measured rate for its start rate after the hold."""

    def __init__(self, concurrency: int, pace: SharedPace, *, policy: PacingPolicy) -> None:
        super().__init__(concurrency, policy=policy)
        self._pace = pace
        self._own = 0  # fresh decreases this gate published
        self._taken = 0  # fresh decreases of other workers taken in

    async def acquire(self) -> int:
        self._take_news()
        return await super().acquire()

    def on_rate_limited(
        self, retry_after: float | None = None, ticket: int | None = None, rate_hint: float = 0.0
    ) -> None:
        before = self.state.decreases
        super().on_rate_limited(retry_after, ticket, rate_hint)
        state = self.state
        fresh = state.decreases != before
        self._own += fresh
        self._pace.publish(fresh, self._to_shared(state.hold_until), state.signalled_at_rate)

    def _to_shared(self, loop_time: float) -> float:
        loop = asyncio.get_running_loop()
        return loop_time - loop.time() + time.monotonic()

    def _take_news(self) -> None:
        decreases, hold_until, rate = self._pace.read()
        hold = max(0.0, hold_until - time.monotonic())
        others = decreases - self._own
        if others > self._taken:
            self._taken = others
            PacingGate.on_rate_limited(self, hold, None, rate)  # current: one decrease
        elif hold > 0 and self._to_shared(self.state.hold_until) < hold_until - 0.001:
            PacingGate.on_rate_limited(self, hold, -1)  # an old round's: the hold only


# -- the worker side ------------------------------------------------------------------------

#: A worker process's share of the job, set by the pool's initializer.
_WORKER: dict[str, Any] = {}


@attrs.frozen
class _ShardJob:
    """A shard's work as a worker receives it (pickled over the pool's pipe)."""

    items: tuple[Item, ...]
    #: An absolute folder path, or `s3://bucket/prefix/`.
    dest: str
    options: BatchOptions
    known: tuple[ManifestEntry, ...]
    prove: bool
    #: The helper threads' policy for this job's lanes (none when every CPU runs a lane).
    offload: OffloadPolicy | None = None


@attrs.frozen
class _ShardOutcome:
    pid: int
    results: list[DownloadResult]
    seconds: float
    rate_limit: PacingReport | None


def _worker_start(config: SessionConfig, pace: SharedPace) -> None:
    """The pool's initializer: keep the job's settings; leave Ctrl-C to the driver; die
    with the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _WORKER["config"] = config
    _WORKER["pace"] = pace
    # One event loop, session and pacing gate for every shard this worker runs: the
    # connections stay open from shard to shard, and so does what the gate learned of the
    # server's pace (a fresh gate per shard met every rate limit anew).
    _WORKER["loop"] = asyncio.new_event_loop()
    multiprocessing.util.Finalize(None, _worker_end, exitpriority=10)


def _worker_end() -> None:
    """At the worker's exit (the pool shut): close its session, then its loop."""
    loop: asyncio.AbstractEventLoop | None = _WORKER.pop("loop", None)
    if loop is None:
        return
    session: AsyncSession | None = _WORKER.pop("session", None)
    if session is not None:
        loop.run_until_complete(session.close())
    loop.close()


def _hello() -> int:
    return os.getpid()


def _run_shard(job: _ShardJob) -> _ShardOutcome:
    """One shard in a worker: the local engine on the worker's loop, session and gate."""
    started = time.monotonic()
    loop: asyncio.AbstractEventLoop = _WORKER["loop"]
    results, rate_limit = loop.run_until_complete(_shard_main(job))
    return _ShardOutcome(os.getpid(), results, time.monotonic() - started, rate_limit)


def _worker_session() -> tuple[AsyncSession, SharedGate | None]:
    """The worker's session (opened on its first shard) and its gate (None before the
    first shard made it)."""
    session: AsyncSession | None = _WORKER.get("session")
    if session is None:
        session = _WORKER["session"] = AsyncSession.from_config(_WORKER["config"])
    return session, _WORKER.get("gate")


async def _shard_main(job: _ShardJob) -> tuple[list[DownloadResult], PacingReport | None]:
    session, gate = _worker_session()
    if gate is None:  # a job's shards all have one concurrency: the first shard's gate
        gate = _WORKER["gate"] = SharedGate(
            job.options.concurrency, _WORKER["pace"], policy=_policy(job.options)
        )
    return await _run_lane(session, gate, job)


def _policy(options: BatchOptions) -> PacingPolicy:
    return PacingPolicy(options.concurrency, max_hold=max(0.0, options.max_paced_wait))


async def _run_lane(
    session: AsyncSession, gate: PacingGate, job: _ShardJob
) -> tuple[list[DownloadResult], PacingReport | None]:
    """One shard on this process's loop (a worker's, or the driver's own lane): the local
    engine without an index, its results collected as plain data."""
    results: list[DownloadResult] = []

    def collect(event: ProgressEvent) -> None:
        if event.result is not None:
            results.append(event.result)

    options = attrs.evolve(job.options, on_progress=collect, manifest=None)
    downloader = Downloader(
        session,
        job.dest,
        lookup=session.recordings.get,
        known={entry.recording_id: entry for entry in job.known},
        prove_stored=job.prove,
        gate=gate,
        offload=job.offload,
        **attrs.asdict(options, recurse=False),
    )
    report = await downloader.run(job.items)
    return results, report.rate_limit  # the lane's gate so far: the latest one counts


# -- the driver -----------------------------------------------------------------------------


@attrs.frozen
class _Shard:
    index: int
    key: str
    items: tuple[Item, ...]


class ProcessEngine:
    """Runs a `download_many` job's shards in worker processes of this machine.

    `workers=None` runs one per CPU (at most MAX_WORKERS); the job's `concurrency` is split
    evenly among them. `shard_size` recordings make a shard (None: sized from the listing by
    `shard_size_for`, about SHARDS_PER_WORKER shards a worker); a shard whose worker died is
    retried in a fresh pool up to `max_retries` times.

    `in_driver=True` makes the driver one of the `workers`: it runs shards on its own loop
    and session beside its listing and index writes, and `workers - 1` processes are
    spawned (none for `workers=1`). That saves an interpreter's start-up and memory (about
    0.3 s of CPU and 45 MB on this project's machine) and the driver's idle core; the CLI
    runs the process engine this way. Its shares in the report then carry the driver's pid,
    which `pids` (the spawned workers) does not hold.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        shard_size: int | None = None,
        max_retries: int = 1,
        in_driver: bool = False,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError("workers must be >= 1")
        if shard_size is not None and shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.workers = default_workers() if workers is None else workers
        self.shard_size = shard_size
        self.max_retries = max_retries
        self.in_driver = in_driver
        self._ahead: _Workers | None = None
        #: The pids of the current run's workers (for a person, or a test, to look at).
        self.pids: set[int] = set()

    def __repr__(self) -> str:
        driver = ", in_driver=True" if self.in_driver else ""
        return f"ProcessEngine(workers={self.workers}, shard_size={self.shard_size}{driver})"

    @property
    def processes(self) -> int:
        """The worker processes a run spawns: `workers`, less the driver's own lane."""
        return self.workers - 1 if self.in_driver else self.workers

    def start(self, session: ApiClient) -> None:
        """Start spawning the workers now, ahead of `run`, which takes them (the CLI does
        while it reads the listing's first page to choose its engine). Call it from the
        event loop `run` will use; `close` shuts workers no run took."""
        if self._ahead is None:
            self._ahead = _Workers(self, _travelling(session, self.processes).config)
            self._ahead.warm_up()

    async def close(self) -> None:
        """Shut the workers `start` spawned when no `run` took them."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            await ahead.cool_down()

    async def run(
        self,
        session: ApiClient,
        source: Source,
        dest: Destination,
        options: BatchOptions,
    ) -> ScaleOutReport:
        """List once, cut shards, run them in worker processes, record results."""
        if options.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        driver = _travelling(session, self.processes)
        target = _target(dest)
        started = time.monotonic()
        index = _open_index(options.manifest)
        batch = Batch(
            sink_for(target, layout=options.layout),
            index=index,
            on_progress=options.on_progress,
            overwrite=options.overwrite,
        )
        journal = None
        pools, self._ahead = self._ahead or _Workers(self, driver.config), None
        pools.warm_up()
        run = _Run(self, driver, pools, batch, target, options)
        try:
            journal = None if index is None else ShardJournal(Path(str(index.path) + SHARDS_SUFFIX))
            run.journal = journal
            finished = set() if journal is None or options.overwrite else journal.finished()
            await run.execute(source, finished)
        finally:
            await pools.cool_down()
            if journal is not None:
                journal.close()
            if index is not None and index is not options.manifest:
                index.close()
        return batch.report(
            time.monotonic() - started,
            cls=ScaleOutReport,
            rate_limit=run.rate_limit(),
            workers=run.worker_shares(),
            failed_shards=[],
            shards=run.cut,
            shards_skipped=run.skipped,
            shard_seconds=run.shard_seconds,
        )


def _made(opening: asyncio.Future[ProcessPoolExecutor | None]) -> ProcessPoolExecutor | None:
    """The pool a finished `opening` made (None if it failed or was cancelled)."""
    if opening.cancelled() or opening.exception() is not None:
        return None
    return opening.result()


def _raise_if_failed(lister: asyncio.Future[None]) -> None:
    """The listing's error, once it failed: the run stops (its workers with it)."""
    if lister.done() and not lister.cancelled() and lister.exception() is not None:
        lister.result()


def _travelling(session: ApiClient, processes: int) -> AsyncSession:
    """The driver's session, once its settings are known to travel to `processes` workers."""
    if not isinstance(session, AsyncSession):
        raise ConfigurationError("the process engine needs an AsyncSession, to open one per worker")
    if processes and session.config.resolver is not None:
        raise ConfigurationError(
            "the session's custom resolver cannot travel to worker processes; run this job "
            "with the local engine or without a resolver"
        )
    return session


def _target(dest: Destination) -> str:
    """The destination as every worker opens it: an absolute folder, or an `s3://` URL."""
    if isinstance(dest, DirectorySink):
        return str(Path(dest.root).absolute())
    if isinstance(dest, str) and dest.startswith("s3://"):
        return dest
    if not isinstance(dest, str | os.PathLike):
        raise ConfigurationError(
            "the process engine archives into a folder or an s3:// URL; other Sink objects "
            "are not supported (use the local engine)"
        )
    return str(Path(dest).absolute())


def _open_index(manifest: Manifest | str | os.PathLike[str] | None) -> Manifest | None:
    if isinstance(manifest, Manifest) or manifest is None:
        return manifest
    return Manifest(manifest)


@contextlib.contextmanager
def _without(secret: str) -> Iterator[None]:
    """This process's environment without a variable holding `secret`, for the block."""
    hidden = {k: v for k, v in os.environ.items() if secret and secret in v}
    for key in hidden:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(hidden)


class _Workers:
    """A job's worker processes: the pool (started ahead of the run, or while the driver
    lists; a fresh one after a pool broke) and the job's one pace, which every pool and the
    driver's lane share."""

    def __init__(self, engine: ProcessEngine, config: SessionConfig) -> None:
        self.engine = engine
        self.config = config
        self.pace: SharedPace | None = None
        self._warm: asyncio.Future[ProcessPoolExecutor | None] | None = None

    def warm_up(self) -> None:
        """Start the workers now: spawning them and their imports (about 0.3 s each) then
        overlap the listing (or the CLI's first page) instead of following it."""
        if self._warm is None:
            self._warm = asyncio.ensure_future(self._open(self.engine.processes))

    async def cool_down(self) -> None:
        """Shut a warm pool no shard took (the listing failed, or had nothing to run)."""
        warm, self._warm = self._warm, None
        if warm is None:
            return
        warm.cancel()
        with contextlib.suppress(BaseException):
            self.end(await warm, {})

    async def take(self) -> ProcessPoolExecutor | None:
        """The warm pool, the first time; a fresh one after a pool broke."""
        warm, self._warm = self._warm, None
        if warm is not None:
            return await warm
        return await self._open(self.engine.processes)

    async def _open(self, workers: int) -> ProcessPoolExecutor | None:
        """A pool of `workers` started processes (shut again if starting them fails); none
        for no worker (the driver's lane alone)."""
        if workers < 1:
            return None
        context = multiprocessing.get_context("spawn")
        # The first lock made here starts multiprocessing's resource tracker, a process of
        # its own that inherits this environment: it, too, starts without the token.
        with _without(self.config.auth_token.value):
            if self.pace is None:
                self.pace = SharedPace(context)
            pool = ProcessPoolExecutor(
                workers,
                mp_context=context,
                initializer=_worker_start,
                initargs=(self.config, self.pace),
            )
        try:
            await self._spawn(pool, workers)
        except BaseException:
            self.end(pool, {}, kill=True)
            raise
        return pool

    async def _spawn(self, pool: ProcessPoolExecutor, workers: int) -> None:
        """Start every worker now, without the token in their environment: a spawn-context
        pool starts one per submission while none is idle."""
        before = {p.pid for p in multiprocessing.active_children()}
        with _without(self.config.auth_token.value):
            hellos = [asyncio.wrap_future(pool.submit(_hello)) for _ in range(workers)]
        started = {p.pid for p in multiprocessing.active_children()} - before
        self.engine.pids = {pid for pid in started if pid is not None}
        await asyncio.gather(*hellos)

    def end(
        self,
        pool: ProcessPoolExecutor | None,
        running: dict[asyncio.Future[_ShardOutcome], _Shard],
        *,
        kill: bool = False,
    ) -> None:
        """Shut the pool; workers still busy (a cancelled run) are terminated, their `.part`
        files left for a re-run."""
        if pool is None:
            return
        if running or kill:
            for future in running:
                future.cancel()
            for pid in self.engine.pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        pool.shutdown(wait=True, cancel_futures=True)


class _Run:
    """One job's driver state: the batch core, the places, the journal, the pool, the
    driver's own lane."""

    def __init__(
        self,
        engine: ProcessEngine,
        session: AsyncSession,
        pools: _Workers,
        batch: Batch,
        target: str,
        options: BatchOptions,
    ) -> None:
        self.engine = engine
        self.session = session
        self.pools = pools
        self.batch = batch
        self.target = target
        hosts = None if options.trusted_hosts is None else frozenset(options.trusted_hosts)
        self.options = attrs.evolve(options, on_progress=None, manifest=None, trusted_hosts=hosts)
        self.places: dict[str, tuple[Item, int]] = {}
        self.journal: ShardJournal | None = None
        self.shard_seconds: list[float] = []
        self._shares: dict[int, int] = {}
        #: Each worker's pacing so far (its gate lives across its shards): the latest report.
        self._reports: dict[int, PacingReport] = {}
        self._tries: dict[int, int] = {}
        #: Shards cut so far (their numbers), and how many an earlier run had finished.
        self.cut = 0
        self.skipped = 0
        #: Shards cut and not yet submitted; the listed items not in a shard yet.
        self.waiting: deque[_Shard] = deque()
        self._unassigned: list[Item] = []
        #: Whether shards may be cut while the listing runs (a job with no finished shard).
        self._early = False
        #: Workers without a shard while a pool runs (0 while none does).
        self._idle = 0
        #: Set when a shard was cut or the listing ended: a pool waiting for work looks.
        self._fed = asyncio.Event()
        #: (pool size, transfers a shard), fixed at the job's first submission.
        self._split: tuple[int, int] | None = None
        self._source: Source | None = None
        #: The driver's own lane (`in_driver`): its gate, and the shard it runs now.
        self._lane_gate: PacingGate | None = None
        self._lane: asyncio.Task[_ShardOutcome] | None = None
        self._pool_broke = False
        #: Helper threads only help when a CPU has no lane of its own to run.
        lanes = engine.workers
        self._offload = OffloadPolicy(threads=0) if lanes >= usable_cpus() else None

    async def _list(self, source: Source, finished: set[str]) -> None:
        """The listing, once, through the batch core, in listing order. While it runs and a
        worker is idle (a job with no finished shard only), the items listed so far are cut
        into a shard at once, in listing order; at its end, the rest by `plan_shards`, and
        shards an earlier run finished are settled from the index."""
        try:
            async with contextlib.aclosing(self.batch.admitted(source)) as items:
                async for place, item in items:
                    self.places[item_id(item)] = (item, place)
                    self._unassigned.append(item)
                    if not self._cut_early() and not self.cut:
                        self._fed.set()  # an idle lane may take what is listed so far
            rest, self._unassigned = self._unassigned, []
            size = self.engine.shard_size or shard_size_for(len(self.places), self.engine.workers)
            for key, chunk in plan_shards(rest, size):
                shard = self._shard(key, chunk)
                if key in finished:
                    self.skipped += 1
                    self.skip([shard])
                else:
                    self.waiting.append(shard)
        finally:
            self._fed.set()

    def _cut_early(self, first: bool = False) -> bool:
        """A shard of the items listed so far, when a lane would otherwise wait for the
        listing's end (whether one was cut): as large as the job's shards, sized from the
        listing's `total_count` when the source tells it (an `AsyncPager` does after its
        first page). With `first` (between two pages), the job's first shard is whatever
        is listed, up to that size: an idle lane starts on the first page."""
        if not self._early or self._idle <= len(self.waiting):
            return False
        total = getattr(self._source, "total_count", None)
        known = total if isinstance(total, int) and total > 0 else None
        size = self.engine.shard_size or shard_size_for(known, self.engine.workers)
        if len(self._unassigned) < size and not (first and self._unassigned and not self.cut):
            return False
        chunk, self._unassigned = self._unassigned[:size], self._unassigned[size:]
        digest = hashlib.sha256("\n".join(item_id(i) for i in chunk).encode()).hexdigest()
        self.waiting.append(self._shard(digest[:32], chunk))
        self._fed.set()
        return True

    def _shard(self, key: str, chunk: list[Item]) -> _Shard:
        shard = _Shard(self.cut, key, tuple(chunk))
        self.cut += 1
        return shard

    def worker_shares(self) -> list[WorkerShare]:
        return [WorkerShare("local", pid, count) for pid, count in self._shares.items()]

    def rate_limit(self) -> PacingReport | None:
        """The workers' pacing, summed: the signals each saw (another worker's news counts
        in each worker that took it in), the lowest limit and rate of any."""
        reports = list(self._reports.values())
        if not reports:
            return None
        rates = [r.lowest_rate for r in reports if r.lowest_rate is not None]
        concurrency, workers = self.options.concurrency, self.engine.workers
        return PacingReport(
            concurrency=concurrency,
            limit=min(concurrency, min(r.limit for r in reports) * workers),
            rate_limited=sum(r.rate_limited for r in reports),
            decreases=sum(r.decreases for r in reports),
            lowest_limit=min(concurrency, min(r.lowest_limit for r in reports) * workers),
            seconds_below=max(r.seconds_below for r in reports),
            lowest_rate=min(rates) if rates else None,
        )

    def settle(self, rid: str, result: DownloadResult) -> None:
        item, place = self.places[rid]
        self.batch.settle(place, result, item if isinstance(item, Recording) else None)

    def skip(self, shards: list[_Shard]) -> None:
        """Shards an earlier run finished: their recordings as the index records them."""
        for shard in shards:
            for item in shard.items:
                self.settle(item_id(item), self.batch.indexed(item_id(item)))

    def fail(self, shard: _Shard, error: DownloadError) -> None:
        for item in shard.items:
            rid = item_id(item)
            self.settle(rid, DownloadResult(rid, DownloadStatus.FAILED, error=error))

    async def execute(self, source: Source, finished: set[str]) -> None:
        """List `source` and run its shards in worker processes, one at a time in each, the
        first ones while the listing still runs (`_list`); a broken pool (a worker died) is
        replaced and the shards it held retried; after a destination-wide stop, the shards
        not started fail unstarted. A listing that fails stops the workers and raises."""
        self._early = not finished
        self._source = source
        lister = asyncio.ensure_future(self._list(source, finished))
        try:
            while self.batch.stopped_by is None and (self.waiting or not lister.done()):
                broken = await self._pool_run(lister)
                for shard in broken:
                    tries = self._tries[shard.index] = self._tries.get(shard.index, 0) + 1
                    if tries > self.engine.max_retries:
                        logger.warning("shard %d failed: a worker process died", shard.index)
                        self.fail(shard, DownloadError(f"shard {shard.index}: its worker died"))
                    else:
                        self.waiting.appendleft(shard)
            await lister  # the listing's error, if it failed
        finally:
            if not lister.done():
                lister.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lister
        error = self.batch.not_started()
        for shard in self.waiting:  # never started: the batch stopped
            for item in shard.items:
                rid = item_id(item)
                self.settle(rid, DownloadResult(rid, DownloadStatus.FAILED, error=error))

    def _split_for(self, listed: bool) -> tuple[int, int]:
        """(workers used, transfers a shard), fixed at the job's first submission: every
        worker while the listing runs, else no more than there are shards."""
        if self._split is None:
            workers = self.engine.workers
            if listed:
                workers = max(1, min(workers, len(self.waiting)))
            per_shard = max(1, self.options.concurrency // workers)
            logger.info("%d workers, %d transfers a shard", workers, per_shard)
            self._split = (workers, per_shard)
        return self._split

    async def _pool_run(self, lister: asyncio.Future[None]) -> list[_Shard]:
        """Run shards from `waiting` in one pool (and the driver's lane, which starts
        without waiting for the pool) until none is left and the listing ended, the batch
        stops or the pool breaks; return the shards a broken pool held."""
        opening = asyncio.ensure_future(self.pools.take())
        pool: ProcessPoolExecutor | None = None
        running: dict[asyncio.Future[_ShardOutcome], _Shard] = {}
        broken: list[_Shard] = []
        self._pool_broke = False
        try:
            while running or (
                (self.waiting or not lister.done())
                and not (broken or self._pool_broke)
                and self.batch.stopped_by is None
            ):
                _raise_if_failed(lister)
                pool = pool or self._ready(opening)
                ready = opening.done()
                if broken or self._pool_broke or not self._fill(pool, ready, running, lister):
                    broken += await self._next(running, opening)
        finally:
            self._idle = 0
            await self._stop_lane()
            if not opening.done():
                opening.cancel()  # a pool still starting is shut as it stops
                await asyncio.wait([opening])
            self.pools.end(pool or _made(opening), running)
        return broken

    def _ready(
        self, opening: asyncio.Future[ProcessPoolExecutor | None]
    ) -> ProcessPoolExecutor | None:
        """The pool `opening` started, once it did (None before, or for no process; a
        worker that died starting breaks this pool: no shard ran in it)."""
        if not opening.done():
            return None
        error = opening.exception()
        if isinstance(error, BrokenProcessPool):
            self._pool_broke = True
            return None
        return opening.result()

    def _fill(
        self,
        pool: ProcessPoolExecutor | None,
        ready: bool,
        running: dict[asyncio.Future[_ShardOutcome], _Shard],
        lister: asyncio.Future[None],
    ) -> bool:
        """Give waiting shards to free lanes (the driver's first, then the pool's once it
        is `ready`); while the listing runs, cut a shard of what was listed for a lane
        still free. Whether a shard was cut for a free lane (to be given at once)."""
        listed = lister.done()
        workers, per_shard = self._split_for(listed)
        self._start_lane(running, per_shard)
        while pool is not None and self.waiting and len(running) < workers:
            if self.batch.stopped_by is not None:
                break
            try:
                future = pool.submit(_run_shard, self._job(self.waiting[0], per_shard))
            except BrokenProcessPool:  # a worker died: the shards it held end broken
                self._pool_broke = True
                break
            running[asyncio.wrap_future(future)] = self.waiting.popleft()
        lanes = self.engine.in_driver + (self.engine.processes if ready else 0)
        self._idle = 0 if listed else min(workers, lanes) - len(running)
        cut = False
        while self._idle > len(self.waiting) and self._cut_early(first=True):
            cut = True  # what was listed before the lanes were free
        return cut and self.batch.stopped_by is None

    async def _next(
        self,
        running: dict[asyncio.Future[_ShardOutcome], _Shard],
        opening: asyncio.Future[ProcessPoolExecutor | None],
    ) -> list[_Shard]:
        """Wait for a shard to end (collected here), one to be cut or the pool to be ready;
        the shards that ended with the pool broken."""
        self._fed.clear()
        fed: asyncio.Future[Any] = asyncio.ensure_future(self._fed.wait())
        waits = [*running, fed] if opening.done() else [*running, fed, opening]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            fed.cancel()
        broken = []
        for ended in [future for future in running if future.done()]:
            shard = running.pop(ended)
            if isinstance(ended.exception(), BrokenProcessPool):
                broken.append(shard)
            else:
                self._collect(shard, ended.result())
        return broken

    def _start_lane(
        self, running: dict[asyncio.Future[_ShardOutcome], _Shard], per_shard: int
    ) -> None:
        """The driver's lane (`in_driver`) takes the next waiting shard when it is free."""
        if not self.engine.in_driver or not self.waiting or self.batch.stopped_by is not None:
            return
        if self._lane is not None and not self._lane.done():
            return
        shard = self.waiting.popleft()
        self._lane = asyncio.ensure_future(self._drive(self._job(shard, per_shard)))
        running[self._lane] = shard

    async def _drive(self, job: _ShardJob) -> _ShardOutcome:
        """A shard on the driver's loop and session, beside its listing and index writes;
        its gate shares the workers' pace."""
        started = time.monotonic()
        if self._lane_gate is None:
            policy = _policy(job.options)
            concurrency = job.options.concurrency
            self._lane_gate = (
                PacingGate(concurrency, policy=policy)
                if self.pools.pace is None
                else SharedGate(concurrency, self.pools.pace, policy=policy)
            )
        results, rate_limit = await _run_lane(self.session, self._lane_gate, job)
        return _ShardOutcome(os.getpid(), results, time.monotonic() - started, rate_limit)

    async def _stop_lane(self) -> None:
        """Stop the driver's lane if it still runs (the run ends early): its `.part` files
        stay, as a worker's do."""
        lane, self._lane = self._lane, None
        if lane is None or lane.done():
            return
        lane.cancel()
        await asyncio.wait([lane])
        if not lane.cancelled():
            lane.exception()  # retrieved: the run's own error is the one raised

    def _job(self, shard: _Shard, concurrency: int) -> _ShardJob:
        known: list[ManifestEntry] = []
        if not self.options.overwrite:
            for item in shard.items:
                entry = self.batch.entry(item_id(item))
                if entry is not None:
                    known.append(entry)
        return _ShardJob(
            items=shard.items,
            dest=self.target,
            options=attrs.evolve(self.options, concurrency=concurrency),
            known=tuple(known),
            prove=self.batch.index is not None,
            offload=self._offload,
        )

    def _collect(self, shard: _Shard, outcome: _ShardOutcome) -> None:
        """A finished shard's results, to the batch core (which indexes them); then the
        shard, last, to the journal."""
        self.shard_seconds.append(outcome.seconds)
        self._shares[outcome.pid] = self._shares.get(outcome.pid, 0) + len(outcome.results)
        if outcome.rate_limit is not None:
            self._reports[outcome.pid] = outcome.rate_limit
        items = {item_id(item) for item in shard.items}
        for result in outcome.results:
            rid = result.recording_id
            if rid not in items:
                continue  # not one of this shard's recordings, or reported twice
            items.discard(rid)
            if result.status is DownloadStatus.DOWNLOADED:
                self.batch.emit(ProgressEvent(ProgressKind.BYTES, rid, result.size))
            self.settle(rid, result)
        for rid in items:
            error = DownloadError(f"shard {shard.index} reported no result for {rid}")
            self.settle(rid, DownloadResult(rid, DownloadStatus.FAILED, error=error))
        whole = not items and all(r.ok for r in outcome.results)
        if self.journal is not None and whole and self.batch.stopped_by is None:
            self.journal.finish(shard.key, shard.items)
