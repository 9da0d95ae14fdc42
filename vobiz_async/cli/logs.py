"""The command line's logging: the level, aiohttp's chatter, and the one-line error report.

No redaction is needed here: nothing in the CLI logs the token it holds; the S3 client's
own log lines are redacted where that client lives (`sinks/s3.py`).
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("vobiz_async")


def configure_logging(debug: bool) -> None:
    """Warnings, or everything with --debug (aiohttp's own chatter stays at errors)."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        logging.getLogger("aiohttp").setLevel(logging.ERROR)


def report_failure(err: BaseException, *, debug: bool, named: bool = True, prefix: str = "") -> str:
    """The one `error: ...` line on stderr (with --debug, the traceback first); returns the
    message, for `--json`."""
    if debug:
        logger.exception("command failed")
    kind = f"{type(err).__name__}: " if named else ""
    notes = "".join(f" ({note})" for note in getattr(err, "__notes__", ()))
    message = f"{prefix}{kind}{err}{notes}".replace("\n", " ")
    print(f"error: {message}", file=sys.stderr)
    return message
