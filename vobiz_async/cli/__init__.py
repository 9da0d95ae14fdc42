"""`vobiz-recordings`: list, fetch, delete, archive and verify recordings from a shell.

Exit codes: 0 success, 1 some items failed, 2 usage error, 3 authentication or
configuration error, 130 interrupted (Ctrl-C). A closed stdout (`list | head -1`) is the
normal end of a pipeline: the command stops quietly with 0 (a download keeps its own
status). Errors print one line; `--debug` adds the traceback and debug logs. The auth token
is never printed.

The commands (`commands`, `archive`) return an `Outcome` or raise; `main` below is the one
place that turns either into the exit code.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from ..errors import AuthenticationError, ConfigurationError, VobizError
from .logs import configure_logging, report_failure
from .output import discard_stdout
from .parser import build_parser
from .results import DestinationError, Interruption, Outcome, UsageError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse, run, and turn what the command returned or raised into
    an exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.debug)
    interruption = Interruption(keeps_partials=args.command in ("download", "demo"))
    try:
        outcome: Outcome = asyncio.run(args.func(args, interruption))
    except BrokenPipeError:
        discard_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        kept = "; partial downloads are kept as .part files for resume"
        detail = f" ({interruption.progress})" if interruption.progress else ""
        print(f"interrupted{kept if interruption.keeps_partials else ''}{detail}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as err:
        report_failure(err, debug=args.debug, named=False)
        return EXIT_USAGE
    except DestinationError as err:
        report_failure(err, debug=args.debug, named=False)
        return EXIT_FAILED
    except (AuthenticationError, ConfigurationError) as err:
        report_failure(err, debug=args.debug)
        return EXIT_AUTH
    except (VobizError, OSError) as err:
        report_failure(err, debug=args.debug)
        return EXIT_FAILED
    return EXIT_FAILED if outcome.failed else EXIT_OK
