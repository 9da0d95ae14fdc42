"""`DirectorySink`: recordings into a folder, each whole under its final name or not at all.

A recording's bytes go to `<key-stem>.part` beside where it will live; the ETag of the
version they came from goes to `<id>.part.etag` (written atomically: an xattr would be lost
by `cp`, by `rsync` without `-X` and on file systems without user xattrs), so a later run
resumes the partial with `If-Range`. Only `commit` renames the partial to its final name,
with `os.replace`, after the downloader checked every byte. Space is reserved before the
body is written (`fallocate` with `FALLOC_FL_KEEP_SIZE`, so a partial's size stays the
count of bytes received), so a nearly full disk fails the transfers it cannot hold before
they start instead of every one of them halfway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from .._files import fsync_path
from ..errors import DiskError
from ..models import Recording
from ..protocol import archive_key, file_extension, safe_file_stem, sniff_container
from .base import Layout, Stored

__all__ = ["PARTIAL_SUFFIX", "VALIDATOR_SUFFIX", "DirectorySink", "disk_error"]


#: A partial's name: `<id>.part`, never a recording's final name.
PARTIAL_SUFFIX = ".part"
#: Beside `<id>.part`: the strong ETag of the version its bytes came from.
VALIDATOR_SUFFIX = ".etag"
#: The file system errors that are the destination's, not one recording's.
DESTINATION_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_FALLOC_FL_KEEP_SIZE = 1
_READ_BACK = 1 << 20


def disk_error(err: OSError, path: str | os.PathLike[str]) -> DiskError:
    """The library's error for a failed file operation, keeping its errno."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    error = DiskError(f"cannot write {path}: {reason}")
    error.errno = err.errno  # type: ignore[attr-defined]
    error.destination_wide = err.errno in DESTINATION_ERRNOS
    return error


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    """Linux's fallocate(2) from the C library, or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


def reserve(fd: int, offset: int, length: int) -> None:
    """Reserve `length` bytes of disk from `offset` on without changing the file's size.

    Raises `OSError` ENOSPC/EDQUOT when the space is not there; does nothing where the
    system or the file system cannot reserve (no fallocate, network file systems).
    """
    fallocate = _fallocate()
    if fallocate is None or length <= 0:
        return
    if fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        if code in _DISK_FULL:
            raise OSError(code, os.strerror(code))


class DirectorySink:
    """A folder: `<root>/<id>.<ext>`, or `<root>/YYYY/MM/DD/<id>.<ext>` with `layout="date"`.

    `fsync=True` flushes each recording and its folder before it is reported downloaded.
    A batch lists each folder it touches once (`lookup`) instead of a `stat` per recording.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, layout: Layout = "flat", fsync: bool = False
    ) -> None:
        if layout not in ("flat", "date"):
            raise ValueError(f"layout must be 'flat' or 'date', got {layout!r}")
        self.root = Path(root)
        self.layout: Layout = layout
        self.fsync = fsync
        self._scans: dict[str, set[str]] = {}
        self._made: set[str] = set()

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.root)!r}, layout={self.layout!r})"

    def describe(self) -> str:
        return str(self.root)

    async def prepare(self) -> None:
        """Create the folder; a batch starts with a fresh view of what it holds."""
        self._scans = {}
        self._made = set()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise disk_error(err, self.root) from err

    async def close(self) -> None:
        self._scans = {}

    def folder(self, recording: Recording | None) -> str:
        """The folder a recording lives in under this layout (the root without a date)."""
        if self.layout == "date" and recording is not None and recording.add_time is not None:
            return os.path.join(self.root, recording.add_time.strftime("%Y/%m/%d"))
        return str(self.root)

    def _names(self, folder: str) -> set[str]:
        """The names in `folder`, listed once per batch."""
        names = self._scans.get(folder)
        if names is None:
            try:
                names = set(os.listdir(folder))
            except OSError:
                names = set()
            self._scans[folder] = names
        return names

    async def lookup(
        self, recording_id: str, recording: Recording | None, *, key: str | None = None
    ) -> Stored | None:
        """The recording's final file, if there is one: under `key` (an index's record of
        where it was saved), else under this layout with any recording extension."""
        if key is not None:
            folder, name = os.path.split(os.path.join(self.root, key))
            return self._stat(folder, name)
        if self.layout == "date" and recording is None:
            return None  # the date folder is unknown without the recording
        stem = safe_file_stem(recording_id)
        folder = self.folder(recording)
        names = self._names(folder)
        fmt = recording.recording_format if recording else None
        for ext in dict.fromkeys(("mp3", "wav", file_extension(None, fmt))):
            name = f"{stem}.{ext}"
            if name in names:
                stored = self._stat(folder, name)
                if stored is not None and stem + PARTIAL_SUFFIX in names:
                    self._drop_partial(folder, stem)  # left by an aborted overwrite
                return stored
        return None

    def _drop_partial(self, folder: str, stem: str) -> None:
        """Remove a partial (and its validator) that a final file made stale."""
        part = os.path.join(folder, stem + PARTIAL_SUFFIX)
        for path in (part, part + VALIDATOR_SUFFIX):
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._scans[folder].discard(stem + PARTIAL_SUFFIX)

    def _stat(self, folder: str, name: str) -> Stored | None:
        """The final file `folder/name` as a `Stored`, if it is still there."""
        path = os.path.join(folder, name)
        try:
            size = os.stat(path).st_size
        except OSError:
            return None
        relative = os.path.relpath(path, self.root).replace(os.sep, "/")
        return Stored(relative, path, size)

    async def digest(self, key: str) -> Stored:
        """The stored file under `key` with its sha256 and container, hashed on a thread
        (for a final file an index does not know yet); `OSError` when it cannot be read."""
        return await asyncio.to_thread(self._digest, key)

    def _digest(self, key: str) -> Stored:
        path = os.path.join(self.root, key)
        with open(path, "rb") as file:
            head = file.read(64)
            file.seek(0)
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
            size = file.tell()
        return Stored(key, path, size, sha256=sha256, container=sniff_container(head))

    async def open(self, recording: Recording, *, size_hint: int | None = None) -> DirectoryWriter:
        """A writer for the recording's partial, holding what an earlier run left."""
        folder = self.folder(recording)
        if folder not in self._made:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as err:
                raise disk_error(err, folder) from err
            self._made.add(folder)
        stem = safe_file_stem(recording.recording_id)
        part = os.path.join(folder, stem + PARTIAL_SUFFIX)
        writer = DirectoryWriter(self, recording, part)
        if stem + PARTIAL_SUFFIX in self._names(folder):  # the batch's one listing
            writer.adopt()  # a stat and a few bytes: cheaper on the loop than a thread hop
        return writer

    def committed(self, folder: str, name: str) -> None:
        """Note a new final file, so a repeated id later in the batch is skipped."""
        if folder in self._scans:
            self._scans[folder].add(name)


class DirectoryWriter:
    """One recording's partial file in a `DirectorySink`."""

    def __init__(self, sink: DirectorySink, recording: Recording, part: str) -> None:
        self._sink = sink
        self._recording = recording
        self.part = part
        self._offset = 0
        self._validator: str | None = None
        self._sidecar = False  # whether a validator file may exist
        self._file: BinaryIO | None = None

    def __repr__(self) -> str:
        return f"DirectoryWriter({self.part!r}, offset={self._offset})"

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def validator(self) -> str | None:
        return self._validator

    def adopt(self) -> None:
        """Take over a partial an earlier run left, with its validator if that is there."""
        try:
            self._offset = os.stat(self.part).st_size
        except FileNotFoundError:
            return
        except OSError as err:
            raise disk_error(err, self.part) from err
        try:
            with open(self.part + VALIDATOR_SUFFIX, encoding="utf-8") as f:
                self._validator = f.read().strip() or None
            self._sidecar = True
        except (OSError, UnicodeDecodeError):
            self._validator = None

    async def remember(self, validator: str | None) -> None:
        # On the loop: a few bytes, and a thread hop here would let a dropped connection's
        # error overtake the bytes that arrived before it (aiohttp raises it first).
        self._validator = validator
        self._write_validator()

    def _write_validator(self) -> None:
        path = self.part + VALIDATOR_SUFFIX
        if not self._validator:
            self._forget_validator()
            return
        with contextlib.suppress(OSError):  # without it, a resume proves the overlap instead
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(self._validator)
            os.replace(path + ".tmp", path)
            self._sidecar = True

    def _forget_validator(self) -> None:
        if self._sidecar:
            with contextlib.suppress(OSError):
                os.unlink(self.part + VALIDATOR_SUFFIX)
            self._sidecar = False

    async def read_back(self) -> AsyncIterator[bytes]:
        """The partial's bytes, a MiB at a time, read on a worker thread."""
        with await asyncio.to_thread(open, self.part, "rb") as f:
            while chunk := await asyncio.to_thread(f.read, _READ_BACK):
                yield chunk

    def tail(self, size: int) -> bytes:
        """The partial's last `size` bytes (a blocking read)."""
        size = min(size, self._offset)
        if self._file is not None:
            self._file.flush()  # the bytes written so far, on disk for the read below
        with open(self.part, "rb") as f:
            f.seek(self._offset - size)
            data = f.read(size)
        if len(data) != size:
            raise disk_error(OSError(errno.EIO, "the partial is shorter than its bytes"), self.part)
        return data

    def _opened(self) -> BinaryIO:
        if self._file is None:
            try:
                self._file = open(self.part, "ab" if self._offset else "wb")  # noqa: SIM115
            except OSError as err:
                raise disk_error(err, self.part) from err
            if not self._offset:
                self._forget_validator()  # a fresh file: an older validator no longer holds
        return self._file

    async def reserve(self, length: int) -> None:
        """Reserve disk for the next `length` bytes; `DiskError` (ENOSPC) when it is not
        there, before a byte is written."""
        file = self._opened()
        try:
            reserve(file.fileno(), self._offset, length)
        except OSError as err:
            raise disk_error(err, os.path.dirname(self.part)) from err

    def write_blocking(self, chunk: bytes) -> None:
        """Append `chunk`; safe on a helper thread while the loop leaves this writer alone.
        A failed write leaves the partial holding exactly the bytes written before it."""
        try:
            self._opened().write(chunk)
        except OSError as err:
            self._cut_back()
            raise disk_error(err, self.part) from err
        self._offset += len(chunk)

    def _cut_back(self) -> None:
        """After a failed write: drop whatever part of it reached the file, so the partial's
        size stays the writer's offset; remove the partial if even that fails."""
        with contextlib.suppress(OSError, DiskError):
            self._close()
        try:
            os.truncate(self.part, self._offset)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.part)
            self._offset = 0
            self._forget_validator()

    async def write(self, chunk: bytes) -> None:
        self.write_blocking(chunk)

    async def restart(self) -> None:
        """Empty the partial: the next write is byte 0 of a new version."""
        self._close()
        self._offset = 0
        self._validator = None
        try:
            self._opened().truncate(0)
        except OSError as err:
            raise disk_error(err, self.part) from err

    def _close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as err:
                raise disk_error(err, self.part) from err

    async def commit(self, *, container: str | None, size: int, sha256: str) -> Stored:
        """Rename the verified partial to its final name (flushed first with `fsync`)."""
        recording = self._recording
        if size != self._offset:
            raise disk_error(OSError(errno.EIO, "the partial's size changed"), self.part)
        extension = file_extension(container, recording.recording_format)
        folder = os.path.dirname(self.part)
        name = f"{safe_file_stem(recording.recording_id)}.{extension}"
        final = os.path.join(folder, name)
        try:
            self._opened()  # an empty body still makes an (empty) file
            self._close()
            if self._sink.fsync:
                await asyncio.to_thread(fsync_path, self.part)
            os.replace(self.part, final)
            if self._sink.fsync:
                await asyncio.to_thread(fsync_path, folder)
        except OSError as err:
            raise disk_error(err, final) from err
        self._forget_validator()
        self._sink.committed(folder, name)
        key = archive_key(
            recording.recording_id,
            extension=extension,
            add_time=recording.add_time,
            layout=self._sink.layout,
        )
        return Stored(key, final, size, sha256, container)

    async def abort(self) -> None:
        """Close the partial and keep it (and its validator) for a later run to resume; an
        empty one is removed."""
        with contextlib.suppress(DiskError):
            self._close()
        if self._offset == 0:
            with contextlib.suppress(OSError):
                os.unlink(self.part)
            self._forget_validator()
