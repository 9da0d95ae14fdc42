"""Child processes as `/proc` shows them, for tests that must see no worker outlive a job."""

from __future__ import annotations

import contextlib
from pathlib import Path


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of `/proc/PID/stat` after the command name: state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def child_pids(parent: int, marker: bytes = b"") -> set[int]:
    """The live children of `parent` whose command line contains `marker`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (
                int(_stat_fields(entry.name)[1]) == parent
                and marker in (entry / "cmdline").read_bytes()
            ):
                found.add(int(entry.name))
    return found


def running(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False
