"""The index: writes, reloads, importing JSON Lines manifests, crashes, and verify."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import attrs
import pytest
from _procs import default_sigint

from vobiz_async import AsyncSession
from vobiz_async.errors import ManifestError
from vobiz_async.manifest import (
    MANIFEST_NAME,
    PAGE_ROWS,
    SQLITE_HEADER,
    Manifest,
    ManifestEntry,
    VerifyProblem,
    verify_manifest,
)
from vobiz_async.testing import FakeVobiz


def entry(recording_id: str, *, path: str | None = None, body: bytes = b"abc") -> ManifestEntry:
    return ManifestEntry(
        recording_id=recording_id,
        path=path or f"{recording_id}.mp3",
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        container="mp3",
        add_time="2026-05-07 09:45:35.79276+05:30",
        downloaded_at="2026-05-07T10:00:00+00:00",
    )


def line(value: ManifestEntry) -> bytes:
    return json.dumps(attrs.asdict(value)).encode() + b"\n"


def backup(path: Path) -> Path:
    """Where the import keeps a JSON Lines manifest."""
    return path.with_name(path.name + ".bak")


@pytest.fixture(name="path")
def _path(tmp_path: Path) -> Path:
    return tmp_path / MANIFEST_NAME


@pytest.fixture(name="archive")
def _archive(tmp_path: Path) -> tuple[Path, Manifest]:
    """A folder with three saved files and a manifest that lists them."""
    root = tmp_path / "archive"
    root.mkdir()
    manifest = Manifest(root / MANIFEST_NAME)
    for name, body in (("a", b"alpha" * 100), ("b", b"bravo" * 100), ("c", b"charlie")):
        (root / f"{name}.mp3").write_bytes(body)
        manifest.add(entry(name, body=body))
    manifest.close()
    return root, Manifest(root / MANIFEST_NAME)


# -- Manifest ---------------------------------------------------------------------------


def test_missing_file_is_an_empty_manifest(path: Path) -> None:
    """Opening a manifest that does not exist yet gives no entries and creates nothing."""
    with Manifest(path) as manifest:
        assert len(manifest) == 0
        assert list(manifest) == []
        assert manifest.get("a") is None

    assert not path.exists()


def test_add_then_reload(path: Path) -> None:
    """Entries appended by one instance are read back, in order, by the next."""
    first, second = entry("a"), entry("b", body=b"other")
    with Manifest(path) as manifest:
        manifest.add(first)
        manifest.add(second)

    with Manifest(path) as reloaded:
        assert list(reloaded) == [first, second]
        assert reloaded.get("b") == second


def test_index_is_a_sqlite_database(path: Path) -> None:
    """The index at the path is a SQLite database, readable by another connection."""
    with Manifest(path) as manifest:
        manifest.add(entry("a"))

        assert path.read_bytes().startswith(SQLITE_HEADER)
        with contextlib.closing(sqlite3.connect(path)) as other:
            rows = other.execute("SELECT recording_id, size, sha256 FROM entries").fetchall()
    assert rows == [("a", 3, entry("a").sha256)]


def test_add_creates_the_folder(tmp_path: Path) -> None:
    """The manifest's parent folder is created on the first append."""
    path = tmp_path / "new" / "dir" / MANIFEST_NAME
    with Manifest(path) as manifest:
        manifest.add(entry("a"))

    assert Manifest(path).get("a") == entry("a")


def test_last_entry_wins(path: Path) -> None:
    """A recording listed twice is known by its latest line, and counted once."""
    old, new = entry("a", body=b"old"), entry("a", body=b"new bytes")
    with Manifest(path) as manifest:
        manifest.add(old)
        manifest.add(entry("b"))
        manifest.add(new)
        assert manifest.get("a") == new

    with Manifest(path) as reloaded:
        assert reloaded.get("a") == new
        assert len(reloaded) == 2


def test_add_without_remembering_is_still_read_back(path: Path) -> None:
    """`remember=False` is accepted and does nothing: the entry is in the index at once."""
    with Manifest(path) as manifest:
        manifest.add(entry("a"))
        manifest.add(entry("b"), remember=False)
        assert manifest.get("b") == entry("b")
        assert [e.recording_id for e in manifest] == ["a", "b"]

    with Manifest(path) as reloaded:
        assert reloaded.get("b") == entry("b")
        assert len(reloaded) == 2


def test_add_without_remembering_replaces_the_older_entry(path: Path) -> None:
    """`remember=False` for a known id replaces the older entry, as any `add` does."""
    old, new = entry("a", body=b"old"), entry("a", body=b"new bytes")
    path.write_bytes(line(old))

    with Manifest(path) as manifest:
        manifest.add(new, remember=False)
        assert manifest.get("a") == new

    assert Manifest(path).get("a") == new


def test_record_stamps_the_time(path: Path) -> None:
    """`record` builds the entry itself with a timezone-aware download time."""
    with Manifest(path) as manifest:
        made = manifest.record(
            "a", "a.wav", size=3, sha256="00" * 32, container="wav", add_time=None
        )

    assert datetime.fromisoformat(made.downloaded_at).utcoffset() is not None
    assert Manifest(path).get("a") == made


def test_torn_last_line_is_skipped(path: Path) -> None:
    """A line cut short by a crash is ignored; the lines before it survive."""
    path.write_bytes(line(entry("a")) + line(entry("b")) + line(entry("c"))[:25])

    with Manifest(path) as manifest:
        assert [e.recording_id for e in manifest] == ["a", "b"]


def test_torn_last_line_is_kept_in_the_backup(path: Path) -> None:
    """After the import an append reads back with the lines before the torn one, and the
    torn bytes stay in the JSON Lines backup."""
    torn = line(entry("c"))[:25]
    path.write_bytes(line(entry("a")) + torn)

    with Manifest(path) as manifest:
        manifest.add(entry("d"))

    with Manifest(path) as reloaded:
        assert [e.recording_id for e in reloaded] == ["a", "d"]
    assert backup(path).read_bytes() == line(entry("a")) + torn


def test_complete_line_without_newline_is_kept_and_sealed(path: Path) -> None:
    """A last line missing only its newline still counts, and the next append follows it."""
    path.write_bytes(line(entry("a")) + line(entry("b")).rstrip(b"\n"))

    with Manifest(path) as manifest:
        assert manifest.get("b") == entry("b")
        manifest.add(entry("c"))

    with Manifest(path) as reloaded:
        assert [e.recording_id for e in reloaded] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b"null",
        b'{"recording_id": "x"}',
        json.dumps({**attrs.asdict(entry("x")), "surprise": 1}).encode(),
    ],
    ids=["syntax", "bytes", "list", "null", "missing-fields", "extra-field"],
)
def test_unreadable_middle_line_is_skipped(
    path: Path, bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A line that is not an entry is skipped with a warning; its neighbours load."""
    path.write_bytes(line(entry("a")) + bad + b"\n" + line(entry("b")))

    with caplog.at_level(logging.WARNING, logger="vobiz_async"):
        manifest = Manifest(path)

    assert [e.recording_id for e in manifest] == ["a", "b"]
    assert "unreadable line 2" in caplog.text


def test_blank_lines_are_ignored(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Empty lines are not entries and not worth a warning."""
    path.write_bytes(b"\n" + line(entry("a")) + b"  \n\n" + line(entry("b")))

    with caplog.at_level(logging.WARNING, logger="vobiz_async"):
        manifest = Manifest(path)

    assert len(manifest) == 2
    assert caplog.text == ""


def test_reopens_after_close(path: Path) -> None:
    """A closed manifest can still be appended to; it reopens its file."""
    manifest = Manifest(path)
    manifest.add(entry("a"))
    manifest.close()
    manifest.add(entry("b"))
    manifest.close()

    assert len(Manifest(path)) == 2


# -- the SQLite index: any name, import, crashes, memory, sharing ---------------------------


@pytest.mark.parametrize("name", ["vobiz-manifest.jsonl", "manifest.json", "index.db", "noext"])
def test_legacy_file_is_imported_whatever_its_name(tmp_path: Path, name: str) -> None:
    """A JSON Lines manifest at any path becomes an index in place, the last line per id
    winning, and the old bytes are kept beside it."""
    path = tmp_path / name
    old = line(entry("a")) + line(entry("b")) + line(entry("a", body=b"newer"))
    path.write_bytes(old)

    with Manifest(path) as manifest:
        assert [e.recording_id for e in manifest] == ["a", "b"]
        assert manifest.get("a") == entry("a", body=b"newer")

    assert path.read_bytes().startswith(SQLITE_HEADER)
    assert backup(path).read_bytes() == old


def test_import_happens_once(path: Path) -> None:
    """A second open reads the database; entries added after the import are kept, and no
    second backup is made."""
    path.write_bytes(line(entry("a")))
    with Manifest(path) as manifest:
        manifest.add(entry("b"))

    with Manifest(path) as reloaded:
        assert [e.recording_id for e in reloaded] == ["a", "b"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, backup(path).name]


def test_import_after_a_crashed_import(path: Path) -> None:
    """A crash mid-import leaves the JSON Lines file, a half-built database and maybe the
    backup link; the next open imports again from the JSON Lines file."""
    path.write_bytes(line(entry("a")) + line(entry("b")))
    path.with_name(path.name + ".importing").write_bytes(b"half a database")
    backup(path).hardlink_to(path)

    with Manifest(path) as manifest:
        assert [e.recording_id for e in manifest] == ["a", "b"]

    assert not path.with_name(path.name + ".importing").exists()
    assert backup(path).read_bytes() == line(entry("a")) + line(entry("b"))
    assert not path.with_name(path.name + ".bak.1").exists()


def test_older_backup_of_other_content_is_not_overwritten(path: Path) -> None:
    """An import finding `<name>.bak` from an earlier import keeps it and picks a new name."""
    backup(path).write_bytes(b"an older backup\n")
    path.write_bytes(line(entry("a")))

    Manifest(path).close()

    assert backup(path).read_bytes() == b"an older backup\n"
    assert path.with_name(path.name + ".bak.1").read_bytes() == line(entry("a"))


def test_concurrent_openers_import_once(path: Path) -> None:
    """Several openers of one JSON Lines manifest at once: one imports, all see the same
    entries, and a write by one is seen by the others."""
    path.write_bytes(b"".join(line(entry(f"r{i}")) for i in range(200)))
    opened: list[Manifest] = []
    barrier = threading.Barrier(4)

    def open_it() -> None:
        barrier.wait()
        opened.append(Manifest(path))

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    opened[0].add(entry("new"))

    assert [len(manifest) for manifest in opened] == [201] * 4
    assert all(manifest.get("new") == entry("new") for manifest in opened)
    assert not path.with_name(path.name + ".bak.1").exists()
    for manifest in opened:
        manifest.close()


def test_failed_import_is_a_clear_error(path: Path) -> None:
    """An import that cannot build its database beside the JSON Lines file (here a folder
    is in the way) raises `ManifestError` and leaves the file as it was."""
    path.write_bytes(line(entry("a")))
    path.with_name(path.name + ".importing").mkdir()

    with pytest.raises(ManifestError, match="cannot import"):
        Manifest(path)

    assert path.read_bytes() == line(entry("a"))


def test_a_folder_at_the_path_is_a_clear_error(path: Path) -> None:
    """A folder where the index should be raises `ManifestError` naming the path."""
    path.mkdir()

    with pytest.raises(ManifestError, match=str(path)):
        Manifest(path)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_entry_survives_a_crash_right_after_record(path: Path, how: str) -> None:
    """A process that dies (`os._exit`, or `kill -9`) as soon as `record` returns leaves the
    entry in the index."""
    with subprocess.Popen(  # noqa: S603 - this interpreter, with a constant program
        [sys.executable, "-c", CRASHER, str(path), how],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        preexec_fn=default_sigint,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == b"recorded\n"
        if how == "sigkill":
            child.kill()
        child.wait(timeout=30)

    assert child.returncode == (-signal.SIGKILL if how == "sigkill" else 3)
    with Manifest(path) as manifest:
        survived = manifest.get("a")
    assert survived is not None
    assert (survived.size, survived.sha256) == (3, "ab" * 32)


CRASHER = """
import os, sys
from vobiz_async.manifest import Manifest
manifest = Manifest(sys.argv[1])
manifest.record("a", "a.mp3", size=3, sha256="ab" * 32, container="mp3", add_time=None)
sys.stdout.write("recorded\\n")
sys.stdout.flush()
if sys.argv[2] == "exit":
    os._exit(3)
sys.stdin.read()  # until killed
"""


def test_writing_many_entries_holds_none_in_memory(path: Path) -> None:
    """Python memory does not grow with the number of entries written and looked up."""
    with Manifest(path) as manifest:
        manifest.add(entry("warm-up"))  # the connection and its statements
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            for i in range(5_000):
                manifest.record(
                    f"r{i}", f"r{i}.mp3", size=i, sha256="ab" * 32, container="mp3", add_time=None
                )
                manifest.get(f"r{i // 2}")
            gc.collect()
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(manifest) == 5_001

    # The JSON Lines manifest held about 500 bytes an entry: 2.5 MB for these.
    assert after - before < 64 * 1024


def test_iteration_reads_pages_and_sees_every_entry(path: Path) -> None:
    """Iterating more entries than a page, while writing, yields each once in order."""
    count = PAGE_ROWS * 2 + 7
    with Manifest(path) as manifest:
        for i in range(count):
            manifest.add(entry(f"r{i}"))
        seen = []
        for item in manifest:
            seen.append(item.recording_id)
            if len(seen) == 1:
                manifest.add(entry("r0", body=b"rewritten"))  # keeps its place

    assert seen == [f"r{i}" for i in range(count)]


def test_two_writers_share_one_index(path: Path) -> None:
    """Two open instances (as two processes would) write in turn and read each other."""
    first, second = Manifest(path), Manifest(path)
    for i in range(50):
        first.add(entry(f"a{i}"))
        second.add(entry(f"b{i}"))

    assert first.get("b49") == entry("b49")
    assert second.get("a49") == entry("a49")
    assert len(first) == len(second) == 100
    first.close()
    second.close()


def test_a_used_manifest_reopens_after_close(path: Path) -> None:
    """`get`, `len` and iteration after `close` reopen the database."""
    manifest = Manifest(path)
    manifest.add(entry("a"))
    manifest.close()

    assert manifest.get("a") == entry("a")
    assert len(manifest) == 1
    assert list(manifest) == [entry("a")]
    manifest.close()


def test_foreign_sqlite_database_is_refused(path: Path) -> None:
    """A SQLite database that is not an index is left alone and named in the error."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE something (x)")
        other.commit()

    with pytest.raises(ManifestError, match="not a vobiz_async index"):
        Manifest(path)


def test_index_from_a_newer_version_is_refused(path: Path) -> None:
    """An index whose schema version is newer than this library's is not written to."""
    Manifest(path).add(entry("a"))
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("PRAGMA user_version=99")

    with pytest.raises(ManifestError, match="newer"):
        Manifest(path)


def test_truth_is_whether_there_is_an_entry_without_counting(path: Path) -> None:
    """`bool(manifest)` is false when empty, true with an entry, and never counts the rows
    (the downloader asks it before every lookup; a count of a million rows takes 30 ms)."""
    with Manifest(path) as manifest:
        assert not manifest
        manifest.add(entry("a"))
        assert manifest._db is not None
        statements: list[str] = []
        manifest._db.set_trace_callback(statements.append)

        assert manifest
        assert statements
        assert not any("count(" in statement.lower() for statement in statements)


def test_dropped_without_close_does_not_warn(path: Path) -> None:
    """A Manifest dropped while open closes its connection without a ResourceWarning."""
    manifest = Manifest(path)
    manifest.add(entry("a"))
    del manifest
    gc.collect()

    assert Manifest(path).get("a") == entry("a")


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=5, seed=3) as fake:
        yield fake


@pytest.mark.parametrize("name", ["vobiz-manifest.jsonl", "archive.index", "noext"])
async def test_what_download_many_wrote_is_read_back(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path, name: str
) -> None:
    """`Manifest(PATH)` reads back what `download_many(manifest=PATH)` wrote, whatever the
    path's name: each recording's size and served sha256."""
    path, out = tmp_path / name, tmp_path / "out"

    report = await session.recordings.download_many(session.recordings.list(), out, manifest=path)

    assert report.ok
    with Manifest(path) as manifest:
        found = {rid: manifest.get(rid) for rid in fake.recording_ids}
        assert verify_manifest(out, manifest) == []
    assert {rid: (e.size, e.sha256) for rid, e in found.items() if e} == {
        rid: (fake.size(rid), fake.sha256(rid)) for rid in fake.recording_ids
    }


# -- verify_manifest ----------------------------------------------------------------------


def test_verify_clean_archive(archive: tuple[Path, Manifest]) -> None:
    """Files whose size and sha256 match their entries are no problem."""
    root, manifest = archive

    assert verify_manifest(root, manifest) == []


def test_verify_reports_missing_file(archive: tuple[Path, Manifest]) -> None:
    """A listed file that is gone is reported as missing."""
    root, manifest = archive
    (root / "b.mp3").unlink()

    assert verify_manifest(root, manifest) == [VerifyProblem("b", "b.mp3", "missing")]


#: The recorders of `opens()` now active.
_OPEN_RECORDERS: list[list[str]] = []


def _record_open(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _OPEN_RECORDERS and isinstance(args[0], str | bytes | os.PathLike):
        _OPEN_RECORDERS[-1].append(os.fsdecode(args[0]))


# An audit hook cannot be removed; idle (no recorder active) it only compares two names.
sys.addaudithook(_record_open)


@contextlib.contextmanager
def opens() -> Iterator[list[str]]:
    """The paths this process opens inside the block, however it reads them (audit events)."""
    seen: list[str] = []
    _OPEN_RECORDERS.append(seen)
    try:
        yield seen
    finally:
        _OPEN_RECORDERS.remove(seen)


def test_verify_reports_size_difference(archive: tuple[Path, Manifest]) -> None:
    """A listed file with another length is reported without hashing it."""
    root, manifest = archive
    with (root / "a.mp3").open("ab") as f:
        f.write(b"x")

    with opens() as opened:
        problems = verify_manifest(root, manifest)

    assert problems == [VerifyProblem("a", "a.mp3", "size differs")]
    assert str(root / "b.mp3") in opened  # the hook sees the files that are hashed
    assert str(root / "a.mp3") not in opened


def test_verify_reports_changed_bytes(archive: tuple[Path, Manifest]) -> None:
    """A listed file of the right length but other bytes is reported as a sha256 mismatch."""
    root, manifest = archive
    data = bytearray((root / "c.mp3").read_bytes())
    data[3] ^= 0x01
    (root / "c.mp3").write_bytes(bytes(data))

    assert verify_manifest(root, manifest) == [VerifyProblem("c", "c.mp3", "sha256 differs")]


def test_verify_reports_a_directory_as_missing(archive: tuple[Path, Manifest]) -> None:
    """A directory where a file should be is not a file: missing."""
    root, manifest = archive
    (root / "a.mp3").unlink()
    (root / "a.mp3").mkdir()

    assert verify_manifest(root, manifest) == [VerifyProblem("a", "a.mp3", "missing")]


def test_verify_resolves_paths_under_root(tmp_path: Path) -> None:
    """Entry paths are relative to the folder given, subfolders included."""
    root = tmp_path / "root"
    (root / "2026" / "05").mkdir(parents=True)
    (root / "2026" / "05" / "a.wav").write_bytes(b"abc")
    with Manifest(root / MANIFEST_NAME) as manifest:
        manifest.add(entry("a", path="2026/05/a.wav"))

        assert verify_manifest(root, manifest) == []
        assert verify_manifest(tmp_path, manifest) == [
            VerifyProblem("a", "2026/05/a.wav", "missing")
        ]
