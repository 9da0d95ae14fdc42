"""The webhook receiver's engine: a durable spool, a bounded queue and download workers.

Every finished recording a callback announces is appended to the spool (JSON Lines, one
`os.write` on an `O_APPEND` descriptor, then `fsync`) before the callback is answered, so a
crash or `kill -9` after the 200 loses nothing: on start, every spooled recording that is not
archived yet is queued again. Downloads go through one long-lived `Downloader` for the
process (one sink and its S3 client, one pacing gate, one view of the destination), fed one
recording at a time by a few worker tasks, never inside a request handler: a callback costs
the same with 10 or 100,000 recordings archived. `serve` runs it all behind
`vobiz_async.webhooks.create_app`.

Transcripts (Vobiz's `transcriptionUrl` callbacks, on the same URL) are spooled the same way
and stored beside their recordings as `<recording key without extension>.transcript.json`
(`sink.put_file`, atomic) once the recording is archived: at once when it already is, after
its download when it is queued, and at the next start for what a crash left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs
from yarl import URL

from ._files import fsync_path
from .download import Downloader, DownloadStatus
from .errors import ConfigurationError, ManifestError, StorageError, VobizError
from .manifest import MANIFEST_NAME, Manifest
from .redact import describe
from .session import AsyncSession
from .sinks import S3Sink, Sink, s3_destination
from .sinks.s3 import SETTING_NAMES, Encryption, LockMode
from .types import Metadata
from .webhooks import (
    MAX_BODY,
    REPLAY_WINDOW,
    Counters,
    RecordingEvent,
    SubmitOutcome,
    TranscriptEvent,
    WebhookVerifier,
    create_app,
    signed_url,
)

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "SPOOL_NAME",
    "Receiver",
    "ServeConfig",
    "Spool",
    "default_spool_path",
    "parse_basic_auth",
    "parse_duration",
    "parse_listen",
    "public_url",
    "serve",
    "transcript_key",
]

logger = logging.getLogger("vobiz_async")

#: The spool's file name inside a destination folder.
SPOOL_NAME = "vobiz-webhooks.spool.jsonl"
DEFAULT_QUEUE_SIZE = 1000
DEFAULT_CONCURRENCY = 4
DEFAULT_DRAIN_SECONDS = 30.0
#: How far back a backstop sync looks, in multiples of its interval.
SYNC_WINDOW_FACTOR = 2

#: A finished recording is remembered in the spool this long (seconds) after a restart.
FINISHED_KEEP = 7 * 86400.0
#: A transcript waiting this long (seconds) for its recording is warned about, once: Vobiz
#: deletes recordings after 30 days, so its recording will not come any more.
TRANSCRIPT_STALE = 30 * 86400.0

State = Literal["pending", "archived", "failed"]
TranscriptState = Literal["pending", "stored"]
_T = TypeVar("_T")
#: Spool lines that accept something (and carry the request's nonces).
_ACCEPTING = ("accepted", "transcript")
#: What a spool line is about: ("recording", recording id) or ("transcript", its id).
_Ident = tuple[str, str]


def transcript_key(recording_key: str) -> str:
    """Where a recording's transcript goes: its key without the extension, plus
    `.transcript.json` (`2026/05/07/rec-1.mp3` -> `2026/05/07/rec-1.transcript.json`)."""
    folder, sep, name = recording_key.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{folder}{sep}{stem}.transcript.json"


def _ident(record: Any) -> _Ident:
    """What one spool line is about; `ValueError`, `KeyError` or `TypeError` when it is not
    a line this version writes."""
    op = record["op"]
    if op == "accepted":
        return "recording", str(record["event"]["recording_id"])
    if op in ("archived", "failed"):
        return "recording", str(record["recording_id"])
    if op == "transcript":
        return "transcript", str(record["transcript"]["transcription_id"])
    if op == "transcript_stored":
        return "transcript", str(record["transcription_id"])
    raise ValueError(op)


# -- the spool ----------------------------------------------------------------------------


class Spool:
    """An append-only journal of accepted events and their outcomes, fsync'd per line.

    Lines: `{"op": "accepted", "event": {...}, "nonces": [...], "at": ...}`, then one
    `{"op": "archived" | "failed", "recording_id": ..., "at": ...}` (an archived line also
    holds the recording's `key` in the sink). Transcripts: `{"op": "transcript",
    "transcript": {...}, "nonces": [...], "at": ...}`, then `{"op": "transcript_stored",
    "transcription_id": ..., "key": ..., "at": ...}` once stored beside the recording. The
    last line for an id decides its state; a torn last line (a crash mid-write) is skipped.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.states: dict[str, State] = {}
        self.events: dict[str, RecordingEvent] = {}
        self.nonces: list[tuple[str, float]] = []
        #: Where each archived recording is in the sink (from archived lines that say it).
        self.keys: dict[str, str] = {}
        self.transcript_states: dict[str, TranscriptState] = {}
        #: Transcripts not stored yet, by transcription id, in the order they came.
        self.transcripts: dict[str, TranscriptEvent] = {}
        #: When each transcript not stored yet was spooled (seconds since the epoch).
        self.transcript_times: dict[str, float] = {}
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._torn = False
        self._load()

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, {len(self.states)} recordings)"

    def _records(self, data: bytes) -> Iterator[tuple[_Ident, dict[str, Any], bytes]]:
        """(what it is about, record, raw line) for every readable line."""
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                ident = _ident(record)
            except (ValueError, TypeError, KeyError):
                logger.warning("%s: skipping unreadable line %d", self.path, number)
                continue
            yield ident, record, line

    def _load(self) -> None:
        for table in (self.states, self.events, self.keys, self.transcript_states):
            table.clear()
        self.transcripts.clear()
        self.transcript_times.clear()
        self.nonces.clear()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        horizon = time.time() - REPLAY_WINDOW
        for (kind, ident), record, _ in self._records(data):
            try:
                if kind == "recording":
                    self._load_recording(ident, record)
                else:
                    self._load_transcript(ident, record)
                if record["op"] in _ACCEPTING:
                    self._load_nonces(record, horizon)
            except (ValueError, TypeError, KeyError):
                logger.warning("%s: skipping an unreadable event for %s", self.path, ident)
        self._torn = bool(data) and not data.endswith(b"\n")

    def _load_recording(self, rid: str, record: dict[str, Any]) -> None:
        if record["op"] == "accepted":
            event = RecordingEvent.from_dict(record["event"])
            self.events.pop(rid, None)
            self.events[rid] = event  # at the end: resumed in the order they came
            self.states[rid] = "pending"
            return
        self.states[rid] = record["op"]
        self.events.pop(rid, None)  # only pending events are kept in memory
        if record["op"] == "archived" and isinstance(key := record.get("key"), str):
            self.keys[rid] = key

    def _load_transcript(self, tid: str, record: dict[str, Any]) -> None:
        if record["op"] == "transcript":
            event = TranscriptEvent.from_dict(record["transcript"])
            self.transcripts.pop(tid, None)
            self.transcripts[tid] = event
            self.transcript_states[tid] = "pending"
            at = record.get("at")
            self.transcript_times[tid] = float(at) if isinstance(at, int | float) else time.time()
        else:
            self.transcript_states[tid] = "stored"
            self.transcripts.pop(tid, None)
            self.transcript_times.pop(tid, None)

    def _load_nonces(self, record: dict[str, Any], horizon: float) -> None:
        nonces, at = record.get("nonces") or [], float(record.get("at", 0))
        if isinstance(nonces, list) and at >= horizon:
            self.nonces += [(n, at) for n in nonces if isinstance(n, str)]

    def pending(self) -> list[RecordingEvent]:
        """Events accepted and neither archived nor failed, in the order they came."""
        return [e for rid, e in self.events.items() if self.states.get(rid) == "pending"]

    def lock(self) -> None:
        """Take `<spool>.lock` for this process: two receivers on one spool would download
        each recording twice. `ConfigurationError` when another process holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX: no lock
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigurationError(
                f"another receiver is using the spool {self.path}; give each its own --spool"
            ) from None
        self._lock_fd = fd

    def compact(self, keep_finished: float = FINISHED_KEEP) -> int:
        """Rewrite the spool with only what a restart needs; return the lines dropped.

        Kept: the accepted line of every pending recording or transcript, the last line of a
        recording archived or failed, or a transcript stored, in the last `keep_finished`
        seconds, and accepted lines inside the replay window (for their nonces). A recording
        forgotten here is at worst looked up on disk again by a late duplicate callback.
        Call it with the lock held.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        records = list(self._records(data))
        last = {ident: index for index, (ident, _, _) in enumerate(records)}
        now = time.time()
        kept = []
        for index, (ident, record, line) in enumerate(records):
            at = float(record.get("at", 0)) if isinstance(record.get("at"), int | float) else 0
            accepted = record["op"] in _ACCEPTING
            final = last[ident] == index
            if (final and (accepted or at >= now - keep_finished)) or (
                accepted and at >= now - REPLAY_WINDOW
            ):
                kept.append(line)
        dropped = sum(1 for line in data.split(b"\n") if line.strip()) - len(kept)
        if dropped <= 0:
            return 0
        self._close_file()
        temp = self.path.with_name(self.path.name + ".tmp")
        with open(temp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self.path)
        fsync_path(self.path.parent)
        self._load()
        logger.info("%s: compacted, %d line(s) dropped", self.path, dropped)
        return dropped

    def append(self, record: dict[str, Any]) -> None:
        """Write one line and fsync it: it survives a crash once this returns."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if created:
                fsync_path(self.path.parent)  # the new name survives a power cut too
            if self._torn:
                os.write(self._fd, b"\n")
                self._torn = False
        line = json.dumps(record, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())
        os.fsync(self._fd)

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Close the file descriptor and release the lock."""
        self._close_file()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# -- the receiver -------------------------------------------------------------------------


class Receiver:
    """Spools finished recordings, deduplicates them by id, and downloads them in workers;
    spools transcripts, deduplicates them by transcription id, and stores each beside its
    recording once that is archived.

    Implements `vobiz_async.webhooks.EventSink`. `start` opens the receiver's one
    `Downloader` (`downloader`), loads the spool and queues what an earlier run left pending
    (and places the transcripts it left); `close` drains in-flight downloads for a bounded
    time, then closes the downloader.

    Each recording's outcome is logged at INFO with its id (accepted, duplicate, archived)
    or WARNING (failed), never its media URL's query or a credential.
    """

    def __init__(
        self,
        session: AsyncSession,
        dest: str | Sink,
        spool: Spool,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        manifest: Manifest | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        if queue_size < 1 or concurrency < 1:
            raise ValueError("queue_size and concurrency must be at least 1")
        self._session = session
        #: A folder, `s3://bucket/prefix/`, or a sink (an `S3Sink` with its settings).
        self.dest = dest
        #: The destination in messages (a sink's `describe()`).
        self.where = dest if isinstance(dest, str) else dest.describe()
        self.spool = spool
        self.queue_size = queue_size
        self.concurrency = concurrency
        self.manifest = manifest
        #: "sidecar": each recording's wire object is stored beside it (`download_many`).
        self.metadata = metadata
        self.counters = Counters()
        self._states = spool.states
        self._pending = sum(1 for s in self._states.values() if s == "pending")
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._slots = asyncio.Semaphore(concurrency)
        self._downloads: set[asyncio.Task[None]] = set()
        #: Transcript placements running now, and the transcription ids they place.
        self._placements: set[asyncio.Task[None]] = set()
        self._placing: set[str] = set()
        #: Recordings whose transcript the sink refused: tried again after the next archive.
        self._unplaced: set[str] = set()
        #: Transcripts warned about as waiting longer than `TRANSCRIPT_STALE` (once each).
        self._stale_warned: set[str] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        #: The one batch every download goes through, from `start` to `close`.
        self.downloader: Downloader | None = None
        #: Where the downloader was opened and is closed, and its workers run: the pacing
        #: gate it enters is theirs, not the caller's.
        self._context = contextvars.copy_context()
        #: A destination-wide failure (a full disk, a missing bucket) stopped the batch: the
        #: next download first opens a fresh one, which checks the destination again.
        self._stopped = False

    def __repr__(self) -> str:
        return f"Receiver(dest={self.where!r}, pending={self._pending})"

    # -- EventSink ------------------------------------------------------------------------

    def pending(self) -> int:
        """Recordings accepted and not yet archived or failed (queued or downloading)."""
        return self._pending

    def recent_nonces(self) -> Iterable[tuple[str, float]]:
        """Nonces the spool holds from within the replay window."""
        return list(self.spool.nonces)

    def _set_state(self, recording_id: str, state: State | None) -> None:
        before = self._states.get(recording_id)
        self._pending += (state == "pending") - (before == "pending")
        if state is None:
            self._states.pop(recording_id, None)
        else:
            self._states[recording_id] = state

    async def submit(self, event: RecordingEvent, nonces: Sequence[str]) -> SubmitOutcome:
        """Spool and queue `event` unless its recording is already queued or archived."""
        outcome = await self._submit(event, nonces)
        if outcome is SubmitOutcome.ACCEPTED:
            self.counters.accepted += 1
        return outcome

    async def _submit(self, event: RecordingEvent, nonces: Sequence[str]) -> SubmitOutcome:
        rid = event.recording_id
        before = self._states.get(rid)
        if before in ("pending", "archived"):
            self.counters.duplicate += 1
            logger.info("recording %s: duplicate (already %s)", rid, before)
            return SubmitOutcome.DUPLICATE
        if self._pending >= self.queue_size:
            logger.warning("queue full (%d pending): asking Vobiz to retry %s", self._pending, rid)
            return SubmitOutcome.BUSY
        self._set_state(rid, "pending")  # before the await: a concurrent duplicate sees it
        record = {
            "op": "accepted",
            "event": event.to_dict(),
            "nonces": list(nonces),
            "at": time.time(),
        }
        try:
            await asyncio.to_thread(self.spool.append, record)
        except OSError as err:
            self._set_state(rid, before)
            logger.error("cannot write the spool %s: %s", self.spool.path, err)
            return SubmitOutcome.BUSY
        self.spool.events[rid] = event
        self._queue.put_nowait(rid)
        logger.info("recording %s: accepted (%s callback)", rid, event.shape)
        return SubmitOutcome.ACCEPTED

    async def submit_transcript(
        self, event: TranscriptEvent, nonces: Sequence[str]
    ) -> SubmitOutcome:
        """Spool a transcript unless its transcription id is spooled already; place it now
        when its recording is archived (or may be), else after its download."""
        tid, rid = event.transcription_id, event.recording_id
        states = self.spool.transcript_states
        if tid in states:
            self.counters.duplicate += 1
            logger.info("transcript %s of recording %s: duplicate", tid, rid)
            return SubmitOutcome.DUPLICATE
        if len(self.spool.transcripts) >= self.queue_size:
            logger.warning(
                "%d transcripts wait for their recordings: asking Vobiz to retry",
                len(self.spool.transcripts),
            )
            return SubmitOutcome.BUSY
        states[tid] = "pending"  # before the await: a concurrent duplicate sees it
        at = time.time()
        record = {
            "op": "transcript",
            "transcript": event.to_dict(),
            "nonces": list(nonces),
            "at": at,
        }
        try:
            await asyncio.to_thread(self.spool.append, record)
        except OSError as err:
            del states[tid]
            logger.error("cannot write the spool %s: %s", self.spool.path, err)
            return SubmitOutcome.BUSY
        self.spool.transcripts[tid] = event
        self.spool.transcript_times[tid] = at
        logger.info("transcript %s of recording %s: accepted", tid, rid)
        if self._states.get(rid) != "pending":  # archived, failed or unknown: look now
            self._place_later(rid)
        return SubmitOutcome.ACCEPTED

    # -- transcripts ----------------------------------------------------------------------

    def transcripts_waiting(self) -> int:
        """Transcripts spooled and not stored yet (their recordings not archived yet)."""
        return len(self.spool.transcripts)

    def _warn_stale(self, events: Iterable[TranscriptEvent]) -> None:
        """One WARNING per transcript waiting longer than `TRANSCRIPT_STALE` for its
        recording (Vobiz has deleted that recording by now); it stays in the spool."""
        horizon = time.time() - TRANSCRIPT_STALE
        for event in events:
            tid = event.transcription_id
            at = self.spool.transcript_times.get(tid)
            if at is None or at > horizon or tid in self._stale_warned:
                continue
            self._stale_warned.add(tid)
            days = int((time.time() - at) // 86400)
            logger.warning(
                "transcript %s of recording %s has waited %d days for its recording, which "
                "Vobiz keeps 30 days: it stays in the spool; archive the recording if you "
                "still have it",
                tid,
                event.recording_id,
                days,
            )

    async def placed(self) -> None:
        """Wait until the transcript placements running now have ended."""
        while self._placements:
            await asyncio.wait(set(self._placements))

    def _place_later(self, rid: str) -> None:
        """Place `rid`'s spooled transcripts in a task of their own, never in a request."""
        task = asyncio.create_task(self._place(rid), context=self._context)
        self._placements.add(task)
        task.add_done_callback(self._placements.discard)

    async def _place(self, rid: str) -> None:
        """Store every spooled transcript of `rid` beside it, if it is archived; those of a
        recording not found in the archive wait for it."""
        waiting = [
            event
            for event in self.spool.transcripts.values()
            if event.recording_id == rid and event.transcription_id not in self._placing
        ]
        if not waiting:
            return
        ids = {event.transcription_id for event in waiting}
        self._placing |= ids
        try:
            key = await self._recording_key(rid)
            if key is None:
                logger.info("recording %s is not archived yet: its transcript waits", rid)
                self._warn_stale(waiting)
                return
            for event in waiting:
                if not await self._store_transcript(event, key):
                    self._unplaced.add(rid)
        except Exception:  # a bug: the transcript stays spooled, the receiver serves on
            logger.exception("placing the transcripts of %s raised", rid)
        finally:
            self._placing -= ids

    async def _recording_key(self, rid: str) -> str | None:
        """Where `rid` is in the sink: the spool's archived line, the index, or the sink."""
        if (key := self.spool.keys.get(rid)) is not None:
            return key
        if self.manifest is not None:
            try:
                entry = await asyncio.to_thread(self.manifest.get, rid)
            except ManifestError as err:
                logger.warning("%s", err)
                entry = None
            if entry is not None:
                return entry.path
        downloader = self.downloader
        if downloader is None:
            return None
        try:
            stored = await downloader.sink.lookup(rid, None)
        except (VobizError, OSError) as err:
            logger.warning("cannot look %s up in %s: %s", rid, self.where, describe(err))
            return None
        return None if stored is None else stored.key

    async def _store_transcript(self, event: TranscriptEvent, recording_key: str) -> bool:
        """Put one transcript beside its recording, then spool and index that it is there;
        False when the sink refused it (it stays spooled: tried again after the next
        recording is archived, and at the next start)."""
        tid, rid = event.transcription_id, event.recording_id
        downloader = self.downloader
        if downloader is None:
            logger.warning(
                "transcript %s of recording %s waits: %s is not open", tid, rid, self.where
            )
            return False
        key = transcript_key(recording_key)
        try:
            stored = await downloader.sink.put_file(
                key, event.document(), content_type="application/json"
            )
        except (VobizError, OSError, ValueError) as err:
            logger.warning("transcript %s of recording %s not stored: %s", tid, rid, describe(err))
            return False
        record = {"op": "transcript_stored", "transcription_id": tid, "key": key}
        try:
            await asyncio.to_thread(self.spool.append, {**record, "at": time.time()})
        except OSError as err:  # still pending in the spool: the next start stores it again
            logger.error("cannot write the spool %s: %s", self.spool.path, err)
        self.spool.transcript_states[tid] = "stored"
        self.spool.transcripts.pop(tid, None)
        self.spool.transcript_times.pop(tid, None)
        self.counters.transcripts += 1
        if self.manifest is not None:
            try:
                await asyncio.to_thread(self.manifest.mark_transcript, rid, key)
            except ManifestError as err:
                logger.warning("%s", err)
        logger.info("transcript %s of recording %s: stored at %s", tid, rid, stored.location)
        return True

    # -- workers --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the downloader, queue what the spool left pending and start the workers."""
        self.downloader = await self._in_context(self._open_downloader())
        resumed = self.spool.pending()
        for event in resumed:
            self._queue.put_nowait(event.recording_id)
        if resumed:
            logger.warning("resuming %d spooled recording(s) not archived yet", len(resumed))
        if count := self.transcripts_waiting():
            logger.info(
                "%d transcript(s) in the spool not stored yet: each is stored once its "
                "recording is archived",
                count,
            )
        waiting = {event.recording_id for event in self.spool.transcripts.values()}
        for rid in waiting:
            if self._states.get(rid) != "pending":  # the others are placed after download
                self._place_later(rid)
        self._dispatcher = asyncio.create_task(self._dispatch(), context=self._context)

    async def _in_context(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run `coro` in the workers' context (a task of its own, awaited)."""
        return await asyncio.create_task(coro, context=self._context)

    async def _open_downloader(self) -> Downloader:
        downloader = Downloader(
            self._session,
            self.dest,
            lookup=self._session.recordings.get,
            concurrency=self.concurrency,
            manifest=self.manifest,
            metadata=self.metadata,
        )
        try:
            await downloader.open()
        except BaseException:
            await downloader.close()
            raise
        return downloader

    async def _reopen(self) -> None:
        """Replace a downloader a destination-wide failure stopped, once the downloads in
        flight have ended: the new one checks the destination again, so the receiver
        recovers when the disk has room or the bucket is back."""
        self._stopped = False
        if self._downloads:
            await asyncio.wait(set(self._downloads))
        try:
            if self.downloader is not None:
                await self.downloader.close()  # cancelled here, `close` closes it again
                self.downloader = None
            self.downloader = await self._open_downloader()
        except Exception as err:  # the next download tries again; this one fails
            self.downloader = None
            logger.error("cannot open %s: %s: %s", self.where, type(err).__name__, err)

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                rid = await self._queue.get()
                if self._stopped or self.downloader is None:
                    await self._reopen()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._download(rid))
            self._downloads.add(task)
            task.add_done_callback(self._downloads.discard)

    async def _fetch(self, rid: str) -> tuple[bool, object, str | None]:
        """Archive one recording through the receiver's downloader: (failed, error, its key
        in the sink)."""
        downloader = self.downloader
        if downloader is None:
            return True, f"the destination {self.where} could not be opened", None
        try:
            result = await downloader.one(rid)
        except Exception as err:  # a bug, not a transfer failure: keep serving the rest
            logger.exception("download of %s raised", rid)
            return True, describe(err), None  # no URL query, no raw bytes in the spool
        error = result.error
        if isinstance(error, StorageError) and error.destination_wide:
            self._stopped = True  # the downloader starts nothing more: reopen it
        failed = result.status is DownloadStatus.FAILED
        return failed, error, None if failed else downloader.batch.key_of(result)

    async def _download(self, rid: str) -> None:
        try:
            failed, error, key = await self._fetch(rid)
        finally:
            self._slots.release()
        state: State = "failed" if failed else "archived"
        record: dict[str, Any] = {"op": state, "recording_id": rid, "at": time.time()}
        if error is not None:
            record["error"] = str(error)
        if key is not None:
            record["key"] = key
            self.spool.keys[rid] = key
        try:
            await asyncio.to_thread(self.spool.append, record)
        except OSError as err:  # still pending in the spool: the next start retries it
            logger.error("cannot write the spool %s: %s", self.spool.path, err)
        self._set_state(rid, state)
        self.spool.events.pop(rid, None)
        if state == "failed":
            self.counters.failed += 1
            logger.warning("recording %s: failed: %s", rid, error)
            return
        self.counters.archived += 1
        logger.info("recording %s: archived", rid)
        retry, self._unplaced = self._unplaced, set()  # the destination takes writes again
        if any(event.recording_id == rid for event in self.spool.transcripts.values()):
            retry.add(rid)
        for waiting in retry:
            self._place_later(waiting)

    async def close(self, drain_seconds: float = DEFAULT_DRAIN_SECONDS) -> None:
        """Stop taking work, give in-flight downloads `drain_seconds`, cancel the rest.

        Whatever did not finish stays pending in the spool for the next start (a cancelled
        transfer keeps its `.part` file for resume).
        """
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None
        downloads = set(self._downloads)
        if downloads:
            _, late = await asyncio.wait(downloads, timeout=max(0.0, drain_seconds))
            for task in late:
                task.cancel()
            await asyncio.gather(*downloads, return_exceptions=True)
            if late:
                logger.warning("%d download(s) cut short; they stay in the spool", len(late))
        if placements := set(self._placements):
            _, late = await asyncio.wait(placements, timeout=max(0.0, drain_seconds))
            for task in late:
                task.cancel()
            await asyncio.gather(*placements, return_exceptions=True)
        downloader, self.downloader = self.downloader, None
        if downloader is not None:
            await self._in_context(downloader.close())

    # -- backstop -------------------------------------------------------------------------

    async def sync_recent(self, window: float) -> int:
        """List recordings added in the last `window` seconds and queue those not yet
        archived or queued; return how many were queued. A recording without an `add_time`
        is queued too: the listing's own filter returned it, and one fetch too many beats
        one recording missed."""
        cutoff = datetime.now(UTC) - timedelta(seconds=window)
        # Vobiz does not confirm add_time filters for listing, and reads naive times in its
        # own zone: ask a day wider than needed and filter exactly here.
        pager = self._session.recordings.list(
            limit=100, add_time__gte=(cutoff - timedelta(days=1)).replace(tzinfo=None)
        )
        queued = 0
        async for recording in pager:
            known = self._states.get(recording.recording_id)
            too_old = recording.add_time is not None and recording.add_time < cutoff
            if too_old or known in ("pending", "archived"):
                continue
            event = RecordingEvent(
                recording_id=recording.recording_id,
                shape="sync",
                call_uuid=recording.call_uuid,
            )
            outcome = await self._submit(event, ())
            if outcome is SubmitOutcome.BUSY:
                break
            if outcome is SubmitOutcome.ACCEPTED:
                queued += 1
        if queued:
            logger.warning("backstop sync queued %d recording(s) no callback announced", queued)
        return queued


# -- serving ------------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8000` for IPv6) for `--listen`."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from `90`, `45s`, `30m`, `1h`, `1.5h`, `1d` or `500ms` (for `--sync-every`)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m or 1h, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_basic_auth(text: str) -> tuple[str, str]:
    """`USER:PASS` for `--basic-auth` (the message never repeats what was given)."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected USER:PASS")
    return user, password


def public_url(text: str) -> str:
    """`--public-url`: an absolute http(s) URL without credentials (the query is dropped
    before signing)."""
    try:
        signed_url(text)
    except ConfigurationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _is_remote(dest: str) -> bool:
    return "://" in dest


def default_spool_path(dest: str) -> Path:
    """Inside a destination folder, or under the user's state directory for a remote one."""
    if not _is_remote(dest):
        return Path(dest) / SPOOL_NAME
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    digest = hashlib.sha256(dest.encode()).hexdigest()[:16]
    return Path(state) / "vobiz-async" / f"webhooks-{digest}.spool.jsonl"


@attrs.frozen
class ServeConfig:
    """Everything `serve` needs; the secrets never appear in its repr."""

    public_url: str
    dest: str
    auth_id: str | None = None
    auth_token: str | None = attrs.field(default=None, repr=False)
    base_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    parent_auth_token: str | None = attrs.field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = attrs.field(default=None, repr=False)
    spool: str | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    sync_every: float | None = None
    max_body: int = MAX_BODY
    #: "sidecar": store each recording's wire object beside it (`--metadata sidecar`).
    metadata: Metadata | None = None
    #: The index file (`--index`): default `<dest>/vobiz-manifest.jsonl` for a folder, none
    #: for `s3://` unless given (then a local file, as `download --index`).
    index: str | None = None
    #: `s3://` only: the endpoint and region (`S3Sink`'s `endpoint_url` and `region`).
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    #: `s3://` only: what every object the receiver writes carries (recordings, sidecars,
    #: transcripts), `S3Sink`'s keywords of the same names.
    storage_class: str | None = None
    sse: Encryption | None = None
    sse_kms_key_id: str | None = None
    object_lock_mode: LockMode | None = None
    object_lock_retain_days: int | None = None
    object_lock_legal_hold: bool = False

    def s3_settings(self) -> dict[str, Any]:
        """The storage, encryption and Object Lock keywords for `S3Sink`."""
        return {name: getattr(self, name) for name in SETTING_NAMES}


def _open_storage(config: ServeConfig) -> tuple[Spool, Manifest | None]:
    """Create `--out` and the spool's folder when missing; load the spool and the index
    (`config.index`, else a folder's own; none for object storage without one)."""
    remote = _is_remote(config.dest)
    if not remote:
        Path(config.dest).mkdir(parents=True, exist_ok=True)
    spool_path = Path(config.spool) if config.spool else default_spool_path(config.dest)
    spool_path.parent.mkdir(parents=True, exist_ok=True)
    spool = Spool(spool_path)
    try:
        spool.lock()
        spool.compact()
    except BaseException:
        spool.close()
        raise
    if config.index:
        index_path: Path | None = Path(config.index)
    else:
        index_path = None if remote else Path(config.dest) / MANIFEST_NAME
    try:
        manifest = None if index_path is None else Manifest(index_path)
    except BaseException:
        spool.close()
        raise
    return spool, manifest


def _destination(config: ServeConfig, manifest: Manifest | None) -> str | S3Sink:
    """A folder as given, or the `S3Sink` of an `s3://` destination with the config's
    endpoint, region and settings (and the index, for the sha256s it knows). Settings for
    a folder are a `ConfigurationError`."""
    url = s3_destination(config.dest)
    settings = config.s3_settings()
    if url is None:
        given = [name for name, value in settings.items() if value]
        if given or config.s3_endpoint_url or config.s3_region:
            what = (
                given[0] if given else "s3_endpoint_url" if config.s3_endpoint_url else "s3_region"
            )
            raise ConfigurationError(
                f"{what} applies to s3:// destinations, not the folder {config.dest}"
            )
        return config.dest
    return S3Sink.from_url(
        url,
        endpoint_url=config.s3_endpoint_url,
        region=config.s3_region,
        index=manifest,
        **settings,
    )


async def _check_bucket(sink: S3Sink) -> None:
    """Before listening, for a sink with settings: the bucket is there, takes the
    credentials and the storage, encryption and Object Lock settings (`S3Sink.prepare`: a
    destination-wide `StorageError`, one line, when it does not); nothing is written to it.
    A receiver must not answer 200 for recordings it could only store ungoverned or not at
    all. Without settings a bucket missing at start is not fatal: each download checks it
    again, so the receiver recovers once it is there."""
    try:
        await sink.prepare()
    finally:
        await sink.close()


async def _sync_loop(receiver: Receiver, every: float) -> None:
    while True:
        try:
            await receiver.sync_recent(every * SYNC_WINDOW_FACTOR)
        except Exception as err:  # a failed sync must not stop the receiver
            logger.warning("backstop sync failed: %s: %s", type(err).__name__, err)
        await asyncio.sleep(every)


async def serve(config: ServeConfig, *, on_ready: Callable[[str], object] | None = None) -> int:
    """Run the receiver until SIGTERM (exit 0) or cancellation (Ctrl-C: re-raised).

    Checks the credentials first (`AuthenticationError` for a bad token) and, for `s3://`
    with storage, encryption or Object Lock settings, the bucket with them (a
    destination-wide `StorageError` when it refuses one, before anything listens), resumes
    what the spool left pending, then answers on the public URL's path and `/healthz`. On
    the way out it stops accepting, then drains in-flight downloads for up to
    `drain_seconds`.
    """
    token = config.auth_token or os.environ.get("VOBIZ_AUTH_TOKEN")
    if not token:
        raise ConfigurationError(
            "the auth token is missing: pass --auth-token or set VOBIZ_AUTH_TOKEN"
        )
    basic = config.basic_auth
    if basic is None and (text := os.environ.get("VOBIZ_WEBHOOK_BASIC_AUTH")):
        try:
            basic = parse_basic_auth(text)
        except argparse.ArgumentTypeError:
            raise ConfigurationError("VOBIZ_WEBHOOK_BASIC_AUTH must be USER:PASS") from None
    verifier = WebhookVerifier(
        config.public_url,
        token,
        parent_auth_token=config.parent_auth_token or os.environ.get("VOBIZ_PARENT_AUTH_TOKEN"),
        basic_auth=basic,
    )
    async with AsyncSession(config.auth_id, token, base_url=config.base_url) as session:
        await session.check_credentials()
        spool, manifest = await asyncio.to_thread(_open_storage, config)
        try:
            dest = _destination(config, manifest)
            if isinstance(dest, S3Sink) and dest.has_settings:
                await _check_bucket(dest)
            receiver = Receiver(
                session,
                dest,
                spool,
                queue_size=config.queue_size,
                concurrency=config.concurrency,
                manifest=manifest,
                metadata=config.metadata,
            )
            await _run(receiver, verifier, config, on_ready)
        finally:
            spool.close()
            if manifest is not None:
                manifest.close()
    return 0


async def _run(
    receiver: Receiver,
    verifier: WebhookVerifier,
    config: ServeConfig,
    on_ready: Callable[[str], object] | None,
) -> None:
    """Serve until SIGTERM or cancellation, then stop accepting and drain."""
    from aiohttp import web  # here: the CLI's other commands do not pay for its import

    from .listener import GuardedRunner

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    runner = GuardedRunner(  # bounded header time, idle keep-alive and connections
        create_app(verifier, receiver, max_body=config.max_body),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=2.0,
    )
    sync: asyncio.Task[None] | None = None
    try:
        await receiver.start()
        await runner.setup()
        await web.TCPSite(runner, config.host, config.port).start()
        if config.sync_every:
            sync = asyncio.create_task(_sync_loop(receiver, config.sync_every))
        host, port = runner.addresses[0][:2]
        if on_ready is not None:
            on_ready(f"http://{host}:{port}{URL(verifier.public_url).path}")
        await stop.wait()
        logger.warning("SIGTERM: stopping; draining downloads for %ss", config.drain_seconds)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
        if sync is not None:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
        await runner.cleanup()
        await receiver.close(config.drain_seconds)
