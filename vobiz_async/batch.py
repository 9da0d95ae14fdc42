"""The batch core: what a batch records, whichever engine runs its items.

An engine decides only where items run: the local engine (`Downloader.run`: slots and
tasks on this event loop) or `RayEngine` (shards on Ray, whose workers run the local engine
without an index and send their results back). Both feed one `Batch`, which alone

- iterates the source (sync or async iterables, a pager's unusable entries included),
- names items by id and skips an id repeated while it is still pending,
- fails unusable listing entries (`ResponseValidationError`),
- decides skips from the index and the sink (`stored`): a stored file the index does not
  know is hashed and indexed, never skipped unrecorded; one that disagrees with the index
  (size, or sha256 where the sink reports one) is fetched again,
- writes the index (its only writer), with every field of the archived recording: an
  index that refuses a write stops the batch like a full disk does, destination-wide, and
  the recording stays reported downloaded,
- with `metadata="sidecar"`, stores each recording's metadata sidecar before its result is
  recorded (`with_sidecar`), and a skipped recording's when it is missing,
- tallies results and truncates them (`RESULTS_KEPT`), emits each final progress event
  once, and builds the `DownloadReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, Protocol, TypeVar

import attrs

from .errors import (
    DiskError,
    ManifestError,
    ResponseValidationError,
    StorageError,
    VobizError,
)
from .manifest import Manifest, ManifestEntry, recording_fields
from .models import InvalidRecording, Recording
from .pacing import PacingReport
from .pager import AsyncPager
from .protocol import sidecar_document, sidecar_key
from .results import (
    DownloadReport,
    DownloadResult,
    DownloadStatus,
    ProgressCallback,
    ProgressEvent,
    result_event,
)
from .sinks import DirectorySink, Sink, Stored
from .types import ApiClient, Destination, Item, Layout, Lookup, Metadata, Source

__all__ = [
    "MAX_PACED_WAIT",
    "RESULTS_KEPT",
    "Batch",
    "BatchOptions",
    "Engine",
    "Tally",
    "entries",
    "item_id",
]

logger = logging.getLogger("vobiz_async")

#: A batch report keeps every result up to this many items; above it, failures and counts
#: (each result still reaches `on_progress`), so a batch of millions stays small.
RESULTS_KEPT = 10_000
#: The longest one recording waits in all on a server's Retry-After (429, 503) before it is
#: failed; such waits do not use up `max_attempts`.
MAX_PACED_WAIT = 600.0
DISK_FULL_NOT_STARTED = "not started: the destination disk is full"
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: What an index that refuses a write raises (the index's own error; sqlite3's and the
#: file system's too, defensively).
_INDEX_ERRORS = (ManifestError, sqlite3.Error, OSError)

_Report = TypeVar("_Report", bound=DownloadReport)


@attrs.frozen
class BatchOptions:
    """A batch's options, as `download_many` takes them; an engine receives them whole."""

    concurrency: int = 16
    on_progress: ProgressCallback | None = None
    manifest: str | os.PathLike[str] | Manifest | None = None
    overwrite: bool = False
    max_attempts: int = 5
    fsync: bool = False
    layout: Layout = "flat"
    trusted_hosts: Iterable[str] | None = None
    max_paced_wait: float = MAX_PACED_WAIT
    metadata: Metadata | None = None


class Engine(Protocol):
    """Where a batch's items run; `download_many(..., engine=...)` hands the job over."""

    async def run(
        self,
        session: ApiClient,
        source: Source,
        dest: Destination,
        options: BatchOptions,
    ) -> DownloadReport:
        """Run the whole job and return its report, results in listing order."""
        ...


def item_id(item: Item) -> str:
    return item if isinstance(item, str) else item.recording_id


async def entries(source: Source) -> AsyncGenerator[Item | InvalidRecording, None]:
    """Items of a sync or async iterable; an async one is closed when we stop early.

    A pager also yields the listed objects it could not structure, so that the report
    shows each one that has an id as failed instead of losing it silently.
    """
    if not isinstance(source, AsyncIterable):
        for item in source:
            yield item
        return
    iterator: AsyncIterator[Item | InvalidRecording]
    iterator = source.entries() if isinstance(source, AsyncPager) else aiter(source)
    try:
        async for entry in iterator:
            yield entry
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def is_destination_wide(error: VobizError | None) -> bool:
    """Whether `error` means no further recording can be stored at the destination (a full
    or read-only disk, a missing bucket, an index that refuses writes)."""
    return isinstance(error, StorageError) and error.destination_wide


def not_started_error(cause: VobizError) -> StorageError:
    """The error of a recording a batch did not start after `cause` stopped it."""
    if getattr(cause, "errno", None) in _DISK_FULL:
        return DiskError(DISK_FULL_NOT_STARTED)
    reason = str(cause).removeprefix(DISK_FULL_NOT_STARTED).strip(" ()")
    if isinstance(cause, DiskError):
        return DiskError(f"not started: the destination is not writable ({reason})")
    return StorageError(f"not started: {reason}")


@attrs.define
class Tally:
    """A batch's results as they arrive: the first RESULTS_KEPT in input order, later
    failures, counts per status and the bytes downloaded."""

    results: list[DownloadResult | None] = attrs.field(factory=list)
    later_failures: list[DownloadResult] = attrs.field(factory=list)
    tally: dict[DownloadStatus, int] = attrs.field(factory=lambda: dict.fromkeys(DownloadStatus, 0))
    downloaded_bytes: int = 0
    count: int = 0

    def place(self) -> int:
        """The index of the next input item, with a place kept for its result."""
        index, self.count = self.count, self.count + 1
        if index < RESULTS_KEPT:
            self.results.append(None)
        return index

    def keep(self, index: int, result: DownloadResult) -> None:
        self.tally[result.status] += 1
        if result.status is DownloadStatus.DOWNLOADED:
            self.downloaded_bytes += result.size
        if index < RESULTS_KEPT:
            self.results[index] = result
        elif result.status is DownloadStatus.FAILED:
            self.later_failures.append(result)

    def report(
        self,
        elapsed: float,
        *,
        rate_limit: PacingReport | None = None,
        cls: type[_Report] = DownloadReport,  # type: ignore[assignment]
        **extra: Any,  # a report class's own fields (ScaleOutReport's)
    ) -> _Report:
        final = [r for r in self.results if r is not None]
        assert len(final) == len(self.results), "a result is missing"
        return cls(
            results=final,
            elapsed=elapsed,
            truncated=self.count > RESULTS_KEPT,
            later_failures=self.later_failures,
            tally=self.tally,
            bytes_downloaded=self.downloaded_bytes,
            rate_limit=rate_limit,
            **extra,
        )


class Batch:
    """One batch's record: skip decisions, the index, the stop, tallies, progress.

    `index` is the index this batch writes (None: none is written). `known` is a read-only
    view of index entries (a Ray worker's share of the driver's index). `prove` hashes a
    stored recording no index knows, so that it can be indexed (default: when there is an
    index to write).
    """

    def __init__(
        self,
        sink: Sink,
        *,
        index: Manifest | None = None,
        known: Mapping[str, ManifestEntry] | None = None,
        on_progress: ProgressCallback | None = None,
        overwrite: bool = False,
        prove: bool | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        if metadata not in (None, "sidecar"):
            raise ValueError(f"metadata must be None or 'sidecar', got {metadata!r}")
        self.sink = sink
        self.metadata = metadata
        self.index = index
        self.known = known
        self.on_progress = on_progress
        self.overwrite = overwrite
        self._prove = prove
        self.tally = Tally()
        #: The destination-wide error that stopped the batch, if one did.
        self.stopped_by: VobizError | None = None
        #: The destination refused the batch before it started: every item fails with it.
        self.refused: StorageError | None = None
        self._pending: set[str] = set()
        #: Pending ids the index had no entry for when `stored` asked: `_index` writes
        #: theirs without asking again (one query a new recording instead of two).
        self._unindexed: set[str] = set()
        self._commit_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Begin a new batch: no results, no stop, nothing pending."""
        self.tally = Tally()
        self.stopped_by = self.refused = None
        self._pending.clear()
        self._unindexed.clear()

    @property
    def prove(self) -> bool:
        return self.index is not None if self._prove is None else self._prove

    # -- the source ---------------------------------------------------------------------

    async def admitted(self, source: Source) -> AsyncGenerator[tuple[int, Item], None]:
        """Each item of `source` to run, with its place in the report, claimed (release it
        with `settle`). Unusable entries fail and repeats of a pending id are skipped here,
        without reaching the engine."""
        async with contextlib.aclosing(entries(source)) as items:
            async for entry in items:
                if isinstance(entry, InvalidRecording):
                    if entry.recording_id is None:
                        continue  # only the pager counts it: there is no id to report
                    place = self.tally.place()
                    self.tally.keep(place, self.record(_unusable(entry)))
                    continue
                place = self.tally.place()
                rid = item_id(entry)
                if not self.claim(rid):
                    self.tally.keep(place, self.record(DownloadResult(rid, DownloadStatus.SKIPPED)))
                    continue
                yield place, entry

    def claim(self, recording_id: str) -> bool:
        """Mark an id pending; False when it already is (a repeated input)."""
        if recording_id in self._pending:
            return False
        self._pending.add(recording_id)
        return True

    def settle(
        self, place: int | None, result: DownloadResult, recording: Recording | None = None
    ) -> DownloadResult:
        """Record a claimed item's result (`record`), keep it at `place`, release its id."""
        self._pending.discard(result.recording_id)
        self.record(result, recording)
        if place is not None:
            self.tally.keep(place, result)
        return result

    def not_started(self) -> StorageError | None:
        """The error an item gets without being tried, once the destination refused the
        batch or a destination-wide error stopped it."""
        if self.refused is not None:
            return self.refused
        if self.stopped_by is not None:
            return not_started_error(self.stopped_by)
        return None

    # -- skip decisions -----------------------------------------------------------------

    def entry(self, recording_id: str) -> ManifestEntry | None:
        """What the index (or the known entries) says of a recording."""
        if self.index is not None:
            return self.index.get(recording_id)
        return None if self.known is None else self.known.get(recording_id)

    async def stored(self, recording_id: str, recording: Recording | None) -> DownloadResult | None:
        """A skipped result when the sink already holds the recording, without a media
        request; None when it must be fetched.

        The sink is the truth and the index a cache: an entry whose recording is gone, or
        whose size (or sha256, where the sink reports one) disagrees, is fetched again.
        """
        if self.overwrite:
            return None
        entry = self.entry(recording_id)
        if entry is None and self.index is not None:
            self._unindexed.add(recording_id)
        stored = await self.sink.lookup(
            recording_id, recording, key=entry.path if entry is not None else None
        )
        if stored is None:
            return None
        if entry is not None and _disagree(entry, stored):
            return None
        return await self.skipped(recording_id, stored, entry)

    async def skipped(
        self, recording_id: str, stored: Stored, entry: ManifestEntry | None = None
    ) -> DownloadResult:
        """The skipped result of a stored recording; hashed first when no index knows its
        sha256 and this batch proves what it skips."""
        sha256 = stored.sha256 or (entry.sha256 if entry is not None else None)
        if sha256 is None and self.prove:
            digest = getattr(self.sink, "digest", None)
            if digest is not None:
                stored = await digest(stored.key)
                sha256 = stored.sha256
        return DownloadResult(
            recording_id,
            DownloadStatus.SKIPPED,
            path=stored.location if isinstance(self.sink, DirectorySink) else None,
            location=stored.location,
            size=stored.size,
            sha256=sha256,
            container=stored.container or (entry.container if entry is not None else None),
        )

    def indexed(self, recording_id: str) -> DownloadResult:
        """The skipped result of a recording as the index records it (a shard an earlier
        run finished), without looking at the sink."""
        entry = self.entry(recording_id)
        if entry is None:
            return DownloadResult(recording_id, DownloadStatus.SKIPPED)
        location = self.locate(entry.path)
        return DownloadResult(
            recording_id,
            DownloadStatus.SKIPPED,
            path=location if isinstance(self.sink, DirectorySink) else None,
            location=location,
            size=entry.size,
            sha256=entry.sha256,
            container=entry.container,
        )

    # -- where things are ---------------------------------------------------------------

    def locate(self, key: str) -> str:
        """Where a person finds the recording stored under `key` (relative to the sink)."""
        if isinstance(self.sink, DirectorySink):
            return os.path.join(self.sink.root, key)
        location = getattr(self.sink, "location", None)
        return key if location is None else str(location(key))

    def key_of(self, result: DownloadResult) -> str | None:
        """A result's key relative to the sink: the path the index records."""
        if isinstance(self.sink, DirectorySink):
            if result.path is None:
                return None
            path, root = str(result.path), str(self.sink.root)
            if os.sep == "/" and path.startswith(root + "/"):
                rest = path[len(root) + 1 :]
                if not rest.startswith(".") and "/." not in rest and "//" not in rest:
                    return rest  # what relpath would say, without its cost
            return os.path.relpath(path, root).replace(os.sep, "/")
        base = self.locate("")
        if result.location is not None and base and result.location.startswith(base):
            return result.location[len(base) :]
        return None

    # -- metadata sidecars -------------------------------------------------------------

    async def with_sidecar(
        self, result: DownloadResult, recording: Recording | None, lookup: Lookup | None = None
    ) -> tuple[DownloadResult, Recording | None]:
        """With `metadata="sidecar"`, store a stored recording's sidecar (its wire object at
        `protocol.sidecar_key`) before its result is recorded: always for a download, for a
        skip only when it is missing (one lookup), fetching the recording with `lookup` when
        only its id is known. A sidecar the sink refuses fails the result: the recording
        stays stored, and a later run skips it and stores the sidecar. A skipped id whose
        recording Vobiz no longer returns stays skipped, its sidecar missing (logged; `verify
        --metadata sidecar` names it)."""
        if self.metadata != "sidecar" or result.status is DownloadStatus.FAILED:
            return result, recording
        key = self.key_of(result)
        if key is None:
            return result, recording
        side = sidecar_key(key)
        try:
            skipped = result.status is DownloadStatus.SKIPPED
            if skipped and await self.sink.lookup(result.recording_id, None, key=side):
                return result, recording
            if recording is None:
                recording = await self._recording(result.recording_id, lookup)
                if recording is None:
                    return result, recording
            document = sidecar_document(recording.to_dict())
            await self.sink.put_file(side, document, content_type="application/json")
        except VobizError as err:
            return attrs.evolve(result, status=DownloadStatus.FAILED, error=err), recording
        return result, recording

    async def _recording(self, recording_id: str, lookup: Lookup | None) -> Recording | None:
        """The recording a skipped id's sidecar needs, from the API; None (logged) when it
        cannot be had."""
        if lookup is None:
            return None
        try:
            return await lookup(recording_id)
        except VobizError as err:
            logger.warning("no metadata sidecar for %s: %s", recording_id, err)
            return None

    # -- recording results -------------------------------------------------------------

    def record(self, result: DownloadResult, recording: Recording | None = None) -> DownloadResult:
        """Take one item's final result: index it, note a destination-wide stop, and emit
        its progress event (once)."""
        # Downloaded under this process's claim after `stored` found no entry: no other
        # process indexed that file before it was ours (as before, one may in the instant
        # between our rename and this write). A skip may follow another process's download
        # and `move`: it is compared with the index first, as before.
        unindexed = result.recording_id in self._unindexed
        self._unindexed.discard(result.recording_id)
        unindexed = unindexed and result.status is DownloadStatus.DOWNLOADED
        if result.status is DownloadStatus.FAILED:
            logger.info("recording %s failed: %s", result.recording_id, result.error)
            if is_destination_wide(result.error) and self.stopped_by is None:
                self.stopped_by = result.error
        elif self.index is not None and result.sha256:
            self._index(result, recording, unindexed=unindexed)
        self.emit(result_event(result))
        return result

    def _index(
        self, result: DownloadResult, recording: Recording | None, *, unindexed: bool = False
    ) -> None:
        """Write a stored recording's entry, unless the index already says the same (not
        asked again for a download `stored` found no entry for: `record`)."""
        assert self.index is not None
        assert result.sha256 is not None
        key = self.key_of(result)
        if key is None or (self.stopped_by is not None and _is_index_stop(self.stopped_by)):
            return
        add_time = None if recording is None else recording.add_time
        try:
            known = None if unindexed else self.index.get(result.recording_id)
            if (
                known is not None
                and (known.path, known.size, known.sha256) == (key, result.size, result.sha256)
                and (recording is None or _remembers(known, recording))
            ):
                return
            self.index.record(
                result.recording_id,
                key,
                size=result.size,
                sha256=result.sha256,
                container=result.container,
                add_time=None if add_time is None else add_time.isoformat(),
                recording=recording,
            )
            self._commit_soon()
        except _INDEX_ERRORS as err:
            self._index_refused(err)

    def _commit_soon(self) -> None:
        """A grouped index (`Manifest.grouped`) commits what it holds at most its
        `group_seconds` after this entry: a timer on the running loop, armed once per
        group (without a loop, at once)."""
        index = self.index
        if index is None or not index.pending or self._commit_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            index.commit()
            return
        self._commit_timer = loop.call_later(index.group_seconds, self._commit_due)

    def _commit_due(self) -> None:
        self._commit_timer = None
        if self.index is not None:
            try:
                self.index.commit()
            except _INDEX_ERRORS as err:
                self._index_refused(err)

    def _index_refused(self, err: BaseException) -> None:
        """The index refused a write: stop the batch as a full disk does, with one line.
        The recording itself is stored, and stays reported so; a later run indexes it."""
        stop = _IndexStop(f"the index refuses writes ({err})")
        stop.destination_wide = True
        if self.stopped_by is None:
            self.stopped_by = stop
            logger.error("%s; no further recordings are started", stop)

    def emit(self, event: ProgressEvent) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(event)
        except Exception:
            logger.exception("on_progress callback failed; progress reporting continues")

    def report(
        self,
        elapsed: float,
        *,
        rate_limit: PacingReport | None = None,
        cls: type[_Report] = DownloadReport,  # type: ignore[assignment]
        **extra: object,
    ) -> _Report:
        """The batch's report from every result recorded at a place."""
        return self.tally.report(elapsed, rate_limit=rate_limit, cls=cls, **extra)


class _IndexStop(StorageError):
    """The index refused a write: a destination-wide stop."""


def _is_index_stop(error: VobizError) -> bool:
    return isinstance(error, _IndexStop)


def _remembers(entry: ManifestEntry, recording: Recording) -> bool:
    """Whether an index entry already holds the recording's fields (an entry written before
    the index kept them does not: it is written again)."""
    fields = recording_fields(recording)
    return all(getattr(entry, name) == value for name, value in fields.items())


def _disagree(entry: ManifestEntry, stored: Stored) -> bool:
    """The stored recording is not the one the index recorded: another size, or another
    sha256 where the sink reports one (object metadata)."""
    if entry.size != stored.size:
        return True
    return stored.sha256 is not None and stored.sha256.lower() != entry.sha256.lower()


def _unusable(entry: InvalidRecording) -> DownloadResult:
    """The failed result of a listed object that is not an archivable recording."""
    assert entry.recording_id is not None
    error = ResponseValidationError(f"the listing's object is unusable: {entry.problem}")
    return DownloadResult(entry.recording_id, DownloadStatus.FAILED, error=error)
