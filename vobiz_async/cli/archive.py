"""The archive job behind `download` and `demo`: a `DownloadJob` of explicit parameters,
run into a folder or a bucket, its summary printed once by `print_summary`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import attrs

from ..errors import InvalidRecordingIdError, NotFoundError
from ..manifest import MANIFEST_NAME, Manifest, verify_manifest
from ..models import InvalidRecording, Recording
from ..pager import AsyncPager
from ..protocol import quote_path_segment
from ..recordings import MAX_PAGE_SIZE
from ..results import DownloadReport
from ..selection import Selection
from ..session import AsyncSession
from ..sinks import S3Sink, verify_objects
from .commands import (
    check_archive,
    check_bucket,
    destination,
    s3_settings,
    s3_sink,
    session_for,
)
from .output import print_summary, stdout_may_close, summary_json
from .parser import selection_from_args
from .progress import Progress
from .results import DestinationError, Interruption, Outcome, UsageError


@attrs.frozen(kw_only=True)
class DownloadJob:
    """Everything one archive run needs: `download` reads it off its options, `demo` builds
    it around its fake."""

    out: str
    auth_id: str | None = None
    auth_token: str | None = None  # the one given on the command line, not the environment's
    base_url: str | None = None
    concurrency: int = 16
    overwrite: bool = False
    no_manifest: bool = False
    recording_type: str | None = None
    call_uuid: str | None = None
    #: The run's selection (issue 24 §1) and its one clock reading.
    selection: Selection | None = None
    now: datetime = attrs.field(factory=lambda: datetime.now(UTC))
    ids: list[str] | None = None
    ids_file: str | None = None
    repair: bool = False
    index: str | None = None
    layout: str = "flat"
    #: "sidecar": `<id>.json` beside each recording (`--metadata sidecar`).
    metadata: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    #: What every object gets (issue 25 §2): `S3Sink`'s settings of the same names.
    s3_storage_class: str | None = None
    s3_sse: str | None = None
    s3_sse_kms_key_id: str | None = None
    s3_object_lock_mode: str | None = None
    s3_retain_days: int | None = None
    s3_legal_hold: bool = False
    #: `--engine`: local, process or ray; None lets `_engine` choose (`choose_engine`).
    engine: str | None = None
    #: `--workers`: the process engine's worker processes (None: this process and one
    #: spawned worker per other CPU).
    workers: int | None = None
    ray_address: str | None = None
    shard_size: int | None = None
    #: `move`: delete at Vobiz what the archive provably holds, at most `max_delete`.
    move: bool = False
    max_delete: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DownloadJob:
        """The job `download`'s parsed options describe (an option not given keeps the
        job's default)."""
        given = {field.name: getattr(args, field.name, None) for field in attrs.fields(cls)}
        job = cls(**{name: value for name, value in given.items() if value is not None})
        return attrs.evolve(job, selection=selection_from_args(args, job.now))

    def session(self) -> AsyncSession:
        return session_for(self.auth_id, self.auth_token, self.base_url)


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


def ids_from_text(text: str, source: str) -> list[str]:
    """The ids of an `--ids-file`: one a line; a UTF-8 BOM, blank lines and `#` comments
    (whole lines, or after an id) are skipped; a line that is not an id names its number."""
    ids: list[str] = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        try:
            quote_path_segment(value)
        except InvalidRecordingIdError as err:
            raise UsageError(f"{source} line {number}: {err}") from None
        ids.append(value)
    return ids


def _read_ids(job: DownloadJob) -> list[str] | None:
    ids = list(job.ids or [])
    if job.ids_file:
        source = "stdin" if job.ids_file == "-" else job.ids_file
        try:
            text = sys.stdin.read() if job.ids_file == "-" else Path(job.ids_file).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read ids file {job.ids_file}: {err}") from None
        ids += ids_from_text(text, source)
    return ids if (job.ids or job.ids_file) else None


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


def _check_repair_flags(job: DownloadJob) -> None:
    if job.ids or job.ids_file or job.overwrite or job.no_manifest:
        raise UsageError(
            "--repair re-fetches what the index check finds; it takes no --ids, "
            "--ids-file, --overwrite or --no-index"
        )


async def _ids_to_repair(job: DownloadJob, out: Path) -> list[str]:
    """`download --repair`: the recordings `verify` finds missing or changed in `out`."""
    _check_repair_flags(job)
    manifest_path = out / MANIFEST_NAME
    if not manifest_path.is_file():
        raise UsageError(f"--repair needs the index of an earlier download: no {manifest_path}")
    problems, count = await check_archive(out, manifest_path)
    for problem in problems:
        sys.stdout.write(f"repairing {problem.recording_id}: {problem.path} {problem.problem}\n")
    if not problems:
        sys.stdout.write(
            f"repair: all {count} files in {MANIFEST_NAME} verified; nothing to fetch\n"
        )
    return [problem.recording_id for problem in problems]


async def _s3_ids_to_repair(job: DownloadJob, sink: S3Sink, index: Manifest | None) -> list[str]:
    """`download --out s3://... --repair`: the recordings whose objects `verify` finds
    changed (every object re-hashed against its sha256 metadata and the `--index`), and
    those the index knows but the bucket lacks. Without an index, an object without the
    metadata is repaired only when it is audio (`.mp3`, `.wav`): other files are not ours."""
    _check_repair_flags(job)
    problems: dict[str, str] = {}
    for found in await verify_objects(sink):
        if found.kind not in ("changed", "missing-metadata"):
            continue  # a setting differs: fetching the recording again would not change it
        stem, _, extension = found.key.rpartition("/")[2].rpartition(".")
        ours = index.get(stem) is not None if index is not None else extension in ("mp3", "wav")
        if found.kind == "changed" or ours:
            problems.setdefault(stem, f"{found.location} {found.kind}")
    if index is not None:
        await sink.prepare()
        try:
            for entry in index:
                if entry.recording_id in problems:
                    continue
                stored = await sink.lookup(entry.recording_id, None, key=entry.path)
                if stored is None or stored.size != entry.size:
                    gone = "missing" if stored is None else "changed"
                    problems[entry.recording_id] = f"{sink.location(entry.path)} {gone}"
        finally:
            await sink.close()
    for recording_id, problem in problems.items():
        sys.stdout.write(f"repairing {recording_id}: {problem}\n")
    if not problems:
        sys.stdout.write(f"repair: every object in {sink.describe()} verified; nothing to fetch\n")
    return list(problems)


def archiver(session: AsyncSession, job: DownloadJob) -> Callable[..., Awaitable[DownloadReport]]:
    """The library call the job runs: `download_many`, or `move_many` for `move`."""
    if job.move:
        return functools.partial(session.recordings.move_many, max_delete=job.max_delete)
    return session.recordings.download_many


def _check_engine(job: DownloadJob) -> None:
    """Refuse, before anything runs, an engine the job cannot use."""
    if job.engine == "ray" and job.auth_token is not None:
        # Ray keeps the driver's command line in its job table, for anyone on the cluster.
        raise UsageError(
            "with --engine ray, pass the auth token in VOBIZ_AUTH_TOKEN, not --auth-token: "
            "Ray stores the command line"
        )
    if job.out.startswith("s3://") and (job.engine == "process" or job.workers is not None):
        raise UsageError(
            "--engine process archives into a folder; for s3:// use --engine local or ray"
        )


def engine_name(job: DownloadJob, recordings: int | None) -> str:
    """The engine a job runs on: `--engine`, else `process` when `--workers` is given, else
    the default rule (`engines.choose_engine`) on this machine's CPUs, the job's size as
    known before it starts (None: unknown) and `--concurrency`. A bucket stays on the
    local engine."""
    if job.engine is not None:
        return job.engine
    if job.workers is not None:
        return "process"
    if job.out.startswith("s3://"):
        return "local"
    from ..engines import choose_engine, usable_cpus

    return choose_engine(usable_cpus(), recordings, job.concurrency)


def _engine(job: DownloadJob, name: str, recordings: int | None, ahead: Any = None) -> Any:
    """The engine object `download_many` takes for `name` (None: the local engine); a
    process engine started `ahead` is the one used."""
    if name == "ray":
        from ..scaleout import RayEngine  # Ray itself: only when a job runs

        return RayEngine(address=job.ray_address, shard_size=job.shard_size)
    if name == "process":
        from ..engines import shard_size_for

        engine = ahead or _process_engine(job)
        engine.shard_size = shard_size_for(recordings, engine.workers)
        return engine
    return None


def _process_engine(job: DownloadJob) -> Any:
    """`--workers N`: exactly N worker processes do the work. Else this process is one of
    one-per-CPU workers (an interpreter fewer to start and feed), beside at least one
    spawned worker."""
    from ..engines import ProcessEngine, default_workers

    if job.workers is not None:
        return ProcessEngine(job.workers)
    return ProcessEngine(max(2, default_workers()), in_driver=True)


def _start_ahead(session: AsyncSession, job: DownloadJob, source: Any) -> Any:
    """A process engine whose workers start spawning now, while the listing's first page
    is read to size the job, when the job may run on it (`--engine process`, `--workers`,
    or the default rule on 2+ CPUs at PROCESS_MIN_CONCURRENCY or more in flight); None
    otherwise. The caller closes it if the job runs elsewhere."""
    if isinstance(source, list) or job.engine not in (None, "process"):
        return None  # an id list's size is known: the engine is chosen at once
    if job.engine is None and job.workers is None:
        from ..engines import PROCESS_MIN_CONCURRENCY, usable_cpus

        if usable_cpus() < 2 or job.concurrency < PROCESS_MIN_CONCURRENCY:
            return None
    engine = _process_engine(job)
    engine.start(session)
    return engine


async def _sized(source: Any, progress: Progress) -> tuple[Any, int | None]:
    """The source and its size as known before the job starts: an id list's length, or the
    listing's `meta.total_count`, read off its first page (fetched now; the listing then
    goes on from it, so nothing is fetched twice)."""
    if isinstance(source, list):
        return source, len(source)
    try:
        first = await anext(source)
    except StopAsyncIteration:
        return [], 0

    async def resumed() -> AsyncIterator[Any]:
        yield first
        async with contextlib.aclosing(source) as rest:
            async for entry in rest:
                yield entry

    return resumed(), progress.total


async def _check_bucket(sink: S3Sink) -> None:
    """Prove the bucket is there and takes our credentials, once, before any listing."""
    await check_bucket(sink)


async def _source(
    session: AsyncSession, job: DownloadJob, progress: Progress, ids: list[str] | None
) -> Any:
    """The recordings to archive: the ids given, or the whole (filtered) listing."""
    if ids is not None:
        # Each id's lookup failing would be an item failure (exit 1); a bad token is exit 3.
        await session.check_credentials()
        progress.set_total(len(ids))
        return ids
    pager = session.recordings.list(
        limit=MAX_PAGE_SIZE,
        recording_type=job.recording_type,
        call_uuid=job.call_uuid,
        selection=job.selection,
        now=job.now,
    )
    return _listing(pager, progress)


async def _run_s3_download(
    session: AsyncSession,
    job: DownloadJob,
    progress: Progress,
    on_engine: Callable[[str], None] | None = None,
) -> DownloadReport | None:
    """`download --out s3://...`: the object metadata is the record; `--index` adds a local
    index that speeds up re-runs. None when `--repair` found nothing to fetch."""
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(Manifest(job.index)) if job.index else None
        sink = s3_sink(
            job.out,
            endpoint_url=job.s3_endpoint_url,
            region=job.s3_region,
            layout=job.layout,
            index=index,
            settings=s3_settings(job),
        )
        await _check_bucket(sink)
        ids = _read_ids(job)
        overwrite = job.overwrite
        if job.repair:
            ids = await _s3_ids_to_repair(job, sink, index)
            if not ids:
                return None
            overwrite = True  # only these ids: each is missing or its bytes changed
        source = await _source(session, job, progress, ids)
        name = engine_name(job, None)
        if on_engine is not None:
            on_engine(name)
        return await archiver(session, job)(
            source,
            sink,
            concurrency=job.concurrency,
            on_progress=progress,
            manifest=index,
            overwrite=overwrite,
            engine=_engine(job, name, None),
            **_sidecar_option(job),
        )


async def run_download(
    session: AsyncSession,
    job: DownloadJob,
    progress: Progress,
    on_engine: Callable[[str], None] | None = None,
) -> DownloadReport | None:
    """The archive job shared by `download` and `demo`: its report, or None when `--repair`
    found nothing to fetch. `on_engine` is told the engine's name once it is chosen."""
    _check_engine(job)
    if job.out.startswith("s3://"):
        return await _run_s3_download(session, job, progress, on_engine)
    ids = _read_ids(job)
    out = Path(job.out)
    await asyncio.to_thread(check_destination, out)
    overwrite = job.overwrite
    if job.repair:
        ids = await _ids_to_repair(job, out)
        if not ids:
            return None
        overwrite = True  # only these ids: each is missing or its bytes changed
    source = await _source(session, job, progress, ids)
    ahead = _start_ahead(session, job, source)
    try:
        return await _run_folder_job(session, job, progress, on_engine, source, ahead, overwrite)
    finally:
        if ahead is not None:
            await ahead.close()  # its workers, if no run took them


async def _run_folder_job(
    session: AsyncSession,
    job: DownloadJob,
    progress: Progress,
    on_engine: Callable[[str], None] | None,
    source: Any,
    ahead: Any,
    overwrite: bool,
) -> DownloadReport:
    """A folder job once its source is known: size it, choose its engine, run it."""
    out = Path(job.out)
    size = None
    if job.engine in (None, "process"):  # the default rule and the shards need the size
        source, size = await _sized(source, progress)
    name = engine_name(job, size)
    if on_engine is not None:
        on_engine(name)
    if ahead is not None and name != "process":
        await ahead.close()  # a small job after all: its workers go now
    engine = _engine(job, name, size, ahead)
    options: dict[str, Any] = {
        "concurrency": job.concurrency,
        "on_progress": progress,
        "manifest": None if job.no_manifest else (job.index or out / MANIFEST_NAME),
        "overwrite": overwrite,
    }
    if job.layout != "flat":
        options["layout"] = job.layout
    options.update(_sidecar_option(job))
    return await archiver(session, job)(source, out, engine=engine, **options)


def _sidecar_option(job: DownloadJob) -> dict[str, Any]:
    """`download_many`'s `metadata` option, given only when `--metadata` is."""
    return {} if job.metadata is None else {"metadata": job.metadata}


async def _download(
    job: DownloadJob,
    interruption: Interruption | None = None,
    on_engine: Callable[[str], None] | None = None,
) -> tuple[DownloadReport | None, Progress]:
    """Run `job` behind a progress display; on Ctrl-C, leave the progress line for main."""
    with Progress(sys.stderr) as progress:
        try:
            async with job.session() as session:
                report = await run_download(session, job, progress, on_engine)
        except asyncio.CancelledError:
            if interruption is not None:
                interruption.progress = progress.line()  # main() prints it on its one line
            raise
    return report, progress


async def _recordings_by_id(session: AsyncSession, ids: list[str]) -> AsyncIterator[Recording]:
    """The given recordings as Vobiz has them (an API request each, no media); one already
    gone has nothing to fetch or delete."""
    for rid in ids:
        try:
            yield await session.recordings.get(rid)
        except NotFoundError:
            continue


def dry_run_source(session: AsyncSession, job: DownloadJob) -> AsyncIterable[Recording]:
    """What a dry run plans over: the recordings of `--ids`/`--ids-file` when given (as
    the real run fetches them), else the selected listing."""
    ids = _read_ids(job)
    if ids is not None:
        return _recordings_by_id(session, ids)
    return session.recordings.list(
        limit=MAX_PAGE_SIZE,
        recording_type=job.recording_type,
        call_uuid=job.call_uuid,
        selection=job.selection,
        now=job.now,
    )


async def dry_run(args: argparse.Namespace, out: str, *, deleting: bool = False) -> Outcome:
    """`download --dry-run` (and, `deleting`, `move --dry-run`): what a real run would
    fetch, skip and delete, and the storage it would release; no media request, no
    DELETE, nothing written."""
    from ..dryrun import plan

    job = DownloadJob.from_args(args)
    async with job.session() as session:
        result = await plan(
            session,
            dry_run_source(session, job),
            out,
            index=args.index,
            layout=job.layout,
            deleting=deleting,
            max_delete=getattr(args, "max_delete", None),
        )
    if args.json:
        print(json.dumps(result.to_json(), separators=(",", ":")))
    else:
        deletes = f"{len(result.would_delete)} at Vobiz" if deleting else "0"
        print(
            f"would download {len(result.would_download)}, skip {len(result.would_skip)} "
            f"(already archived), delete {deletes}; releasable {result.releasable_amount}"
        )
    return Outcome()


async def cmd_download(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    if getattr(args, "dry_run", False):
        return await dry_run(args, args.out)
    job = attrs.evolve(DownloadJob.from_args(args), out=destination(args.out))
    ran: list[str] = []
    report, progress = await _download(job, interruption, ran.append)
    if report is None:  # --repair found nothing to fetch
        return Outcome()
    with stdout_may_close():
        _print_report(report, progress, ran[0], as_json=args.json)
    return Outcome(failed=not report.ok)


def _print_report(report: DownloadReport, progress: Progress, engine: str, as_json: bool) -> None:
    """The closing summary: one JSON object (`download --json`'s keys, and `engine`, the
    engine that ran), or the human lines, naming the engine when it was not this process."""
    if as_json:
        print(json.dumps({**summary_json(report), "engine": engine}, separators=(",", ":")))
        return
    print_summary(report, sys.stdout, transferred=progress.bytes)
    if engine != "local":
        workers = len({share.pid for share in getattr(report, "workers", ())})
        print(f"engine: {engine}, {workers} worker(s)")


async def cmd_demo(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    temporary = not args.out
    if not temporary and destination(args.out).startswith("s3://"):
        raise UsageError("demo archives into a folder; --out s3://... is for download")
    if args.engine == "ray":
        raise UsageError("demo runs on --engine local or process; --engine ray is for download")
    # With --json, stdout holds only the summary object; the demo's story goes to stderr.
    say = sys.stderr if args.json else sys.stdout
    interruption.keeps_partials = not temporary  # the folder and its .part files go
    out = Path(tempfile.mkdtemp(prefix="vobiz-demo-")) if temporary else Path(args.out)
    try:
        return await _demo(args, out, say)
    finally:
        if temporary:
            await asyncio.to_thread(shutil.rmtree, out, ignore_errors=True)
            with stdout_may_close():
                print(
                    f"removed the temporary folder {out} (pass --out DIR to keep the files)",
                    file=say,
                )
        else:
            with stdout_may_close():
                print(f"the files are kept in {out}", file=say)


async def _demo(args: argparse.Namespace, out: Path, say: TextIO) -> Outcome:
    from ..testing import FakeVobiz

    print(
        f"demo: {args.count} synthetic recordings from an in-process fake Vobiz -> {out}", file=say
    )
    fake = FakeVobiz(
        recordings=args.count,
        seed=args.seed,
        fault_rate=0.1,
        wav_as_mp3_rate=0.1,
        foreign_redirect_rate=0.1,
    )
    async with fake:
        job = DownloadJob(
            out=str(out),
            auth_id=fake.auth_id,
            auth_token=fake.auth_token,
            base_url=fake.base_url,
            concurrency=args.concurrency,
            overwrite=args.overwrite,
            no_manifest=args.no_manifest,
            engine=args.engine,
            workers=args.workers,
        )
        ran: list[str] = []
        report, progress = await _download(job, on_engine=ran.append)
        assert report is not None  # only --repair finds nothing, and a demo never repairs
        with stdout_may_close():
            _print_report(report, progress, ran[0], as_json=args.json)
        wrong, leaked = _report_demo_transfers(fake, report, say)
        served = {rid: fake.sha256(rid) for rid in fake.recording_ids}
    problems = 0
    if not args.no_manifest:
        problems, stale = await _verify_demo_archive(out, served, say)
        wrong += stale
    return Outcome(failed=bool(wrong or problems or leaked) or not report.ok)


def _report_demo_transfers(fake: Any, report: DownloadReport, say: TextIO) -> tuple[list[str], int]:
    """Print what the downloader survived and whether this run's files match what the fake
    served; return the ids that do not, and the credentials the foreign host saw."""
    downloaded = report.downloaded
    wrong = [r.recording_id for r in downloaded if r.sha256 != fake.sha256(r.recording_id)]
    leaked: int = fake.stats.foreign_credentials_seen
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
        f"{redirected} redirects to a foreign storage host",
        file=say,
    )
    print(
        f"verified this run: {len(downloaded) - len(wrong)} of the {len(downloaded)} files "
        f"downloaded match the served bytes; credentials sent to the foreign host: {leaked}",
        file=say,
    )
    return wrong, leaked


async def _verify_demo_archive(
    out: Path, served: dict[str, str], say: TextIO
) -> tuple[int, list[str]]:
    """Re-hash the demo's archive against its manifest; the problem count and the entries
    whose bytes are not what the fake served."""
    with Manifest(out / MANIFEST_NAME) as manifest:
        problems = await asyncio.to_thread(verify_manifest, out, manifest)
        stale = [e.recording_id for e in manifest if served.get(e.recording_id) != e.sha256]
        count = len(manifest)
    print(
        f"verified the archive: {count} files re-hashed against {MANIFEST_NAME}, "
        f"{len(problems)} problem(s); {count - len(stale)} of them match the served bytes",
        file=say,
    )
    return len(problems), stale
