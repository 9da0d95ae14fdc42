"""An index that cannot lie (issue 22, item 4): a damaged file is never taken for an empty
manifest, and every refused write is a `ManifestError` naming the file."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from test_cli import env_for, run_cli

from vobiz_async.errors import ManifestError
from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.testing import FakeVobiz


def record(manifest: Manifest, recording_id: str = "a") -> None:
    manifest.record(
        recording_id, f"{recording_id}.mp3", size=3, sha256="0" * 64, container="mp3", add_time=None
    )


def damaged(path: Path) -> bytes:
    """Make an index of two entries at `path`, overwrite its first 100 bytes; its bytes."""
    with Manifest(path) as manifest:
        record(manifest, "a")
        record(manifest, "b")
    data = bytearray(path.read_bytes())
    data[:100] = bytes(range(100))
    path.write_bytes(bytes(data))
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    return bytes(data)


@pytest.fixture(name="path")
def _path(tmp_path: Path) -> Path:
    return tmp_path / MANIFEST_NAME


# -- a damaged index ----------------------------------------------------------------------


def test_a_damaged_header_is_refused_and_kept(path: Path) -> None:
    """An index whose first 100 bytes are overwritten is a ManifestError naming the file,
    not an old manifest with no entries; the file keeps its bytes and no backup appears."""
    before = damaged(path)

    with pytest.raises(ManifestError, match="neither an index nor a JSON Lines") as refused:
        Manifest(path)

    assert str(path) in str(refused.value)
    assert "\n" not in str(refused.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_text_that_is_not_a_manifest_is_refused(path: Path) -> None:
    """A text file whose lines are not entries is refused too, and kept."""
    path.write_bytes(b"hello\nworld\n")

    with pytest.raises(ManifestError, match=str(path)):
        Manifest(path)

    assert path.read_bytes() == b"hello\nworld\n"


def test_an_empty_file_is_a_new_index(path: Path) -> None:
    """A 0-byte file is an index with no entries yet, which takes writes."""
    path.write_bytes(b"")

    with Manifest(path) as manifest:
        assert len(manifest) == 0
        record(manifest)
        assert manifest.get("a") is not None


# -- refused writes -------------------------------------------------------------------------


def test_an_index_under_a_file_is_a_manifest_error(tmp_path: Path) -> None:
    """An index whose folder cannot be made (a file is in the way) refuses the write with
    ManifestError naming the index, not a bare OSError."""
    (tmp_path / "blocked").write_text("a file, not a folder")
    path = tmp_path / "blocked" / MANIFEST_NAME

    with pytest.raises(ManifestError, match=str(path)):
        record(Manifest(path))


def test_an_index_whose_wal_cannot_be_made_is_a_manifest_error(path: Path) -> None:
    """When SQLite cannot write beside the index (its WAL file cannot be created), a write
    is a ManifestError naming the file."""
    with Manifest(path) as manifest:
        record(manifest)
    Path(f"{path}-wal").unlink(missing_ok=True)
    Path(f"{path}-wal").mkdir()

    with pytest.raises(ManifestError, match=str(path)):
        record(Manifest(path), "b")


@pytest.fixture(name="held")
def _held(path: Path) -> Iterator[None]:
    """Another process's connection holding the index's write lock."""
    with Manifest(path) as manifest:
        record(manifest)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield
    other.execute("ROLLBACK")
    other.close()


@pytest.mark.usefixtures("held")
def test_a_write_locked_beyond_the_busy_timeout_is_a_manifest_error(path: Path) -> None:
    """A writer that holds the index longer than the busy timeout makes a write fail with
    ManifestError naming the file, not sqlite3.OperationalError."""
    manifest = Manifest(path, timeout=0.05)

    with pytest.raises(ManifestError, match=str(path)):
        record(manifest, "b")
    manifest.close()


# -- the command line -----------------------------------------------------------------------


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=3, seed=5) as fake:
        yield fake


@pytest.mark.parametrize("command", ["download", "verify"])
async def test_cli_stops_on_a_damaged_index(fake: FakeVobiz, tmp_path: Path, command: str) -> None:
    """`download` and `verify` on a folder whose index is damaged exit non-zero with one
    line naming the file, download nothing, and leave the index's bytes as they were."""
    out = tmp_path / "archive"
    out.mkdir()
    index = out / MANIFEST_NAME
    before = damaged(index)
    args = ("download", "--out", str(out)) if command == "download" else ("verify", str(out))

    result = await run_cli(*args, env=env_for(dict(os.environ), fake))

    assert result.code != 0, result.output
    assert result.err.count("\n") == 1, result.err
    assert str(index) in result.err
    assert "Traceback" not in result.output
    assert "verified 0 of 0" not in result.out
    assert index.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]
    assert fake.stats.media_requests == 0
