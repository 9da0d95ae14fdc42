"""`DirectorySink`: recordings into a folder, each whole under its final name or not at all.

A recording's bytes go to `<key-stem>.part` beside where it will live, and only after the
process has claimed that partial: an exclusive `flock` on the `.part` file itself, held
from `open` to `commit` or `abort` (and released by the kernel when a process dies, `kill -9`
included). Runs, receivers and downloads sharing a folder thus never write one file from two
processes: a second one waits (polling, without blocking a thread), then finds the final
file and skips it, or resumes the partial the first left. `flock` rather than `lockf`: its
lock belongs to the open file, so other descriptors of the same file (a read-back, a second
sink in the same process) neither drop it nor share it. On the partial rather than a
`.lock` file beside it: nothing more to create or leave behind, and `commit`'s rename keeps
the locked file, so a waiter sees by its identity that the partial became a final file.

The ETag of the version the bytes came from goes to `<id>.part.etag` (written atomically: an
xattr would be lost by `cp`, by `rsync` without `-X` and on file systems without user
xattrs), so a later run resumes the partial with `If-Range`; the downloader asks for it
only for a large body or one whose transfer broke off. Only `commit` renames the partial to
its final name, with `os.replace`, after the downloader checked every byte. Space is
reserved before the body is written (`fallocate` with `FALLOC_FL_KEEP_SIZE`, so a
partial's size stays the count of bytes received), so a nearly full disk fails the transfers
it cannot hold before they start instead of every one of them halfway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import hashlib
import logging
import os
import sys
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from .._files import fsync_path
from ..errors import DiskError
from ..models import Recording
from ..protocol import (
    LAYOUTS,
    archive_folder,
    archive_key,
    file_extension,
    safe_file_stem,
    sniff_container,
)
from .base import AlreadyStored, Layout, Stored

if sys.platform != "win32":
    import fcntl

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
_UNSEEN_MAX = 1 << 16

logger = logging.getLogger("vobiz_async")


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
    """A folder: `<root>/<id>.<ext>`, or `<root>/YYYY/MM/DD/<id>.<ext>` with `layout="date"`,
    or `<root>/year=YYYY/month=MM/day=DD/<id>.<ext>` with `layout="hive"`.

    `fsync=True` flushes each recording and its folder before it is reported downloaded.
    `lookup` stats the few names a recording may have (no listing of the folder, whose cost
    grows with the archive), and `open` claims the recording's partial first, so runs and
    receivers sharing a folder never write one file from two processes.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, layout: Layout = "flat", fsync: bool = False
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.root = Path(root)
        self.layout: Layout = layout
        self.fsync = fsync
        self._made: set[str] = set()
        # Partials whose recording `lookup` found no final file for, until `open` claims
        # them: a final file there after the claim was stored by another process meanwhile.
        self._unseen: set[str] = set()

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.root)!r}, layout={self.layout!r})"

    def describe(self) -> str:
        return str(self.root)

    async def prepare(self) -> None:
        """Create the folder."""
        self._made = set()
        self._unseen = set()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise disk_error(err, self.root) from err

    async def close(self) -> None:
        self._unseen = set()

    def folder(self, recording: Recording | None) -> str:
        """The folder a recording lives in under this layout (the root without a date)."""
        under = archive_folder(recording.add_time if recording else None, self.layout)
        return os.path.join(self.root, under.rstrip("/")) if under else str(self.root)

    async def lookup(
        self, recording_id: str, recording: Recording | None, *, key: str | None = None
    ) -> Stored | None:
        """The recording's final file, if there is one: under `key` (an index's record of
        where it was saved), else under this layout with any recording extension."""
        if key is not None:
            folder, name = os.path.split(os.path.join(self.root, key))
            return self._stat(folder, name)
        if self.layout != "flat" and recording is None:
            return None  # the date folder is unknown without the recording
        stem = safe_file_stem(recording_id)
        folder = self.folder(recording)
        stored = self._final(folder, stem, recording)
        part = os.path.join(folder, stem + PARTIAL_SUFFIX)
        if stored is None:
            if len(self._unseen) >= _UNSEEN_MAX:  # lookups never followed by an open
                self._unseen.clear()  # costs at most a second fetch of a raced recording
            self._unseen.add(part)
        else:
            _drop_stale_partial(part)  # left by an aborted overwrite, if there is one
        return stored

    def _final(self, folder: str, stem: str, recording: Recording | None) -> Stored | None:
        """The final file of `stem` in `folder`, under any extension a recording may have:
        a stat per candidate name, whatever the folder's size."""
        fmt = recording.recording_format if recording else None
        under = "" if folder == str(self.root) else self._relative(folder) + "/"
        for ext in dict.fromkeys(("mp3", "wav", file_extension(None, fmt))):
            name = f"{stem}.{ext}"
            path = os.path.join(folder, name)
            try:
                size = os.stat(path).st_size
            except OSError:
                continue
            return Stored(under + name, path, size)
        return None

    def _relative(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def _stat(self, folder: str, name: str) -> Stored | None:
        """The final file `folder/name` as a `Stored`, if it is still there."""
        path = os.path.join(folder, name)
        try:
            size = os.stat(path).st_size
        except OSError:
            return None
        return Stored(self._relative(path), path, size)

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

    async def put_file(self, key: str, data: bytes, *, content_type: str) -> Stored:
        """Write `data` to `key` under the root through a temporary file and a rename."""
        del content_type  # a folder keeps no media type; the name's extension says it
        return await asyncio.to_thread(self._put_file, key, data)

    def _put_file(self, key: str, data: bytes) -> Stored:
        parts = key.split("/")
        if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a key inside the destination: {key!r}")
        path = os.path.join(self.root, *parts)
        folder = os.path.dirname(path)
        tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as out:
                out.write(data)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, path)
            if self.fsync:
                fsync_path(folder)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise disk_error(err, path) from None
        sha256 = hashlib.sha256(data).hexdigest()
        return Stored(key=key, location=path, size=len(data), sha256=sha256)

    async def open(self, recording: Recording, *, size_hint: int | None = None) -> DirectoryWriter:
        """A writer for the recording's partial, holding what an earlier run left.

        The partial is claimed first (an advisory lock on it); while another process holds
        it, this waits. Raises `AlreadyStored` when, once claimed, the final file turns out
        to have been stored meanwhile by the process that held it (or by any other since
        `lookup` found none).
        """
        folder = self.folder(recording)
        if folder not in self._made:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as err:
                raise disk_error(err, folder) from err
            self._made.add(folder)
        stem = safe_file_stem(recording.recording_id)
        part = os.path.join(folder, stem + PARTIAL_SUFFIX)
        unseen = part in self._unseen
        self._unseen.discard(part)
        claim, waited = await claim_partial(part)
        try:
            if waited or unseen:
                stored = self._final(folder, stem, recording)
                if stored is not None:
                    _remove_partial(part)  # ours now: the empty file the claim made
                    raise AlreadyStored(stored)
            writer = DirectoryWriter(self, recording, part, claim)
        except BaseException:
            os.close(claim)
            raise
        writer.adopt()  # the claimed partial's size and validator: re-read, never a listing
        return writer


def _remove_partial(part: str) -> None:
    """Remove a partial and its validator (the caller holds the partial's claim)."""
    for path in (part, part + VALIDATOR_SUFFIX):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _drop_stale_partial(part: str) -> None:
    """Remove the partial at `part` that a final file made stale, if there is one and no
    other process holds it."""
    claim = try_claim(part, create=False)
    if isinstance(claim, int):
        try:
            _remove_partial(part)
        finally:
            os.close(claim)


#: `try_claim`'s answers besides a claimed descriptor.
_BUSY = "busy"  # another process holds the partial
_MOVED = "moved"  # the file claimed is no longer the partial (renamed or removed): try again
_WAIT_FIRST = 0.02
_WAIT_MAX = 0.5


def try_claim(part: str, *, create: bool = True) -> int | str:
    """One attempt to claim the partial at `part`, never blocking.

    The claim is an exclusive `flock` on the partial itself, held through an open
    descriptor: the answer is that descriptor (the caller closes it to release the claim),
    `_BUSY` when another process holds it, or `_MOVED` when the file locked stopped being
    the partial meanwhile (its holder committed or removed it). Without `create`, a
    missing partial is `_MOVED`.
    """
    flags = os.O_RDWR | (os.O_CREAT if create else 0)  # not inherited (PEP 446)
    try:
        fd = os.open(part, flags, 0o666)
    except FileNotFoundError:
        if create:
            raise
        return _MOVED
    try:
        if sys.platform != "win32":
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.stat(part)):
            return fd
    except (BlockingIOError, FileNotFoundError) as err:
        os.close(fd)
        return _BUSY if isinstance(err, BlockingIOError) else _MOVED
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return _MOVED


async def claim_partial(part: str) -> tuple[int, bool]:
    """Claim the partial at `part` (creating it empty if there is none), waiting while
    another process holds it: its descriptor, and whether it had to wait.

    The wait polls with non-blocking attempts, so no thread is held while another run
    finishes the recording; one INFO line says that it waits.
    """
    waited = False
    delay = _WAIT_FIRST
    while True:
        try:
            claim = try_claim(part)
        except OSError as err:
            raise disk_error(err, part) from err
        if isinstance(claim, int):
            return claim, waited
        if claim == _MOVED:
            continue  # the holder just committed or removed it: look again at once
        if not waited:
            logger.info("another run holds %s; waiting", os.path.basename(part))
            waited = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, _WAIT_MAX)


class DirectoryWriter:
    """One recording's partial file in a `DirectorySink`."""

    def __init__(self, sink: DirectorySink, recording: Recording, part: str, claim: int) -> None:
        self._sink = sink
        self._recording = recording
        self.part = part
        self._offset = 0
        self._validator: str | None = None
        self._sidecar = False  # whether a validator file may exist
        self._file: BinaryIO | None = None
        # The claim: a descriptor holding the partial's lock, and the file every write goes
        # to. Released by `commit` or `abort`, or when the writer is dropped.
        self._claim = claim
        self._release = weakref.finalize(self, os.close, claim)

    def __repr__(self) -> str:
        return f"DirectoryWriter({self.part!r}, offset={self._offset})"

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def validator(self) -> str | None:
        return self._validator

    def adopt(self) -> None:
        """Take over what the claimed partial holds (an earlier run's bytes, with their
        validator if that is there), or nothing."""
        try:
            self._offset = os.fstat(self._claim).st_size
        except OSError as err:
            self._release()
            raise disk_error(err, self.part) from err
        self._sidecar = True  # a validator file may be there, even beside an empty partial
        if not self._offset:
            return
        try:
            with open(self.part + VALIDATOR_SUFFIX, encoding="utf-8") as f:
                self._validator = f.read().strip() or None
        except (OSError, UnicodeDecodeError):
            self._validator = None

    async def remember(self, validator: str | None) -> None:
        # On the loop: a few bytes, and a thread hop here would let a dropped connection's
        # error overtake the bytes that arrived before it (aiohttp raises it first).
        self._validator = validator
        if self._file is None and not self._offset:
            # Opening a fresh partial forgets an older version's validator: before this
            # one is written, or the first write would remove it again.
            self._opened()
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
        try:
            data = os.pread(self._claim, size, self._offset - size)
        except OSError as err:
            raise disk_error(err, self.part) from err
        if len(data) != size:
            raise disk_error(OSError(errno.EIO, "the partial is shorter than its bytes"), self.part)
        return data

    def _opened(self) -> BinaryIO:
        if self._file is None:
            try:
                # Appending never changes a file that is not ours: it is checked first.
                file = open(self.part, "ab")  # noqa: SIM115
            except OSError as err:
                raise disk_error(err, self.part) from err
            try:
                if not os.path.samestat(os.fstat(file.fileno()), os.fstat(self._claim)):
                    raise OSError(errno.EIO, "the partial was removed")
                os.ftruncate(file.fileno(), self._offset)  # a fresh file, or the bytes held
            except OSError as err:
                file.close()
                raise disk_error(err, self.part) from err
            self._file = file
            if not self._offset:
                self._forget_validator()  # a fresh file: an older validator no longer holds
        return self._file

    async def reserve(self, length: int) -> None:
        """Reserve disk for the next `length` bytes; `DiskError` (ENOSPC) when it is not
        there, before a byte is written. Kept for every size: on ext4 it makes a 300 KB
        body's writes cheaper, not dearer (benchmarks/RESULTS.md, "Body slots")."""
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
            os.ftruncate(self._claim, self._offset)
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
            self._close()
            if self._sink.fsync:
                await asyncio.to_thread(os.fsync, self._claim)
            if not self._named():
                raise OSError(errno.EIO, "the partial was removed")  # never rename another's
            os.replace(self.part, final)
            if self._sink.fsync:
                await asyncio.to_thread(fsync_path, folder)
        except OSError as err:
            raise disk_error(err, final) from err
        self._forget_validator()
        self._release()  # a waiting process finds the partial gone and this final file
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
        if self._offset == 0 and self._named():
            with contextlib.suppress(OSError):
                os.unlink(self.part)
            self._forget_validator()
        self._release()

    def _named(self) -> bool:
        """Whether the partial's name still is the claimed file (the claim covers that name
        only while it does; after a commit, another process may own a new partial)."""
        if not self._release.alive:
            return False
        try:
            return os.path.samestat(os.fstat(self._claim), os.stat(self.part))
        except OSError:
            return False
