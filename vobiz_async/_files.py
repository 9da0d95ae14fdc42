"""Small helpers the modules that hold secrets or write files share."""

from __future__ import annotations

import os
import sys

__all__ = ["Secret", "fsync_path"]


class Secret:
    """A string that never shows itself in a repr, a traceback's locals or a log."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file, or a folder's entries (a rename in it), to the disk. A folder is
    skipped where the platform or the file system cannot fsync one."""
    is_dir = os.path.isdir(path)
    if is_dir and sys.platform == "win32":  # pragma: no cover - no open() of a folder
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not is_dir:
            raise
    finally:
        os.close(fd)
