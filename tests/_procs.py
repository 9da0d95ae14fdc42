"""How every test starts a child process: with SIGINT at its default (`default_sigint`)."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """The `preexec_fn` of every child process a test starts: SIGINT at its default.

    A suite started with SIGINT ignored (a background job of a non-interactive shell, some
    CI runners) hands that disposition to every child across exec, and a child a test stops
    with Ctrl-C would run on. `restore_signals` does not help: it resets only SIGPIPE,
    SIGXFZ and SIGXFSZ.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
