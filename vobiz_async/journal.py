"""The shard journal: which shards of an archive job finished, beside the index.

A small SQLite file at `<index path><SHARDS_SUFFIX>` (table `shards`), written only by the
driver of an engine that cuts a job into shards (`scaleout.RayEngine`,
`engines.ProcessEngine`), after the batch core has indexed every recording of the shard:
completion is recorded last, so a re-run skips every finished shard and redoes the rest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .batch import item_id
from .errors import ManifestError
from .types import Item

__all__ = ["SHARDS_SUFFIX", "ShardJournal"]

#: The shard journal lives beside the index, at `<index path><SHARDS_SUFFIX>`.
SHARDS_SUFFIX = ".shards"
_JOURNAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (
    key TEXT PRIMARY KEY NOT NULL,
    size INTEGER NOT NULL,
    first_id TEXT NOT NULL,
    last_id TEXT NOT NULL,
    finished_at TEXT NOT NULL
)
"""


class ShardJournal:
    """Finished shards, by key, beside the index (written only by the driver)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_JOURNAL_SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise ManifestError(f"cannot open the shard journal {path}: {err}") from err

    def finished(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM shards")}

    def finish(self, key: str, items: Sequence[Item]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?)",
            (
                key,
                len(items),
                item_id(items[0]),
                item_id(items[-1]),
                datetime.now(UTC).isoformat(),
            ),
        )

    def close(self) -> None:
        self._db.close()
