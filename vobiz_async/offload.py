"""Writing and hashing big chunks on helper threads, and keeping read buffers on the heap."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import attrs

from .errors import StorageError

__all__ = ["Offload", "OffloadPolicy", "raise_mmap_threshold", "settle", "usable_cpus"]

#: glibc serves an allocation above its mmap threshold (128 KiB at start) with a fresh
#: mapping, and raises the threshold only when it frees such a block that is still bigger
#: than the threshold. asyncio reads a socket into a 256 KiB buffer and shrinks it to what
#: arrived, so a body under 128 KiB never raises it: every read maps, faults in and unmaps
#: its pages again (benchmarks/RESULTS.md, experiment 22). Freeing one block this big
#: raises it (and the heap's trim threshold, to twice that) past every read buffer.
MMAP_THRESHOLD_HINT = 1 << 20


@functools.cache
def raise_mmap_threshold() -> None:
    """Free one big block, once per process: glibc then keeps read buffers on its heap.

    This is glibc's own adaptive rule, which any program that frees such a block triggers;
    a threshold set by `mallopt` or `MALLOC_MMAP_THRESHOLD_` is left alone, and other
    allocators just free the block. Nothing is touched, so no page is faulted in.
    """
    bytes(MMAP_THRESHOLD_HINT)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_threads() -> int:
    # The event loop keeps one core busy with HTTP; two helpers use a second one. On a
    # single CPU there is nothing to gain, so nothing is handed over.
    return 2 if usable_cpus() > 1 else 0


def _default_jobs(policy: OffloadPolicy) -> int:
    return 4 * policy.threads


@attrs.frozen
class OffloadPolicy:
    """How chunks are handed to helper threads; the defaults suit this machine."""

    #: Helper threads (0: every chunk is written on the event loop).
    threads: int = attrs.field(factory=_default_threads)
    #: Chunks handed over at once, across the batch: enough to keep the helpers busy, few
    #: enough that the memory they pin (up to a chunk each) stays small at any concurrency.
    jobs: int = attrs.field(default=attrs.Factory(_default_jobs, takes_self=True))
    #: Chunks at least this big are handed over when a helper is free; handing a smaller
    #: one over costs the event loop more than it saves (benchmarks/RESULTS.md).
    min_chunk: int = 128 * 1024


class Target(Protocol):
    """What a chunk is written into: a transfer that writes and hashes it."""

    @property
    def blocking(self) -> bool:
        """Whether `write_blocking` may be called (on a helper thread)."""
        ...

    def write_blocking(self, chunk: bytes) -> None: ...

    async def write(self, chunk: bytes) -> None: ...


class Offload:
    """Writes and hashes big chunks on helper threads while the event loop reads on.

    sha256 and `write` both release the GIL, and together they cost about as much CPU as
    everything else a large download does; on the loop they cap a batch at one core.
    A transfer hands over one chunk at a time and waits for it before the next, so its
    bytes stay in order and its state is touched by one thread at a time. When `jobs`
    chunks are already out, the loop writes the next one itself instead of waiting.
    A lone transfer keeps its chunks on the loop: with nothing else to do there, the loop
    would only wait for each hand-over (experiment 19 in benchmarks/RESULTS.md).
    """

    def __init__(self, transfers: int, policy: OffloadPolicy | None = None) -> None:
        policy = OffloadPolicy() if policy is None else policy
        self._threads = policy.threads if transfers > 1 else 0
        self._jobs = policy.jobs if self._threads else 0
        self._min_chunk = policy.min_chunk
        self._out = 0  # chunks handed over and not yet done, across transfers
        self._lock = threading.Lock()  # helpers count down from their own threads
        self._executor: ThreadPoolExecutor | None = None

    async def write(self, target: Target, chunk: bytes) -> Future[None] | None:
        """Write and hash `chunk` now, or start doing it on a helper and return its job
        (only for a target with a blocking write: a folder's)."""
        blocking = target.blocking
        if not blocking or len(chunk) < self._min_chunk or self._out >= self._jobs:
            if blocking:
                target.write_blocking(chunk)
            else:
                await target.write(chunk)
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="vobiz-hash")
        with self._lock:
            self._out += 1
        job = self._executor.submit(target.write_blocking, chunk)
        job.add_done_callback(self._done)
        return job

    def _done(self, _: Future[None]) -> None:
        with self._lock:
            self._out -= 1

    def close(self) -> None:
        """Let the helpers exit; every job has been waited for by then."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


async def settle(job: Future[None] | None, err: BaseException) -> None:
    """Wait for a helper's job before the file closes or its target is used again, even
    through a cancellation. A failed write outranks `err` (unless we are being cancelled):
    the storage-error handler then restarts the transfer, since the file's tail is unknown."""
    if job is None:
        return
    cancelled: asyncio.CancelledError | None = None
    while not job.done():
        try:
            await asyncio.wait([asyncio.wrap_future(job)])
        except asyncio.CancelledError as again:
            cancelled = again
    if cancelled is not None:
        raise cancelled
    failure = None if job.cancelled() else job.exception()
    if (
        isinstance(failure, (OSError, StorageError))
        and failure is not err
        and not isinstance(err, asyncio.CancelledError)
    ):
        raise failure from err
