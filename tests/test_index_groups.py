"""Grouped index commits (issue 23 item 4): a batch commits its index rows at most every
GROUP_ENTRIES entries or GROUP_SECONDS; a kill -9 loses at most the open group's rows, and
the next run hashes and indexes those files with no media request."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

from _download_helpers import add, recording

from vobiz_async import AsyncSession, DownloadStatus
from vobiz_async.manifest import GROUP_ENTRIES, Manifest, ManifestEntry
from vobiz_async.testing import FakeVobiz

#: Downloads the ids on stdin's first line into argv[1] with its index, 4 at a time,
#: printing each id once it is reported downloaded (after its index row is written). The
#: group's time limit is lifted, so only GROUP_ENTRIES commits a group.
CHILD = """
import asyncio, json, sys
import vobiz_async.manifest as manifest
from vobiz_async import AsyncSession, ProgressKind

manifest.GROUP_SECONDS = 3600.0

async def main() -> None:
    job = json.loads(sys.stdin.readline())
    def on_progress(event):
        if event.kind is ProgressKind.FINISHED:
            print(event.recording_id, flush=True)
    async with AsyncSession(**job["session"]) as session:
        await session.recordings.download_many(
            job["ids"], sys.argv[1], manifest=sys.argv[2], concurrency=4,
            on_progress=on_progress,
        )

asyncio.run(main())
"""


def _rows(index: Path) -> set[str]:
    with sqlite3.connect(index) as db:
        return {row[0] for row in db.execute("SELECT recording_id FROM entries")}


def _final_files(dest: Path) -> set[str]:
    return {p.stem for p in dest.iterdir() if p.suffix in (".mp3", ".wav")}


async def test_a_kill_loses_at_most_one_group_and_the_next_run_indexes_it(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """kill -9 after 130 downloads: at most GROUP_ENTRIES rows are missing, and a re-run
    indexes every file on disk without one media request for them."""
    rids = add(fake, 160, size=8_000)
    index = dest / "index.db"
    os.makedirs(dest, exist_ok=True)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(dest),
        str(index),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdin is not None
    assert child.stdout is not None
    job = {"session": fake.session_kwargs(), "ids": rids}
    child.stdin.write(json.dumps(job).encode() + b"\n")
    await child.stdin.drain()
    done = 0
    while done < 130:
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        assert line, "the child ended early"
        done += 1
    child.send_signal(signal.SIGKILL)
    await child.wait()

    on_disk = _final_files(dest)
    indexed = _rows(index)
    assert len(on_disk) >= 130
    assert indexed <= on_disk
    assert len(on_disk - indexed) <= GROUP_ENTRIES  # at most the open group's rows
    assert len(indexed) >= GROUP_ENTRIES  # the first group was committed

    asked = fake.stats.media_requests
    report = await session.recordings.download_many(
        [recording(fake, rid) for rid in sorted(on_disk)], dest, manifest=index
    )
    assert fake.stats.media_requests == asked  # hashed from disk, never fetched again
    assert {r.status for r in report.results} == {DownloadStatus.SKIPPED}
    assert _rows(index) == on_disk


def _entry(n: int) -> ManifestEntry:
    return ManifestEntry(f"rec{n}", f"rec{n}.mp3", n, "0" * 64, "mp3", None, "2026-12-06")


def test_a_group_commits_every_group_entries_and_on_exit(tmp_path: Path) -> None:
    """Other connections see a group's rows once GROUP_ENTRIES are written, or on exit."""
    index = Manifest(tmp_path / "index.db")
    index.add(_entry(0))  # create the database (ungrouped: committed at once)
    with index.grouped(entries=3, seconds=3600):
        for n in range(1, 6):
            index.add(_entry(n))
        assert index.get("rec5") is not None  # the writer reads its own rows
        assert len(_rows(tmp_path / "index.db")) == 4  # 0, and the group 1-3
        assert index.pending == 2
    assert len(_rows(tmp_path / "index.db")) == 6
    index.add(_entry(6))  # ungrouped again: committed on return
    assert len(_rows(tmp_path / "index.db")) == 7
    index.close()


async def test_a_batch_commits_a_group_within_its_time(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """While a batch runs, a group's rows are committed by the batch's timer, not only at
    GROUP_ENTRIES: another process reading the index sees them before the batch ends."""
    first = add(fake, 2, size=5_000)
    (slow,) = add(fake, size=120_000)
    fake.media_fault(slow, "slow")
    index = dest / "index.db"
    seen: list[int] = []

    async def watch() -> None:
        while len(seen) == 0 or seen[-1] < 2:
            await asyncio.sleep(0.02)
            if index.exists():
                seen.append(len(_rows(index)))

    watcher = asyncio.create_task(watch())
    report = await session.recordings.download_many(
        [recording(fake, r) for r in [*first, slow]], dest, manifest=index, concurrency=3
    )
    await asyncio.wait_for(watcher, 30)

    assert len(report.downloaded) == 3
    assert seen[-1] == 2  # the two small ones, committed while the slow one streamed
    assert _rows(index) == {*first, slow}
