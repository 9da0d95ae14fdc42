"""The commands other than the archive job: list, get, delete, verify, index export,
fake-server and serve. Each translates its arguments into library calls, prints, and returns
an `Outcome`; `main` turns that into the exit code."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

import attrs

from ..errors import AuthenticationError, ConfigurationError, InvalidRecordingIdError, VobizError
from ..manifest import MANIFEST_NAME, Manifest, VerifyProblem, verify_manifest
from ..models import Recording
from ..pager import AsyncPager
from ..protocol import quote_path_segment
from ..recordings import MAX_PAGE_SIZE
from ..session import AsyncSession
from ..sinks import S3Sink, s3_destination, verify_objects
from .output import print_json_lines, print_table, stdout_may_close
from .results import Interruption, Outcome, UsageError

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


def s3_sink(
    url: str,
    *,
    endpoint_url: str | None,
    region: str | None,
    layout: str = "flat",
    index: Manifest | None = None,
) -> S3Sink:
    """The object-storage destination an `s3://bucket/prefix/` argument names."""
    return S3Sink.from_url(
        url, endpoint_url=endpoint_url, region=region, layout=layout, index=index
    )


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


def _print_recordings(recordings: list[Recording], as_json: bool) -> None:
    if as_json or not sys.stdout.isatty():
        print_json_lines(recordings, sys.stdout)
    else:
        print_table(recordings, sys.stdout)


async def cmd_list(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    page_size = min(args.limit, MAX_PAGE_SIZE) if args.limit else MAX_PAGE_SIZE
    async with _session(args) as session:
        pager = session.recordings.list(
            limit=page_size, recording_type=args.recording_type, call_uuid=args.call_uuid
        )
        recordings = await _collect(pager, args.limit)
    _print_recordings(recordings, args.json)
    return Outcome()


async def cmd_get(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    async with _session(args) as session:
        recording = await session.recordings.get(args.id)
    _print_recordings([recording], args.json)
    return Outcome()


async def cmd_delete(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to delete without a terminal to confirm; pass --yes")
        prompt = f"Delete {len(args.ids)} recording(s) for good? [y/N] "
        answer = await asyncio.to_thread(input, prompt)
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return Outcome()
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
    return Outcome(failed=bool(failed))


async def _verify_s3(args: argparse.Namespace) -> Outcome:
    """`verify s3://bucket/prefix/`: re-hash every object against its sha256 metadata (and
    the index, given `--manifest`), and name each recording the index has but the bucket
    lacks."""
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(Manifest(args.manifest)) if args.manifest else None
        sink = s3_sink(
            args.dir, endpoint_url=args.s3_endpoint_url, region=args.s3_region, index=index
        )
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
    return Outcome(failed=bool(problems))


async def cmd_verify(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    args.dir = destination(str(args.dir))
    if args.dir.startswith("s3://"):
        return await _verify_s3(args)
    root = Path(args.dir)
    manifest_path = Path(args.manifest) if args.manifest else root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise UsageError(f"no manifest at {manifest_path}")
    problems, count = await check_archive(root, manifest_path)
    for problem in problems:
        print(f"{problem.problem}: {problem.path} ({problem.recording_id})")
    print(f"verified {count - len(problems)} of {count} files; {len(problems)} problem(s)")
    if problems:
        print(
            f"to re-fetch them: vobiz-recordings download --out {shlex.quote(str(root))} --repair"
        )
    return Outcome(failed=bool(problems))


async def cmd_index_export(args: argparse.Namespace, interruption: Interruption) -> Outcome:
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

    with stdout_may_close():  # the reader had enough (`| head`): not a failure
        await asyncio.to_thread(export)
    return Outcome()


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
    return Outcome()  # pragma: no cover - only Ctrl-C ends it


async def cmd_serve(args: argparse.Namespace, interruption: Interruption) -> Outcome:
    from ..receiver import ServeConfig, serve

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
    )
    code = await serve(config, on_ready=lambda url: print(f"listening on {url}", flush=True))
    return Outcome(failed=code != 0)
