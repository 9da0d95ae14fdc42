"""The command line's grammar: one argparse sub-parser per command, each naming the command
function it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import Any

from .._version import __version__
from ..manifest import MANIFEST_NAME
from .archive import cmd_demo, cmd_download
from .commands import (
    cmd_delete,
    cmd_fake_server,
    cmd_get,
    cmd_index_export,
    cmd_list,
    cmd_serve,
    cmd_verify,
)
from .results import Interruption, Outcome

#: The first line of the package's docstring: `--help`'s description.
DESCRIPTION = "`vobiz-recordings`: list, fetch, delete, archive and verify recordings from a shell."

Command = Callable[[argparse.Namespace, Interruption], Coroutine[Any, Any, Outcome]]
Commands = Any  # argparse's _SubParsersAction, private in typeshed


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


def _add(
    commands: Commands, common: argparse.ArgumentParser, name: str, func: Command, text: str
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
        name, parents=[common], help=text, description=text
    )
    sub.set_defaults(func=func)
    return sub


def _add_list(commands: Commands, common: argparse.ArgumentParser) -> None:
    text = "list recordings (a table on a terminal, else JSON Lines)"
    listing = _add(commands, common, "list", cmd_list, text)
    listing.add_argument("--json", action="store_true", help="JSON Lines in the wire form")
    listing.add_argument("--recording-type")
    listing.add_argument("--call-uuid")
    listing.add_argument("--limit", type=_positive, help="stop after N recordings")


def _add_get_and_delete(commands: Commands, common: argparse.ArgumentParser) -> None:
    get = _add(commands, common, "get", cmd_get, "show one recording")
    get.add_argument("id")
    get.add_argument("--json", action="store_true")

    text = "delete recordings (asks first unless --yes)"
    delete = _add(commands, common, "delete", cmd_delete, text)
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument("--yes", action="store_true", help="do not ask")


def _download_options(sub: argparse.ArgumentParser) -> None:
    """The options `download` and `demo` share."""
    sub.add_argument("--concurrency", type=_positive, default=16)
    sub.add_argument("--overwrite", action="store_true", help="fetch files already saved")
    sub.add_argument("--no-manifest", action="store_true", help=f"skip {MANIFEST_NAME}")


def _s3_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--s3-endpoint-url", help="default: $AWS_ENDPOINT_URL_S3, AWS")
    sub.add_argument("--s3-region", help="default: $AWS_REGION / the AWS profile")


def _add_download(commands: Commands, common: argparse.ArgumentParser) -> None:
    download = _add(commands, common, "download", cmd_download, "archive recordings into a folder")
    download.add_argument(
        "--out", required=True, help="destination: a folder, or s3://bucket/prefix/"
    )
    download.add_argument(
        "--layout",
        choices=("flat", "date"),
        default="flat",
        help="flat: <id>.<ext>; date: YYYY/MM/DD/<id>.<ext> (by add_time)",
    )
    _s3_options(download)
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
    _download_options(download)
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
        "--shard-size",
        type=_positive,
        help="recordings per Ray task (default: from the job and the CPUs)",
    )


def _add_verify_and_index(commands: Commands, common: argparse.ArgumentParser) -> None:
    verify = _add(commands, common, "verify", cmd_verify, "re-hash an archive against its manifest")
    verify.add_argument("dir", help="a folder, or s3://bucket/prefix/")
    _s3_options(verify)
    verify.add_argument("--manifest", help=f"default: DIR/{MANIFEST_NAME}")

    index = commands.add_parser("index", help="the archive's index (manifest)")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    export = index_commands.add_parser(
        "export", parents=[common], help="print the index as JSON Lines, one entry a line"
    )
    export.set_defaults(func=cmd_index_export)
    export.add_argument("dir", nargs="?", help=f"an archive folder: DIR/{MANIFEST_NAME}")
    export.add_argument("--index", help="the index file itself")


def _add_demo(commands: Commands, common: argparse.ArgumentParser) -> None:
    text = "archive from an in-process fake Vobiz: offline, no account"
    demo = _add(commands, common, "demo", cmd_demo, text)
    demo.add_argument("--count", type=_positive, default=300)
    demo.add_argument("--out", help="destination folder (default: a new temporary folder)")
    demo.add_argument("--seed", type=int, default=0)
    _download_options(demo)


def _add_fake_server(commands: Commands, common: argparse.ArgumentParser) -> None:
    fake = _add(
        commands, common, "fake-server", cmd_fake_server, "serve the fake Vobiz on 127.0.0.1"
    )
    fake.add_argument("--port", type=_port, default=0, help="default: a free port")
    fake.add_argument("--count", type=_count, default=100)
    fake.add_argument("--seed", type=int, default=0)


def _add_serve(commands: Commands, common: argparse.ArgumentParser) -> None:
    from .. import receiver  # serve's value parsers live with the receiver they configure

    text = "receive RecordStop callbacks and archive each recording"
    serve = _add(commands, common, "serve", cmd_serve, text)
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


def build_parser() -> argparse.ArgumentParser:
    """The whole grammar, commands in the order `--help` lists them."""
    common = _shared_options(defaults=False)
    parser = argparse.ArgumentParser(
        prog="vobiz-recordings", description=DESCRIPTION, parents=[_shared_options(defaults=True)]
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_list(commands, common)
    _add_get_and_delete(commands, common)
    _add_download(commands, common)
    _add_verify_and_index(commands, common)
    _add_demo(commands, common)
    _add_serve(commands, common)
    _add_fake_server(commands, common)
    return parser
