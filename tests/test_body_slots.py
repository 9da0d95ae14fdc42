"""Body slots (issue 23 item 1): only K bodies read at full size at a time, a waiting body
always gets a slot within the bound, and every new connection's first read is small.

The batch tests run real transfers from FakeVobiz on 127.0.0.1 and watch the reads through
the public progress callback (each BYTES event is one read of the body), not a mock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _download_helpers import HELPERS, add, assert_verified, recording
from aiohttp import web
from test_robustness import serve
from yarl import URL

from vobiz_async import AsyncSession, DownloadStatus, ProgressEvent, ProgressKind
from vobiz_async.bodyslots import (
    DEFAULT_SLOTS,
    FULL_READ,
    SMALL_READ,
    BodySlots,
    grown,
    slot_count,
)
from vobiz_async.download import Downloader
from vobiz_async.testing import FakeVobiz

# --------------------------------------------------------------------------- the decisions


@pytest.mark.parametrize(
    ("concurrency", "slots", "expected"),
    [
        (1, None, 1),
        (4, None, 4),
        (256, None, DEFAULT_SLOTS),
        (256, 3, 3),
        (2, 8, 2),
        (8, 0, 1),
    ],
)
def test_slot_count(concurrency: int, slots: int | None, expected: int) -> None:
    """A batch starts with DEFAULT_SLOTS, never more than its transfers nor fewer than one."""
    assert slot_count(concurrency, slots) == expected


@pytest.mark.parametrize(
    ("limit", "concurrency", "expected"), [(1, 4, 2), (15, 16, 16), (16, 16, 16)]
)
def test_grown(limit: int, concurrency: int, expected: int) -> None:
    """A wait that ran out adds one slot, up to the concurrency."""
    assert grown(limit, concurrency) == expected


# --------------------------------------------------------------------------- the gate


async def test_release_hands_the_slot_to_the_oldest_waiter() -> None:
    """Waiters get slots in arrival order; none is overtaken by a newcomer."""
    slots = BodySlots(8, slots=1, max_wait=60)
    await slots.acquire()
    order: list[int] = []

    async def body(n: int) -> None:
        await slots.acquire()
        order.append(n)

    waiters = [asyncio.create_task(body(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert not slots.try_acquire()  # a newcomer does not overtake the waiters
    for _ in range(3):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert slots.stats.high_water == 1
    assert slots.stats.timed_out == 0


async def test_a_wait_that_runs_out_grows_the_slots_and_takes_one() -> None:
    """After max_wait the body gets a new slot instead of waiting on (the stall bound)."""
    slots = BodySlots(4, slots=1, max_wait=0.01)
    await slots.acquire()
    await asyncio.wait_for(slots.acquire(), 30)  # would hang without the bound
    stats = slots.stats
    assert (stats.limit, stats.held, stats.timed_out) == (2, 2, 1)


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    """A waiter cancelled once handed a slot gives it to the next one."""
    slots = BodySlots(4, slots=1, max_wait=60)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(second, 30)
    assert first.cancelled()
    assert slots.stats.held == 1


# --------------------------------------------------------------------------- a real batch


class _FullReaders:
    """Counts the bodies reading at full size at once, from the batch's progress events:
    a body is a full-size reader from its first read above SMALL_READ (only a slot holder
    reads that much) until its last byte."""

    def __init__(self) -> None:
        self.got: dict[str, int] = {}
        self.reading: set[str] = set()
        self.most = 0
        self.big_reads = 0

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind is not ProgressKind.BYTES:
            return
        rid = event.recording_id
        self.got[rid] = self.got.get(rid, 0) + event.bytes
        if event.bytes > SMALL_READ:
            self.big_reads += 1
            self.reading.add(rid)
            self.most = max(self.most, len(self.reading))
        if self.got[rid] == event.total:
            self.reading.discard(rid)


@pytest.mark.parametrize("limit", [1, 3])
async def test_no_more_bodies_read_at_full_size_than_slots(
    fake: FakeVobiz, session: AsyncSession, dest: Path, limit: int
) -> None:
    """With K slots and 16 transfers in flight, at most K bodies read at full size at once,
    and every body, waiting or not, lands whole (no starvation, no deadlock at K=1)."""
    rids = add(fake, 24, size=1_200_000)
    readers = _FullReaders()
    downloader = Downloader(
        session,
        dest,
        lookup=session.recordings.get,
        concurrency=16,
        on_progress=readers,
        offload=HELPERS,
    )
    downloader.body_slots = BodySlots(16, slots=limit, max_wait=3600)  # no growth here

    report = await asyncio.wait_for(downloader.run([recording(fake, r) for r in rids]), 120)

    assert len(report.downloaded) == 24
    for result in report.downloaded:
        assert_verified(fake, result)
    assert readers.big_reads > 0  # slot holders did read at full size
    assert 0 < readers.most <= limit
    stats = downloader.body_slots.stats
    assert stats.high_water == limit
    assert stats.timed_out == 0
    assert stats.held == 0  # every slot was handed back


async def test_a_small_body_already_read_needs_no_slot(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A body that fits in aiohttp's first buffer is stored without waiting for a slot."""
    rids = add(fake, 3, size=2_000)
    downloader = Downloader(session, dest, lookup=session.recordings.get, concurrency=3)
    downloader.body_slots = BodySlots(3, slots=1, max_wait=3600)
    await downloader.body_slots.acquire()  # the only slot, held elsewhere

    report = await asyncio.wait_for(downloader.run([recording(fake, r) for r in rids]), 20)

    assert [r.status for r in report.results] == [DownloadStatus.DOWNLOADED] * 3
    assert downloader.body_slots.stats.granted == 1  # only ours


# --------------------------------------------------------------------------- the first read

BIG = 4 * 1024 * 1024


async def _big_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": str(BIG)})
    await response.prepare(request)
    block = b"\x00" * (1024 * 1024)
    for _ in range(BIG // len(block)):
        await response.write(block)
    return response


async def test_the_first_read_of_a_new_connection_is_small(tmp_path: Path) -> None:
    """Before any flow control applies, a new connection's socket reads SMALL_READ at a time
    (not asyncio's 256 KiB), so a response's first buffer holds at most about three."""
    del tmp_path
    app = web.Application()
    app.router.add_get("/big", _big_body)
    async with serve(app) as base, AsyncSession("MA_TEST", "token", base_url=f"{base}/") as s:
        url = URL(f"{base}/big")
        resp = await s.stream("GET", url, read_bufsize=SMALL_READ)
        async with resp:
            # Let the socket fill aiohttp's buffer until flow control pauses it.
            for _ in range(200):
                if resp.content.total_bytes >= 2 * SMALL_READ:
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            buffered = resp.content.total_bytes
            transport = resp.connection.transport if resp.connection else None
            assert getattr(transport, "max_size", SMALL_READ) == SMALL_READ
            # The pause comes once the buffer exceeds twice the read size: one more
            # socket read at most, never a 256 KiB one.
            assert buffered <= 3 * SMALL_READ < FULL_READ
