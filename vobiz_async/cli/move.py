"""`vobiz-recordings move`: archive as `download` does, then delete at Vobiz what the archive
provably holds (issue 24 §3; the proof and the deletions are `vobiz_async.release`'s).

Every download option works the same (the parser adds them with download's own functions,
and the job is `archive.DownloadJob` run by `archive.run_download`, calling `move_many`).
Exit 0 when everything was archived and deleted; 1 when something failed, was not proven,
or the `--max-delete` cap stopped deletions (one line says so); 3 when Vobiz refused the
credentials for DELETE (one line; archiving completed)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import attrs

from ..errors import AuthenticationError
from ..results import DownloadReport
from .archive import DownloadJob, dry_run, run_download
from .commands import destination
from .output import print_summary, stdout_may_close, summary_json
from .progress import Progress
from .results import Interruption, Outcome, UsageError

EXIT_CREDENTIALS = 3


def _check(args: argparse.Namespace, out: str) -> None:
    """Refuse what `move` cannot prove against: no index."""
    if args.no_manifest:
        raise UsageError("move proves each recording against the index; --no-index cannot be used")
    if out.startswith("s3://") and not args.index:
        raise UsageError(
            "move --out s3://... needs --index PATH: the index each deletion is proven "
            "against and recorded in"
        )


async def _move(job: DownloadJob, interruption: Interruption) -> tuple[DownloadReport | None, int]:
    """Run the job behind a progress display; on Ctrl-C, leave the progress line for main."""
    with Progress(sys.stderr) as progress:
        try:
            async with job.session() as session:
                report = await run_download(session, job, progress)
        except asyncio.CancelledError:
            interruption.progress = progress.line()  # main() prints it on its one line
            raise
    return report, progress.bytes


def _print(report: DownloadReport, as_json: bool, transferred: int) -> None:
    failures = report.delete_failures
    if as_json:
        summary = summary_json(report)
        summary["deleted"] = report.counts["deleted"]
        summary["delete_failures"] = [failure.to_json() for failure in failures]
        print(json.dumps(summary, separators=(",", ":")))
        return
    print_summary(report, sys.stdout, transferred=transferred)
    print(f"deleted {report.counts['deleted']} at Vobiz; {len(failures)} archived but not deleted")
    for failure in failures:
        print(f"  kept at Vobiz {failure.recording_id}: {failure.error}")


async def cmd_move(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    out = destination(args.out)
    _check(args, out)
    if args.dry_run:
        return await dry_run(args, out, deleting=True)
    interruption.keeps_partials = True
    job = attrs.evolve(DownloadJob.from_args(args), out=out, move=True)
    report, transferred = await _move(job, interruption)
    if report is None:  # --repair found nothing to fetch
        return Outcome()
    with stdout_may_close():
        _print(report, args.json, transferred)
    if report.release_stopped is not None:
        print(report.release_stopped, file=sys.stderr)
    refused = any(isinstance(f.error, AuthenticationError) for f in report.delete_failures)
    failed = not report.ok or report.release_stopped is not None
    return Outcome(failed=failed, code=EXIT_CREDENTIALS if refused else None)
