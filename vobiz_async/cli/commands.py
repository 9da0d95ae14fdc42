"""The commands other than the archive job: list, get, delete, verify, index export,
fake-server and serve. Each translates its arguments into library calls, prints, and returns
an `Outcome`; `main` turns that into the exit code."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import errno
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRecordingIdError,
    NotFoundError,
    StorageError,
    StoragePermissionError,
    VobizError,
)
from ..manifest import (
    MANIFEST_NAME,
    VIEW_COLUMNS,
    Manifest,
    ManifestEntry,
    VerifyProblem,
    verify_manifest,
)
from ..models import Recording
from ..pager import AsyncPager
from ..protocol import quote_path_segment, sidecar_key
from ..recordings import MAX_PAGE_SIZE
from ..selection import Selection, Verdict
from ..session import AsyncSession
from ..sinks import audit_objects, s3_destination
from .output import print_json_lines, print_record, print_table, stdout_may_close
from .parser import selection_from_args
from .results import DestinationError, Interruption, Outcome, Unavailable, UsageError

if TYPE_CHECKING:
    from ..sinks import ObjectProblem, S3Sink

#: The audio files an archive folder holds (and `verify` looks for beyond the index).
_AUDIO_SUFFIXES = frozenset({".mp3", ".wav"})

#: Library argument names in a ConfigurationError, and what a CLI user sets instead.
_CLI_NAMES = {
    "auth_id": "--auth-id (VOBIZ_AUTH_ID)",
    "auth_token": "--auth-token (VOBIZ_AUTH_TOKEN)",
    "base_url": "--base-url (VOBIZ_BASE_URL)",
}


def session_for(auth_id: str | None, auth_token: str | None, base_url: str | None) -> AsyncSession:
    """A session from the options given, the environment filling in what they lack."""
    auth_id = auth_id or os.environ.get("VOBIZ_AUTH_ID")
    auth_token = auth_token or os.environ.get("VOBIZ_AUTH_TOKEN")
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
        return AsyncSession(auth_id, auth_token, base_url=base_url)
    except ConfigurationError as err:
        message = str(err)
        for name, flag in _CLI_NAMES.items():
            message = re.sub(rf"\b{name}\b", flag, message)
        raise ConfigurationError(message) from None


def _session(args: argparse.Namespace) -> AsyncSession:
    return session_for(args.auth_id, args.auth_token, args.base_url)


def destination(value: str) -> str:
    """A destination argument as the library takes it: `s3://` in any case written
    `s3://...`, a folder as given; any other URL-like value (`gs://`, `https://`,
    `s3:/bucket`) is a usage error, said before anything is created."""
    try:
        return s3_destination(value) or value
    except ConfigurationError as err:
        raise UsageError(str(err)) from None


def s3_settings(options: Any) -> dict[str, Any]:
    """`S3Sink`'s storage, encryption and Object Lock settings from the `--s3-*` options
    (an `argparse.Namespace` or a `DownloadJob`)."""
    return {
        "storage_class": getattr(options, "s3_storage_class", None),
        "sse": getattr(options, "s3_sse", None),
        "sse_kms_key_id": getattr(options, "s3_sse_kms_key_id", None),
        "object_lock_mode": getattr(options, "s3_object_lock_mode", None),
        "object_lock_retain_days": getattr(options, "s3_retain_days", None),
        "object_lock_legal_hold": bool(getattr(options, "s3_legal_hold", False)),
    }


def s3_sink(
    url: str,
    *,
    endpoint_url: str | None,
    region: str | None,
    layout: str = "flat",
    index: Manifest | None = None,
    settings: dict[str, Any] | None = None,
) -> S3Sink:
    """The object-storage destination an `s3://bucket/prefix/` argument names, with the
    storage, encryption and Object Lock `settings` (`s3_settings`)."""
    from ..sinks import S3Sink

    return S3Sink.from_url(
        url,
        endpoint_url=endpoint_url,
        region=region,
        layout=layout,
        index=index,
        **(settings or {}),
    )


async def check_bucket(sink: S3Sink, *, writing: bool = True) -> None:
    """Prove the bucket is there and takes our credentials, once, before any listing: the
    same words for `download` and `verify` (refused credentials stay themselves: exit 3).
    A writer's bucket must also take the sink's storage, encryption and Object Lock
    settings (`S3Sink.prepare`): one line, exit 1, before any transfer."""
    try:
        await sink.prepare(writing=writing)
    except StoragePermissionError:
        raise
    except StorageError as err:
        raise DestinationError(str(err)) from None
    finally:
        await sink.close()


async def check_archive(root: Path, manifest_path: Path) -> tuple[list[VerifyProblem], int]:
    """Re-hash the files under `root` against the manifest: the problems, and its entry count."""
    with Manifest(manifest_path) as manifest:
        problems = await asyncio.to_thread(verify_manifest, root, manifest)
        return problems, len(manifest)


async def _collect(pager: AsyncPager, limit: int | None) -> list[Recording]:
    recordings: list[Recording] = []
    # Closed here, inside the session: stopping early cancels the pages being prefetched.
    async with contextlib.aclosing(aiter(pager)) as items:
        async for recording in items:
            if limit is not None and len(recordings) >= limit:
                break
            recordings.append(recording)
    return recordings


def _print_recordings(recordings: list[Recording], args: argparse.Namespace) -> None:
    if args.json or not sys.stdout.isatty():
        print_json_lines(recordings, sys.stdout)
    elif args.command == "get":
        print_record(recordings[0], sys.stdout)
    else:
        print_table(recordings, sys.stdout, local=args.local)


async def cmd_list(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    page_size = min(args.limit, MAX_PAGE_SIZE) if args.limit else MAX_PAGE_SIZE
    now = datetime.now(UTC)  # one clock reading per run
    async with _session(args) as session:
        pager = session.recordings.list(
            limit=page_size,
            recording_type=args.recording_type,
            call_uuid=args.call_uuid,
            selection=selection_from_args(args, now),
            now=now,
        )
        recordings = await _collect(pager, args.limit)
    _print_recordings(recordings, args)
    return Outcome()


async def cmd_get(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    async with _session(args) as session:
        try:
            recording = await session.recordings.get(args.id)
        except NotFoundError as err:
            err.add_note(f"no recording {args.id!r}: deleted, expired, or another account's")
            raise
    _print_recordings([recording], args)
    return Outcome()


async def _confirm_delete(count: int) -> bool:
    if not sys.stdin.isatty():
        raise UsageError("refusing to delete without a terminal to confirm; pass --yes")
    prompt = f"Delete {count} recording(s) for good? [y/N] "
    answer = await asyncio.to_thread(input, prompt)
    return answer.strip().lower() in ("y", "yes")


async def cmd_delete(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    if not args.yes and not await _confirm_delete(len(args.ids)):
        print("nothing deleted")
        return Outcome()
    deleted: list[str] = []
    failed: list[dict[str, str]] = []
    async with _session(args) as session:
        for recording_id in args.ids:
            try:
                await session.recordings.delete(recording_id)
            except AuthenticationError:
                raise
            except VobizError as err:
                failed.append({"id": recording_id, "error": str(err)})
                print(f"failed {recording_id}: {err}", file=sys.stderr)
            else:
                deleted.append(recording_id)
                if not args.json:
                    print(f"deleted {recording_id}")
    if args.json:
        _print_json({"deleted": deleted, "failed": failed})
    return Outcome(failed=bool(failed))


def _print_json(value: dict[str, Any]) -> None:
    with stdout_may_close():
        print(json.dumps(value, separators=(",", ":")))


def _problem(
    kind: str, recording_id: str | None, where: str, detail: str | None = None
) -> dict[str, Any]:
    problem = {"kind": kind, "id": recording_id, "path": where}
    if detail is not None:
        problem["detail"] = detail
    return problem


def _report_verify(
    args: argparse.Namespace, checked: int | None, problems: list[dict[str, Any]]
) -> None:
    if args.json:
        _print_json({"checked": checked, "problems": problems})
        return
    for problem in problems:
        known = f" ({problem['id']})" if problem["id"] else ""
        detail = f": {problem['detail']}" if problem.get("detail") else ""
        print(f"{problem['kind']}: {problem['path']}{known}{detail}")


def _object_problem(found: ObjectProblem) -> dict[str, Any]:
    """One `verify s3://` problem; a setting that differs says how."""
    detail = None
    if found.kind not in ("changed", "missing-metadata"):
        detail = f"{found.actual}, expected {found.expected}"
    return _problem(found.kind, Path(found.key).stem, found.location, detail)


async def _verify_s3(args: argparse.Namespace) -> Outcome:
    """`verify s3://bucket/prefix/`: re-hash every object against its sha256 metadata (and
    the index, given `--index`), compare its settings with the `--s3-*` ones given, and
    name each recording the index has but the bucket lacks. Counts the index's entries,
    or without an index the objects checked."""

    if args.metadata == "sidecar" and not args.index:
        raise UsageError(
            "verify s3://... --metadata sidecar checks the recordings an index lists: "
            "give --index PATH"
        )
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(Manifest(args.index)) if args.index else None
        sink = s3_sink(
            args.dir,
            endpoint_url=args.s3_endpoint_url,
            region=args.s3_region,
            index=index,
            settings=s3_settings(args),
        )
        await check_bucket(sink, writing=False)  # verify only reads
        audit = await audit_objects(sink)
        problems = [_object_problem(p) for p in audit.problems]
        checked = audit.checked
        if index is not None:
            checked = len(index)
            problems += _missing_objects(sink, index, audit.keys, sidecars=args.metadata)
    _report_verify(args, checked, problems)
    if not args.json:
        counted = "" if index is not None else f"{checked} object(s) in "
        print(f"verified {counted}{sink.describe()}; {len(problems)} problem(s)")
    return Outcome(failed=bool(problems))


def _missing_objects(
    sink: S3Sink, index: Manifest, keys: frozenset[str], *, sidecars: str | None
) -> list[dict[str, Any]]:
    """The recordings the index has and the bucket's listing (`keys`) lacks, and those
    whose `<id>.json` it lacks when sidecars are on (`_sidecars_on`)."""
    entries = list(index)
    problems = [
        _problem("missing", entry.recording_id, sink.location(entry.path))
        for entry in entries
        if entry.path not in keys
    ]
    if _sidecars_on(sidecars, entries, keys.__contains__):
        problems += [
            _problem("missing sidecar", entry.recording_id, sink.location(key))
            for entry in entries
            if (key := sidecar_key(entry.path)) not in keys
        ]
    return problems


def _sidecars_on(
    given: str | None, entries: list[ManifestEntry], present: Callable[[str], bool]
) -> bool:
    """Whether `verify` checks sidecars: `--metadata sidecar`, or an archive that keeps them
    (any indexed recording has its `<id>.json` beside it)."""
    return given == "sidecar" or any(present(sidecar_key(entry.path)) for entry in entries)


def _missing_sidecars(root: Path, manifest_path: Path, given: str | None) -> list[dict[str, Any]]:
    """The indexed recordings without their `<id>.json`, when sidecars are on."""
    with Manifest(manifest_path) as manifest:
        entries = list(manifest)

    def present(key: str) -> bool:
        return (root / key).is_file()

    if not _sidecars_on(given, entries, present):
        return []
    return [
        _problem("missing sidecar", entry.recording_id, key)
        for entry in entries
        if not present(key := sidecar_key(entry.path))
    ]


def _unindexed(root: Path, manifest_path: Path) -> list[dict[str, Any]]:
    """The audio files under `root` the index does not know (archived by hand, or by a run
    whose index was lost)."""
    with Manifest(manifest_path) as manifest:
        known = {entry.path for entry in manifest}
    return [
        _problem("not in index", None, relative)
        for path in sorted(root.rglob("*"))
        if path.suffix in _AUDIO_SUFFIXES
        and (relative := path.relative_to(root).as_posix()) not in known
        and path.is_file()
    ]


def _print_verify_hints(root: Path, problems: list[dict[str, Any]]) -> None:
    """The command that fixes each kind of problem found in a folder."""
    out = shlex.quote(str(root))
    if any(problem["kind"] != "missing sidecar" for problem in problems):
        print(f"to re-fetch them: vobiz-recordings download --out {out} --repair")
    if any(problem["kind"] == "missing sidecar" for problem in problems):
        print(
            "to write the missing sidecars: vobiz-recordings download --out "
            f"{out} --metadata sidecar"
        )


async def cmd_verify(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    args.dir = destination(str(args.dir))
    if args.dir.startswith("s3://"):
        return await _verify_s3(args)
    root = Path(args.dir)
    manifest_path = Path(args.index) if args.index else root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise UsageError(
            f"no index at {manifest_path}: `vobiz-recordings download --out "
            f"{shlex.quote(str(root))}` builds one"
        )
    found, count = await check_archive(root, manifest_path)
    problems = [_problem(p.problem, p.recording_id, p.path) for p in found]
    unknown = await asyncio.to_thread(_unindexed, root, manifest_path)
    problems += await asyncio.to_thread(
        _missing_sidecars, root, manifest_path, getattr(args, "metadata", None)
    )
    _report_verify(args, count, problems + unknown)
    if not args.json:
        print(
            f"verified {count - len(problems)} of {count} files; {len(problems)} problem(s)"
            + (f"; {len(unknown)} file(s) the index does not know" if unknown else "")
        )
        _print_verify_hints(root, problems)
    return Outcome(failed=bool(problems or unknown))


async def cmd_index_export(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    """`index export`: the index's recordings on stdout, as JSON Lines (one object a
    recording) or CSV with a header row, the columns of the `recordings` view; the selection
    flags filter them, every age measured from one clock reading."""
    if (args.index is None) == (args.dir is None):
        raise UsageError("give either DIR or --index PATH")
    path = Path(args.index) if args.index else Path(args.dir) / MANIFEST_NAME
    if not path.is_file():
        raise UsageError(f"no index at {path}")
    now = datetime.now(UTC)
    selection = selection_from_args(args, now)

    def export() -> None:
        with Manifest(path) as manifest:
            write_rows(
                manifest, sys.stdout, csv_format=args.format == "csv", selection=selection, now=now
            )
        sys.stdout.flush()

    with stdout_may_close():  # the reader had enough (`| head`): not a failure
        await asyncio.to_thread(export)
    return Outcome()


def write_rows(
    manifest: Manifest,
    out: IO[str],
    *,
    csv_format: bool = False,
    selection: Selection | None = None,
    now: datetime | None = None,
) -> int:
    """Write the index's recordings that `selection` keeps (its verdict on each, as the
    index remembers the recording) to `out`; return how many."""
    when = now if now is not None else datetime.now(UTC)
    writer = csv.DictWriter(out, fieldnames=VIEW_COLUMNS) if csv_format else None
    if writer is not None:
        writer.writeheader()
    count = 0
    for entry in manifest:
        if selection is not None and selection.verdict(entry.recording(), when) is not Verdict.KEEP:
            continue
        row = entry.row()
        if writer is not None:
            writer.writerow(row)
        else:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        count += 1
    return count


def _check_fake_server_args(args: argparse.Namespace) -> None:
    if args.base_url is not None:
        raise UsageError("fake-server serves its own base URL; --base-url does not apply")
    if args.auth_id is not None:
        try:
            quote_path_segment(args.auth_id, what="auth id")
        except InvalidRecordingIdError as err:
            raise UsageError(f"--auth-id is not usable as an account id: {err}") from None
    if args.auth_token is not None and not args.auth_token:
        raise UsageError("--auth-token must not be empty")


async def cmd_fake_server(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    from ..testing import DEFAULT_AUTH_ID, DEFAULT_AUTH_TOKEN, FakeVobiz

    _check_fake_server_args(args)
    given_token = args.auth_token is not None
    fake = FakeVobiz(
        recordings=args.count,
        seed=args.seed,
        port=args.port,
        auth_id=args.auth_id or DEFAULT_AUTH_ID,
        auth_token=args.auth_token or DEFAULT_AUTH_TOKEN,
    )
    with port_in_use("127.0.0.1", args.port):
        async with fake:
            print(f"fake Vobiz on {fake.base_url} with {args.count} recordings (Ctrl-C stops)")
            print(f"export VOBIZ_BASE_URL={fake.base_url}")
            print(f"export VOBIZ_AUTH_ID={fake.auth_id}")
            if given_token:  # never echo a token the user typed
                print("export VOBIZ_AUTH_TOKEN=...  # the --auth-token you gave")
            else:
                print(f"export VOBIZ_AUTH_TOKEN={fake.auth_token}  # the fake's own, not a secret")
            sys.stdout.flush()
            await asyncio.Event().wait()
    return Outcome()  # pragma: no cover - only Ctrl-C ends it


@contextlib.contextmanager
def port_in_use(host: str, port: int) -> Iterator[None]:
    """A listening socket that cannot bind becomes one line naming the port (exit 1)."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.EADDRINUSE:
            raise
        raise Unavailable(f"port {port} is in use on {host}; pick another") from None


async def cmd_serve(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    from ..receiver import ServeConfig, serve

    if args.public_url.startswith("http://") and not args.allow_http_public_url:
        raise UsageError(
            f"--public-url {args.public_url} is http://, but Vobiz calls https:// only; "
            "pass --allow-http-public-url if a proxy in front ends TLS on this URL"
        )
    if not args.debug:  # a receiver's log is its record: each recording's outcome, at INFO
        logging.getLogger("vobiz_async").setLevel(logging.INFO)
    host, port = args.listen
    config = ServeConfig(
        public_url=args.public_url,
        dest=destination(args.out),
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
        metadata=args.metadata,
        index=args.index,
        s3_endpoint_url=args.s3_endpoint_url,
        s3_region=args.s3_region,
        **s3_settings(args),
    )
    with port_in_use(host, port):
        try:
            code = await serve(
                config, on_ready=lambda url: print(f"listening on {url}", flush=True)
            )
        except StoragePermissionError:
            raise  # refused credentials: exit 3
        except StorageError as err:  # the bucket refused a setting: one line, exit 1
            raise DestinationError(str(err)) from None
    return Outcome(failed=code != 0)
