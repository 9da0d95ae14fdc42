"""What a command hands back to `main`, and the errors that end one: main turns both into
the exit code."""

from __future__ import annotations

import attrs


class UsageError(Exception):
    """A command line that cannot be carried out as written."""


class DestinationError(Exception):
    """The download folder cannot be created or written: said once, before any transfer."""


@attrs.frozen
class Outcome:
    """What a command did: `failed` when some of its items failed (exit 1)."""

    failed: bool = False


@attrs.define
class Interruption:
    """What `main` says if Ctrl-C stops the command: filled in by the command as it runs."""

    keeps_partials: bool = False  # a download into a folder that stays: .part files remain
    progress: str | None = None  # the progress line at the moment of the interrupt
