"""One bulk download spread over several worker processes: the CLI's `--workers`.

One event loop saturates one core long before loopback or a LAN does (experiment 11 in
benchmarks/RESULTS.md). The parent lists, deals the recordings out to the least busy, and
downloads its own share; each worker process is an ordinary `Downloader` with its own
session and pool, and streams every item's result back as soon as it has one. All share the
index (the manifest): each entry is one SQLite transaction, and processes take turns to
write.

The pipes carry length-prefixed pickle frames. Parent and workers are the same program, and
nothing else reads or writes these pipes. Parent to worker: a `WorkerConfig`, then
`(index, item)` per item; end of input means no more items. Worker to parent:
`("ready",)` once its event loop runs, `("bytes", n)` at most every 100 ms and
`("done", index, DownloadResult)` per item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .download import (
    DISK_FULL_NOT_STARTED,
    Downloader,
    DownloadReport,
    DownloadResult,
    DownloadStatus,
    Item,
    ProgressCallback,
    ProgressEvent,
    ProgressKind,
    Source,
    _is_disk_full,
    _item_id,
    _iterate,
    _result_event,
    _usable_cpus,
)
from .errors import DiskError, DownloadError, ResponseValidationError, VobizError
from .models import InvalidRecording

if TYPE_CHECKING:
    from .session import AsyncSession

__all__ = ["configure_logging", "default_workers", "download_in_workers", "worker_main"]

logger = logging.getLogger("vobiz_async")

#: Items a worker holds (in flight plus queued) per transfer slot.
WINDOW_PER_SLOT = 2
#: How long a worker gets to stop after the parent forwards Ctrl-C.
STOP_GRACE = 10.0
_FRAME = struct.Struct(">I")
#: Workers import this very copy of the package, installed or not.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_BYTES_INTERVAL = 0.1


def configure_logging(debug: bool) -> None:
    """The CLI's logging, in the parent and in every worker: warnings, or all with --debug."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        logging.getLogger("aiohttp").setLevel(logging.ERROR)


def default_workers() -> int:
    """One process per two usable CPUs, at most 4: each one's event loop and hashing helpers
    keep about two busy (beyond 4 the server or disk is the limit). On two CPUs a second
    process changed the wall time by -8 % to +7 % and doubled the memory
    (benchmarks/RESULTS.md, experiment 25)."""
    return max(1, min(4, _usable_cpus() // 2))


@attrs.frozen
class WorkerConfig:
    """Everything a worker needs to rebuild the parent's session and downloader."""

    auth_id: str
    auth_token: str = attrs.field(repr=False)
    base_url: str
    trusted_hosts: frozenset[str]
    timeout: float
    max_retries: int
    connect_timeout: float
    read_timeout: float
    dest: str
    concurrency: int
    manifest: str | None
    overwrite: bool
    max_attempts: int
    debug: bool


def _frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(body)) + body


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or raise `asyncio.IncompleteReadError` at the end of the stream."""
    (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return pickle.loads(await reader.readexactly(size))  # noqa: S301 - our own child/parent


# -- the parent -------------------------------------------------------------------------


@attrs.define(eq=False)
class _Lane:
    """Somewhere items are downloaded: the parent's own downloader or a worker process."""

    window: int
    #: Items handed over and not yet answered: index -> recording id.
    outstanding: dict[int, str] = attrs.field(factory=dict)
    alive: bool = True

    async def send(self, index: int, item: Item) -> None:
        raise NotImplementedError

    def close_input(self) -> None:
        raise NotImplementedError


@attrs.define(eq=False)
class _LocalLane(_Lane):
    """The parent's share, downloaded in its own event loop (no interpreter to start)."""

    queue: asyncio.Queue[tuple[int, Item] | None] = attrs.field(factory=asyncio.Queue)

    async def send(self, index: int, item: Item) -> None:
        self.queue.put_nowait((index, item))

    def close_input(self) -> None:
        self.queue.put_nowait(None)


@attrs.define(eq=False)
class _Worker(_Lane):
    """The parent's handle on one worker process."""

    proc: asyncio.subprocess.Process | None = None
    #: Its event loop runs, so SIGINT cancels it cleanly.
    ready: bool = False

    @property
    def process(self) -> asyncio.subprocess.Process:
        assert self.proc is not None
        return self.proc

    async def send(self, index: int, item: Item) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(_frame((index, item)))
        await stdin.drain()

    def close_input(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()


def _shares(total: int, parts: int) -> list[int]:
    """`total` transfer slots split as evenly as possible over `parts` workers."""
    return [total // parts + (i < total % parts) for i in range(parts)]


async def _spawn(config: WorkerConfig) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from vobiz_async.workers import worker_main; worker_main()",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        # Its own process group: a terminal's Ctrl-C reaches the parent alone, which then
        # stops each worker exactly once.
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(_frame(config))
    return proc


async def _stop(worker: _Worker) -> None:
    """Ask a worker to stop as after Ctrl-C (its `.part` files stay), then make sure.

    A worker still starting up has nothing to lose and no handler for SIGINT yet (it would
    print a traceback), so it is killed outright. Killing is safe at any point anyway: a
    `.part` file is never renamed before it is verified, and index entries are transactions.
    """
    proc = worker.process
    if proc.returncode is not None:
        return
    if worker.ready:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def download_in_workers(
    session: AsyncSession,
    source: Source,
    dest: str | os.PathLike[str],
    *,
    workers: int,
    concurrency: int = 16,
    on_progress: ProgressCallback | None = None,
    manifest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    max_attempts: int = 5,
    debug: bool = False,
) -> DownloadReport:
    """`download_many` spread over `workers` processes sharing `concurrency` transfers.

    This process is one of them: it lists, deals items out to the least busy, and downloads
    its own share; `workers - 1` child processes download the rest. Same contract as
    `download_many`: a result per input item, in input order; an item a worker could not
    finish (the process died) is a failed result, never a missing one.
    """
    if workers < 1 or concurrency < 1:
        raise ValueError("workers and concurrency must be >= 1")
    started = time.monotonic()
    media_timeout = session._media_timeout
    base = WorkerConfig(
        auth_id=session.auth_id,
        auth_token=session._token.value,
        base_url=str(session.base_url),
        trusted_hosts=session.trusted_hosts,
        timeout=session.timeout,
        max_retries=session.max_retries,
        connect_timeout=media_timeout.sock_connect or 0.0,
        read_timeout=media_timeout.sock_read or 0.0,
        dest=os.fspath(dest),
        concurrency=1,
        manifest=None if manifest is None else os.fspath(manifest),
        overwrite=overwrite,
        max_attempts=max_attempts,
        debug=debug,
    )
    own_share, *shares = _shares(concurrency, min(workers, concurrency))
    local = _LocalLane(window=own_share * WINDOW_PER_SLOT)
    processes: list[_Worker] = []
    lanes: list[_Lane] = [local]
    tasks: list[asyncio.Task[None]] = []
    results: list[DownloadResult | None] = []
    slot_freed = asyncio.Event()
    disk_full = False

    def settle(lane: _Lane, index: int, result: DownloadResult) -> None:
        nonlocal disk_full
        lane.outstanding.pop(index, None)
        slot_freed.set()
        if results[index] is not None:
            return
        results[index] = result
        if _is_disk_full(result.error):
            disk_full = True
        if on_progress is not None:
            on_progress(_result_event(result))

    def fail(lane: _Lane, index: int, recording_id: str, error: VobizError) -> None:
        settle(lane, index, DownloadResult(recording_id, DownloadStatus.FAILED, error=error))

    def bytes_done(count: int) -> None:
        if on_progress is not None:
            on_progress(ProgressEvent(ProgressKind.BYTES, "", count))

    async def least_busy() -> _Lane | None:
        while alive := [lane for lane in lanes if lane.alive]:
            lane = min(alive, key=lambda lane: len(lane.outstanding))
            if len(lane.outstanding) < lane.window:
                return lane
            slot_freed.clear()
            await slot_freed.wait()
        return None

    async def feed() -> None:
        seen: set[str] = set()
        async with contextlib.aclosing(_iterate(source)) as items:
            async for item in items:
                if isinstance(item, InvalidRecording):
                    if item.recording_id is not None:
                        index = len(results)
                        results.append(None)
                        problem = f"the listing's object is unusable: {item.problem}"
                        fail(local, index, item.recording_id, ResponseValidationError(problem))
                    continue
                index, recording_id = len(results), _item_id(item)
                results.append(None)
                if recording_id in seen:  # a repeated input, as `download_many` treats it
                    settle(local, index, DownloadResult(recording_id, DownloadStatus.SKIPPED))
                    continue
                seen.add(recording_id)
                if disk_full:
                    fail(local, index, recording_id, DiskError(DISK_FULL_NOT_STARTED))
                    continue
                lane = await least_busy()
                if lane is None:
                    fail(local, index, recording_id, DownloadError("no worker process is left"))
                    continue
                lane.outstanding[index] = recording_id
                # If it died, collect() fails what it held, this item included.
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await lane.send(index, item)
        for lane in lanes:
            lane.close_input()

    async def download_locally() -> None:
        taken: dict[str, int] = {}

        async def items() -> AsyncIterator[Item]:
            while (job := await local.queue.get()) is not None:
                taken[_item_id(job[1])] = job[0]
                yield job[1]

        def forward(event: ProgressEvent) -> None:
            if event.kind is ProgressKind.BYTES:
                bytes_done(event.bytes)
            elif event.result is not None and event.recording_id in taken:
                settle(local, taken.pop(event.recording_id), event.result)

        downloader = Downloader(
            session,
            dest,
            concurrency=own_share,
            on_progress=forward,
            manifest=manifest,
            overwrite=overwrite,
            max_attempts=max_attempts,
        )
        try:
            await downloader.run(items())
        finally:
            local.alive = False
            slot_freed.set()

    async def collect(worker: _Worker) -> None:
        stdout = worker.process.stdout
        assert stdout is not None
        try:
            while True:
                message = await _read_frame(stdout)
                if message[0] == "ready":
                    worker.ready = True
                elif message[0] == "bytes":
                    bytes_done(message[1])
                else:
                    settle(worker, message[1], message[2])
        except asyncio.IncompleteReadError:
            pass
        finally:
            worker.alive = False
            slot_freed.set()
        code = await worker.process.wait()
        if worker.outstanding:
            logger.warning("a worker process exited with code %d mid-job", code)
        lost = DownloadError(f"the worker process exited with {code}")
        for index, recording_id in list(worker.outstanding.items()):
            fail(worker, index, recording_id, lost)

    try:
        # The interpreters start while the listing's first page is on its way. If the
        # listing fails, they are stopped as after Ctrl-C.
        for share in shares:
            worker = _Worker(window=share * WINDOW_PER_SLOT)
            worker.proc = await _spawn(attrs.evolve(base, concurrency=share))
            processes.append(worker)
            lanes.append(worker)
            tasks.append(asyncio.create_task(collect(worker)))
        tasks.append(asyncio.create_task(download_locally()))
        await feed()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(_stop(worker) for worker in processes))
    final = [r for r in results if r is not None]
    assert len(final) == len(results)
    return DownloadReport(results=final, elapsed=time.monotonic() - started)


# -- the worker -------------------------------------------------------------------------


def worker_main() -> None:
    """The worker process: serve items from stdin until it closes; exit 130 on Ctrl-C."""
    protocol_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    try:
        code = asyncio.run(_serve(protocol_fd))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


async def _serve(protocol_fd: int) -> int:
    from .models import Recording
    from .session import AsyncSession

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
    )
    transport, pipe = await loop.connect_write_pipe(
        _WritePipe, os.fdopen(protocol_fd, "wb", buffering=0)
    )
    transport.write(_frame(("ready",)))
    config: WorkerConfig = await _read_frame(reader)
    configure_logging(config.debug)
    pending: dict[str, int] = {}
    unsent_bytes = 0
    last_bytes = time.monotonic()

    def on_progress(event: ProgressEvent) -> None:
        nonlocal unsent_bytes, last_bytes
        if event.kind is ProgressKind.BYTES:
            unsent_bytes += event.bytes
            if time.monotonic() - last_bytes < _BYTES_INTERVAL:
                return
        elif event.result is None or event.recording_id not in pending:
            return
        if unsent_bytes:
            transport.write(_frame(("bytes", unsent_bytes)))
            unsent_bytes, last_bytes = 0, time.monotonic()
        if event.result is not None:
            transport.write(_frame(("done", pending.pop(event.recording_id), event.result)))

    async def items() -> Any:
        while True:
            try:
                index, item = await _read_frame(reader)
            except asyncio.IncompleteReadError:
                return
            assert isinstance(item, str | Recording)
            pending[_item_id(item)] = index
            yield item

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
    async with session:
        downloader = Downloader(
            session,
            config.dest,
            concurrency=config.concurrency,
            overwrite=config.overwrite,
            max_attempts=config.max_attempts,
            on_progress=on_progress,
            manifest=config.manifest,
        )
        await downloader.run(items())
    if unsent_bytes:
        transport.write(_frame(("bytes", unsent_bytes)))
    transport.close()
    await pipe.closed  # every frame is in the pipe before the process exits
    return 0


class _WritePipe(asyncio.Protocol):
    """Tells when the pipe's transport has flushed its buffer and closed."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
