"""Overlapping runs into one folder (issue 22, item 3): each recording is claimed before its
partial is touched, so two runs both finish, fetch each recording about once, and never
write one file from two processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _download_helpers import recording
from test_cli import Result, env_for, finish, start_cli

from vobiz_async import Recording
from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.sinks import AlreadyStored, DirectorySink
from vobiz_async.testing import FakeVobiz

RECORDINGS = 24


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    # Media answers late, so both runs are mid-transfer on the same recordings at once.
    async with FakeVobiz(recordings=RECORDINGS, seed=7, media_latency=0.05) as fake:
        yield fake


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _bytes(location: str) -> bytes:
    return Path(location).read_bytes()


async def test_two_overlapping_cli_runs_share_one_folder(fake: FakeVobiz, tmp_path: Path) -> None:
    """Two `download` runs into one folder and index: both exit 0, every file is the
    fake's bytes, each recording is fetched about once, and `verify` is clean."""
    out = tmp_path / "archive"
    env = env_for(dict(os.environ), fake)
    for rid in fake.recording_ids[::8]:
        fake.media_fault(rid, "slow", times=2)  # some transfers stay open a while
    args = ("download", "--out", str(out), "--concurrency", "4")

    first, second = await asyncio.gather(start_cli(*args, env=env), start_cli(*args, env=env))
    results: list[Result] = list(await asyncio.gather(finish(first), finish(second)))

    for result in results:
        assert result.code == 0, result.output
    finals = {p.stem: p for p in out.iterdir() if p.suffix in (".mp3", ".wav")}
    assert sorted(finals) == sorted(fake.recording_ids)
    for rid, path in finals.items():
        assert _sha256(path) == fake.sha256(rid), rid
    assert not [p for p in out.iterdir() if ".part" in p.name]
    assert fake.stats.media_requests <= 1.2 * RECORDINGS
    with Manifest(out / MANIFEST_NAME) as manifest:
        assert {e.recording_id: e.sha256 for e in manifest} == {
            rid: fake.sha256(rid) for rid in fake.recording_ids
        }
    verify = await finish(await start_cli("verify", str(out), env=env))
    assert verify.code == 0, verify.output
    assert f"verified {RECORDINGS} of {RECORDINGS} files; 0 problem" in verify.out


# -- the sink: two sinks on one folder stand for two processes (flock is per open file) ------


@pytest.fixture(name="rec")
def _rec(fake: FakeVobiz) -> Recording:
    return recording(fake, fake.recording_ids[0])


async def _sinks(root: Path) -> tuple[DirectorySink, DirectorySink]:
    first, second = DirectorySink(root), DirectorySink(root)
    await first.prepare()
    await second.prepare()
    return first, second


async def _settle() -> None:
    """Let a waiting claim poll a few times."""
    for _ in range(5):
        await asyncio.sleep(0.03)


async def test_a_claimed_recording_waits_then_is_already_stored(
    rec: Recording, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While one sink writes a recording, another's `open` waits (saying so once), then
    raises AlreadyStored with the file the first committed, and never touched its bytes."""
    caplog.set_level("INFO", logger="vobiz_async")
    first, second = await _sinks(tmp_path)
    assert await second.lookup(rec.recording_id, rec) is None
    writer = await first.open(rec)
    await writer.write(b"ID3" + b"x" * 997)

    waiting = asyncio.create_task(second.open(rec))
    await _settle()
    assert not waiting.done()
    digest = hashlib.sha256(b"ID3" + b"x" * 997).hexdigest()
    stored = await writer.commit(container="mp3", size=1000, sha256=digest)

    with pytest.raises(AlreadyStored) as done:
        await waiting
    assert done.value.stored.location == stored.location
    assert done.value.stored.size == 1000
    assert _sha256(Path(stored.location)) == digest
    assert _names(tmp_path) == [os.path.basename(stored.location)]
    assert [r.getMessage() for r in caplog.records].count(
        f"another run holds {rec.recording_id}.part; waiting"
    ) == 1


async def test_an_aborted_claim_hands_its_bytes_to_the_waiter(
    rec: Recording, tmp_path: Path
) -> None:
    """A sink that aborts keeps its partial; the sink waiting for it resumes those bytes."""
    first, second = await _sinks(tmp_path)
    writer = await first.open(rec)
    await writer.write(b"a" * 4096)

    waiting = asyncio.create_task(second.open(rec))
    await _settle()
    assert not waiting.done()
    await writer.abort()

    resumed = await waiting
    assert resumed.offset == 4096
    await resumed.abort()


async def test_lookup_sees_a_file_another_process_stored_after_the_batch_began(
    rec: Recording, tmp_path: Path
) -> None:
    """A sink's earlier lookups do not hide a final file another process stored since."""
    first, second = await _sinks(tmp_path)
    assert await first.lookup("another-recording", None) is None  # the batch looked here

    writer = await second.open(rec)
    await writer.write(b"ID3" + b"y" * 97)
    await writer.commit(container="mp3", size=100, sha256="0" * 64)

    found = await first.lookup(rec.recording_id, rec)
    assert found is not None
    assert found.size == 100


async def test_lookup_leaves_a_partial_another_process_is_writing(
    rec: Recording, tmp_path: Path
) -> None:
    """A partial beside a final file is removed as stale only when no one holds it: an
    overwrite in progress elsewhere keeps its partial and commits."""
    first, second = await _sinks(tmp_path)
    (tmp_path / f"{rec.recording_id}.mp3").write_bytes(b"ID3 old")
    writer = await first.open(rec)  # an --overwrite run, writing
    await writer.write(b"ID3 new bytes")

    assert await second.lookup(rec.recording_id, rec) is not None
    stored = await writer.commit(container="mp3", size=13, sha256="0" * 64)

    assert _bytes(stored.location) == b"ID3 new bytes"


async def test_lookup_removes_a_stale_partial_nobody_holds(rec: Recording, tmp_path: Path) -> None:
    """A partial an aborted overwrite left beside the final file is removed by a lookup."""
    (sink, _) = await _sinks(tmp_path)
    (tmp_path / f"{rec.recording_id}.mp3").write_bytes(b"ID3 kept")
    (tmp_path / f"{rec.recording_id}.part").write_bytes(b"ID3 half")

    assert await sink.lookup(rec.recording_id, rec) is not None

    assert _names(tmp_path) == [f"{rec.recording_id}.mp3"]
