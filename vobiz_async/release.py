"""`move`'s release pass: delete at Vobiz only what the archive provably holds (issue 24 §3).

It runs on the driver after the engine has returned, so the whole listing (and archiving)
is done before the first DELETE: deletions cannot shift offset pagination, and the local,
process and Ray engines all get it alike. A recording is deleted only when

(a) its archived bytes are proven: verified as received in this run (length and sha256), or
    re-read now through the sink's `digest` and matched to the index's size and sha256;
(b) the sink holds them durably: a folder's file and its directory are fsync'd first (an
    object is complete and stamped once it is listed);
(c) its index entry is committed (read back from the index).

One whose archived copy fails (a) is fetched again (`overwrite`, as `download --repair`
does) and deleted only once the new copy passes. The decisions are pure functions below
(`decide`, `delete_outcome`); `Release` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime

import attrs

from ._files import fsync_path
from .errors import (
    AuthenticationError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    PermissionDeniedError,
    VobizError,
)
from .manifest import Manifest, ManifestEntry
from .pacing import PacingGate, batch_gate
from .results import DeleteFailure, DownloadStatus, ProgressCallback, ProgressEvent
from .sinks import DirectorySink, Sink, Stored

__all__ = [
    "Action",
    "Candidates",
    "Deletion",
    "Release",
    "ReleaseOutcome",
    "Verified",
    "decide",
    "delete_outcome",
]

logger = logging.getLogger("vobiz_async")


@attrs.frozen
class Verified:
    """What this run received and checked of a recording: its length and sha256."""

    size: int
    sha256: str


class Action(enum.StrEnum):
    """What the release pass does with one archived recording."""

    RELEASE = "release"  #: proven: delete it at Vobiz
    REPAIR = "repair"  #: the archived copy is not the indexed one: fetch again, then prove
    KEEP = "keep"  #: not proven: keep it at Vobiz, and report why


def decide(
    entry: ManifestEntry | None,
    *,
    verified: Verified | None,
    stored: Stored | None,
    repaired: bool = False,
) -> tuple[Action, str | None]:
    """Whether a recording may be deleted at Vobiz (pure), and the reason when not.

    `entry` is its committed index entry; `verified` what this run received of it (None
    when it was archived earlier); `stored` what the sink holds now, re-read (None when
    missing or unreadable; only consulted without `verified`); `repaired` when it was
    fetched again already (then a copy that still fails is kept, not fetched a third time).
    """
    if entry is None:
        return Action.KEEP, "not in the index"
    if verified is not None:
        if (verified.size, verified.sha256.lower()) == (entry.size, entry.sha256.lower()):
            return Action.RELEASE, None
        return Action.KEEP, "the index does not hold the copy verified in this run"
    if stored is None:
        problem = "the archived copy is missing or unreadable"
    elif stored.size != entry.size:
        problem = f"the archived copy has {stored.size} bytes, the index {entry.size}"
    elif stored.sha256 is None or stored.sha256.lower() != entry.sha256.lower():
        problem = "the archived copy's sha256 differs from the index's"
    else:
        return Action.RELEASE, None
    return (Action.KEEP, problem) if repaired else (Action.REPAIR, problem)


class Deletion(enum.StrEnum):
    """What a DELETE's answer means for the release pass."""

    DELETED = "deleted"  #: 204, or 404: gone at Vobiz (counted deleted)
    FAILED = "failed"  #: this recording stays; the others go on
    STOP = "stop"  #: Vobiz refused the credentials for DELETE (401/403): no further DELETE


def delete_outcome(error: VobizError | None) -> Deletion:
    """The meaning of a DELETE that raised `error` (None: it succeeded); pure."""
    if error is None or isinstance(error, NotFoundError):
        return Deletion.DELETED
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        return Deletion.STOP
    return Deletion.FAILED


#: What a candidate's value means: verified in this run, or archived earlier (to re-prove).
_EARLIER = None


@attrs.define
class Candidates:
    """The recordings a move may release, collected from the batch's final progress events
    (so every engine, and batches above `RESULTS_KEPT`, give them alike): each id archived
    in this run, with what was verified of it (None: archived earlier, skipped). Only ids
    and hashes are kept. A failed recording is never a candidate, even if repeated."""

    then: ProgressCallback | None = None
    found: dict[str, Verified | None] = attrs.field(factory=dict)
    failed: set[str] = attrs.field(factory=set)

    def __call__(self, event: ProgressEvent) -> None:
        result = event.result
        if result is not None:
            rid = result.recording_id
            if result.status is DownloadStatus.FAILED:
                self.found.pop(rid, None)
                self.failed.add(rid)
            elif rid not in self.failed:
                if result.status is DownloadStatus.DOWNLOADED and result.sha256:
                    self.found[rid] = Verified(result.size, result.sha256)
                else:
                    self.found.setdefault(rid, _EARLIER)
        if self.then is not None:
            self.then(event)


@attrs.define
class ReleaseOutcome:
    """What the release pass did: the ids deleted at Vobiz, those it could not delete (and
    why), those to fetch again, and the line saying why deletions stopped early."""

    deleted: set[str] = attrs.field(factory=set)
    failures: list[DeleteFailure] = attrs.field(factory=list)
    repair: list[str] = attrs.field(factory=list)
    stopped: str | None = None
    #: Proven recordings left at Vobiz because deletions had stopped (cap or credentials).
    left: int = 0


Delete = Callable[[str], Awaitable[None]]
#: Fetches one recording at Vobiz (NotFoundError: gone).
Get = Callable[[str], Awaitable[object]]


class Release:
    """The release pass's I/O: re-read (`digest`), fsync, read the index back, DELETE, and
    stamp `deleted_at`; `concurrency` recordings at a time, at most `max_delete` DELETEs."""

    def __init__(
        self,
        delete: Delete,
        sink: Sink,
        index: Manifest,
        *,
        max_delete: int | None = None,
        concurrency: int = 8,
    ) -> None:
        if max_delete is not None and max_delete < 0:
            raise ValueError(f"max_delete must be >= 0, got {max_delete}")
        self._delete = delete
        self.sink = sink
        self.index = index
        self.max_delete = max_delete
        self.concurrency = max(1, concurrency)
        self.outcome = ReleaseOutcome()
        #: The pass's one politeness: a 429 on a DELETE slows them all (`pacing.py`).
        self.gate = PacingGate(self.concurrency)
        self._started = 0  # DELETEs sent (the cap counts these)
        self._stop: VobizError | None = None

    async def run(
        self, candidates: Mapping[str, Verified | None], *, repaired: bool = False
    ) -> None:
        """Prove and release every candidate; those whose copy fails the proof are added to
        `outcome.repair` (unless `repaired`: then they are kept and reported)."""
        queue = iter(candidates.items())

        async def worker() -> None:
            for rid, verified in queue:  # one shared iterator: each id is taken once
                await self._one(rid, verified, repaired)

        async with self._sink_open():
            with batch_gate(self.gate):  # the workers' requests pass it
                workers = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for task in workers:  # none outlives the pass (the index closes after it)
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
        self._finish_line()

    @contextlib.asynccontextmanager
    async def _sink_open(self) -> AsyncIterator[None]:
        await self.sink.prepare()
        try:
            yield
        finally:
            await self.sink.close()

    async def _one(self, rid: str, verified: Verified | None, repaired: bool) -> None:
        entry = await asyncio.to_thread(self.index.get, rid)
        stored = None
        if verified is None and entry is not None:
            stored = await self._reread(entry)
        action, reason = decide(entry, verified=verified, stored=stored, repaired=repaired)
        if action is Action.REPAIR:
            logger.warning("recording %s: %s; fetching it again before any delete", rid, reason)
            self.outcome.repair.append(rid)
            return
        if action is Action.KEEP:
            error: VobizError = ManifestError(reason) if entry is None else IntegrityError(reason)
            self.outcome.failures.append(DeleteFailure(rid, error))
            return
        assert entry is not None
        try:
            await self._durable(entry)
        except OSError as err:
            self.outcome.failures.append(DeleteFailure(rid, IntegrityError(f"cannot fsync: {err}")))
            return
        await self._release(rid)

    async def _reread(self, entry: ManifestEntry) -> Stored | None:
        """The archived copy as the sink holds it now, re-hashed (None: missing, unreadable)."""
        digest = getattr(self.sink, "digest", None)
        if digest is None:
            return None
        try:
            stored: Stored = await digest(entry.path)
        except (VobizError, OSError) as err:
            logger.info("recording %s: cannot re-read %s: %s", entry.recording_id, entry.path, err)
            return None
        return stored

    async def _durable(self, entry: ManifestEntry) -> None:
        """A folder's file and its directory flushed to the disk (an object is durable once
        stored)."""
        if isinstance(self.sink, DirectorySink):
            path = os.path.join(self.sink.root, entry.path)
            await asyncio.to_thread(_fsync_file_and_folder, path)

    async def _release(self, rid: str) -> None:
        """DELETE one proven recording unless deletions stopped, then stamp `deleted_at`."""
        if self._stop is not None or (
            self.max_delete is not None and self._started >= self.max_delete
        ):
            self.outcome.left += 1
            return
        self._started += 1  # before any await: the cap counts it at once
        try:  # noted first: a run stopped before the stamp below leaves a trace to settle
            await asyncio.to_thread(self.index.mark_delete_requested, rid)
        except ManifestError as err:
            self._started -= 1  # never sent
            self.outcome.failures.append(DeleteFailure(rid, err))
            return
        error: VobizError | None = None
        try:
            await self._delete(rid)
        except VobizError as err:
            error = err
        match delete_outcome(error):
            case Deletion.DELETED:
                self.outcome.deleted.add(rid)
                self._stamp(rid)
            case Deletion.STOP:
                assert error is not None
                if self._stop is None:
                    self._stop = error
                self.outcome.failures.append(DeleteFailure(rid, error))
            case Deletion.FAILED:
                assert error is not None
                self.outcome.failures.append(DeleteFailure(rid, error))

    async def settle_unfinished(self, get: Get, *, skip: Collection[str] = ()) -> int:
        """Stamp `deleted_at` on each entry whose DELETE an earlier run sent but did not
        live to stamp (`Manifest.unsettled_deletions`), once Vobiz answers 404 for it: at
        the time that DELETE was sent. One still at Vobiz stays as it is (a run whose
        listing has it deletes it). `skip`: the ids this run already handled. Returns how
        many were stamped; nothing is deleted here."""
        if self._stop is not None:
            return 0
        found = await asyncio.to_thread(self.index.unsettled_deletions)
        queue = iter([(rid, when) for rid, when in found if rid not in skip])
        stamped: list[str] = []

        async def worker() -> None:
            for rid, when in queue:  # one shared iterator: each id is asked about once
                try:
                    await get(rid)
                except NotFoundError:
                    self._stamp(rid, when)
                    stamped.append(rid)
                    logger.info("recording %s: the DELETE sent at %s had gone through", rid, when)
                except VobizError as err:
                    logger.info("recording %s: cannot ask whether it is deleted: %s", rid, err)

        with batch_gate(self.gate):
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return len(stamped)

    def _stamp(self, rid: str, when: str | None = None) -> None:
        try:
            self.index.mark_deleted(rid, when or datetime.now(UTC).isoformat())
        except ManifestError as err:  # deleted at Vobiz all the same; the archive holds it
            logger.error("recording %s deleted at Vobiz, but %s", rid, err)

    def _finish_line(self) -> None:
        left = self.outcome.left
        if self._stop is not None:
            self.outcome.stopped = (
                f"Vobiz refused the credentials for DELETE ({self._stop}); deletions stopped, "
                f"{left} more archived recording(s) stay at Vobiz"
            )
        elif left:
            self.outcome.stopped = (
                f"the delete cap of {self.max_delete} was reached; {left} archived "
                "recording(s) stay at Vobiz (run again to release them)"
            )


def _fsync_file_and_folder(path: str) -> None:
    fsync_path(path)
    fsync_path(os.path.dirname(path))
