"""The seam between fetching a recording and storing it.

The downloader fetches, resumes, retries, sniffs and verifies; a `Sink` stores. A sink names
the recording (layout, prefix, extension from the sniffed container, through
`protocol.archive_key`), holds the bytes of an unfinished transfer where no reader mistakes
them for a recording, and makes them appear under their final name only in `commit`, after
the downloader has checked every byte. This is s3transfer's split (the transfer task apart
from the output manager that owns temporary names and the final rename) and rclone's rule
that a partial never wears a final name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol, runtime_checkable

import attrs

from ..models import Recording

__all__ = ["AlreadyStored", "Layout", "Sink", "Stored", "Writer"]

#: How a sink names recordings: `<id>.<ext>` ("flat"), `YYYY/MM/DD/<id>.<ext>` ("date") or
#: `year=YYYY/month=MM/day=DD/<id>.<ext>` ("hive"), by `add_time` in its own offset
#: (`protocol.archive_folder`). Defined here, the lowest layer that needs it;
#: `vobiz_async.types` re-exports it.
Layout = Literal["flat", "date", "hive"]


@attrs.frozen
class Stored:
    """A recording a sink holds under its final name."""

    #: Relative to the sink's root: `<id>.<ext>` or `<folder><id>.<ext>` (no prefix).
    key: str
    #: Where a person finds it: the file's path for a folder, `s3://bucket/key` for S3.
    location: str
    size: int
    #: Hex sha256 of the stored bytes when the sink knows it (metadata, index), else None.
    sha256: str | None = None
    container: str | None = None


class AlreadyStored(Exception):
    """Raised by `Sink.open` when, after claiming the recording's partial, its final file
    or object turned out to exist (another process finished it meanwhile): the batch
    reports it skipped, and indexes `stored`, instead of fetching it again."""

    def __init__(self, stored: Stored) -> None:
        super().__init__(f"already stored: {stored.location}")
        self.stored = stored


class Writer(Protocol):
    """One recording's bytes on their way into a sink, across the attempts of one transfer.

    A writer may also offer `write_blocking(chunk)` (a thread-safe blocking `write` the
    downloader calls from a helper thread), `reserve(length)` (claim space for the body
    before writing it, raising `DiskError` ENOSPC) and `tail(size)` (the held bytes' last
    `size`, blocking, to prove a resume continues them): a folder's writer has all three.

    A writer starts with what the sink already holds for the recording from an earlier run
    (`offset` bytes, which `read_back` returns, fetched from the source version `validator`
    names) or with nothing. `write` appends; `restart` drops everything; `commit` makes the
    bytes appear under their final name; `abort` ends the writer without that. After
    `commit` or `abort` the writer is not used again.
    """

    @property
    def offset(self) -> int:
        """Bytes held now: where the next `write` lands, and where a resume asks from."""
        ...

    @property
    def validator(self) -> str | None:
        """The strong ETag of the source version the held bytes came from, if known."""
        ...

    async def remember(self, validator: str | None) -> None:
        """Keep `validator` with the held bytes, so a later resume can prove the version."""
        ...

    def read_back(self) -> AsyncIterator[bytes]:
        """The `offset` bytes held, in order, for re-hashing a resumed partial."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Append `chunk`; a refused write raises `StorageError` (`DiskError` for files)."""
        ...

    async def restart(self) -> None:
        """Drop every byte held; the next `write` is byte 0."""
        ...

    async def commit(self, *, container: str | None, size: int, sha256: str) -> Stored:
        """Store the held bytes under the recording's final name.

        `size` and `sha256` are what the downloader verified; a sink records them (object
        metadata, an xattr or an index) and an object store has its own checksum checked.
        """
        ...

    async def abort(self) -> None:
        """End without committing: nothing appears under a final name. A folder keeps its
        partial for a later run to resume; an object store aborts its upload."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Where recordings land: a folder (`DirectorySink`) or object storage (`S3Sink`).

    A sink may be reused across batches: `prepare` starts one, `close` ends it.
    """

    def describe(self) -> str:
        """The destination for messages: a folder's path, `s3://bucket/prefix`."""
        ...

    async def prepare(self) -> None:
        """Check once per batch that the destination takes writes (create a folder; find a
        bucket); raise `StorageError` with one line naming the destination otherwise."""
        ...

    async def lookup(
        self, recording_id: str, recording: Recording | None, *, key: str | None = None
    ) -> Stored | None:
        """What the sink already holds for a recording, as the destination has it now (its
        real size; its sha256 only from the stored object itself, never from an index).
        `recording` is None when only the id is known; a layout that needs `add_time` then
        answers None. `key` is where an index says the recording was stored; it is checked
        instead of the layout."""
        ...

    async def open(self, recording: Recording, *, size_hint: int | None = None) -> Writer:
        """A writer for `recording`, holding what an earlier run left when the sink can
        resume across runs (a folder's partial file); `size_hint` lets it reserve space."""
        ...

    async def close(self) -> None:
        """Release what `prepare` and the writers opened."""
        ...

    async def put_file(self, key: str, data: bytes, *, content_type: str) -> Stored:
        """Store a small file (a recording's metadata sidecar, its transcript) under `key`,
        relative to the destination, whole or not at all: a folder writes a temporary file
        and renames it (flushed first when the sink fsyncs), object storage sends one
        `PutObject` with `Content-MD5` and the body's `sha256` in its metadata."""
        ...
