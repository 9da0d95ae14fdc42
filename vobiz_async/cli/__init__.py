"""`vobiz-recordings`: list, fetch, delete, archive and verify recordings from a shell.

Exit codes: 0 success, 1 some items failed (or a destination or a connection failed, said in
one line), 2 usage error, 3 credentials refused (by Vobiz or S3) or missing, 130 interrupted
(Ctrl-C). A closed stdout (`list | head -1`) is the normal end of a pipeline: the command
stops quietly with 0 (a download keeps its own status). Errors print one line; `--debug`
adds the traceback and debug logs; with `--json`, a failure is also one JSON object on
stdout (`error`, `exit_code`), so scripts never parse stderr. The auth token is never
printed.

The commands (`commands`, `archive`) return an `Outcome` or raise; `main` below is the one
place that turns either into the exit code. Only the parser is imported up front: a command
imports what it uses when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .parser import ArgumentsError, build_parser, check_conflicts, load_command
from .results import Interruption, Outcome, UsageError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _print_json_failure(message: str, code: int) -> None:
    import json

    from .output import stdout_may_close

    with stdout_may_close():
        print(json.dumps({"error": message, "exit_code": code}, separators=(",", ":")))


def _refuse_arguments(err: ArgumentsError, argv: Sequence[str]) -> int:
    """argparse's refusal: its usage and one `error:` line, exit 2 (and JSON with --json)."""
    sys.stderr.write(err.usage)
    print(f"error: {err}", file=sys.stderr)
    if "--json" in argv:
        _print_json_failure(str(err), EXIT_USAGE)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse, run, and turn what the command returned or raised into
    an exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except ArgumentsError as err:
        return _refuse_arguments(err, argv)
    from .logs import configure_logging

    configure_logging(args.debug)
    interruption = Interruption(keeps_partials=args.command in ("download", "demo"))
    code, message = _run(args, interruption)
    if message is not None and getattr(args, "json", False):
        _print_json_failure(message, code)
    return code


def _run(args: argparse.Namespace, interruption: Interruption) -> tuple[int, str | None]:
    """Run the command: the exit code, and the one-line error when it failed as a whole."""
    import asyncio

    from ..errors import (
        APIConnectionError,
        APITimeoutError,
        AuthenticationError,
        ConfigurationError,
        StoragePermissionError,
        VobizError,
    )
    from .logs import report_failure
    from .output import discard_stdout
    from .results import DestinationError, Unavailable

    debug = bool(args.debug)
    try:
        check_conflicts(args)
        run = load_command(args)
        outcome: Outcome = asyncio.run(run(args, interruption))
    except BrokenPipeError:
        discard_stdout()
        return EXIT_OK, None
    except KeyboardInterrupt:
        kept = "; partial downloads are kept as .part files for resume"
        detail = f" ({interruption.progress})" if interruption.progress else ""
        line = f"interrupted{kept if interruption.keeps_partials else ''}{detail}"
        print(line, file=sys.stderr)
        return EXIT_INTERRUPTED, line
    except (UsageError, DestinationError, Unavailable) as err:
        code = EXIT_USAGE if isinstance(err, UsageError) else EXIT_FAILED
        return code, report_failure(err, debug=debug, named=False)
    except (AuthenticationError, ConfigurationError, StoragePermissionError) as err:
        return EXIT_AUTH, report_failure(err, debug=debug)
    except APITimeoutError as err:
        return EXIT_FAILED, report_failure(err, debug=debug, prefix="Vobiz did not answer: ")
    except APIConnectionError as err:
        return EXIT_FAILED, report_failure(err, debug=debug, prefix="cannot connect to Vobiz: ")
    except (VobizError, OSError) as err:
        return EXIT_FAILED, report_failure(err, debug=debug)
    if outcome.code is not None:
        return outcome.code, None
    return (EXIT_FAILED if outcome.failed else EXIT_OK), None
