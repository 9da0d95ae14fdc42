"""`--dry-run`: what a download (or move) would do, deciding without changing anything.

No media request, no DELETE, nothing created: the index is opened read-only (`mode=ro`)
and a missing destination counts as empty (issue 24 §2)."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from .manifest import MANIFEST_NAME
from .models import Recording
from .session import AsyncSession

__all__ = ["DryRunPlan", "plan"]


@attrs.frozen
class DryRunPlan:
    """The ids a run would fetch, skip (already archived) and delete, and the storage
    amount the deletions would release."""

    would_download: tuple[str, ...]
    would_skip: tuple[str, ...]
    would_delete: tuple[str, ...]
    releasable_amount: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "would_download": len(self.would_download),
            "would_skip": len(self.would_skip),
            "would_delete": len(self.would_delete),
            "releasable_amount": str(self.releasable_amount),
            "download_ids": list(self.would_download),
            "delete_ids": list(self.would_delete),
        }


def read_index_rows(index: Path, sql: str) -> list[tuple[Any, ...]]:
    """`sql`'s rows from a read-only copy of `index` (with its WAL): even a `mode=ro`
    connection removes a WAL file left beside the index when it closes, so the index
    itself is never opened. [] when there is no index."""
    if not index.is_file():
        return []
    with tempfile.TemporaryDirectory(prefix="vobiz-dry-run-") as tmp:
        copy = Path(tmp) / index.name
        shutil.copyfile(index, copy)
        wal = index.with_name(index.name + "-wal")
        if wal.is_file():
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        db = sqlite3.connect(f"{copy.as_uri()}?mode=ro", uri=True)
        try:
            return list(db.execute(sql))
        finally:
            db.close()


def _indexed_present(dest: Path, index: Path) -> set[str]:
    """The ids the index holds, with their file present."""
    rows = read_index_rows(index, "SELECT recording_id, path FROM entries")
    return {
        rid
        for rid, path in rows
        if (Path(path) if Path(path).is_absolute() else dest / path).is_file()
    }


async def plan(
    session: AsyncSession,
    source: AsyncIterable[Recording],
    dest: str | Path,
    *,
    index: str | Path | None = None,
    layout: str = "flat",
    deleting: bool = False,
    max_delete: int | None = None,
) -> DryRunPlan:
    """Decide against the index what a run over `source` would fetch, skip and (when
    `deleting`) delete, capped by `max_delete`. `layout` does not change the decision."""
    del session, layout  # the listing is `source`; presence is by the index's paths
    folder = Path(dest)
    index_path = Path(index) if index else folder / MANIFEST_NAME
    if str(dest).lower().startswith("s3://"):  # objects are not looked at: indexed is archived
        rows = read_index_rows(index_path, "SELECT recording_id FROM entries")
        archived = {rid for (rid,) in rows}
    else:
        archived = _indexed_present(folder, index_path)
    fetch: list[str] = []
    skip: list[str] = []
    delete: list[str] = []
    amount = Decimal(0)
    async for recording in source:
        rid = recording.recording_id
        (skip if rid in archived else fetch).append(rid)
        if deleting and (max_delete is None or len(delete) < max_delete):
            delete.append(rid)
            amount += recording.monthly_recording_storage_amount or Decimal(0)
    return DryRunPlan(tuple(fetch), tuple(skip), tuple(delete), amount)
