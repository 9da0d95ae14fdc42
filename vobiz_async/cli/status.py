"""`vobiz-recordings status`: what Vobiz holds against what the archive holds (issue 24 §4).

Read-only: the index is opened with `mode=ro`, a missing index or folder counts as empty,
and files are checked for presence only (no re-hashing)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..custody import StatusTally
from ..dryrun import read_index_rows
from ..recordings import MAX_PAGE_SIZE
from .commands import session_for
from .parser import INDEX_NAME, selection_from_args
from .results import Interruption, Outcome


def _read_only_rows(index: Path) -> list[tuple[str, str, bool]]:
    """`(recording_id, path, released)` of every index row; [] when there is no index."""
    columns = {row[1] for row in read_index_rows(index, "PRAGMA table_info(entries)")}
    released = "deleted_at IS NOT NULL" if "deleted_at" in columns else "0"
    sql = f"SELECT recording_id, path, {released} FROM entries"  # noqa: S608 (fixed text)
    return [(rid, path, bool(flag)) for rid, path, flag in read_index_rows(index, sql)]


def _archived(out: Path, index: Path) -> tuple[set[str], int]:
    """The ids the index holds whose file is present, and the count of released rows."""
    rows = _read_only_rows(index)
    present = set()
    for rid, path, _released in rows:
        file = Path(path) if Path(path).is_absolute() else out / path
        if file.is_file():
            present.add(rid)
    return present, sum(1 for row in rows if row[2])


async def cmd_status(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    del interruption
    now = datetime.now(UTC)
    out = Path(args.out)
    index = Path(args.index) if args.index else out / INDEX_NAME
    archived, released = _archived(out, index)
    tally = StatusTally(now=now, retention_days=args.retention_days, warn_hours=args.warn_hours)
    session = session_for(args.auth_id, args.auth_token, args.base_url)
    async with session:
        pager = session.recordings.list(
            limit=MAX_PAGE_SIZE, selection=selection_from_args(args, now), now=now
        )
        async for recording in pager:
            tally.add(recording, archived=recording.recording_id in archived)
    status = tally.status(released=released)
    if args.json:
        print(json.dumps(status.to_json()), file=sys.stdout)
    else:
        for key, value in status.to_json().items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key:<18} {shown}", file=sys.stdout)
    return Outcome(failed=status.at_risk > 0)
