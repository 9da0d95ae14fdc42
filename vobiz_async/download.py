"""The streaming bulk downloader: every recording lands whole and verified, or is reported.

Each file streams into `<dest>/<id>.part` while its sha256 is computed, its byte count is
checked against `Content-Length`/`Content-Range`, and only then is it renamed to its final
name with `os.replace`. A dropped connection resumes with `Range` (and `If-Range` when the
server gave a strong ETag); a stale media URL is refreshed once through the API; redirects are
followed here, not by aiohttp, so credentials never leave Vobiz's hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import hashlib
import logging
import os
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future

import aiohttp
import attrs
from yarl import URL

from .batch import (
    DISK_FULL_NOT_STARTED,
    MAX_PACED_WAIT,
    RESULTS_KEPT,
    Batch,
    BatchOptions,
    item_id,
)
from .bodyslots import FULL_READ, SMALL_READ, BodySlots
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    DiskError,
    IntegrityError,
    ManifestError,
    StorageError,
    UnsafeURLError,
    VobizError,
)
from .manifest import Manifest, ManifestEntry
from .models import Recording
from .offload import Offload, OffloadPolicy, raise_mmap_threshold, settle
from .pacing import Answered, PacingGate, PacingPolicy, batch_gate, passage
from .protocol import (
    LAYOUTS,
    MIN_SPEED,
    MIN_SPEED_WINDOW,
    SpeedFloor,
    backoff_delay,
    content_decoder,
    media_answer,
    parse_retry_after,
    safe_file_stem,
    sniff_container,
)
from .redact import describe
from .results import (
    DownloadReport,
    DownloadResult,
    DownloadStatus,
    ProgressCallback,
    ProgressEvent,
    ProgressKind,
)
from .sinks import AlreadyStored, DirectorySink, Stored, Writer, sink_for
from .sinks.directory import disk_error
from .types import Destination, Item, Layout, Lookup, MediaClient, Metadata, Source

__all__ = [
    "MAX_PACED_WAIT",
    "RESULTS_KEPT",
    "BatchOptions",
    "Destination",
    "DownloadReport",
    "DownloadResult",
    "DownloadStatus",
    "Downloader",
    "ProgressEvent",
    "ProgressKind",
]

logger = logging.getLogger("vobiz_async")

#: Read size for a body holding a slot (`bodyslots.py`); large reads keep per-chunk
#: overhead low. Each connection holds up to about three reads (aiohttp's buffer of twice
#: its read size, and the transport's read): at 256 KiB a read, 64 bodies read at once held
#: 129 MB, hence the slots.
CHUNK_SIZE = FULL_READ
#: A body's ETag goes to the sink (`<id>.part.etag` in a folder) before its first byte only
#: above this size; a transfer that breaks off remembers it whatever its size. What a
#: kill -9 mid-transfer costs below it: the next run resumes the partial (at most this
#: big) by asking for its last RESUME_OVERLAP bytes again and comparing them, instead of
#: proving the version with If-Range; no byte is lost and two versions are never spliced.
REMEMBER_ABOVE = 1024 * 1024
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Without a strong validator, a resume asks for this many bytes before the end of the
#: partial again and compares them with its tail: two versions are never spliced.
RESUME_OVERLAP = 64 * 1024
_HEAD = 16
#: gc's youngest generation is collected after this many allocations (net of frees) while
#: a batch runs, instead of 700: a batch allocates a few objects per read and per request,
#: nearly none of them in cycles (benchmarks/RESULTS.md, "Body slots": 146 collections and
#: about 0.2 s of a 3.6 s batch's CPU, against 4 and 0.03 to 0.08 s).
BATCH_GC_THRESHOLD = 20_000


class _Retryable(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, error: VobizError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class _Whole(Exception):
    """A resume found the partial already complete (416 for a range starting at its end)."""


class _NoRoom(Exception):
    """The destination cannot hold the body: its space could not be reserved."""

    def __init__(self, error: DiskError) -> None:
        super().__init__(str(error))
        self.error = error


class _Stale(Exception):
    """The media URL was refused; a fresh `get()` may repair it."""

    def __init__(self, error: APIStatusError) -> None:
        super().__init__(str(error))
        self.error = error


@attrs.define
class _Transfer:
    """The mutable state of one recording's transfer across attempts; its bytes are the
    sink writer's."""

    recording: Recording
    writer: Writer
    url: str
    offset: int = 0
    #: The full size, once a response has told it.
    total: int | None = None
    etag: str | None = None
    head: bytes = b""
    hasher: hashlib._Hash = attrs.field(factory=hashlib.sha256)
    refreshed: bool = False
    attempts: int = 0
    #: Undoes a Content-Encoding the server applied although we asked for identity.
    decoder: zlib._Decompress | None = None
    #: The partial's last bytes, asked for again when no strong ETag proves the version.
    tail: bytes = b""
    #: Reports the current attempt's answer to the batch's pacing gate (`pacing.passage`).
    answered: Answered = lambda status, retry_after: False

    def restart(self) -> None:
        """Forget every byte; the writer is emptied before the next one is written."""
        self.offset = 0
        self.total = None
        self.etag = None
        self.head = b""
        self.hasher = hashlib.sha256()
        self.decoder = None
        self.tail = b""

    def absorb(self, chunk: bytes) -> None:
        if len(self.head) < _HEAD:
            self.head += chunk[: _HEAD - len(self.head)]
        self.hasher.update(chunk)
        self.offset += len(chunk)

    def write_blocking(self, chunk: bytes) -> None:
        """Write and hash `chunk` (on a helper thread); only for writers that can."""
        self.writer.write_blocking(chunk)  # type: ignore[attr-defined]
        self.absorb(chunk)

    async def write(self, chunk: bytes) -> None:
        self.absorb(chunk)
        await self.writer.write(chunk)

    @property
    def blocking(self) -> bool:
        """Whether the writer can write on a helper thread (`Offload`)."""
        return hasattr(self.writer, "write_blocking")


class Downloader:
    """Downloads recordings into a sink for one session; see `Recordings.download_many`."""

    def __init__(
        self,
        session: MediaClient,
        dest: Destination,
        *,
        lookup: Lookup,
        concurrency: int = 16,
        overwrite: bool = False,
        max_attempts: int = 5,
        fsync: bool = False,
        on_progress: ProgressCallback | None = None,
        manifest: str | os.PathLike[str] | Manifest | None = None,
        layout: Layout = "flat",
        chunk_size: int = CHUNK_SIZE,
        trusted_hosts: Iterable[str] | None = None,
        max_paced_wait: float = MAX_PACED_WAIT,
        offload: OffloadPolicy | None = None,
        known: Mapping[str, ManifestEntry] | None = None,
        prove_stored: bool | None = None,
        gate: PacingGate | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must each be >= 1")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self._session = session
        #: Fetches a recording by id: an id input, and a stale URL's one fresh `get()`.
        self._lookup = lookup
        self.sink = sink_for(dest, layout=layout, fsync=fsync)
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.max_paced_wait = max_paced_wait
        #: A body holding a slot reads this much at a time; other reads, `SMALL_READ`.
        self.chunk_size = chunk_size
        self._small_read = min(SMALL_READ, chunk_size)
        #: Which bodies read at full size (bodyslots.py; `body_slots.stats` says so).
        self.body_slots = BodySlots(concurrency)
        #: Domains whose https hosts receive credentials; None means the session's.
        self.trusted_hosts = _hosts(trusted_hosts)
        self._on_progress = on_progress
        self._manifest_arg = manifest
        self._owns_manifest = False
        #: What the batch records (the index, skips, tallies, progress): `batch.Batch`;
        #: `known`/`prove_stored` (a Ray worker's): index entries to skip by, hash unknowns.
        self.batch = Batch(
            self.sink,
            known=known,
            on_progress=on_progress,
            overwrite=overwrite,
            prove=prove_stored,
            metadata=metadata,
        )
        self._offload = Offload(concurrency, offload)
        #: The batch's one politeness (pacing.py): every media, listing and API request passes
        #: it; 429s lower the pace for all; a process engine's workers share one (`gate`).
        policy = PacingPolicy(concurrency, max_hold=max(0.0, max_paced_wait))
        self.gate = gate if gate is not None else PacingGate(concurrency, policy=policy)
        self._gate_scope: contextlib.AbstractContextManager[None] | None = None
        self._group_scope: contextlib.AbstractContextManager[None] | None = None

    @property
    def overwrite(self) -> bool:
        return self.batch.overwrite

    # -- batch ---------------------------------------------------------------------------

    async def run(self, source: Source) -> DownloadReport:
        """Download every item of `source`, `concurrency` at a time, pipelined: the local
        engine under the batch core (`batch.Batch`), which records every result."""
        started = time.monotonic()
        with _batch_gc():
            return await self._run(source, started)

    async def _run(self, source: Source, started: float) -> DownloadReport:
        await self.open()
        if self.batch.index is not None:
            # A batch's commits are grouped (at most GROUP_ENTRIES entries or GROUP_SECONDS;
            # `close` commits the rest): a kill -9 loses at most one group's rows, whose
            # files the next run hashes and indexes with no media request
            # (`Manifest.grouped`). A long-lived downloader's (`one()`) commit each.
            self._group_scope = self.batch.index.grouped()
            self._group_scope.__enter__()
        batch = self.batch
        # One task per item in flight, started as a slot frees: nothing is set up per slot,
        # so an absurd concurrency costs nothing beyond the work.
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        broken: list[BaseException] = []  # a transfer task that raised: a bug, re-raised

        async def transfer(place: int, item: Item) -> None:
            try:
                result, recording = await self._outcome(item)
                batch.settle(place, result, recording)
            finally:
                slots.release()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            if not task.cancelled() and (error := task.exception()) is not None:
                broken.append(error)

        try:
            async with contextlib.aclosing(batch.admitted(source)) as items:
                async for place, item in items:  # after a full disk, items fail at once
                    await slots.acquire()
                    if broken:
                        slots.release()
                        raise broken[0]
                    task = asyncio.create_task(transfer(place, item))
                    running.add(task)
                    task.add_done_callback(finished)
            while running:
                await asyncio.wait(set(running))
            if broken:
                raise broken[0]
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await self.close()
        return batch.report(time.monotonic() - started, rate_limit=self.gate.report())

    async def open(self) -> None:
        """Start a batch: check the destination once, open the index, size the connection
        pool to the concurrency, and keep read buffers off fresh mappings. A long-lived
        downloader (the webhook receiver's) calls it once, then `one()` per recording, then
        `close()`."""
        raise_mmap_threshold()
        self.batch.start()
        try:
            await self.sink.prepare()
        except StorageError as err:
            logger.error("%s", err)
            self.batch.refused = err
            return
        if isinstance(self._manifest_arg, Manifest):
            self.batch.index = self._manifest_arg
        elif self._manifest_arg is not None:
            self.batch.index = Manifest(self._manifest_arg)
            self._owns_manifest = True
        limit = self._session.reserve_connections(self.concurrency)
        if 0 < limit < self.concurrency:
            logger.warning(
                "connection pool limit %d is below concurrency %d; raise max_connections",
                limit,
                self.concurrency,
            )
        self._gate_scope = batch_gate(self.gate)  # the source's pages pass the gate too
        self._gate_scope.__enter__()

    async def close(self) -> None:
        """End what `open` and the transfers opened: the sink, the index, the helper
        threads."""
        if self._gate_scope is not None:
            scope, self._gate_scope = self._gate_scope, None
            scope.__exit__(None, None, None)
        try:
            if self._group_scope is not None:
                group, self._group_scope = self._group_scope, None
                try:
                    group.__exit__(None, None, None)  # commits what the group holds
                except ManifestError as err:  # the files stay: a later run indexes them
                    logger.error("%s", err)
            await self.sink.close()
        finally:
            index = self.batch.index
            if self._owns_manifest and index is not None:
                index.close()
                self.batch.index = None
                self._owns_manifest = False
            self._offload.close()

    def _emit(self, event: ProgressEvent) -> None:
        self.batch.emit(event)

    # -- one item ------------------------------------------------------------------------

    async def download(self, item: Item) -> DownloadResult:
        """Download a single recording or id, with the batch opened and closed around it."""
        await self.open()
        try:
            return await self.one(item)
        finally:
            await self.close()

    async def one(self, item: Item) -> DownloadResult:
        """Download one recording or id, between `open()` and `close()`; failures become a
        failed result, never a raise. The batch core records it (index, progress)."""
        recording_id = item_id(item)
        if not self.batch.claim(recording_id):  # the same id is in flight already
            return self.batch.record(DownloadResult(recording_id, DownloadStatus.SKIPPED))
        result, recording = await self._outcome(item)
        return self.batch.settle(None, result, recording)

    async def _outcome(self, item: Item) -> tuple[DownloadResult, Recording | None]:
        """One claimed item's result, its metadata sidecar stored first when the batch
        keeps them, and the recording when it was known or fetched."""
        result, recording = await self._fetched(item)
        return await self.batch.with_sidecar(result, recording, self._lookup)

    async def _fetched(self, item: Item) -> tuple[DownloadResult, Recording | None]:
        """One claimed item's result, and the recording when it was known or fetched."""
        recording_id = item_id(item)
        failed = DownloadResult(recording_id, DownloadStatus.FAILED)
        recording = item if isinstance(item, Recording) else None
        if (error := self.batch.not_started()) is not None:
            return attrs.evolve(failed, error=error), recording
        try:
            safe_file_stem(recording_id)  # a hostile id fails before any request
            if (done := await self.batch.stored(recording_id, recording)) is not None:
                return done, recording
            if recording is None:
                recording = await self._lookup(recording_id)
                if (done := await self.batch.stored(recording_id, recording)) is not None:
                    return done, recording
            return await self._transfer(recording), recording
        except VobizError as err:
            return attrs.evolve(failed, error=err), recording
        except OSError as err:
            return attrs.evolve(failed, error=disk_error(err, self.sink.describe())), recording

    def _path(self, stored: Stored) -> str | None:
        """A folder's file path for a result; None for object storage."""
        return stored.location if isinstance(self.sink, DirectorySink) else None

    async def _transfer(self, recording: Recording) -> DownloadResult:
        try:
            writer = await self.sink.open(recording)
        except AlreadyStored as done:  # another process finished it meanwhile
            return await self.batch.skipped(recording.recording_id, done.stored)
        state = _Transfer(recording, writer, recording.recording_url)
        try:
            if writer.offset:
                async for chunk in writer.read_back():
                    state.absorb(chunk)
                state.etag = writer.validator
            if self._on_progress is not None:
                self._emit(ProgressEvent(ProgressKind.STARTED, recording.recording_id))
            failure = await self._attempts(state)
            if failure is not None:
                await writer.abort()
                return failure
            return await self._finish(state)
        except BaseException:
            await writer.abort()
            raise

    async def _attempts(self, state: _Transfer) -> DownloadResult | None:
        """Attempt the transfer until it is whole (None) or has failed (its result)."""
        recording = state.recording
        attempts = failures = 0
        paced = 0.0  # seconds waited on the server's Retry-After: pacing, not failures
        while True:
            attempts += 1
            state.attempts = attempts
            try:
                await self._paced_attempt(state)
                return None
            except _NoRoom as no_room:
                return self._not_started(state, attempts, no_room.error)
            except _Stale as stale:
                if state.refreshed:
                    return self._failed(recording, attempts, stale.error)
                state.refreshed = True
                try:
                    fresh = await self._lookup(recording.recording_id)
                except VobizError as err:
                    return self._failed(recording, attempts, err)
                state.url = fresh.recording_url
            except _Retryable as err:
                if err.retry_after:
                    # A 429 or 503 with a Retry-After is the server pacing us: honour it, and
                    # keep max_attempts for real failures, up to max_paced_wait in all. (A
                    # Retry-After of 0 paces nothing: that is an ordinary failed attempt.)
                    if paced + err.retry_after > self.max_paced_wait:  # only ever paced
                        return self._failed(recording, attempts, err.error)
                    # No sleep of its own: the batch's gate holds every new request for the
                    # Retry-After and then spaces them out, so this one waits there, in turn.
                    paced += max(err.retry_after, 1.0)
                    logger.debug("%s paced for %.2fs", recording.recording_id, err.retry_after)
                    continue
                failures += 1
                if failures >= self.max_attempts:
                    return self._failed(recording, attempts, err.error)
                delay = backoff_delay(failures - 1, err.retry_after)
                logger.debug("retrying %s in %.2fs: %s", recording.recording_id, delay, err)
                await asyncio.sleep(delay)
            except VobizError as err:
                return self._failed(recording, attempts, err)

    def _not_started(self, state: _Transfer, attempts: int, err: DiskError) -> DownloadResult:
        """A transfer whose space could not be reserved: no byte was written, and the batch
        stops starting transfers (the ones already reserved complete)."""
        disk_full = DiskError(f"{DISK_FULL_NOT_STARTED} ({err})")
        disk_full.errno = getattr(err, "errno", None)  # type: ignore[attr-defined]
        disk_full.destination_wide = True
        return self._failed(state.recording, attempts, disk_full)

    def _failed(self, recording: Recording, attempts: int, error: VobizError) -> DownloadResult:
        return DownloadResult(
            recording.recording_id, DownloadStatus.FAILED, attempts=attempts, error=error
        )

    async def _finish(self, state: _Transfer) -> DownloadResult:
        """Store the verified bytes under their final name (the batch core indexes them)."""
        recording = state.recording
        container = sniff_container(state.head)
        digest = state.hasher.hexdigest()
        stored = await state.writer.commit(container=container, size=state.offset, sha256=digest)
        return DownloadResult(
            recording.recording_id,
            DownloadStatus.DOWNLOADED,
            path=self._path(stored),
            location=stored.location,
            size=stored.size,
            sha256=digest,
            container=container,
            attempts=state.attempts,
        )

    # -- one attempt ---------------------------------------------------------------------

    async def _paced_attempt(self, state: _Transfer) -> None:
        """One attempt through the batch's pacing gate: it waits for a slot and the pace."""
        async with passage(self.gate) as state.answered:
            await self._attempt(state)

    def _pace(self, resp: aiohttp.ClientResponse, state: _Transfer) -> None:
        """Tell the gate what the server answered; a lowered pace is a progress event."""
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if state.answered(resp.status, retry_after) and self._on_progress:
            recording_id = state.recording.recording_id
            report = self.gate.report()
            self._emit(ProgressEvent(ProgressKind.RATE_LIMITED, recording_id, pacing=report))

    async def _attempt(self, state: _Transfer) -> None:
        """One GET (following redirects) streamed into the sink's writer."""
        writer = state.writer
        if writer.offset != state.offset:
            state.restart()  # the writer's tail is unknown (a failed write): start over
            await writer.restart()
        headers = {"Accept-Encoding": "identity"}
        if state.offset:
            tail = getattr(writer, "tail", None)
            if state.etag:
                headers["Range"] = f"bytes={state.offset}-"
                headers["If-Range"] = state.etag
            elif tail is not None:
                state.tail = await asyncio.to_thread(tail, RESUME_OVERLAP)
                headers["Range"] = f"bytes={state.offset - len(state.tail)}-"
            else:  # nothing proves the held bytes' version, and they cannot be compared
                state.restart()
                await writer.restart()
        try:
            url = URL(state.url, encoded=True)
        except ValueError:
            raise UnsafeURLError("malformed recording URL") from None
        try:
            resp = await self._session.stream(
                "GET",
                url,
                headers=headers,
                read_bufsize=self._small_read,  # until the body holds a slot
                trusted_hosts=self.trusted_hosts,
                auto_decompress=False,  # decoded in `_stream`, where completeness is checked
            )
        except APIConnectionError as err:
            raise _Retryable(err) from err
        async with resp:
            try:
                expected = self._check_status(resp, state)
            except _Whole:
                return  # the partial already holds every byte
            try:
                await self._stream(resp, state, expected)
            except BaseException:
                await writer.remember(state.etag)  # a later run resumes with If-Range
                raise
        if state.total is not None and state.offset != state.total:
            # A 206 that ended before the end of the file: ask for the rest.
            raise _Retryable(IntegrityError(f"have {state.offset} of {state.total} bytes"))

    def _check_status(self, resp: aiohttp.ClientResponse, state: _Transfer) -> int | None:
        """Apply what the response means (`protocol.media_answer`) to the transfer: the
        number of body bytes to expect, or raise what the answer says."""
        self._pace(resp, state)
        answer = media_answer(
            resp.status,
            resp.headers,
            offset=state.offset,
            asked_from=state.offset - len(state.tail),
            etag=state.etag,
            total=state.total,
            reason=resp.reason,
        )
        match answer.action:
            case "body":
                state.restart()  # a full body, whether or not we asked for a range
                state.etag, state.total = answer.etag, answer.total
                state.decoder = content_decoder(answer.encoding)
                return answer.expected
            case "resume":
                state.etag, state.total = answer.etag, answer.total
                return answer.expected
            case "complete":
                state.total = answer.total
                raise _Whole
        assert answer.error is not None
        if answer.action == "restart":
            state.restart()
            raise _Retryable(answer.error)
        if answer.action == "refresh":
            assert isinstance(answer.error, APIStatusError)
            raise _Stale(answer.error)
        if answer.action == "retry":
            raise _Retryable(answer.error, answer.retry_after)
        raise answer.error

    async def _stream(
        self, resp: aiohttp.ClientResponse, state: _Transfer, expected: int | None
    ) -> None:
        """Stream the body into the writer, then check it is whole; a failure says whether
        the held bytes may be resumed (`_Retryable` keeps them unless `state` restarted)."""
        decoder = state.decoder
        overlap, state.tail = state.tail, b""  # bytes the partial ends with, sent again
        received = _Received()
        try:
            await self._make_room(state, expected, len(overlap))
            await self._pump(resp, state, expected, overlap, received)
        except (aiohttp.ClientError, TimeoutError) as err:
            # First: aiohttp's ClientOSError and TimeoutError are OSErrors too, but network ones.
            message = f"transfer broke off after {received.count} bytes: {describe(err)}"
            if decoder is not None:
                state.restart()  # an encoded body is never resumed
            raise _Retryable(APIConnectionError(message)) from err
        except zlib.error as err:
            state.restart()
            raise _Retryable(IntegrityError(f"undecodable encoded body: {err}")) from err
        except StorageError:
            state.restart()  # the writer's tail is unknown now
            raise
        except OSError as err:
            state.restart()
            raise disk_error(err, self.sink.describe()) from err
        _check_whole(state, expected, received.count)

    async def _make_room(self, state: _Transfer, expected: int | None, overlap: int) -> None:
        """Empty the writer for a full body, reserve the body's space, remember the ETag."""
        writer = state.writer
        if state.offset == 0 and writer.offset:
            await writer.restart()  # a full body replaces what the writer held
        reserve = getattr(writer, "reserve", None)
        if expected and reserve is not None:
            try:
                await reserve(expected - overlap)
            except DiskError as err:
                if getattr(err, "errno", None) in _DISK_FULL:
                    raise _NoRoom(err) from err
                raise
        if expected is None or expected > REMEMBER_ABOVE:
            await writer.remember(state.etag)  # survives even a kill -9 mid-transfer

    async def _pump(
        self,
        resp: aiohttp.ClientResponse,
        state: _Transfer,
        expected: int | None,
        overlap: bytes,
        received: _Received,
    ) -> None:
        """Read the body at full size once it holds a body slot; until then its connection
        reads small and is paused by aiohttp's flow control (bodyslots.py). A body already
        read whole into aiohttp's buffer needs no slot."""
        content = resp.content
        if content.is_eof():
            await self._read_body(resp, state, expected, overlap, received)
            return
        connection = resp.connection
        transport = connection.transport if connection is not None else None
        await self.body_slots.acquire()
        try:
            _read_size(transport, self.chunk_size)
            # Back to small reads as the body ends, before another response can use the
            # connection: its first read is small again.
            content.on_eof(lambda: _read_size(transport, self._small_read))
            await self._read_body(resp, state, expected, overlap, received)
        finally:
            if not content.is_eof():
                _read_size(transport, self._small_read)
            self.body_slots.release()

    async def _read_body(
        self,
        resp: aiohttp.ClientResponse,
        state: _Transfer,
        expected: int | None,
        overlap: bytes,
        received: _Received,
    ) -> None:
        """Read the body chunk by chunk: compare the overlap, decode, write (perhaps on a
        helper thread), report progress; `received` counts the body bytes read."""
        decoder = state.decoder
        job: Future[None] | None = None  # the chunk a helper thread is writing, if any
        floor = SpeedFloor(MIN_SPEED, MIN_SPEED_WINDOW, time.monotonic())  # a trickle ends
        try:
            async for chunk in resp.content.iter_chunked(self.chunk_size):
                if floor.slow(len(chunk), time.monotonic()):
                    if decoder is not None:
                        state.restart()  # an encoded body is never resumed
                    raise _Retryable(APITimeoutError(floor.message()))
                if overlap:
                    received.count += min(len(chunk), len(overlap))
                    chunk, overlap = _match_overlap(chunk, overlap, state)
                    if not chunk:
                        continue
                if job is not None:
                    await asyncio.wrap_future(job)  # until then `state` is the helper's
                data = chunk if decoder is None else decoder.decompress(chunk)
                job = await self._offload.write(state, data) if data else None
                received.count += len(chunk)
                if self._on_progress is not None:
                    rid = state.recording.recording_id
                    self._emit(ProgressEvent(ProgressKind.BYTES, rid, len(chunk), expected))
            if job is not None:
                await asyncio.wrap_future(job)
                job = None
            if decoder is not None and (tail := decoder.flush()):
                await self._offload.write(state, tail)
        except BaseException as err:
            await settle(job, err)
            raise


#: Batches running in this process now (the outermost tunes gc and restores it).
_GC_TUNED: list[tuple[int, int, int]] = []


@contextlib.contextmanager
def _batch_gc() -> Iterator[None]:
    """While a batch runs: what exists (start-up's modules and classes, the caller's
    objects) is frozen out of gc's scans, and the youngest generation is collected less
    often (`BATCH_GC_THRESHOLD`); both are undone when the last batch of the process ends,
    so a library user's process is left as it was. A process that froze objects itself,
    or runs without gc, is not touched. A kill -9 costs nothing here: it is memory only."""
    tune = not _GC_TUNED and gc.isenabled() and gc.get_freeze_count() == 0
    if not tune and not _GC_TUNED:
        yield
        return
    if tune:
        threshold = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(max(threshold[0], BATCH_GC_THRESHOLD), *threshold[1:])
        _GC_TUNED.append(threshold)
    else:
        _GC_TUNED.append(_GC_TUNED[-1])
    try:
        yield
    finally:
        threshold = _GC_TUNED.pop()
        if not _GC_TUNED:
            gc.set_threshold(*threshold)
            gc.unfreeze()


def _hosts(trusted_hosts: Iterable[str] | None) -> frozenset[str] | None:
    """Trusted domains normalised as the session's are; None stays None (the session's)."""
    if trusted_hosts is None:
        return None
    return frozenset(h.lower().strip(".") for h in trusted_hosts)


@attrs.define
class _Received:
    """Body bytes read so far by one attempt (for the message when it breaks off)."""

    count: int = 0


def _check_whole(state: _Transfer, expected: int | None, received: int) -> None:
    """Raise `_Retryable` unless the body arrived whole: every byte the response announced
    and, for an encoded one, the end of its stream."""
    decoder = state.decoder
    if expected is not None and received != expected:
        if decoder is not None:
            state.restart()
        raise _Retryable(IntegrityError(f"short body: {received} of {expected} bytes"))
    if decoder is not None and not decoder.eof:
        # The encoded bytes all arrived, but they are not a whole stream: a truncated
        # .gz on the server. Never store that.
        state.restart()
        raise _Retryable(IntegrityError("the encoded body ends before its stream does"))


def _read_size(transport: asyncio.Transport | None, size: int) -> None:
    """Make the connection's transport read at most `size` bytes at a time.

    asyncio's selector transport reads up to 256 KiB per `recv` whatever the protocol's
    buffer size (`max_size`, an attribute of `_SelectorSocketTransport`; the session's
    connections start at `SMALL_READ`), and aiohttp keeps each read until it is consumed:
    with many transfers in flight those reads are most of the batch's memory. Where the
    transport has no such attribute (TLS, uvloop) nothing changes.
    """
    if transport is not None and hasattr(transport, "max_size"):
        transport.max_size = size


def _match_overlap(chunk: bytes, overlap: bytes, state: _Transfer) -> tuple[bytes, bytes]:
    """Check a resumed body's first bytes against the partial's tail; return the rest of
    the chunk and of the tail still to compare. A mismatch means another version."""
    size = min(len(chunk), len(overlap))
    if chunk[:size] != overlap[:size]:
        state.restart()
        raise _Retryable(IntegrityError("the recording changed since its partial was written"))
    return chunk[size:], overlap[size:]
