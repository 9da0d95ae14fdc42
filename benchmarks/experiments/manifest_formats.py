"""What does one committed index entry cost a download, against the old JSON Lines append?

Each writer records the same entries the downloader writes, one per completed recording:
the old JSON Lines manifest (one `write` on an O_APPEND descriptor, in the file when it
returns), the index (`Manifest`: SQLite in WAL mode, one transaction per entry) with
`synchronous=NORMAL` (survives a killed process) and, with `--full`, `synchronous=FULL`
(an fsync per entry: survives power loss), and SQLite committing every 100 rows (a crash
loses up to 100). Prints the median microseconds per entry over `--reps` runs of
`--entries` entries, interleaved.

    python benchmarks/experiments/manifest_formats.py [--entries 20000] [--reps 5] \
        [--dir /dev/shm] [--full]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from vobiz_async.manifest import Manifest

Writer = Callable[[Path, int], None]


def entry(i: int) -> dict[str, object]:
    rid = hashlib.md5(str(i).encode()).hexdigest()  # noqa: S324 - an id, not security
    return {
        "recording_id": rid,
        "path": f"{rid}.mp3",
        "size": 102_400,
        "sha256": hashlib.sha256(rid.encode()).hexdigest(),
        "container": "mp3",
        "add_time": "2026-05-07 09:45:35.792760+05:30",
    }


def jsonl(directory: Path, count: int) -> None:
    """The JSON Lines manifest this library wrote before the index: one append per entry."""
    fd = os.open(directory / "manifest.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for i in range(count):
            e = {**entry(i), "downloaded_at": datetime.now(UTC).isoformat()}
            os.write(fd, (json.dumps(e, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)


def index(*, fsync: bool) -> Writer:
    """The index (`vobiz_async.manifest.Manifest`): one committed transaction per entry."""

    def write(directory: Path, count: int) -> None:
        with Manifest(directory / "manifest.sqlite", fsync=fsync) as manifest:
            for i in range(count):
                e = entry(i)
                manifest.record(
                    str(e["recording_id"]),
                    str(e["path"]),
                    size=102_400,
                    sha256=str(e["sha256"]),
                    container="mp3",
                    add_time=str(e["add_time"]),
                )

    return write


def sqlite(batch: int) -> Writer:
    def write(directory: Path, count: int) -> None:
        db = sqlite3.connect(directory / "batched.sqlite")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE entries (recording_id TEXT PRIMARY KEY, path TEXT, size INTEGER,"
            " sha256 TEXT, container TEXT, add_time TEXT, downloaded_at TEXT)"
        )
        for i in range(count):
            e = entry(i)
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, datetime('now'))",
                tuple(e.values()),
            )
            if (i + 1) % batch == 0:
                db.commit()
        db.commit()
        db.close()

    return write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--full", action="store_true", help="also synchronous=FULL (slow)")
    args = parser.parse_args()
    formats: dict[str, Writer] = {
        "jsonl (append per entry)": jsonl,
        "index, synchronous=NORMAL": index(fsync=False),
        "sqlite WAL, commit every 100": sqlite(100),
    }
    if args.full:
        formats["index, synchronous=FULL"] = index(fsync=True)
    timings: dict[str, list[float]] = {name: [] for name in formats}
    for _ in range(args.reps):
        for name, write in formats.items():
            with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
                started = time.perf_counter()
                write(Path(scratch), args.entries)
                timings[name].append((time.perf_counter() - started) / args.entries * 1e6)
    for name, runs in timings.items():
        shown = ", ".join(f"{r:.1f}" for r in runs)
        print(f"{name:32s} median {statistics.median(runs):6.1f} us/entry  (runs: {shown})")


if __name__ == "__main__":
    main()
