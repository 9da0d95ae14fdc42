"""The download manifest: an append-only JSON Lines record of every verified recording.

One line per completed download, written with a single `write` on an `O_APPEND` descriptor,
so a crash can tear at most the line being written; a torn or unreadable line is skipped
on load, and earlier lines are never rewritten. The last entry for an id wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import attrs

__all__ = ["MANIFEST_NAME", "Manifest", "ManifestEntry", "VerifyProblem", "verify_manifest"]

logger = logging.getLogger("vobiz_async")

#: The manifest's file name inside a destination folder, where the CLI keeps it.
MANIFEST_NAME = "vobiz-manifest.jsonl"


@attrs.frozen
class ManifestEntry:
    """One verified recording on disk; `path` is relative to the destination folder."""

    recording_id: str
    path: str
    size: int
    sha256: str
    container: str | None
    add_time: str | None
    downloaded_at: str


@attrs.frozen
class VerifyProblem:
    """A manifest entry whose file is missing or whose bytes changed."""

    recording_id: str
    path: str
    problem: str


class Manifest:
    """An append-only manifest file, loaded into memory on open."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._entries: dict[str, ManifestEntry] = {}
        self._fd: int | None = None
        self._torn = False
        self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                entry = ManifestEntry(**json.loads(line))
            except (ValueError, TypeError):
                logger.warning("%s: skipping unreadable line %d", self.path, number)
                continue
            self._entries[entry.recording_id] = entry
        self._torn = bool(data) and not data.endswith(b"\n")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self._entries.values())

    def get(self, recording_id: str) -> ManifestEntry | None:
        """The latest entry for `recording_id`, if any."""
        return self._entries.get(recording_id)

    def add(self, entry: ManifestEntry, *, remember: bool = True) -> None:
        """Append one entry; it is in the file when this returns (not fsynced).

        With `remember=False` the entry is written but not kept in memory, and an earlier
        entry for the same id is forgotten (`get`, `len` and iteration leave the id out until
        the file is loaded again): for a writer that never looks its own entries up, such as
        a download batch, where 20,000 entries cost 5 MB.
        """
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if self._torn:
                os.write(self._fd, b"\n")  # seal a torn last line so it stays one bad line
                self._torn = False
        line = json.dumps(attrs.asdict(entry), separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())
        if remember:
            self._entries[entry.recording_id] = entry
        else:
            self._entries.pop(entry.recording_id, None)  # stale now: the file has a newer line

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
    ) -> ManifestEntry:
        """Add an entry stamped with the current time (`remember` as for `add`)."""
        entry = ManifestEntry(
            recording_id=recording_id,
            path=path,
            size=size,
            sha256=sha256,
            container=container,
            add_time=add_time,
            downloaded_at=datetime.now(UTC).isoformat(),
        )
        self.add(entry, remember=remember)
        return entry

    def close(self) -> None:
        """Close the file descriptor; the manifest can still be read."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_manifest(root: str | os.PathLike[str], manifest: Manifest) -> list[VerifyProblem]:
    """Re-hash every file the manifest lists under `root`; return what is missing or wrong."""
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
