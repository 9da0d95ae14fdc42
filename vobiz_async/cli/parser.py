"""The command line's grammar: one argparse sub-parser per command, each naming the command
function it runs.

A command's options are added the first time its parser is used (parsed, or asked for
`--help`), and its function is imported only when it runs: `vobiz-recordings --help`, and
every command, import only what they use (no aiohttp server, S3, webhooks, Ray or rich).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .._version import __version__
from .results import Interruption, Outcome, UsageError

if TYPE_CHECKING:
    from datetime import datetime

    from ..selection import Selection

#: The first line of the package's docstring: `--help`'s description.
DESCRIPTION = "`vobiz-recordings`: list, fetch, delete, archive and verify recordings from a shell."

#: What the index file in an archive folder is called (`manifest.MANIFEST_NAME`, which a
#: test keeps equal: importing the manifest here would cost every `--help` its imports).
INDEX_NAME = "vobiz-manifest.jsonl"

#: `--engine`'s values: this process, worker processes of this machine, Ray.
ENGINES = ("local", "process", "ray")

#: The recording types Vobiz documents; another value is passed on with a warning.
RECORDING_TYPES = ("call", "conference", "trunk")

Command = Callable[[argparse.Namespace, Interruption], Coroutine[Any, Any, Outcome]]
Commands = Any  # argparse's _SubParsersAction, private in typeshed
Options = Callable[[argparse.ArgumentParser], None]

#: The exit codes every command's `--help` ends with (the README's table).
EXIT_CODES = """exit codes:
  0    done
  1    some items failed, or the destination or a connection failed (one line says which)
  2    usage error
  3    credentials refused (by Vobiz or S3) or missing
  130  interrupted (Ctrl-C)"""


class ArgumentsError(Exception):
    """argparse refused the command line: `main` prints it (or a JSON object) and exits 2."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class CommandParser(argparse.ArgumentParser):
    """A parser whose options are added on first use, and whose errors `main` reports."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.pending: list[Options] = []

    def ready(self) -> None:
        """Add the options still pending."""
        while self.pending:
            self.pending.pop(0)(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        self.ready()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.ready()
        return super().format_help()

    def format_usage(self) -> str:
        self.ready()
        return super().format_usage()

    def error(self, message: str) -> NoReturn:
        raise ArgumentsError(message, self.format_usage())


def command(module: str, name: str) -> tuple[str, str]:
    """Where a command's function lives (`vobiz_async.cli.<module>.<name>`): `set_defaults`
    records this, and `load_command` imports it only for the command that runs."""
    return module, name


def load_command(args: argparse.Namespace) -> Command:
    """The function of the command parsed into `args`, imported now (before the event loop
    starts, so the import does not stall it)."""
    module, name = args.func
    loaded: Command = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    return loaded


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


def _storage_class(text: str) -> str:
    """An S3 storage class, in capitals (`glacier_ir` is `GLACIER_IR`)."""
    value = text.strip().upper()
    if not value[:1].isalpha() or not all(c.isascii() and (c.isalnum() or c == "_") for c in value):
        raise argparse.ArgumentTypeError(f"not an S3 storage class: {text!r}")
    return value


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text.strip()


def _recording_type(text: str) -> str:
    """A `--recording-type`: a value Vobiz does not document is passed on, with one warning."""
    if text not in RECORDING_TYPES:
        print(
            f"warning: --recording-type {text!r} is none of {', '.join(RECORDING_TYPES)}; "
            "Vobiz may return nothing",
            file=sys.stderr,
        )
    return text


def _shared_options(defaults: bool) -> argparse.ArgumentParser:
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


def _epilog(*examples: str) -> str:
    lines = [EXIT_CODES, "", "examples:", *(f"  vobiz-recordings {e}" for e in examples)]
    return "\n".join(lines)


def _json_option(sub: argparse.ArgumentParser, text: str) -> None:
    sub.add_argument("--json", action="store_true", help=text)


SELECTION_FLAGS = (
    "after",
    "before",
    "min_age",
    "max_age",
    "from_number",
    "to_number",
    "min_duration",
)


def _when(text: str) -> str:
    from ..selection import parse_when  # lazy: --help stays light

    try:
        parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _age(text: str) -> str:
    from ..selection import parse_age  # lazy: --help stays light

    try:
        parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_selection_flags(sub: argparse.ArgumentParser) -> None:
    """The selection flags `download`, `list`, `status`, `move` and `index export` share
    (issue 24 §1)."""
    sub.add_argument("--after", type=_when, help="added at or after WHEN (ISO; UTC if no zone)")
    sub.add_argument("--before", type=_when, help="added before WHEN (exclusive)")
    sub.add_argument("--min-age", type=_age, help="added at least AGE ago (7d, 12h, 1d6h)")
    sub.add_argument("--max-age", type=_age, help="added at most AGE ago")
    sub.add_argument("--from-number", help="calls from this number (digits compared)")
    sub.add_argument("--to-number", help="calls to this number (digits compared)")
    sub.add_argument("--min-duration", type=_age, help="recordings at least this long (30s)")


def selection_from_args(args: argparse.Namespace, now: datetime) -> Selection | None:
    """The run's `Selection` from its flags (None when none is given); `now` is the run's
    one clock reading, used by `list(selection=..., now=now)`."""
    from ..selection import Selection  # lazy: --help stays light

    del now  # ages are kept relative; the listing measures them from its `now`
    fields = {name: getattr(args, name, None) for name in SELECTION_FLAGS}
    fields["recording_type"] = getattr(args, "recording_type", None)
    fields["call_uuid"] = getattr(args, "call_uuid", None)
    selection = Selection(**fields)
    return None if selection.is_empty else selection


def _list_options(listing: argparse.ArgumentParser) -> None:
    listing.set_defaults(func=command("commands", "cmd_list"))
    _json_option(listing, "JSON Lines in the wire form (and failures as a JSON object)")
    listing.add_argument("--recording-type", type=_recording_type, help="call, conference, trunk")
    listing.add_argument("--call-uuid")
    add_selection_flags(listing)
    listing.add_argument("--limit", type=_positive, help="stop after N recordings")
    listing.add_argument(
        "--local", action="store_true", help="the table's times in this machine's zone, not UTC"
    )


def _get_options(get: argparse.ArgumentParser) -> None:
    get.set_defaults(func=command("commands", "cmd_get"))
    get.add_argument("id")
    _json_option(get, "the recording in the wire form (and a failure as a JSON object)")


def _delete_options(delete: argparse.ArgumentParser) -> None:
    delete.set_defaults(func=command("commands", "cmd_delete"))
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    _json_option(delete, "the summary as one JSON object")


def _download_options(sub: argparse.ArgumentParser) -> None:
    """The options `download` and `demo` share."""
    sub.add_argument("--concurrency", type=_positive, default=16)
    sub.add_argument("--overwrite", action="store_true", help="fetch files already saved")
    sub.add_argument(
        "--no-index", dest="no_manifest", action="store_true", help=f"keep no index ({INDEX_NAME})"
    )
    sub.add_argument(  # the old name, kept working
        "--no-manifest", dest="no_manifest", action="store_true", help=argparse.SUPPRESS
    )
    sub.add_argument(
        "--engine",
        choices=ENGINES,
        help="where transfers run: local (this process), process (worker processes of this "
        "machine) or ray (pip install 'vobiz-async[ray]'); default: process with 2+ CPUs "
        "and a job known to be large, else local",
    )
    sub.add_argument(
        "--workers",
        type=_positive,
        help="with --engine process: worker processes, this one then only lists and indexes "
        "(default: this one downloads too, beside a worker for each other CPU; 8 in all at "
        "most)",
    )


def _metadata_option(sub: argparse.ArgumentParser, text: str | None = None) -> None:
    sub.add_argument(
        "--metadata",
        choices=("sidecar",),
        help=text or "sidecar: store <id>.json, the recording's wire object, beside each recording",
    )


#: The S3 flags (attribute names) that apply to `s3://` destinations only.
S3_FLAGS = (
    "s3_endpoint_url",
    "s3_region",
    "s3_storage_class",
    "s3_sse",
    "s3_sse_kms_key_id",
    "s3_object_lock_mode",
    "s3_retain_days",
    "s3_legal_hold",
)


def _s3_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--s3-endpoint-url", help="s3:// only; default: $AWS_ENDPOINT_URL_S3, AWS")
    sub.add_argument("--s3-region", help="s3:// only; default: $AWS_REGION / the AWS profile")
    verb = "expect on" if sub.prog.endswith(" verify") else "set on"
    sub.add_argument(
        "--s3-storage-class",
        type=_storage_class,
        metavar="CLASS",
        help=f"the storage class to {verb} every object (GLACIER_IR, STANDARD_IA, ...)",
    )
    sub.add_argument(
        "--s3-sse", choices=("AES256", "aws:kms"), help=f"the encryption to {verb} every object"
    )
    sub.add_argument(
        "--s3-sse-kms-key-id", type=_nonempty, metavar="KEY", help="with --s3-sse aws:kms: the key"
    )
    sub.add_argument(
        "--s3-object-lock-mode",
        choices=("GOVERNANCE", "COMPLIANCE"),
        help="Object Lock retention (with --s3-retain-days; the bucket needs Object Lock)",
    )
    sub.add_argument(
        "--s3-retain-days",
        type=_positive,
        metavar="N",
        help="keep each object N days from its upload (with --s3-object-lock-mode)",
    )
    sub.add_argument("--s3-legal-hold", action="store_true", help=f"a legal hold to {verb} it")


def _archive_options(download: argparse.ArgumentParser) -> None:
    download.set_defaults(func=command("archive", "cmd_download"))
    download.add_argument(
        "--out", required=True, help="destination: a folder, or s3://bucket/prefix/"
    )
    download.add_argument(
        "--layout",
        choices=("flat", "date", "hive"),
        default="flat",
        help="flat: <id>.<ext>; date: YYYY/MM/DD/<id>.<ext>; hive: "
        "year=YYYY/month=MM/day=DD/<id>.<ext> (by add_time, in its own offset)",
    )
    _metadata_option(download)
    _s3_options(download)
    download.add_argument(
        "--index", help=f"the index file (default: OUT/{INDEX_NAME}; none for s3://)"
    )
    download.add_argument("--recording-type", type=_recording_type, help="call, conference, trunk")
    download.add_argument("--call-uuid")
    add_selection_flags(download)
    download.add_argument(
        "--dry-run", action="store_true", help="say what would be fetched; change nothing"
    )
    download.add_argument("--ids", nargs="+", metavar="ID", help="only these recordings")
    download.add_argument(
        "--ids-file", help="a file of ids, one a line, # comments ('-' for stdin)"
    )
    download.add_argument(
        "--repair",
        action="store_true",
        help="re-fetch exactly the files `verify` finds missing or changed",
    )
    _download_options(download)
    _json_option(download, "the summary as one JSON object (also when the command fails)")


def _engine_options(download: argparse.ArgumentParser) -> None:
    download.add_argument(
        "--ray-address",
        help="with --engine ray: a running Ray cluster (auto, HOST:PORT); default: a local Ray",
    )
    download.add_argument(
        "--shard-size",
        type=_positive,
        help="with --engine ray: recordings per Ray task (default: from the job and the CPUs)",
    )


def _move_options(move: argparse.ArgumentParser) -> None:
    """What `move` adds to every download option (added before these, by the same
    functions): its own command, and the delete cap."""
    move.set_defaults(func=command("move", "cmd_move"))
    move.add_argument(
        "--max-delete",
        type=_count,
        metavar="N",
        help="delete at most N recordings at Vobiz this run (archiving still completes)",
    )


def _status_options(status: argparse.ArgumentParser) -> None:
    status.set_defaults(func=command("status", "cmd_status"))
    status.add_argument("--out", required=True, help="the archive folder")
    status.add_argument("--index", help=f"the index file (default: OUT/{INDEX_NAME})")
    status.add_argument("--recording-type", type=_recording_type, help="call, conference, trunk")
    status.add_argument("--call-uuid")
    add_selection_flags(status)
    status.add_argument("--retention-days", type=float, default=30.0)
    status.add_argument("--warn-hours", type=float, default=72.0)
    _json_option(
        status,
        "exactly: at_vobiz, archived, missing, at_risk, at_risk_ids, "
        "releasable, releasable_amount, released",
    )


def _verify_options(verify: argparse.ArgumentParser) -> None:
    verify.set_defaults(func=command("commands", "cmd_verify"))
    verify.add_argument("dir", help="a folder, or s3://bucket/prefix/")
    _s3_options(verify)
    verify.add_argument("--index", help=f"the index file (default: DIR/{INDEX_NAME})")
    verify.add_argument("--manifest", dest="index", help=argparse.SUPPRESS)  # the old name
    _metadata_option(
        verify,
        "sidecar: also report recordings whose <id>.json is missing (done without it too "
        "when any indexed recording has its sidecar: the archive keeps them)",
    )
    _json_option(verify, "one JSON object: checked, problems (kind, id), error on failure")


def _export_options(export: argparse.ArgumentParser) -> None:
    export.set_defaults(func=command("commands", "cmd_index_export"))
    export.add_argument("dir", nargs="?", help=f"an archive folder: DIR/{INDEX_NAME}")
    export.add_argument("--index", help="the index file itself")
    export.add_argument(
        "--format", choices=("jsonl", "csv"), default="jsonl", help="default: %(default)s"
    )
    export.add_argument("--recording-type", type=_recording_type, help="call, conference, trunk")
    export.add_argument("--call-uuid")
    add_selection_flags(export)


def _add_index(commands: Commands, common: argparse.ArgumentParser) -> None:
    examples = (
        "index export /srv/recordings",
        "index export /srv/recordings --format csv --from-number +919876543210",
    )
    index: CommandParser = commands.add_parser(
        "index",
        help="the archive's index",
        description="the archive's index",
        epilog=_epilog(*examples),
    )
    index_commands: Commands = index.add_subparsers(dest="index_command", required=True)
    export: CommandParser = index_commands.add_parser(
        "export",
        parents=[common],
        help="print the index: JSON Lines (one recording a line) or CSV",
        description="print the index's recordings (the `recordings` view's columns) as JSON "
        "Lines, one a line, or as CSV with a header row; selection flags filter them",
        epilog=_epilog(*examples),
    )
    export.pending.append(_export_options)


def _demo_options(demo: argparse.ArgumentParser) -> None:
    demo.set_defaults(func=command("archive", "cmd_demo"))
    demo.add_argument("--count", type=_positive, default=300)
    demo.add_argument("--out", help="destination folder (default: a new temporary folder)")
    demo.add_argument("--seed", type=int, default=0)
    _download_options(demo)
    _json_option(demo, "the summary as one JSON object, as download --json prints it")


def _fake_server_options(fake: argparse.ArgumentParser) -> None:
    fake.set_defaults(func=command("commands", "cmd_fake_server"))
    fake.add_argument("--port", type=_port, default=0, help="default: a free port")
    fake.add_argument("--count", type=_count, default=100)
    fake.add_argument("--seed", type=int, default=0)


def _serve_destination_options(serve: argparse.ArgumentParser, spool_name: str) -> None:
    """Where `serve` archives, and what it keeps beside: as `download` has them."""
    serve.add_argument("--out", required=True, help="destination: a folder, or s3://bucket/prefix/")
    serve.add_argument(
        "--spool",
        help=f"spool file (default: OUT/{spool_name}; for s3:// "
        "$XDG_STATE_HOME/vobiz-async/webhooks-<hash of OUT>.spool.jsonl)",
    )
    serve.add_argument(
        "--index", help=f"the index file (default: OUT/{INDEX_NAME}; none for s3://)"
    )
    _metadata_option(serve)
    _s3_options(serve)


def _serve_options(serve: argparse.ArgumentParser) -> None:
    from .. import receiver  # serve's value parsers live with the receiver they configure

    serve.set_defaults(func=command("commands", "cmd_serve"))
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
    serve.add_argument(
        "--allow-http-public-url",
        action="store_true",
        help="accept an http:// --public-url (Vobiz calls https only)",
    )
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
    _serve_destination_options(serve, receiver.SPOOL_NAME)
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


#: Every command but `index` (a group), in the order `--help` lists them: its name, what it
#: does, the options it adds on first use, and the two examples its `--help` ends with.
_COMMANDS: tuple[tuple[str, str, tuple[Options, ...], tuple[str, str]], ...] = (
    (
        "list",
        "list recordings (a table on a terminal, else JSON Lines)",
        (_list_options,),
        ("list --limit 20", "list --recording-type call --json > recordings.jsonl"),
    ),
    ("get", "show one recording", (_get_options,), ("get REC_ID", "get REC_ID --json")),
    (
        "delete",
        "delete recordings (asks first unless --yes)",
        (_delete_options,),
        ("delete REC_ID", "delete --yes REC_ID_1 REC_ID_2 --json"),
    ),
    (
        "download",
        "archive recordings into a folder or a bucket",
        (_archive_options, _engine_options),
        (
            "download --out /srv/recordings",
            "download --out s3://bucket/calls/ --ids-file ids.txt --json",
        ),
    ),
    (
        "move",
        "archive recordings, then delete at Vobiz those the archive provably holds",
        (_archive_options, _engine_options, _move_options),
        (
            "move --out /srv/recordings --min-age 7d --max-delete 1000",
            "move --out /srv/recordings --dry-run --json",
        ),
    ),
    (
        "verify",
        "re-hash an archive against its index",
        (_verify_options,),
        ("verify /srv/recordings", "verify s3://bucket/calls/ --json"),
    ),
    (
        "status",
        "what Vobiz holds against the archive; exit 1 when recordings are at risk",
        (_status_options,),
        ("status --out /srv/recordings", "status --out /srv/recordings --json"),
    ),
    (
        "demo",
        "archive from an in-process fake Vobiz: offline, no account",
        (_demo_options,),
        ("demo", "demo --count 50 --out /tmp/demo"),
    ),
    (
        "serve",
        "receive RecordStop callbacks and archive each recording",
        (_serve_options,),
        (
            "serve --public-url https://hooks.example.com/vobiz --out /srv/recordings",
            "serve --listen 0.0.0.0:8080 --public-url https://hooks.example.com/v "
            "--out /srv/r --sync-every 1h",
        ),
    ),
    (
        "fake-server",
        "serve the fake Vobiz on 127.0.0.1",
        (_fake_server_options,),
        ("fake-server", "fake-server --port 8080 --count 1000"),
    ),
)


def _add_commands(commands: Commands, common: argparse.ArgumentParser) -> None:
    for name, text, options, examples in _COMMANDS:
        sub: CommandParser = commands.add_parser(
            name, parents=[common], help=text, description=text, epilog=_epilog(*examples)
        )
        sub.pending.extend(options)
        if name == "verify":
            _add_index(commands, common)  # `--help` lists it after verify


def build_parser() -> CommandParser:
    """The whole grammar; each command's options are added when that command is used."""
    parser = CommandParser(
        prog="vobiz-recordings",
        description=DESCRIPTION,
        parents=[_shared_options(defaults=True)],
        epilog=_epilog("download --out /srv/recordings", "verify /srv/recordings"),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    _add_commands(commands, _shared_options(defaults=False))
    return parser


#: Options whose attribute is not named after the flag a user reads.
_FLAGS = {"no_manifest": "--no-index"}


def _given(args: argparse.Namespace, *names: str) -> list[str]:
    """The flags, among the attributes `names`, that the command line set."""
    return [
        _FLAGS.get(name, "--" + name.replace("_", "-"))
        for name in names
        if getattr(args, name, None) not in (None, False)
    ]


def check_conflicts(args: argparse.Namespace) -> None:
    """Refuse, in one line, options that contradict each other (a UsageError: exit 2)."""
    pairs: list[tuple[list[str], list[str]]] = []
    if args.command in ("download", "move"):
        chosen = _given(args, "recording_type", "call_uuid", *SELECTION_FLAGS)
        pairs.append((_given(args, "ids", "ids_file"), chosen))
        pairs.append((_given(args, "no_manifest"), _given(args, "index")))
        if args.engine != "ray":
            ray_only = _given(args, "ray_address", "shard_size")
            if ray_only:
                raise UsageError(f"{ray_only[0]} needs --engine ray")
    engine = getattr(args, "engine", None)
    if engine in ("local", "ray") and getattr(args, "workers", None) is not None:
        raise UsageError(f"--workers needs --engine process, not --engine {engine}")
    for first, second in pairs:
        if first and second:
            raise UsageError(f"{first[0]} and {second[0]} cannot be used together")
    if args.command in ("download", "move", "verify", "serve"):
        _check_s3_flags(args, args.dir if args.command == "verify" else args.out)


def _check_s3_flags(args: argparse.Namespace, destination: object) -> None:
    """The `--s3-*` flags: for `s3://` destinations only, and each with what it needs."""
    s3_only = _given(args, *S3_FLAGS)
    if s3_only and not str(destination).lower().startswith("s3://"):
        raise UsageError(
            f"{s3_only[0]} applies to s3:// destinations, not the folder {destination}"
        )
    needs = (
        ("s3_sse_kms_key_id", getattr(args, "s3_sse", None) == "aws:kms", "--s3-sse aws:kms"),
        ("s3_retain_days", bool(_given(args, "s3_object_lock_mode")), "--s3-object-lock-mode"),
        ("s3_object_lock_mode", bool(_given(args, "s3_retain_days")), "--s3-retain-days"),
    )
    for name, met, needed in needs:
        if _given(args, name) and not met:
            raise UsageError(f"{_given(args, name)[0]} needs {needed}")
