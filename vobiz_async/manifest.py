"""The archive's index (the manifest): one SQLite row per verified recording.

The index answers "is this recording archived, with which size and sha256" with one
primary-key lookup, so opening an index of a million recordings costs milliseconds and
almost no memory (the JSON Lines manifest it replaces was read whole: 14.7 s and 1.39 GB for
a million entries). It is a SQLite database (the standard library's `sqlite3`) in WAL mode
with `recording_id` as its primary key, stored at the path it is given, whatever the name:
the CLI's default in a folder is still `vobiz-manifest.jsonl`.

Durability: every entry is its own transaction, committed before `add` returns, with
`synchronous=NORMAL`. A crashed or killed process (`kill -9` included) loses nothing that
was committed, so at most the entry being written; a power loss or kernel crash can lose the
last entries committed since the previous checkpoint, never the database's consistency.
`Manifest(path, fsync=True)` uses `synchronous=FULL` and survives power loss too, at the cost
of one fsync per entry (benchmarks/RESULTS.md, "The index at scale").

Several processes may open the same index: readers never wait, and a writer waits up to
`timeout` seconds for another writer's transaction (a few microseconds each).

Beside the file (path, size, sha256, container), an entry keeps every field of the archived
`Recording` (`RECORDING_FIELDS`). The view `recordings` (`VIEW_COLUMNS`) is the index's
stable interface for people and tools (`sqlite3`, DuckDB): one row per archived recording,
`add_time` ISO 8601 with its offset; it only ever gains columns. An index written by an
earlier version is brought up to date in place when opened: the columns it lacks are added
(its entries read NULL there) and the view is created, in one transaction.

A JSON Lines manifest found at the path (a file that does not start with SQLite's header,
whose first line is an entry) is imported once, on open: the database is built beside it,
the old file is kept as `<name>.bak`, and the database is renamed into its place; a crash at
any point leaves either the old file (imported again next time) or the finished database. A
torn or unreadable line is skipped with a warning, as before; the last line for an id wins.
A file that is neither (a database whose first bytes were overwritten, a file mostly of
unreadable lines) is never taken for an empty manifest: `ManifestError` names it, and it is
left untouched.

Every failure to read or write the index, whatever its cause (a read-only file or folder,
a full disk, an I/O error, another writer holding it longer than `timeout`, SQLite's busy
timeout), is a `ManifestError` naming the file, never a bare `sqlite3.Error` or `OSError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import operator
import os
import sqlite3
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

import attrs

from ._files import fsync_path
from .errors import ManifestError
from .models import Recording
from .protocol import parse_timestamp

if sys.platform != "win32":
    import fcntl

__all__ = [
    "MANIFEST_NAME",
    "RECORDING_FIELDS",
    "VIEW_COLUMNS",
    "Manifest",
    "ManifestEntry",
    "VerifyProblem",
    "recording_fields",
    "verify_manifest",
]

logger = logging.getLogger("vobiz_async")

#: The index's file name inside a destination folder, where the CLI keeps it. It kept the
#: JSON Lines name it had before it became a SQLite database, so existing archives, scripts
#: and `--manifest` arguments keep working.
MANIFEST_NAME = "vobiz-manifest.jsonl"

#: The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: `PRAGMA application_id` of an index ("Vobz"): tells ours from somebody else's database.
APPLICATION_ID = 0x566F627A
SCHEMA_VERSION = 1
#: Rows fetched per query while iterating: memory stays bounded whatever the index's size.
PAGE_ROWS = 500
#: The longest first line read to tell a JSON Lines manifest (an entry is ~300 bytes).
_LINE_MAX = 1 << 16
#: A grouped index (`Manifest.grouped`, what a batch uses) commits its entries at least
#: every this many entries and, through the batch's timer, this many seconds.
GROUP_ENTRIES = 100
GROUP_SECONDS = 0.05

#: The columns of `entries` after the first seven, each added in place to an index
#: written before it existed (old rows NULL): `deleted_at`, then the fields of the archived
#: `Recording` (issue 25). Millisecond figures are numbers (REAL), money stays the exact
#: decimal string Vobiz sent (TEXT).
_ADDED_COLUMNS = (
    ("deleted_at", "TEXT"),
    ("call_uuid", "TEXT"),
    ("recording_type", "TEXT"),
    ("recording_format", "TEXT"),
    ("recording_duration_ms", "REAL"),
    ("recording_start_ms", "REAL"),
    ("recording_end_ms", "REAL"),
    ("from_number", "TEXT"),
    ("to_number", "TEXT"),
    ("conference_name", "TEXT"),
    ("rounded_recording_duration", "INTEGER"),
    ("recording_storage_rate", "TEXT"),
    ("monthly_recording_storage_amount", "TEXT"),
)
_BASE_COLUMNS = (
    "recording_id",
    "path",
    "size",
    "sha256",
    "container",
    "add_time",
    "downloaded_at",
)
#: Every column of `entries`, in `ManifestEntry`'s field order.
_COLUMNS = _BASE_COLUMNS + tuple(name for name, _ in _ADDED_COLUMNS)
#: The archived recording's fields the index keeps (the `Recording` names), `add_time` too.
RECORDING_FIELDS = (
    "call_uuid",
    "recording_type",
    "recording_format",
    "add_time",
    "recording_duration_ms",
    "recording_start_ms",
    "recording_end_ms",
    "from_number",
    "to_number",
    "conference_name",
    "rounded_recording_duration",
    "recording_storage_rate",
    "monthly_recording_storage_amount",
)
#: The columns of the `recordings` view, in order: a stable interface (README, "Finding a
#: call in the archive"). `path` is the recording's key relative to the archive's root (the
#: folder, or the bucket's prefix); `add_time` is ISO 8601 with its offset.
VIEW_COLUMNS = (
    "recording_id",
    "path",
    "size",
    "sha256",
    "container",
    "downloaded_at",
    *RECORDING_FIELDS,
    "deleted_at",
)

_SCHEMA = """
CREATE TABLE entries (
    recording_id TEXT PRIMARY KEY NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    container TEXT,
    add_time TEXT,
    downloaded_at TEXT NOT NULL,
    deleted_at TEXT,
    call_uuid TEXT,
    recording_type TEXT,
    recording_format TEXT,
    recording_duration_ms REAL,
    recording_start_ms REAL,
    recording_end_ms REAL,
    from_number TEXT,
    to_number TEXT,
    conference_name TEXT,
    rounded_recording_duration INTEGER,
    recording_storage_rate TEXT,
    monthly_recording_storage_amount TEXT
)
"""
#: One row per archived recording, under the names of `VIEW_COLUMNS`; entries written with
#: a space between date and time (before the index kept the recording's fields) read as
#: ISO 8601 too.
_VIEW = """CREATE VIEW recordings AS SELECT
    recording_id, path, size, sha256, container, downloaded_at,
    call_uuid, recording_type, recording_format,
    replace(add_time, ' ', 'T') AS add_time,
    recording_duration_ms, recording_start_ms, recording_end_ms,
    from_number, to_number, conference_name, rounded_recording_duration,
    recording_storage_rate, monthly_recording_storage_amount, deleted_at
FROM entries"""
# An id written again keeps its place (its rowid) and takes the new values: iteration order
# is first-written order, and the latest entry wins, as in the JSON Lines manifest. The
# recording's fields are kept when the new entry has none (an id archived again without
# its listing).
_UPSERT = """
INSERT INTO entries (
    recording_id, path, size, sha256, container, add_time, downloaded_at, deleted_at,
    call_uuid, recording_type, recording_format, recording_duration_ms, recording_start_ms,
    recording_end_ms, from_number, to_number, conference_name, rounded_recording_duration,
    recording_storage_rate, monthly_recording_storage_amount
)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (recording_id) DO UPDATE SET
    path = excluded.path, size = excluded.size, sha256 = excluded.sha256,
    container = excluded.container, downloaded_at = excluded.downloaded_at,
    deleted_at = excluded.deleted_at,
    add_time = coalesce(excluded.add_time, entries.add_time),
    call_uuid = coalesce(excluded.call_uuid, entries.call_uuid),
    recording_type = coalesce(excluded.recording_type, entries.recording_type),
    recording_format = coalesce(excluded.recording_format, entries.recording_format),
    recording_duration_ms = coalesce(excluded.recording_duration_ms, entries.recording_duration_ms),
    recording_start_ms = coalesce(excluded.recording_start_ms, entries.recording_start_ms),
    recording_end_ms = coalesce(excluded.recording_end_ms, entries.recording_end_ms),
    from_number = coalesce(excluded.from_number, entries.from_number),
    to_number = coalesce(excluded.to_number, entries.to_number),
    conference_name = coalesce(excluded.conference_name, entries.conference_name),
    rounded_recording_duration =
        coalesce(excluded.rounded_recording_duration, entries.rounded_recording_duration),
    recording_storage_rate =
        coalesce(excluded.recording_storage_rate, entries.recording_storage_rate),
    monthly_recording_storage_amount = coalesce(
        excluded.monthly_recording_storage_amount, entries.monthly_recording_storage_amount
    )
"""
_GET = """
SELECT recording_id, path, size, sha256, container, add_time, downloaded_at, deleted_at,
    call_uuid, recording_type, recording_format, recording_duration_ms, recording_start_ms,
    recording_end_ms, from_number, to_number, conference_name, rounded_recording_duration,
    recording_storage_rate, monthly_recording_storage_amount
FROM entries WHERE recording_id = ?
"""
_PAGE = """
SELECT rowid, recording_id, path, size, sha256, container, add_time, downloaded_at, deleted_at,
    call_uuid, recording_type, recording_format, recording_duration_ms, recording_start_ms,
    recording_end_ms, from_number, to_number, conference_name, rounded_recording_duration,
    recording_storage_rate, monthly_recording_storage_amount
FROM entries WHERE rowid > ? ORDER BY rowid LIMIT ?
"""


@attrs.frozen
class ManifestEntry:
    """One verified recording on disk; `path` is relative to the destination folder.

    Beside the file, an entry keeps the archived `Recording`'s fields (None for entries
    written before the index kept them, or when only the id was known).
    """

    recording_id: str
    path: str
    size: int
    sha256: str
    container: str | None
    add_time: str | None
    downloaded_at: str
    #: When the recording was deleted at Vobiz after being archived (ISO 8601 UTC), if it was.
    deleted_at: str | None = None
    call_uuid: str | None = None
    recording_type: str | None = None
    recording_format: str | None = None
    recording_duration_ms: float | None = None
    recording_start_ms: float | None = None
    recording_end_ms: float | None = None
    from_number: str | None = None
    to_number: str | None = None
    conference_name: str | None = None
    rounded_recording_duration: int | None = None
    recording_storage_rate: str | None = None
    monthly_recording_storage_amount: str | None = None

    def row(self) -> dict[str, Any]:
        """The entry as a row of the `recordings` view: `VIEW_COLUMNS`, in order."""
        values = attrs.asdict(self)
        if self.add_time is not None:
            values["add_time"] = self.add_time.replace(" ", "T")
        return {name: values[name] for name in VIEW_COLUMNS}

    def recording(self) -> Recording:
        """The archived recording as the index remembers it (no `recording_url`: the index
        does not keep it), for decisions such as a `Selection`'s."""
        return Recording(
            recording_id=self.recording_id,
            recording_url="",
            call_uuid=self.call_uuid,
            recording_format=self.recording_format,
            recording_type=self.recording_type,
            add_time=_timestamp(self.add_time),
            recording_duration_ms=_decimal(self.recording_duration_ms),
            recording_start_ms=_decimal(self.recording_start_ms),
            recording_end_ms=_decimal(self.recording_end_ms),
            rounded_recording_duration=self.rounded_recording_duration,
            from_number=self.from_number,
            to_number=self.to_number,
            conference_name=self.conference_name,
            recording_storage_rate=_decimal(self.recording_storage_rate),
            monthly_recording_storage_amount=_decimal(self.monthly_recording_storage_amount),
        )


def recording_fields(recording: Recording) -> dict[str, Any]:
    """What the index keeps of a `Recording` (`RECORDING_FIELDS` but `add_time`): numbers
    as the columns hold them."""
    return {
        "call_uuid": recording.call_uuid,
        "recording_type": recording.recording_type,
        "recording_format": recording.recording_format,
        "recording_duration_ms": _number(recording.recording_duration_ms),
        "recording_start_ms": _number(recording.recording_start_ms),
        "recording_end_ms": _number(recording.recording_end_ms),
        "from_number": recording.from_number,
        "to_number": recording.to_number,
        "conference_name": recording.conference_name,
        "rounded_recording_duration": recording.rounded_recording_duration,
        "recording_storage_rate": _text(recording.recording_storage_rate),
        "monthly_recording_storage_amount": _text(recording.monthly_recording_storage_amount),
    }


def _number(value: Decimal | None) -> float | None:
    return float(value) if value is not None and value.is_finite() else None


def _text(value: Decimal | None) -> str | None:
    return str(value) if value is not None and value.is_finite() else None


def _decimal(value: float | str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


@attrs.frozen
class VerifyProblem:
    """A manifest entry whose file is missing or whose bytes changed."""

    recording_id: str
    path: str
    problem: str


#: An entry's fields in column order: what `attrs.astuple` gives, at a sixth of its cost.
_ROW = operator.attrgetter(*(field.name for field in attrs.fields(ManifestEntry)))


def _row(entry: ManifestEntry) -> tuple[Any, ...]:
    return tuple(_ROW(entry))


#: The columns set one at a time after an entry is written (`Manifest._set`).
_Stamp = Literal["deleted_at", "transcript_path", "delete_requested_at"]


class Manifest:
    """The archive's index at `path`: a SQLite database, opened (and imported) on demand.

    Nothing per recording is held in memory: `get` is one indexed query, iteration reads
    `PAGE_ROWS` rows at a time, and `len` counts in the database. An index that does not
    exist yet reads as empty and is created by the first `add`. A closed `Manifest` reopens
    its database when it is used again. The connection may be used from any thread.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fsync: bool = False, timeout: float = 30.0
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.timeout = timeout
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._group = 1  # entries per commit: 1 unless grouped
        self._group_seconds = 0.0
        self._pending = 0  # entries written and not yet committed
        if self.path.exists():
            self._connect()

    def __repr__(self) -> str:
        return f"Manifest({str(self.path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the connection ---------------------------------------------------------------

    def _connection(self, *, create: bool) -> sqlite3.Connection | None:
        """The open database; `None` if it does not exist and `create` is false."""
        with self._lock:
            if self._db is None:
                if not create and not self.path.exists():
                    return None
                self._connect()
            assert self._db is not None
            return self._db

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ManifestError(f"cannot create the index {self.path}: {_reason(err)}") from err
        _import_legacy(self.path)
        try:
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as err:
            raise ManifestError(f"cannot open the index {self.path}: {err}") from err
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")  # kept in the file: set once
            db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            _ensure_schema(db, self.path)
            _migrate(db)
            _add_extra_columns(db)
        except sqlite3.Error as err:
            db.close()
            raise ManifestError(f"{self.path} is not a usable index: {err}") from err
        except BaseException:
            db.close()
            raise
        self._db = db
        # Closes the connection if the Manifest is dropped unclosed, before sqlite3 would
        # warn about it.
        self._finalizer = weakref.finalize(self, db.close)

    def close(self) -> None:
        """Commit what a group holds and close the database; the manifest reopens it if it
        is used again."""
        with self._lock:
            self.commit()
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            self._db = None

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any] | None:
        db = self._connection(create=False)
        if db is None:
            return None
        with self._lock:
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.Error as err:
                raise ManifestError(f"cannot read the index {self.path}: {err}") from err

    # -- reading ----------------------------------------------------------------------

    def __len__(self) -> int:
        rows = self._query("SELECT count(*) FROM entries")
        return 0 if rows is None else int(rows[0][0])

    def __bool__(self) -> bool:
        """Whether there is any entry: one row read, where `len` would count them all (the
        downloader asks `if manifest` before every lookup)."""
        rows = self._query("SELECT 1 FROM entries LIMIT 1")
        return bool(rows)

    def __iter__(self) -> Iterator[ManifestEntry]:
        """Every entry in first-written order, read a page at a time (no cursor is held
        open between pages, so the index can be written meanwhile)."""
        after = 0
        while True:
            rows = self._query(_PAGE, (after, PAGE_ROWS))
            if not rows:
                return
            for row in rows:
                yield ManifestEntry(*row[1:])
            after = rows[-1][0]

    def get(self, recording_id: str) -> ManifestEntry | None:
        """The latest entry for `recording_id`, if any."""
        rows = self._query(_GET, (recording_id,))
        return ManifestEntry(*rows[0]) if rows else None

    # -- writing ----------------------------------------------------------------------

    def add(self, entry: ManifestEntry, *, remember: bool = True) -> None:
        """Write one entry (replacing an earlier one for its id), committed on return.

        `remember` is accepted for compatibility and does nothing: the JSON Lines manifest
        kept its entries in memory unless told not to; the index never does, and `get` sees
        every committed entry.
        """
        del remember
        db = self._connection(create=True)
        assert db is not None
        with self._lock:
            try:
                if self._group > 1 and not db.in_transaction:
                    db.execute("BEGIN IMMEDIATE")
                db.execute(_UPSERT, _row(entry))
            except sqlite3.Error as err:
                raise ManifestError(f"cannot write the index {self.path}: {err}") from err
            if db.in_transaction:
                self._pending += 1
                if self._pending >= self._group:
                    self.commit()

    # -- grouped commits --------------------------------------------------------------

    @contextlib.contextmanager
    def grouped(self, entries: int | None = None, seconds: float | None = None) -> Iterator[None]:
        """Within the block, `add` commits every `entries` entries (default
        `GROUP_ENTRIES`) instead of each one, and whoever writes calls `commit` at most
        `seconds` (`group_seconds`, default `GROUP_SECONDS`) after an entry (the batch's
        timer). On exit what is pending is committed and each `add` commits again.

        What a kill -9 costs: the entries of the open group (at most `entries`, written in
        the last `seconds`). Their files are final on disk, so the next run finds each one
        without an index row, hashes and indexes it, with no media request.
        """
        with self._lock:
            saved = (self._group, self._group_seconds)
            self._group = GROUP_ENTRIES if entries is None else max(1, entries)
            self._group_seconds = GROUP_SECONDS if seconds is None else seconds
        try:
            yield
        finally:
            with self._lock:
                self._group, self._group_seconds = saved
                self.commit()

    @property
    def pending(self) -> int:
        """Entries written by a group and not committed yet."""
        return self._pending

    @property
    def group_seconds(self) -> float:
        """The longest a grouped entry should wait for its commit (0: not grouped)."""
        return self._group_seconds if self._group > 1 else 0.0

    def commit(self) -> None:
        """Commit the entries a group holds (nothing when none are pending)."""
        with self._lock:
            db = self._db
            if db is None or not db.in_transaction:
                self._pending = 0
                return
            try:
                db.execute("COMMIT")
            except sqlite3.Error as err:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")  # the files stay; a later run indexes them
                raise ManifestError(f"cannot write the index {self.path}: {err}") from err
            finally:
                self._pending = 0

    def _set(self, column: _Stamp, value: str, recording_id: str) -> bool:
        """Set one of `recording_id`'s columns, committed on return (even within a group);
        False when the index holds no such entry."""
        db = self._connection(create=True)
        assert db is not None
        with self._lock:
            try:
                cursor = db.execute(
                    f"UPDATE entries SET {column} = ? WHERE recording_id = ?",  # noqa: S608 (a _Stamp name)
                    (value, recording_id),
                )
            except sqlite3.Error as err:
                raise ManifestError(f"cannot write the index {self.path}: {err}") from err
            self.commit()
        return cursor.rowcount == 1

    def mark_deleted(self, recording_id: str, when: str | None = None) -> None:
        """Stamp `recording_id` as deleted at Vobiz at `when` (ISO 8601 UTC, default now),
        committed on return; an id the index does not hold is refused."""
        stamp = when if when is not None else datetime.now(UTC).isoformat()
        if not self._set("deleted_at", stamp, recording_id):
            raise ManifestError(f"the index {self.path} holds no entry for {recording_id}")

    def mark_transcript(self, recording_id: str, path: str) -> bool:
        """Record where `recording_id`'s transcript is (relative to the destination, as
        `path` is), committed on return; False when the index holds no such recording."""
        return self._set("transcript_path", path, recording_id)

    def mark_delete_requested(self, recording_id: str, when: str | None = None) -> None:
        """Note, committed on return, that a DELETE of `recording_id` is about to be sent
        (ISO 8601 UTC, default now): if the run stops before `mark_deleted`, the next one
        asks Vobiz whether it went through (`unsettled_deletions`)."""
        stamp = when if when is not None else datetime.now(UTC).isoformat()
        self._set("delete_requested_at", stamp, recording_id)

    def unsettled_deletions(self) -> list[tuple[str, str]]:
        """(recording_id, delete_requested_at) of each entry whose DELETE was sent but never
        stamped `deleted_at` (a run stopped in between, or the DELETE failed)."""
        rows = self._query(
            "SELECT recording_id, delete_requested_at FROM entries "
            "WHERE delete_requested_at IS NOT NULL AND deleted_at IS NULL ORDER BY rowid"
        )
        return [(str(rid), str(when)) for rid, when in rows or []]

    def transcript_path(self, recording_id: str) -> str | None:
        """Where `recording_id`'s transcript is, if the index knows one."""
        rows = self._query(
            "SELECT transcript_path FROM entries WHERE recording_id = ?", (recording_id,)
        )
        return rows[0][0] if rows else None

    def released_count(self) -> int:
        """How many archived recordings were deleted at Vobiz."""
        rows = self._query("SELECT count(*) FROM entries WHERE deleted_at IS NOT NULL")
        return 0 if rows is None else int(rows[0][0])

    def record(
        self,
        recording_id: str,
        path: str,
        *,
        size: int,
        sha256: str,
        container: str | None,
        add_time: str | None,
        remember: bool = True,
        recording: Recording | None = None,
    ) -> ManifestEntry:
        """Add an entry stamped with the current time, with the archived `recording`'s
        fields when it is given (`remember` does nothing, as for `add`)."""
        entry = ManifestEntry(
            recording_id=recording_id,
            path=path,
            size=size,
            sha256=sha256,
            container=container,
            add_time=add_time,
            downloaded_at=datetime.now(UTC).isoformat(),
            **(recording_fields(recording) if recording is not None else {}),
        )
        self.add(entry, remember=remember)
        return entry


# -- schema and the one-time import of a JSON Lines manifest -----------------------------


def _ensure_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the table in an empty database; refuse a database that is not an index."""
    if db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
        _check_version(db, path)
        return
    db.execute("BEGIN IMMEDIATE")  # another process may be creating it at the same time
    try:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        if application_id == 0 and not db.execute("SELECT 1 FROM sqlite_schema").fetchone():
            db.execute(_SCHEMA)
            db.execute(_VIEW)
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif application_id != APPLICATION_ID:
            raise ManifestError(f"{path} is a SQLite database, but not a vobiz_async index")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    _check_version(db, path)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring an index written by an earlier version up to this one, in place: the columns
    it lacks are added (old rows NULL, nothing else changes) and the `recordings` view is
    (re)created. An index already current is only read, so readers never wait."""
    if _current(db):
        return
    db.execute("BEGIN IMMEDIATE")  # another process may be migrating it at the same time
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in columns:
                db.execute(f"ALTER TABLE entries ADD COLUMN {name} {kind}")
        db.execute("DROP VIEW IF EXISTS recordings")
        db.execute(_VIEW)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _current(db: sqlite3.Connection) -> bool:
    """Whether the index has every column and this version's `recordings` view."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    view = db.execute("SELECT sql FROM sqlite_schema WHERE type = 'view' AND name = 'recordings'")
    found = view.fetchone()
    return set(_COLUMNS) <= columns and found is not None and found[0] == _VIEW


#: Columns of `entries` outside the `recordings` view, added in place to an index written
#: before them (old rows NULL): where a recording's transcript is (relative to the
#: destination), and when `move` sent its DELETE (stamped before the request, so a run
#: stopped before `deleted_at` can tell which deletions may have gone through).
_EXTRA_COLUMNS = ("transcript_path", "delete_requested_at")


def _add_extra_columns(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    for name in _EXTRA_COLUMNS:
        if name in columns:
            continue
        try:
            db.execute(f"ALTER TABLE entries ADD COLUMN {name} TEXT")
        except sqlite3.OperationalError as err:
            if "duplicate column" not in str(err):  # another process added it meanwhile
                raise


def _check_version(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ManifestError(f"{path} was written by a newer vobiz_async (index v{version})")


def _reason(err: OSError) -> str:
    return os.strerror(err.errno) if err.errno else str(err)


def _unrecognised(path: Path) -> ManifestError:
    return ManifestError(
        f"{path} is neither an index nor a JSON Lines manifest (damaged?); it was left untouched"
    )


def _is_legacy(file: IO[bytes], path: Path) -> bool:
    """Whether an open file is a JSON Lines manifest to import; False for a SQLite database
    (told by its 16-byte header) or an empty file (a new index).

    Anything else, such as a database whose first bytes were overwritten, is not taken for
    a manifest with no entries: `ManifestError`, unless its first line is an entry.
    """
    file.seek(0)
    head = file.read(len(SQLITE_HEADER))
    file.seek(0)
    if not head or head == SQLITE_HEADER:
        return False
    while line := file.readline(_LINE_MAX):
        if line.strip():
            if _entry(line) is None:
                raise _unrecognised(path)
            break
    file.seek(0)
    return True


def _entry(line: bytes) -> ManifestEntry | None:
    """The entry one JSON Lines line holds, or None."""
    try:
        entry = ManifestEntry(**json.loads(line))
    except (ValueError, TypeError):
        return None
    return entry if _well_typed(entry) else None


@attrs.define
class _Tally:
    """What an import read: entries and unreadable lines."""

    entries: int = 0
    unreadable: int = 0


def _legacy_rows(file: IO[bytes], path: Path, tally: _Tally) -> Iterator[tuple[Any, ...]]:
    """The entries of a JSON Lines manifest, line by line, skipping unreadable lines."""
    for number, line in enumerate(file, 1):
        if not line.strip():
            continue
        entry = _entry(line)
        if entry is None:
            tally.unreadable += 1
            logger.warning("%s: skipping unreadable line %d", path, number)
            continue
        tally.entries += 1
        yield _row(entry)


def _well_typed(entry: ManifestEntry) -> bool:
    texts = (entry.recording_id, entry.path, entry.sha256, entry.downloaded_at)
    optional = (entry.container, entry.add_time)
    return (
        all(isinstance(value, str) for value in texts)
        and all(value is None or isinstance(value, str) for value in optional)
        and isinstance(entry.size, int)
        and not isinstance(entry.size, bool)
    )


@contextlib.contextmanager
def _locked(file: IO[bytes]) -> Iterator[None]:
    """An exclusive lock on an open file, so that one process imports and the others
    wait, then find the database in its place."""
    if sys.platform != "win32":
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
    yield  # the lock goes with the descriptor when the caller closes the file


def _import_legacy(path: Path) -> None:
    """Turn a JSON Lines manifest at `path` into an index, keeping the old file beside it."""
    try:
        legacy = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as err:  # a folder, a file we may not read
        raise ManifestError(f"cannot open the index {path}: {err}") from err
    with legacy, _locked(legacy):
        try:
            if not os.path.samestat(os.fstat(legacy.fileno()), os.stat(path)):
                return  # another process replaced it with the database while we waited
        except FileNotFoundError:
            return
        if not _is_legacy(legacy, path):
            return
        building = path.with_name(path.name + ".importing")
        backup = _backup_name(path)
        tally = _Tally()
        try:
            building.unlink(missing_ok=True)  # a crashed import's leftover
            count = _build(building, _legacy_rows(legacy, path, tally))
            if tally.unreadable > tally.entries:  # mostly not entries: not a manifest
                building.unlink()
                raise _unrecognised(path)
            _keep(path, backup)
            os.replace(building, path)
            fsync_path(path.parent)
        except OSError as err:
            with contextlib.suppress(OSError):
                building.unlink(missing_ok=True)
            raise ManifestError(f"cannot import the JSON Lines manifest {path}: {err}") from err
    logger.info("%s: imported %d entries; the JSON Lines file is kept as %s", path, count, backup)


def _build(target: Path, rows: Iterable[tuple[Any, ...]]) -> int:
    """A complete index at `target` holding `rows`, fsynced before it is renamed anywhere."""
    db = sqlite3.connect(target, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=OFF")  # a crash leaves a file that is thrown away
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        db.execute(_SCHEMA)
        db.execute(_VIEW)
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.executemany(_UPSERT, rows)
        count = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as err:
        raise OSError(f"building {target.name}: {err}") from err
    finally:
        db.close()
    with target.open("rb") as built:
        os.fsync(built.fileno())
    return count


def _backup_name(path: Path) -> Path:
    """`<name>.bak`, or `<name>.bak.N` when an older backup of other content has it."""
    candidate = path.with_name(path.name + ".bak")
    number = 0
    while candidate.exists() and not os.path.samefile(candidate, path):
        number += 1
        candidate = path.with_name(f"{path.name}.bak.{number}")
    return candidate


def _keep(path: Path, backup: Path) -> None:
    """Give the JSON Lines file a second name (a hard link, else a copy) before the
    database takes its first."""
    if backup.exists():
        return  # a hard link from an import that crashed before its rename
    try:
        os.link(path, backup)
    except OSError:
        tmp = backup.with_name(backup.name + ".tmp")
        with path.open("rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, backup)


# -- verify -------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_manifest(root: str | os.PathLike[str], manifest: Manifest) -> list[VerifyProblem]:
    """Re-hash every file the manifest lists under `root`; return what is missing or wrong.

    Entries are read a page at a time, so only the problems are held in memory.
    """
    base = Path(root)
    problems: list[VerifyProblem] = []
    for entry in manifest:
        path = base / entry.path
        if not path.is_file():
            problems.append(VerifyProblem(entry.recording_id, entry.path, "missing"))
        elif path.stat().st_size != entry.size:
            problems.append(VerifyProblem(entry.recording_id, entry.path, "size differs"))
        elif _file_sha256(path) != entry.sha256:
            problems.append(VerifyProblem(entry.recording_id, entry.path, "sha256 differs"))
    return problems
