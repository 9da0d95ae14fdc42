"""`vobiz-recordings`: list, fetch, delete, archive and verify recordings from a shell.

Exit codes: 0 success, 1 some items failed, 2 usage error, 3 authentication or
configuration error, 130 interrupted (Ctrl-C). A closed stdout (`list | head -1`) is the
normal end of a pipeline: the command stops quietly with 0 (a download keeps its own
status). Errors print one line; `--debug` adds the traceback and debug logs. The auth token
is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from ._version import __version__
from .download import DownloadReport, DownloadStatus, ProgressEvent, ProgressKind
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRecordingIdError,
    StorageError,
    VobizError,
)
from .manifest import MANIFEST_NAME, Manifest, verify_manifest
from .models import InvalidRecording, Recording
from .pager import AsyncPager
from .protocol import quote_path_segment
from .recordings import MAX_PAGE_SIZE
from .scaleout import RayEngine, ScaleOutReport  # Ray itself: only when a job runs
from .session import AsyncSession
from .sinks import S3Sink, verify_objects

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
logger = logging.getLogger("vobiz_async")


class UsageError(Exception):
    """A command line that cannot be carried out as written."""


class DestinationError(Exception):
    """The download folder cannot be created or written: said once, before any transfer."""


def check_destination(out: Path) -> None:
    """Create `out` if needed and prove it writable with a probe file, removed at once."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".vobiz-write-check-")
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            os.unlink(probe)
    except FileExistsError:
        raise DestinationError(f"cannot write to {out}: not a folder") from None
    except OSError as err:
        raise DestinationError(f"cannot write to {out}: {err.strerror or err}") from None


# -- output helpers ---------------------------------------------------------------------


def _human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _print_json_lines(recordings: Sequence[Recording], out: TextIO) -> None:
    for recording in recordings:
        out.write(json.dumps(recording.to_dict(), separators=(",", ":")) + "\n")


def _print_table(recordings: Sequence[Recording], out: TextIO) -> None:
    header = ("RECORDING ID", "ADDED", "TYPE", "SECONDS", "FORMAT", "FROM", "TO")
    rows = [
        (
            r.recording_id,
            r.add_time.strftime("%Y-%m-%d %H:%M:%S%z") if r.add_time else "-",
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


class Progress:
    """Counts progress events and renders them: a rich bar on a TTY, plain lines otherwise."""

    def __init__(self, out: TextIO, *, interval: float = 5.0) -> None:
        self.out = out
        self.interval = interval
        self.total: int | None = None
        self.done = self.failed = self.skipped = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.out.isatty():
            try:
                import rich  # noqa: F401 - only to learn whether the bar is available
            except ImportError:
                self.out.write("(pip install 'vobiz-async[cli]' for a progress bar)\n")
                return self
            with contextlib.suppress(ImportError):
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress

                self._bar = RichProgress(
                    TextColumn("[bold]archiving"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[size]}"),
                    TextColumn("{task.fields[rate]}"),
                    TextColumn("{task.fields[failed]}"),
                    TimeRemainingColumn(),
                    console=Console(file=self.out),
                )
                self._bar.start()
                self._task = self._bar.add_task("files", total=None, size="", rate="", failed="")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._render_bar(time.monotonic())
            self._bar.stop()

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind is ProgressKind.BYTES:
            self.bytes += event.bytes
        elif event.kind is ProgressKind.FINISHED:
            self.done += 1
        elif event.kind is ProgressKind.SKIPPED:
            self.skipped += 1
        elif event.kind is ProgressKind.FAILED:
            self.failed += 1
        else:
            return
        now = time.monotonic()
        if self._bar is not None:
            if event.kind is not ProgressKind.BYTES or now - self._last_line >= 0.1:
                self._last_line = now
                self._render_bar(now)
            return
        if now - self._last_line >= self.interval:
            self._last_line = now
            self.out.write(self.line() + "\n")
            self.out.flush()

    def _render_bar(self, now: float) -> None:
        rate = self.bytes / max(now - self.started, 1e-9)
        self._bar.update(
            self._task,
            # Failures do not fill the bar: a batch that failed entirely stays at 0/N.
            completed=self.done + self.skipped,
            size=_human_bytes(self.bytes),
            rate=f"{_human_bytes(rate)}/s",
            failed=f"[red]{self.failed} failed" if self.failed else "",
        )

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        finished = self.done + self.skipped + self.failed
        of = f"/{self.total}" if self.total is not None else ""
        return (
            f"progress: {finished}{of} files ({self.done} downloaded, {self.skipped} skipped, "
            f"{self.failed} failed), {_human_bytes(self.bytes)}, "
            f"{_human_bytes(self.bytes / elapsed)}/s"
        )


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
    if isinstance(report, ScaleOutReport):
        summary["workers"] = [attrs.asdict(share) for share in report.workers]
        summary["failed_shards"] = [attrs.asdict(f) for f in report.failed_shards]
    return summary


def configure_logging(debug: bool) -> None:
    """Warnings, or everything with --debug (aiohttp's own chatter stays at errors)."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        logging.getLogger("aiohttp").setLevel(logging.ERROR)


def print_summary(report: DownloadReport, out: TextIO, transferred: int | None = None) -> None:
    """The closing summary of a download: counts, failures with reasons, throughput.

    The rate is of `transferred`, the bytes received this run (the sum of the BYTES progress
    events), not of the files' sizes, which include what resumed `.part` files held."""
    moved = report.total_bytes if transferred is None else transferred
    rate = moved / report.elapsed if report.elapsed > 0 else 0.0
    saved = (
        f", {_human_bytes(report.total_bytes)} in the files downloaded"
        if _human_bytes(report.total_bytes) != _human_bytes(moved)
        else ""
    )
    counts = report.counts
    out.write(
        f"downloaded {counts[DownloadStatus.DOWNLOADED]}, "
        f"skipped {counts[DownloadStatus.SKIPPED]}, "
        f"failed {counts[DownloadStatus.FAILED]}; {_human_bytes(moved)} transferred in "
        f"{report.elapsed:.1f}s ({_human_bytes(rate)}/s){saved}\n"
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


# -- commands ---------------------------------------------------------------------------


#: Library argument names in a ConfigurationError, and what a CLI user sets instead.
_CLI_NAMES = {
    "auth_id": "--auth-id (VOBIZ_AUTH_ID)",
    "auth_token": "--auth-token (VOBIZ_AUTH_TOKEN)",
    "base_url": "--base-url (VOBIZ_BASE_URL)",
}


def _session(args: argparse.Namespace) -> AsyncSession:
    auth_id = args.auth_id or os.environ.get("VOBIZ_AUTH_ID")
    auth_token = args.auth_token or os.environ.get("VOBIZ_AUTH_TOKEN")
    if not auth_id or not auth_token:
        lacking = " and ".join(
            name
            for name, value in (("account id", auth_id), ("auth token", auth_token))
            if not value
        )
        raise ConfigurationError(
            f"no Vobiz {lacking}: pass --auth-id and --auth-token, or set VOBIZ_AUTH_ID "
            "and VOBIZ_AUTH_TOKEN"
        )
    try:
        return AsyncSession(auth_id, auth_token, base_url=args.base_url)
    except ConfigurationError as err:
        message = str(err)
        for name, flag in _CLI_NAMES.items():
            message = re.sub(rf"\b{name}\b", flag, message)
        raise ConfigurationError(message) from None


async def _collect(pager: AsyncPager, limit: int | None) -> list[Recording]:
    recordings: list[Recording] = []
    # Closed here, inside the session: stopping early cancels the pages being prefetched.
    async with contextlib.aclosing(aiter(pager)) as items:
        async for recording in items:
            if limit is not None and len(recordings) >= limit:
                break
            recordings.append(recording)
    return recordings


async def cmd_list(args: argparse.Namespace) -> int:
    page_size = min(args.limit, MAX_PAGE_SIZE) if args.limit else MAX_PAGE_SIZE
    async with _session(args) as session:
        pager = session.recordings.list(
            limit=page_size, recording_type=args.recording_type, call_uuid=args.call_uuid
        )
        recordings = await _collect(pager, args.limit)
    if args.json or not sys.stdout.isatty():
        _print_json_lines(recordings, sys.stdout)
    else:
        _print_table(recordings, sys.stdout)
    return EXIT_OK


async def cmd_get(args: argparse.Namespace) -> int:
    async with _session(args) as session:
        recording = await session.recordings.get(args.id)
    if args.json or not sys.stdout.isatty():
        _print_json_lines([recording], sys.stdout)
    else:
        _print_table([recording], sys.stdout)
    return EXIT_OK


async def cmd_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to delete without a terminal to confirm; pass --yes")
        prompt = f"Delete {len(args.ids)} recording(s) for good? [y/N] "
        answer = await asyncio.to_thread(input, prompt)
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_OK
    failed = 0
    async with _session(args) as session:
        for recording_id in args.ids:
            try:
                await session.recordings.delete(recording_id)
            except AuthenticationError:
                raise
            except VobizError as err:
                failed += 1
                print(f"failed {recording_id}: {err}", file=sys.stderr)
            else:
                print(f"deleted {recording_id}")
    return EXIT_FAILED if failed else EXIT_OK


def _read_ids(args: argparse.Namespace) -> list[str] | None:
    ids = list(args.ids or [])
    if args.ids_file:
        try:
            text = sys.stdin.read() if args.ids_file == "-" else Path(args.ids_file).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read ids file {args.ids_file}: {err}") from None
        ids += [line.strip() for line in text.splitlines() if line.strip()]
    return ids if (args.ids or args.ids_file) else None


async def _listing(
    pager: AsyncPager, progress: Progress
) -> AsyncIterator[Recording | InvalidRecording]:
    """Every entry of the pager (the unusable objects too, so the report fails them by id),
    telling the progress display the total once known."""
    async with contextlib.aclosing(pager.entries()) as entries:
        async for entry in entries:
            if progress.total is None and pager.total_count is not None:
                progress.set_total(pager.total_count)
            yield entry


async def _ids_to_repair(args: argparse.Namespace, out: Path) -> list[str]:
    """`download --repair`: the recordings `verify` finds missing or changed in `out`."""
    if args.ids or args.ids_file or args.overwrite or args.no_manifest:
        raise UsageError(
            "--repair re-fetches what the manifest check finds; it takes no --ids, "
            "--ids-file, --overwrite or --no-manifest"
        )
    manifest_path = out / MANIFEST_NAME
    if not manifest_path.is_file():
        raise UsageError(f"--repair needs the manifest of an earlier download: no {manifest_path}")
    with Manifest(manifest_path) as manifest:
        problems = await asyncio.to_thread(verify_manifest, out, manifest)
        count = len(manifest)
    for problem in problems:
        sys.stdout.write(f"repairing {problem.recording_id}: {problem.path} {problem.problem}\n")
    if not problems:
        sys.stdout.write(
            f"repair: all {count} files in {MANIFEST_NAME} verified; nothing to fetch\n"
        )
    return [problem.recording_id for problem in problems]


def _engine(args: argparse.Namespace) -> Any:
    """`--engine ray`'s engine, or None for the local one."""
    if getattr(args, "engine", "local") != "ray":
        return None
    if args.auth_token is not None:
        # Ray keeps the driver's command line in its job table, for anyone on the cluster.
        raise UsageError(
            "with --engine ray, pass the auth token in VOBIZ_AUTH_TOKEN, not --auth-token: "
            "Ray stores the command line"
        )
    return RayEngine(address=args.ray_address, shard_size=args.shard_size)


def _s3_sink(args: argparse.Namespace, out: str, index: Manifest | None = None) -> S3Sink:
    """The object-storage destination an `s3://bucket/prefix/` argument names."""
    return S3Sink.from_url(
        out,
        endpoint_url=getattr(args, "s3_endpoint_url", None),
        region=getattr(args, "s3_region", None),
        layout=getattr(args, "layout", "flat"),
        index=index,
    )


async def _check_bucket(sink: S3Sink) -> None:
    """Prove the bucket is there and takes our credentials, once, before any listing."""
    try:
        await sink.prepare()
    except StorageError as err:
        raise DestinationError(str(err)) from None
    finally:
        await sink.close()


async def _run_s3_download(
    session: AsyncSession, args: argparse.Namespace, progress: Progress
) -> DownloadReport:
    """`download --out s3://...`: the object metadata is the record; `--index` adds a local
    index that speeds up re-runs."""
    if args.repair:
        raise UsageError("--repair works on folders; for s3:// run `verify` and re-download")
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(Manifest(args.index)) if args.index else None
        sink = _s3_sink(args, args.out, index)
        await _check_bucket(sink)
        ids = _read_ids(args)
        source = await _source(session, args, progress, ids)
        return await session.recordings.download_many(
            source,
            sink,
            concurrency=args.concurrency,
            on_progress=progress,
            manifest=index,
            overwrite=args.overwrite,
            engine=_engine(args),
        )


async def _source(
    session: AsyncSession, args: argparse.Namespace, progress: Progress, ids: list[str] | None
) -> Any:
    """The recordings to archive: the ids given, or the whole (filtered) listing."""
    if ids is not None:
        # Each id's lookup failing would be an item failure (exit 1); a bad token is exit 3.
        await session.check_credentials()
        progress.set_total(len(ids))
        return ids
    pager = session.recordings.list(
        limit=MAX_PAGE_SIZE, recording_type=args.recording_type, call_uuid=args.call_uuid
    )
    return _listing(pager, progress)


async def run_download(
    session: AsyncSession,
    args: argparse.Namespace,
    progress: Progress,
    reports: list[DownloadReport],
) -> int:
    """The archive job shared by `download` and `demo`."""
    engine = _engine(args)
    if str(args.out).startswith("s3://"):
        report = await _run_s3_download(session, args, progress)
        reports.append(report)
        return EXIT_OK if report.ok else EXIT_FAILED
    ids = _read_ids(args)
    out = Path(args.out)
    await asyncio.to_thread(check_destination, out)
    overwrite: bool = args.overwrite
    if args.repair:
        ids = await _ids_to_repair(args, out)
        if not ids:
            return EXIT_OK
        overwrite = True  # only these ids: each is missing or its bytes changed
    source = await _source(session, args, progress, ids)
    index = getattr(args, "index", None)
    options: dict[str, Any] = {
        "concurrency": args.concurrency,
        "on_progress": progress,
        "manifest": None if args.no_manifest else (index or out / MANIFEST_NAME),
        "overwrite": overwrite,
    }
    layout = getattr(args, "layout", "flat")
    if layout != "flat":
        options["layout"] = layout
    report = await session.recordings.download_many(source, out, engine=engine, **options)
    reports.append(report)
    return EXIT_OK if report.ok else EXIT_FAILED


async def cmd_download(args: argparse.Namespace) -> int:
    reports: list[DownloadReport] = []
    with Progress(sys.stderr) as progress:
        try:
            async with _session(args) as session:
                code = await run_download(session, args, progress, reports)
        except asyncio.CancelledError:
            args.interrupted_at = progress.line()  # main() prints it on its one line
            raise
    if reports:  # none when --repair found nothing to fetch
        with _stdout_may_close():
            if getattr(args, "json", False):
                print(json.dumps(summary_json(reports[0]), separators=(",", ":")))
            else:
                print_summary(reports[0], sys.stdout, transferred=progress.bytes)
    return code


async def _verify_s3(args: argparse.Namespace) -> int:
    """`verify s3://bucket/prefix/`: re-hash every object against its sha256 metadata (and
    the index, given `--manifest`), and name each recording the index has but the bucket
    lacks."""
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(Manifest(args.manifest)) if args.manifest else None
        sink = _s3_sink(args, args.dir, index)
        problems = [f"{p.kind}: {p.location}" for p in await verify_objects(sink)]
        if index is not None:
            await sink.prepare()
            try:
                for entry in index:
                    found = await sink.lookup(entry.recording_id, None, key=entry.path)
                    if found is None:
                        problems.append(f"missing: {sink.location(entry.path)}")
            finally:
                await sink.close()
    for problem in problems:
        print(problem)
    print(f"verified {sink.describe()}; {len(problems)} problem(s)")
    return EXIT_FAILED if problems else EXIT_OK


async def cmd_verify(args: argparse.Namespace) -> int:
    if str(args.dir).startswith("s3://"):
        return await _verify_s3(args)
    root = Path(args.dir)
    manifest_path = Path(args.manifest) if args.manifest else root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise UsageError(f"no manifest at {manifest_path}")
    with Manifest(manifest_path) as manifest:
        problems = await asyncio.to_thread(verify_manifest, root, manifest)
        count = len(manifest)
    for problem in problems:
        print(f"{problem.problem}: {problem.path} ({problem.recording_id})")
    print(f"verified {count - len(problems)} of {count} files; {len(problems)} problem(s)")
    if problems:
        print(
            f"to re-fetch them: vobiz-recordings download --out {shlex.quote(str(root))} --repair"
        )
    return EXIT_FAILED if problems else EXIT_OK


async def cmd_index_export(args: argparse.Namespace) -> int:
    """`index export`: the index as JSON Lines on stdout, one object per entry."""
    if (args.index is None) == (args.dir is None):
        raise UsageError("give either DIR or --index PATH")
    path = Path(args.index) if args.index else Path(args.dir) / MANIFEST_NAME
    if not path.is_file():
        raise UsageError(f"no index at {path}")

    def export() -> None:
        with Manifest(path) as manifest:
            for entry in manifest:
                sys.stdout.write(json.dumps(attrs.asdict(entry), separators=(",", ":")) + "\n")
        sys.stdout.flush()

    with _stdout_may_close():  # the reader had enough (`| head`): not a failure
        await asyncio.to_thread(export)
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    temporary = args.out_is_temporary = not args.out
    out = Path(tempfile.mkdtemp(prefix="vobiz-demo-")) if temporary else Path(args.out)
    args.out = str(out)
    try:
        return await _demo(args, out)
    finally:
        if temporary:
            await asyncio.to_thread(shutil.rmtree, out, ignore_errors=True)
            with _stdout_may_close():
                print(f"removed the temporary folder {out} (pass --out DIR to keep the files)")
        else:
            with _stdout_may_close():
                print(f"the files are kept in {out}")


async def _demo(args: argparse.Namespace, out: Path) -> int:
    from .testing import FakeVobiz

    print(f"demo: {args.count} synthetic recordings from an in-process fake Vobiz -> {out}")
    fake = FakeVobiz(
        recordings=args.count,
        seed=args.seed,
        fault_rate=0.1,
        wav_as_mp3_rate=0.1,
        foreign_redirect_rate=0.1,
    )
    reports: list[DownloadReport] = []
    async with fake:
        args.base_url, args.auth_id, args.auth_token = fake.base_url, fake.auth_id, fake.auth_token
        with Progress(sys.stderr) as progress:
            async with _session(args) as session:
                code = await run_download(session, args, progress, reports)
        report = reports[0]
        print_summary(report, sys.stdout, transferred=progress.bytes)
        downloaded = report.downloaded
        wrong = [r.recording_id for r in downloaded if r.sha256 != fake.sha256(r.recording_id)]
        served = {rid: fake.sha256(rid) for rid in fake.recording_ids}
        leaked = fake.stats.foreign_credentials_seen
        retried = sum(1 for r in report.results if r.attempts > 1)
        relabelled = sum(
            1
            for r in downloaded
            if r.container and r.container != fake.recordings[r.recording_id].recording_format
        )
        redirected = sum(1 for r in downloaded if fake.recordings[r.recording_id].redirect_foreign)
    print(
        f"survived: {retried} transfers retried or resumed after injected faults, "
        f"{relabelled} WAV files served as .mp3 saved as .wav, "
        f"{redirected} redirects to a foreign storage host"
    )
    print(
        f"verified this run: {len(downloaded) - len(wrong)} of the {len(downloaded)} files "
        f"downloaded match the served bytes; credentials sent to the foreign host: {leaked}"
    )
    problems: list[Any] = []
    if not args.no_manifest:
        with Manifest(out / MANIFEST_NAME) as manifest:
            problems = await asyncio.to_thread(verify_manifest, out, manifest)
            stale = [e.recording_id for e in manifest if served.get(e.recording_id) != e.sha256]
            count = len(manifest)
        print(
            f"verified the archive: {count} files re-hashed against {MANIFEST_NAME}, "
            f"{len(problems)} problem(s); {count - len(stale)} of them match the served bytes"
        )
        wrong += stale
    if wrong or problems or leaked:
        return EXIT_FAILED
    return code


async def cmd_fake_server(args: argparse.Namespace) -> int:
    from .testing import DEFAULT_AUTH_ID, DEFAULT_AUTH_TOKEN, FakeVobiz

    if args.base_url is not None:
        raise UsageError("fake-server serves its own base URL; --base-url does not apply")
    if args.auth_id is not None:
        try:
            quote_path_segment(args.auth_id, what="auth id")
        except InvalidRecordingIdError as err:
            raise UsageError(f"--auth-id is not usable as an account id: {err}") from None
    if args.auth_token is not None and not args.auth_token:
        raise UsageError("--auth-token must not be empty")
    given_token = args.auth_token is not None
    async with FakeVobiz(
        recordings=args.count,
        seed=args.seed,
        port=args.port,
        auth_id=args.auth_id or DEFAULT_AUTH_ID,
        auth_token=args.auth_token or DEFAULT_AUTH_TOKEN,
    ) as fake:
        print(f"fake Vobiz on {fake.base_url} with {args.count} recordings (Ctrl-C stops)")
        print(f"export VOBIZ_BASE_URL={fake.base_url}")
        print(f"export VOBIZ_AUTH_ID={fake.auth_id}")
        if given_token:  # never echo a token the user typed
            print("export VOBIZ_AUTH_TOKEN=...  # the --auth-token you gave")
        else:
            print(f"export VOBIZ_AUTH_TOKEN={fake.auth_token}  # the fake's own, not a secret")
        sys.stdout.flush()
        await asyncio.Event().wait()
    return EXIT_OK  # pragma: no cover - only Ctrl-C ends it


async def cmd_serve(args: argparse.Namespace) -> int:
    from .receiver import ServeConfig, serve

    host, port = args.listen
    config = ServeConfig(
        public_url=args.public_url,
        dest=args.out,
        auth_id=args.auth_id,
        auth_token=args.auth_token,
        base_url=args.base_url,
        host=host,
        port=port,
        parent_auth_token=args.parent_auth_token,
        basic_auth=args.basic_auth,
        spool=args.spool,
        queue_size=args.queue_size,
        concurrency=args.concurrency,
        drain_seconds=args.drain_seconds,
        sync_every=args.sync_every,
    )
    return await serve(config, on_ready=lambda url: print(f"listening on {url}", flush=True))


# -- argument parsing -------------------------------------------------------------------


def _whole_number(text: str, minimum: int, maximum: int | None = None) -> int:
    """`text` as an int in [minimum, maximum], or an error argparse prints as is."""
    expected = (
        f"expected a whole number >= {minimum}"
        if maximum is None
        else f"expected a whole number from {minimum} to {maximum}"
    )
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise argparse.ArgumentTypeError(f"{expected}, got {value}")
    return value


def _positive(text: str) -> int:
    return _whole_number(text, 1)


def _count(text: str) -> int:
    return _whole_number(text, 0)


def _port(text: str) -> int:
    return _whole_number(text, 0, 65535)


def build_parser() -> argparse.ArgumentParser:
    def shared_options(defaults: bool) -> argparse.ArgumentParser:
        # Accepted before or after the command. Only the top level sets defaults: with
        # defaults on both, a command's would silently replace what came before it.
        options = argparse.ArgumentParser(add_help=False)
        if not defaults:
            options.argument_default = argparse.SUPPRESS
        options.add_argument("--auth-id", help="default: $VOBIZ_AUTH_ID")
        options.add_argument("--auth-token", help="default: $VOBIZ_AUTH_TOKEN")
        options.add_argument("--base-url", help="default: $VOBIZ_BASE_URL or Vobiz")
        options.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
        return options

    common = shared_options(defaults=False)
    parser = argparse.ArgumentParser(
        prog="vobiz-recordings",
        description=__doc__.splitlines()[0],
        parents=[shared_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[..., Coroutine[Any, Any, int]], text: str) -> Any:
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.set_defaults(func=func)
        return sub

    listing = add("list", cmd_list, "list recordings (a table on a terminal, else JSON Lines)")
    listing.add_argument("--json", action="store_true", help="JSON Lines in the wire form")
    listing.add_argument("--recording-type")
    listing.add_argument("--call-uuid")
    listing.add_argument("--limit", type=_positive, help="stop after N recordings")

    get = add("get", cmd_get, "show one recording")
    get.add_argument("id")
    get.add_argument("--json", action="store_true")

    delete = add("delete", cmd_delete, "delete recordings (asks first unless --yes)")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument("--yes", action="store_true", help="do not ask")

    def download_options(sub: Any) -> None:
        sub.add_argument("--concurrency", type=_positive, default=16)
        sub.add_argument("--overwrite", action="store_true", help="fetch files already saved")
        sub.add_argument("--no-manifest", action="store_true", help=f"skip {MANIFEST_NAME}")
        sub.set_defaults(recording_type=None, call_uuid=None, ids=None, ids_file=None, repair=False)

    download = add("download", cmd_download, "archive recordings into a folder")
    download.add_argument(
        "--out", required=True, help="destination: a folder, or s3://bucket/prefix/"
    )
    download.add_argument(
        "--layout",
        choices=("flat", "date"),
        default="flat",
        help="flat: <id>.<ext>; date: YYYY/MM/DD/<id>.<ext> (by add_time)",
    )
    download.add_argument("--s3-endpoint-url", help="default: $AWS_ENDPOINT_URL_S3, AWS")
    download.add_argument("--s3-region", help="default: $AWS_REGION / the AWS profile")
    download.add_argument(
        "--index", help=f"the index file (default: OUT/{MANIFEST_NAME}; none for s3://)"
    )
    download.add_argument("--recording-type")
    download.add_argument("--call-uuid")
    download.add_argument("--ids", nargs="+", metavar="ID", help="only these recordings")
    download.add_argument("--ids-file", help="a file of ids, one a line ('-' for stdin)")
    download.add_argument(
        "--repair",
        action="store_true",
        help="re-fetch exactly the files `verify` finds missing or changed",
    )
    download_options(download)
    download.add_argument("--json", action="store_true", help="the summary as one JSON object")
    download.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="where transfers run: this process, or Ray tasks (pip install 'vobiz-async[ray]')",
    )
    download.add_argument(
        "--ray-address", help="a running Ray cluster (auto, HOST:PORT); default: a local Ray"
    )
    download.add_argument(
        "--shard-size", type=_positive, default=2000, help="recordings per Ray task"
    )

    verify = add("verify", cmd_verify, "re-hash an archive against its manifest")
    verify.add_argument("dir", help="a folder, or s3://bucket/prefix/")
    verify.add_argument("--s3-endpoint-url", help="default: $AWS_ENDPOINT_URL_S3, AWS")
    verify.add_argument("--s3-region", help="default: $AWS_REGION / the AWS profile")
    verify.add_argument("--manifest", help=f"default: DIR/{MANIFEST_NAME}")

    index = commands.add_parser("index", help="the archive's index (manifest)")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    export = index_commands.add_parser(
        "export", parents=[common], help="print the index as JSON Lines, one entry a line"
    )
    export.set_defaults(func=cmd_index_export)
    export.add_argument("dir", nargs="?", help=f"an archive folder: DIR/{MANIFEST_NAME}")
    export.add_argument("--index", help="the index file itself")

    demo = add("demo", cmd_demo, "archive from an in-process fake Vobiz: offline, no account")
    demo.add_argument("--count", type=_positive, default=300)
    demo.add_argument("--out", help="destination folder (default: a new temporary folder)")
    demo.add_argument("--seed", type=int, default=0)
    download_options(demo)

    from . import receiver  # serve's value parsers live with the receiver they configure

    serve = add("serve", cmd_serve, "receive RecordStop callbacks and archive each recording")
    serve.add_argument(
        "--listen",
        type=receiver.parse_listen,
        default=("127.0.0.1", 8000),
        metavar="HOST:PORT",
        help="default: 127.0.0.1:8000",
    )
    serve.add_argument(
        "--public-url", type=receiver.public_url, required=True, help="the URL Vobiz calls"
    )
    serve.add_argument("--out", required=True, help="destination folder")
    serve.add_argument(
        "--parent-auth-token",
        help="main account's token for sub-account callbacks (default: "
        "$VOBIZ_PARENT_AUTH_TOKEN, better: arguments show in ps)",
    )
    serve.add_argument(
        "--basic-auth",
        type=receiver.parse_basic_auth,
        metavar="USER:PASS",
        help="also require these Basic credentials (default: $VOBIZ_WEBHOOK_BASIC_AUTH)",
    )
    serve.add_argument("--spool", help=f"spool file (default: OUT/{receiver.SPOOL_NAME})")
    serve.add_argument(
        "--sync-every",
        type=receiver.parse_duration,
        metavar="DURATION",
        help="also list-and-download the recent window this often (30m, 1h; default: off)",
    )
    serve.add_argument(
        "--queue-size",
        type=_positive,
        default=receiver.DEFAULT_QUEUE_SIZE,
        help="pending recordings before callbacks get 503 (default: %(default)s)",
    )
    serve.add_argument(
        "--concurrency",
        type=_positive,
        default=receiver.DEFAULT_CONCURRENCY,
        help="downloads at once (default: %(default)s)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=receiver.DEFAULT_DRAIN_SECONDS,
        help="on SIGTERM, how long in-flight downloads may finish (default: %(default)s)",
    )

    fake = add("fake-server", cmd_fake_server, "serve the fake Vobiz on 127.0.0.1")
    fake.add_argument("--port", type=_port, default=0, help="default: a free port")
    fake.add_argument("--count", type=_count, default=100)
    fake.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse, run, and turn every failure into an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.debug)
    try:
        code: int = asyncio.run(args.func(args))
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        kept = "; partial downloads are kept as .part files for resume"
        downloading = args.command in ("download", "demo")
        downloading = downloading and not getattr(args, "out_is_temporary", False)
        where = getattr(args, "interrupted_at", None)
        detail = f" ({where})" if where else ""
        print(f"interrupted{kept if downloading else ''}{detail}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as err:
        return _fail(args, err, EXIT_USAGE, named=False)
    except DestinationError as err:
        return _fail(args, err, EXIT_FAILED, named=False)
    except (AuthenticationError, ConfigurationError) as err:
        return _fail(args, err, EXIT_AUTH)
    except (VobizError, OSError) as err:
        return _fail(args, err, EXIT_FAILED)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit does not fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


@contextlib.contextmanager
def _stdout_may_close() -> Iterator[None]:
    """Output after the work is done: a reader that went away does not change the status."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()


def _fail(args: argparse.Namespace, err: BaseException, code: int, *, named: bool = True) -> int:
    if args.debug:
        logger.exception("command failed")
    kind = f"{type(err).__name__}: " if named else ""
    notes = "".join(f" ({note})" for note in getattr(err, "__notes__", ()))
    print(f"error: {kind}{err}{notes}".replace("\n", " "), file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
