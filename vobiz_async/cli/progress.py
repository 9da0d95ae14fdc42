"""The download's progress display: a rich bar on a terminal (rich imported only then),
plain `progress:` lines otherwise."""

from __future__ import annotations

import contextlib
import time
from typing import Any, TextIO

from ..results import ProgressEvent, ProgressKind


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


class Progress:
    """Counts progress events and renders them: a rich bar on a TTY, plain lines otherwise."""

    def __init__(self, out: TextIO, *, interval: float = 5.0) -> None:
        self.out = out
        self.interval = interval
        self.total: int | None = None
        self.done = self.failed = self.skipped = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.out.isatty():
            try:
                import rich  # noqa: F401 - only to learn whether the bar is available
            except ImportError:
                self.out.write("(pip install 'vobiz-async[cli]' for a progress bar)\n")
                return self
            with contextlib.suppress(ImportError):
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress

                self._bar = RichProgress(
                    TextColumn("[bold]archiving"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[size]}"),
                    TextColumn("{task.fields[rate]}"),
                    TextColumn("{task.fields[failed]}"),
                    TimeRemainingColumn(),
                    console=Console(file=self.out),
                )
                self._bar.start()
                self._task = self._bar.add_task("files", total=None, size="", rate="", failed="")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._render_bar(time.monotonic())
            self._bar.stop()

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind is ProgressKind.BYTES:
            self.bytes += event.bytes
        elif event.kind is ProgressKind.FINISHED:
            self.done += 1
        elif event.kind is ProgressKind.SKIPPED:
            self.skipped += 1
        elif event.kind is ProgressKind.FAILED:
            self.failed += 1
        else:
            return
        now = time.monotonic()
        if self._bar is not None:
            if event.kind is not ProgressKind.BYTES or now - self._last_line >= 0.1:
                self._last_line = now
                self._render_bar(now)
            return
        if now - self._last_line >= self.interval:
            self._last_line = now
            self.out.write(self.line() + "\n")
            self.out.flush()

    def _render_bar(self, now: float) -> None:
        rate = self.bytes / max(now - self.started, 1e-9)
        self._bar.update(
            self._task,
            # Failures do not fill the bar: a batch that failed entirely stays at 0/N.
            completed=self.done + self.skipped,
            size=human_bytes(self.bytes),
            rate=f"{human_bytes(rate)}/s",
            failed=f"[red]{self.failed} failed" if self.failed else "",
        )

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        finished = self.done + self.skipped + self.failed
        of = f"/{self.total}" if self.total is not None else ""
        return (
            f"progress: {finished}{of} files ({self.done} downloaded, {self.skipped} skipped, "
            f"{self.failed} failed), {human_bytes(self.bytes)}, "
            f"{human_bytes(self.bytes / elapsed)}/s"
        )
