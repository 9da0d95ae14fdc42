"""What a command hands back to `main`, and the errors that end one: main turns both into
the exit code. Plain classes: `--help` imports this module, and attrs would double its cost."""

from __future__ import annotations

from typing import NamedTuple


class UsageError(Exception):
    """A command line that cannot be carried out as written."""


class DestinationError(Exception):
    """The download folder cannot be created or written: said once, before any transfer."""


class Unavailable(Exception):
    """Something the command needs cannot be had (a port in use): one line, exit 1."""


class Outcome(NamedTuple):
    """What a command did: `failed` when some of its items failed (exit 1); `code`, an
    exit code of its own (`move` whose DELETEs Vobiz refused the credentials for: 3)."""

    failed: bool = False
    code: int | None = None


class Interruption:
    """What `main` says if Ctrl-C stops the command: filled in by the command as it runs."""

    def __init__(self, keeps_partials: bool = False, progress: str | None = None) -> None:
        self.keeps_partials = keeps_partials  # a download into a folder that stays: .part files
        self.progress = progress  # the progress line at the moment of the interrupt
