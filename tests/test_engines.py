"""`ProcessEngine`: shards in spawned worker processes, against FakeVobiz on 127.0.0.1.

The fake serves from this test's event loop while the driver awaits its workers, which are
real processes of this machine writing into one folder; the driver alone writes the index.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from _download_helpers import assert_verified, tree
from _waiting import eventually

from vobiz_async import AsyncSession, DownloadStatus, Recording
from vobiz_async.engines import ProcessEngine, SharedGate, SharedPace
from vobiz_async.journal import SHARDS_SUFFIX, ShardJournal
from vobiz_async.manifest import MANIFEST_NAME, Manifest, verify_manifest
from vobiz_async.pacing import PacingPolicy
from vobiz_async.scaleout import ScaleOutReport
from vobiz_async.testing import FakeVobiz

#: The token the fake accepts here: distinctive, so a search cannot miss it.
TOKEN = "tok-Pq7wR2-never-in-a-worker"


def media_gets(fake: FakeVobiz) -> Counter[str]:
    """Media GETs per recording id, as the fake counted them."""
    counts: Counter[str] = Counter()
    for record in fake.stats.requests:
        if record.operation in ("media", "storage") and record.method == "GET":
            name = unquote(record.path.split("?", 1)[0].rsplit("/", 1)[1])
            counts[name.rpartition(".")[0]] += 1
    return counts


def alive(pids: set[int]) -> list[int]:
    """Those of `pids` that are still processes of this machine."""
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=3, auth_token=TOKEN) as fake:
        yield fake


async def download(
    session: AsyncSession, dest: Path, engine: ProcessEngine, **options: object
) -> ScaleOutReport:
    report = await session.recordings.download_many(
        session.recordings.list(), dest, engine=engine, **options
    )
    assert isinstance(report, ScaleOutReport)
    return report


async def test_every_recording_archived_once_and_indexed_by_the_driver(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    for _ in range(40):
        fake.add_recording(size=30_000)
    listing = [r.recording_id async for r in session.recordings.list()]
    engine = ProcessEngine(workers=2, shard_size=7)
    index = dest / MANIFEST_NAME
    report = await download(session, dest, engine, manifest=index, concurrency=8)

    assert report.ok, [(r.recording_id, str(r.error)) for r in report.failed]
    assert [r.recording_id for r in report.results] == listing  # the listing's order
    for result in report.results:
        assert_verified(fake, result)
    assert set(media_gets(fake).values()) == {1}  # each recording fetched once
    assert report.shards == 6
    assert report.shards_skipped == 0
    assert {share.pid for share in report.workers} <= engine.pids
    assert os.getpid() not in engine.pids  # the work ran in the workers
    with Manifest(index) as manifest:  # written by the driver, every recording in it
        assert {rid: manifest.get(rid) is not None for rid in listing} == dict.fromkeys(
            listing, True
        )
        assert verify_manifest(dest, manifest) == []
    journal = ShardJournal(Path(str(index) + SHARDS_SUFFIX))
    assert len(journal.finished()) == 6
    journal.close()
    assert not [name for name in tree(dest) if name.endswith(".part")]

    again = await download(session, dest, engine, manifest=index, concurrency=8)
    assert again.shards_skipped == 6
    assert {r.status for r in again.results} == {DownloadStatus.SKIPPED}
    assert set(media_gets(fake).values()) == {1}


@pytest.mark.parametrize("in_driver", [False, True])
async def test_the_token_is_in_no_workers_command_line_name_or_environment(
    session: AsyncSession, dest: Path, monkeypatch: pytest.MonkeyPatch, in_driver: bool
) -> None:
    monkeypatch.setenv("VOBIZ_AUTH_TOKEN", TOKEN)  # as the CLI's users pass it
    async with FakeVobiz(recordings=0, seed=4, auth_token=TOKEN, media_latency=0.2) as slow:
        for _ in range(16):
            slow.add_recording(size=5_000)
        engine = ProcessEngine(workers=3 if in_driver else 2, shard_size=4, in_driver=in_driver)
        async with AsyncSession(**slow.session_kwargs()) as fast_session:
            job = asyncio.create_task(download(fast_session, dest, engine, concurrency=2))
            assert await eventually(lambda: slow.stats.media_requests > 0)
            seen = {}
            for pid in engine.pids:
                proc = Path(f"/proc/{pid}")
                seen[pid] = b"".join(
                    (proc / name).read_bytes() for name in ("cmdline", "environ", "comm")
                )
            report = await job
    assert report.ok
    assert len(seen) == 2
    for pid, text in seen.items():
        assert b"spawn_main" in text, pid  # it is a worker's
        assert TOKEN.encode() not in text, pid
    assert os.environ["VOBIZ_AUTH_TOKEN"] == TOKEN  # the driver's environment is as it was


@pytest.mark.parametrize("in_driver", [False, True])
async def test_a_killed_worker_fails_only_shards_in_flight_and_a_rerun_completes(
    dest: Path, in_driver: bool
) -> None:
    # With the driver's lane, which starts before the pool is ready, the first shard's 4
    # requests wait 1 s: a fifth request is the worker's.
    latency, lanes_alone = (1.0, 4) if in_driver else (0.1, 0)
    async with FakeVobiz(recordings=0, seed=5, auth_token=TOKEN, media_latency=latency) as fake:
        for _ in range(24):
            fake.add_recording(size=8_000)
        index = dest / MANIFEST_NAME
        engine = ProcessEngine(workers=2, shard_size=4, max_retries=0, in_driver=in_driver)
        async with AsyncSession(**fake.session_kwargs()) as session:
            job = asyncio.create_task(download(session, dest, engine, manifest=index))
            assert await eventually(lambda: fake.stats.media_requests > lanes_alone)
            victim = min(engine.pids)
            os.kill(victim, signal.SIGKILL)
            first = await job
            failed = {r.recording_id for r in first.failed}
            assert failed, "the pool broke: the shards in flight fail"
            assert len(failed) <= 2 * 4  # at most the two shards in flight then
            assert all("worker died" in str(r.error) for r in first.failed)
            assert len(first.results) == 24

            second = await download(session, dest, ProcessEngine(workers=2), manifest=index)
    assert second.ok
    refetched = {r.recording_id for r in second.results if r.status is DownloadStatus.DOWNLOADED}
    assert refetched <= failed  # only what the dead worker's shards left
    with Manifest(index) as manifest:
        assert all(manifest.get(rid) is not None for rid in fake.recording_ids)
        assert verify_manifest(dest, manifest) == []


async def test_a_429_seen_by_one_workers_gate_holds_and_slows_the_others() -> None:
    """Two workers' gates over one SharedPace (shared memory, as spawned workers get it):
    a 429 on A's request holds B's next request for its Retry-After and lowers B's limit."""
    pace = SharedPace(multiprocessing.get_context("spawn"))
    policy = PacingPolicy(8)
    a, b = SharedGate(8, pace, policy=policy), SharedGate(8, pace, policy=policy)
    ticket = await a.acquire()
    a.on_rate_limited(30.0, ticket)  # A's request was answered 429, Retry-After: 30
    a.release()

    held = asyncio.create_task(b.acquire())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not held.done()  # B waits out A's Retry-After
    assert b.state.decreases == 1
    assert b.allowed == 4
    again = asyncio.create_task(a.acquire())  # A does not take its own signal as news
    await asyncio.sleep(0)
    assert a.state.decreases == 1
    for task in (held, again):
        task.cancel()
    await asyncio.gather(held, again, return_exceptions=True)


async def test_a_gate_with_no_success_yet_takes_the_signalling_gates_rate() -> None:
    """B has seen no success when A's 429 arrives: after the hold B starts paced at A's
    measured rate (0.9 of it), not unpaced with its whole concurrency at once."""
    pace = SharedPace(multiprocessing.get_context("spawn"))
    policy = PacingPolicy(8)
    a, b = SharedGate(8, pace, policy=policy), SharedGate(8, pace, policy=policy)
    for _ in range(20):  # A: 20 successes in its first second
        a.on_success(await a.acquire())
        a.release()
    ticket = await a.acquire()
    a.on_rate_limited(0.05, ticket)
    a.release()
    await b.acquire()  # takes A's news, waits out the hold, starts paced
    b.release()
    assert b.state.rate == pytest.approx(0.9 * 20.0, rel=0.05)


@pytest.mark.parametrize("in_driver", [False, True])
async def test_a_rate_limited_job_finishes_with_the_workers_pacing_reported(
    dest: Path, in_driver: bool
) -> None:
    """The fake's CDN allows 40 media requests a second in bursts of 10."""
    async with FakeVobiz(
        recordings=0, seed=6, auth_token=TOKEN, media_rate_limit=40, rate_limit_burst=10
    ) as fake:
        for _ in range(120):
            fake.add_recording(size=2_000)
        async with AsyncSession(**fake.session_kwargs()) as session:
            engine = ProcessEngine(workers=2, shard_size=60, in_driver=in_driver)
            report = await download(session, dest, engine, concurrency=32)
    assert report.ok
    assert fake.stats.rate_limited > 0
    assert report.rate_limit is not None
    assert report.rate_limit.limited


async def test_workers_start_during_the_listing_and_stop_when_it_fails(
    session: AsyncSession, dest: Path
) -> None:
    """The pool starts while the driver lists (its start-up overlaps the listing); a
    listing that then fails leaves no worker process behind."""
    engine = ProcessEngine(workers=2)
    started: list[bool] = []

    async def listing() -> AsyncIterator[str]:
        yield "first-id"
        started.append(await eventually(lambda: len(engine.pids) == 2))
        raise RuntimeError("the listing broke")

    with pytest.raises(RuntimeError, match="the listing broke"):
        await session.recordings.download_many(listing(), dest, engine=engine)
    assert started == [True]
    # Joined before download_many returned: not left to a garbage collector.
    assert not alive(engine.pids)


async def test_a_worker_keeps_its_connections_from_shard_to_shard(dest: Path) -> None:
    """One worker runs four shards on one session (and one pacing gate): the connections
    it opened for the first shard carry the others."""
    async with FakeVobiz(recordings=0, seed=7, auth_token=TOKEN) as fake:
        for _ in range(16):
            fake.add_recording(size=4_000)
        async with AsyncSession(**fake.session_kwargs()) as session:
            recordings = [r async for r in session.recordings.list()]
            before = fake.stats.connections
            engine = ProcessEngine(workers=1, shard_size=4)
            report = await session.recordings.download_many(
                recordings, dest, engine=engine, concurrency=2
            )
            opened = fake.stats.connections - before
    assert isinstance(report, ScaleOutReport)
    assert report.ok
    assert report.shards == 4
    assert opened <= 2  # not two for each shard


async def test_shards_are_sized_from_the_listing_by_default(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """`ProcessEngine()` cuts about four shards a worker from the listing (30 recordings, 2
    workers: shards of 10), not one shard of 500 that leaves the other worker idle (the
    rate-limit profile's 600 recordings were 500 + 100)."""
    for _ in range(30):
        fake.add_recording(size=2_000)
    engine = ProcessEngine(workers=2)
    report = await download(session, dest, engine, concurrency=4)
    assert report.ok
    assert report.shards == 3


async def test_shards_start_while_the_listing_runs_and_a_rerun_fetches_nothing(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A worker idle while the driver still lists gets a shard of what is listed so far:
    the first media requests come before the listing's end. The index stays the driver's,
    and a re-run (which waits for the whole plan: its journal has finished shards) fetches
    nothing again, whatever shards the first run cut."""
    for _ in range(40):
        fake.add_recording(size=4_000)
    recordings = [r async for r in session.recordings.list()]
    engine = ProcessEngine(workers=2, shard_size=10)
    during: list[bool] = []

    async def listing() -> AsyncIterator[Recording]:
        for recording in recordings[:20]:
            yield recording
        during.append(await eventually(lambda: fake.stats.media_requests > 0))
        for recording in recordings[20:]:
            yield recording

    index = dest / MANIFEST_NAME
    first = await session.recordings.download_many(
        listing(), dest, engine=engine, manifest=index, concurrency=4
    )
    assert during == [True]
    assert isinstance(first, ScaleOutReport)
    assert first.ok
    assert first.shards == 4
    assert [r.recording_id for r in first.results] == [r.recording_id for r in recordings]
    assert set(media_gets(fake).values()) == {1}
    with Manifest(index) as manifest:
        assert verify_manifest(dest, manifest) == []
        assert all(manifest.get(r.recording_id) is not None for r in recordings)

    again = await download(session, dest, ProcessEngine(workers=2, shard_size=10), manifest=index)
    assert {r.status for r in again.results} == {DownloadStatus.SKIPPED}
    assert set(media_gets(fake).values()) == {1}


async def test_in_driver_the_driver_runs_shards_beside_its_worker_and_indexes_all(
    dest: Path,
) -> None:
    """`in_driver=True`: the driver is one of the two workers (one process is spawned) and
    runs shards on its own loop while it lists and writes the index, from before the
    worker is ready (each media answer waits 0.2 s: the worker's start is not over first)."""
    async with FakeVobiz(recordings=0, seed=3, auth_token=TOKEN, media_latency=0.2) as fake:
        for _ in range(40):
            fake.add_recording(size=30_000)
        async with AsyncSession(**fake.session_kwargs()) as session:
            listing = [r.recording_id async for r in session.recordings.list()]
            engine = ProcessEngine(workers=2, shard_size=7, in_driver=True)
            index = dest / MANIFEST_NAME
            report = await download(session, dest, engine, manifest=index, concurrency=8)
            assert report.ok, [(r.recording_id, str(r.error)) for r in report.failed]
            spawned = set(engine.pids)
            again = await download(session, dest, engine, manifest=index, concurrency=8)

    assert [r.recording_id for r in report.results] == listing
    for result in report.results:
        assert_verified(fake, result)
    assert set(media_gets(fake).values()) == {1}  # the re-run fetched nothing either
    # (Shards cut while the listing ran need not match the re-run's cut: those it sends
    # again are skipped file by file.)
    assert {r.status for r in again.results} == {DownloadStatus.SKIPPED}
    assert len(spawned) == 1
    assert os.getpid() not in spawned
    shares = {share.pid: share.recordings for share in report.workers}
    assert set(shares) == spawned | {os.getpid()}  # both lanes ran shards
    assert sum(shares.values()) == 40
    with Manifest(index) as manifest:
        assert all(manifest.get(rid) is not None for rid in listing)
        assert verify_manifest(dest, manifest) == []


async def test_in_driver_with_one_worker_spawns_no_process(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    for _ in range(12):
        fake.add_recording(size=3_000)
    engine = ProcessEngine(workers=1, shard_size=5, in_driver=True)
    report = await download(session, dest, engine, concurrency=4)
    assert report.ok
    assert report.shards == 3
    assert engine.pids == set()
    assert [share.pid for share in report.workers] == [os.getpid()]


async def test_a_cancelled_run_stops_the_drivers_lane_too(dest: Path) -> None:
    """Cancelling the job (Ctrl-C in the CLI) stops the driver's own transfers with the
    workers': no media request starts afterwards, and no worker is left."""
    async with FakeVobiz(recordings=0, seed=8, auth_token=TOKEN, media_latency=0.3) as fake:
        for _ in range(40):
            fake.add_recording(size=2_000)
        engine = ProcessEngine(workers=2, shard_size=10, in_driver=True)
        async with AsyncSession(**fake.session_kwargs()) as session:
            job = asyncio.create_task(download(session, dest, engine, concurrency=2))
            assert await eventually(lambda: fake.stats.media_requests > 0)
            job.cancel()
            done, _ = await asyncio.wait([job], timeout=1.5)  # not after the lane's 3 s shard
            assert done == {job}
            assert job.cancelled()
            stopped_at = fake.stats.media_requests
            await asyncio.sleep(0.8)
            assert fake.stats.media_requests == stopped_at
    assert not alive(engine.pids)


async def test_workers_started_ahead_are_the_runs_or_closed(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """`start` spawns the workers before `run` (the CLI, while it reads the first page):
    the run takes those very processes; `close` shuts workers no run took."""
    for _ in range(12):
        fake.add_recording(size=3_000)
    unused = ProcessEngine(workers=2)
    unused.start(session)
    assert await eventually(lambda: len(unused.pids) == 2)
    spawned_unused = set(unused.pids)
    await unused.close()
    assert await eventually(lambda: not alive(spawned_unused))

    engine = ProcessEngine(workers=2, shard_size=3)
    engine.start(session)
    assert await eventually(lambda: len(engine.pids) == 2)
    spawned = set(engine.pids)
    report = await download(session, dest, engine, concurrency=4)
    assert report.ok
    assert {share.pid for share in report.workers} <= spawned
    assert engine.pids == spawned  # no second pool
    await engine.close()  # nothing left to close: the run took them
    assert not alive(spawned)
