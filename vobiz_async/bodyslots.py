"""Body slots: how many transfers of a batch read their body at full size at once.

Every transfer keeps its request in flight (its connection, its wait for the first byte),
but only a body holding one of K *slots* reads at full size (`FULL_READ`, 256 KiB): its
chunks are few, big enough for the helper threads (`offload.py`), and its buffers are the
batch's memory. The others read at `SMALL_READ` and wait: the session's connections read
the socket `SMALL_READ` bytes at a time from their first read on (`AsyncSession`'s
connector), and aiohttp's flow control pauses the socket once the response's `StreamReader`
holds twice its read size, so a waiting body costs about 12 KiB of the process's memory.
The kernel keeps receiving into the socket's own buffer meanwhile (several MB under Linux's
autotuning), so a body that fits there is not slowed at all by its wait; a bigger one waits
with the server's send blocked.

This replaces issue 17's divided read budget (4 MiB over the transfers in flight, so 16 KiB
reads for every transfer at 256 in flight and no chunk ever big enough for a helper
thread).

**The bound.** A body waits at most `max_wait` seconds (`MAX_SLOT_WAIT`, 5 s by default:
an order of magnitude under the send timeouts of common servers and proxies, nginx's
`send_timeout` and Apache's `Timeout` both 60 s, and under the session's read timeout,
which aiohttp does not run while a socket is paused). Then the batch gains a slot and the
body takes it: a path whose bodies hold their slots long (slow links, big files) gets more
full-size readers, whose buffers fill only as fast as that path delivers. There are never
more slots than transfers, so a waiting body always finds one to grow into: no body's
reader stalls for longer than `max_wait` plus the scheduling of one read, and none starves.

Two layers, as in `pacing.py`: `slot_count` and `grown` are the pure decisions (tested by
tables); `BodySlots` is the asyncio seam, one per batch, with counters a test can read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import attrs

__all__ = [
    "DEFAULT_SLOTS",
    "FULL_READ",
    "MAX_SLOT_WAIT",
    "SMALL_READ",
    "BodySlots",
    "SlotStats",
    "grown",
    "slot_count",
]

#: A slot holder's read size: few trips through the per-chunk path, chunks a helper thread
#: takes (`OffloadPolicy.min_chunk`).
FULL_READ = 256 * 1024
#: Every other read: a waiting body's buffer (aiohttp pauses the socket above twice
#: this), and the socket reads of every connection until its body holds a slot (the
#: response's headers and the body's first bytes). At 256 transfers in flight, 16 KiB
#: held 72 MB of peak RSS and 4 KiB 64 MB, for the same CPU (benchmarks/RESULTS.md).
SMALL_READ = 4 * 1024
#: Full-size readers a batch starts with (at most its concurrency): at about three reads of
#: buffer each, 16 of them hold about 12 MB; two cores are busy well before that many
#: bodies stream at once (benchmarks/RESULTS.md, "Body slots").
DEFAULT_SLOTS = 16
#: The longest a body waits for a slot before it reads on without one (see the module's
#: docstring for the bound this gives).
MAX_SLOT_WAIT = 5.0


def slot_count(concurrency: int, slots: int | None = None) -> int:
    """The slots a batch of `concurrency` transfers starts with: `slots` (default
    `DEFAULT_SLOTS`), never more than the transfers nor fewer than one."""
    wanted = DEFAULT_SLOTS if slots is None else slots
    return max(1, min(concurrency, wanted))


def grown(limit: int, concurrency: int) -> int:
    """The slots after a body waited `max_wait` in vain: one more, up to the concurrency."""
    return min(concurrency, limit + 1)


@attrs.frozen
class SlotStats:
    """What the slots did so far in a batch."""

    #: Slots now (grown from the start by waits that ran out).
    limit: int
    #: Slots held now.
    held: int
    #: The most slots ever held at once: never above `limit`.
    high_water: int
    #: Slots handed out.
    granted: int
    #: Waits that ran out (each grew the limit by the slot it took).
    timed_out: int


class BodySlots:
    """The asyncio side: ``await slots.acquire()``, then ``slots.release()`` once the
    body is read.

    Waiters are served first come, first served; ``release()`` hands the slot straight to
    the next waiter, so none is overtaken by a newcomer, and a wait that runs out grows the
    slots by the one it takes.
    """

    def __init__(
        self, concurrency: int, *, slots: int | None = None, max_wait: float = MAX_SLOT_WAIT
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency
        self.max_wait = max_wait
        self._limit = slot_count(concurrency, slots)
        self._held = 0
        self._high_water = 0
        self._granted = 0
        self._timed_out = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"BodySlots(limit={self._limit}, held={self._held}, waiting={len(self._waiters)})"

    @property
    def stats(self) -> SlotStats:
        return SlotStats(self._limit, self._held, self._high_water, self._granted, self._timed_out)

    def try_acquire(self) -> bool:
        """Take a free slot if there is one and nobody waits for it."""
        if self._waiters or self._held >= self._limit:
            return False
        self._take()
        return True

    async def acquire(self) -> None:
        """Hold a slot: a free one, else the next one released, else (after `max_wait`)
        one more slot for the batch."""
        if self.try_acquire():
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_later(self.max_wait, self._ran_out, fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot as we were cancelled: pass it on
            else:
                self._forget(fut)
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        """The body is read (or its transfer failed): hand the slot on."""
        if self._held <= 0:
            raise RuntimeError("release() without a held slot")
        self._held -= 1
        self._dispatch()

    def _take(self) -> None:
        self._held += 1
        self._granted += 1
        self._high_water = max(self._high_water, self._held)

    def _ran_out(self, fut: asyncio.Future[None]) -> None:
        """A wait reached `max_wait`: one more slot for the batch, and it is this body's.
        There are never more slots than transfers, and this one has none: there is room
        (a batch running more transfers than `concurrency`, a receiver's, still grows)."""
        if fut.done():
            return
        self._forget(fut)
        self._timed_out += 1
        self._limit = max(grown(self._limit, self.concurrency), self._held + 1)
        self._take()
        fut.set_result(None)

    def _forget(self, fut: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)

    def _dispatch(self) -> None:
        while self._waiters and self._held < self._limit:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._take()
            fut.set_result(None)
