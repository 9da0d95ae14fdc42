"""What the commands print: recordings as a table or JSON Lines, the download summary, and
output that a closed pipe (`| head`) must not turn into a failure."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import attrs

from ..errors import StorageError
from ..models import Recording
from ..results import DownloadReport, DownloadStatus
from .progress import human_bytes


def print_json_lines(recordings: Sequence[Recording], out: TextIO) -> None:
    for recording in recordings:
        out.write(json.dumps(recording.to_dict(), separators=(",", ":")) + "\n")


def _when(value: datetime | None, local: bool) -> str:
    """A timestamp in one zone for a whole table: UTC, or this machine's with `local`."""
    if value is None:
        return "-"
    return value.astimezone(None if local else UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_table(recordings: Sequence[Recording], out: TextIO, *, local: bool = False) -> None:
    """One row per recording, `add_time` in one zone (UTC unless `local`), so a
    newest-first listing reads sorted."""
    added = "ADDED (local)" if local else "ADDED (UTC)"
    header = ("RECORDING ID", added, "TYPE", "SECONDS", "FORMAT", "FROM", "TO")
    rows = [
        (
            r.recording_id,
            _when(r.add_time, local),
            r.recording_type or "-",
            "-" if r.recording_duration_ms is None else f"{r.recording_duration_ms / 1000:.1f}",
            r.recording_format or "-",
            r.from_number or "-",
            r.to_number or "-",
        )
        for r in recordings
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_record(recording: Recording, out: TextIO) -> None:
    """Every field of one recording, one `name  value` line each (`get` on a terminal); a
    media URL's query (a signature, perhaps) is left out, as in every other line we print."""
    fields = [(field.name, getattr(recording, field.name)) for field in attrs.fields(Recording)]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        shown = _shown(value)
        if name == "recording_url" and "?" in shown:
            shown = shown.split("?", 1)[0] + "?..."
        out.write(f"{name.ljust(width)}  {shown}\n")


def summary_json(report: DownloadReport) -> dict[str, Any]:
    """The closing summary as one JSON object; a Ray job adds where its work ran."""
    counts = report.counts
    summary: dict[str, Any] = {
        "downloaded": counts[DownloadStatus.DOWNLOADED],
        "skipped": counts[DownloadStatus.SKIPPED],
        "failed": counts[DownloadStatus.FAILED],
        "bytes": report.total_bytes,
        "elapsed": round(report.elapsed, 3),
        "failures": [
            {"recording_id": r.recording_id, "error": str(r.error)} for r in report.failed
        ],
    }
    from ..scaleout import ScaleOutReport  # only a job that ran has a report

    if isinstance(report, ScaleOutReport):
        summary["workers"] = [attrs.asdict(share) for share in report.workers]
        summary["failed_shards"] = [attrs.asdict(f) for f in report.failed_shards]
    return summary


def print_summary(report: DownloadReport, out: TextIO, transferred: int | None = None) -> None:
    """The closing summary of a download: counts, failures with reasons, throughput.

    The rate is of `transferred`, the bytes received this run (the sum of the BYTES progress
    events), not of the files' sizes, which include what resumed `.part` files held."""
    moved = report.total_bytes if transferred is None else transferred
    rate = moved / report.elapsed if report.elapsed > 0 else 0.0
    saved = (
        f", {human_bytes(report.total_bytes)} in the files downloaded"
        if human_bytes(report.total_bytes) != human_bytes(moved)
        else ""
    )
    counts = report.counts
    out.write(
        f"downloaded {counts[DownloadStatus.DOWNLOADED]}, "
        f"skipped {counts[DownloadStatus.SKIPPED]}, "
        f"failed {counts[DownloadStatus.FAILED]}; {human_bytes(moved)} transferred in "
        f"{report.elapsed:.1f}s ({human_bytes(rate)}/s){saved}\n"
    )
    if (paced := report.rate_limit_summary()) is not None:
        out.write(f"{paced}\n")
    # A destination-wide error (a missing bucket, a full disk) is one line for all it hit.
    shared: dict[str, int] = {}
    for result in report.failed:
        error = result.error
        if isinstance(error, StorageError) and (
            error.destination_wide or str(error).startswith("not started")
        ):
            shared[str(error)] = shared.get(str(error), 0) + 1
        else:
            out.write(f"  failed {result.recording_id}: {error}\n")
    for message, count in shared.items():
        out.write(f"  failed {count} recording(s): {message}\n")


def discard_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit does not fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


@contextlib.contextmanager
def stdout_may_close() -> Iterator[None]:
    """Output after the work is done: a reader that went away does not change the status."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
