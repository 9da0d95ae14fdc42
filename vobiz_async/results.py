"""What a download batch reports: each recording's result, the batch's report, and the
progress events a caller can follow it by."""

from __future__ import annotations

import collections
import enum
import os
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Self

import attrs

from .errors import VobizError
from .pacing import PacingReport
from .types import Item, Layout, Source  # re-exported: they are defined in `types`

__all__ = [
    "DeleteFailure",
    "DownloadReport",
    "DownloadResult",
    "DownloadStatus",
    "Item",
    "Layout",
    "ProgressCallback",
    "ProgressEvent",
    "ProgressKind",
    "Source",
    "result_event",
]


class DownloadStatus(enum.StrEnum):
    """What happened to one recording."""

    DOWNLOADED = "downloaded"
    SKIPPED = "skipped"
    FAILED = "failed"


def _optional_str(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


@attrs.frozen
class DownloadResult:
    """The outcome for one input item."""

    recording_id: str
    status: DownloadStatus
    # Kept as a string: a batch of 100,000 results holds 100,000 of these, and a Path costs
    # several times the memory of its string. `path` gives the Path.
    _path: str | None = attrs.field(default=None, converter=_optional_str)
    #: Where the recording is, downloaded or skipped: the file's path for a folder,
    #: `s3://bucket/key` for object storage; None when it failed.
    location: str | None = None
    size: int = 0
    sha256: str | None = None
    container: str | None = None
    attempts: int = 0
    error: VobizError | None = None
    #: Deleted at Vobiz (by `move`) after its archived copy was proven.
    deleted: bool = False

    @property
    def path(self) -> Path | None:
        """Where the recording is on disk (downloaded or skipped into a folder), else None
        (also for object storage: see `location`)."""
        return None if self._path is None else Path(self._path)

    @property
    def ok(self) -> bool:
        """Downloaded or skipped."""
        return self.status is not DownloadStatus.FAILED


@attrs.frozen
class DeleteFailure:
    """A recording `move` archived but did not delete at Vobiz, and why (its copy stays)."""

    recording_id: str
    error: VobizError

    def to_json(self) -> dict[str, str]:
        return {"recording_id": self.recording_id, "error": str(self.error)}


@attrs.frozen
class DownloadReport:
    """The batch's results in input order, with totals.

    `results` holds every item's result for batches of up to `RESULTS_KEPT` items; above
    that it holds the first `RESULTS_KEPT` (`truncated` is True), while `failed` still lists
    every failure and `counts` and `total_bytes` count every item. Every item's result is
    also delivered as it happens, through `on_progress` (`event.result`).
    """

    results: list[DownloadResult]
    elapsed: float
    #: More items than `RESULTS_KEPT`: `results` holds only the first ones.
    truncated: bool = False
    _later_failures: list[DownloadResult] = attrs.field(factory=list, alias="later_failures")
    _tally: Mapping[DownloadStatus, int] | None = attrs.field(default=None, alias="tally")
    _bytes: int | None = attrs.field(default=None, alias="bytes_downloaded")
    #: What the batch's rate-limit pacing did (None: a batch that had no gate).
    rate_limit: PacingReport | None = None
    #: `move`: how many recordings were deleted at Vobiz (of every one, truncated or not).
    _deleted: int | None = attrs.field(default=None, alias="deleted_count")
    #: `move`: recordings archived but not deleted at Vobiz, each with its reason.
    delete_failures: list[DeleteFailure] = attrs.field(factory=list)
    #: `move`: the one line saying why deletions stopped early (the `max_delete` cap, or
    #: credentials Vobiz refused for DELETE); None when nothing stopped them.
    release_stopped: str | None = None

    def rate_limit_summary(self) -> str | None:
        """One line such as "rate limited 12 times: concurrency lowered to 6 for 40 s",
        or None when nothing was rate limited."""
        return None if self.rate_limit is None else self.rate_limit.describe()

    def _with(self, status: DownloadStatus) -> list[DownloadResult]:
        return [r for r in self.results if r.status is status]

    @property
    def counts(self) -> Mapping[str, int]:
        """How many items ended in each status, truncated or not, and (`"deleted"`) how many
        were deleted at Vobiz by `move` (0 for a download)."""
        counts: dict[str, int] = {}
        if self._tally is not None:
            for status, number in self._tally.items():
                counts[status] = number
        else:
            counted = collections.Counter(r.status for r in self.results)
            for status in DownloadStatus:
                counts[status] = counted[status]
        counts["deleted"] = len(self.deleted) if self._deleted is None else self._deleted
        return counts

    @property
    def downloaded(self) -> list[DownloadResult]:
        """Results that were fetched and verified in this run."""
        return self._with(DownloadStatus.DOWNLOADED)

    @property
    def skipped(self) -> list[DownloadResult]:
        """Results that were already on disk."""
        return self._with(DownloadStatus.SKIPPED)

    @property
    def failed(self) -> list[DownloadResult]:
        """Every result that could not be saved, truncated or not; each carries its error."""
        return self._with(DownloadStatus.FAILED) + self._later_failures

    @property
    def deleted(self) -> list[DownloadResult]:
        """Results deleted at Vobiz in this run (by `move`), of those `results` holds."""
        return [r for r in self.results if r.deleted]

    def with_release(
        self,
        *,
        deleted: AbstractSet[str],
        replaced: Mapping[str, DownloadResult],
        failures: Sequence[DeleteFailure],
        stopped: str | None,
    ) -> Self:
        """This report after `move`'s release pass: the results of recordings deleted at
        Vobiz marked `deleted`, those fetched again (`replaced`: their archived copy had
        changed) in place of their skipped results, and the counts to match."""
        tally = {status: self.counts[status] for status in DownloadStatus}
        fetched = 0
        kept = {r.recording_id for r in self.results}
        later = list(self._later_failures)
        for result in replaced.values():
            tally[DownloadStatus.SKIPPED] -= 1
            tally[result.status] += 1
            if result.status is DownloadStatus.DOWNLOADED:
                fetched += result.size
            elif result.status is DownloadStatus.FAILED and result.recording_id not in kept:
                later.append(result)
        results = [
            attrs.evolve(now, deleted=True) if now.recording_id in deleted else now
            for now in (replaced.get(r.recording_id, r) for r in self.results)
        ]
        return attrs.evolve(
            self,
            results=results,
            later_failures=later,
            tally=tally,
            bytes_downloaded=self.total_bytes + fetched,
            deleted_count=len(deleted),
            delete_failures=list(failures),
            release_stopped=stopped,
        )

    @property
    def total_bytes(self) -> int:
        """Bytes of the recordings this run downloaded (of every one, truncated or not)."""
        if self._bytes is not None:
            return self._bytes
        return sum(r.size for r in self.downloaded)

    @property
    def ok(self) -> bool:
        """Nothing failed (and, for `move`, no archived recording failed to be deleted)."""
        return not self.failed and not self.delete_failures


class ProgressKind(enum.StrEnum):
    """The kinds of progress event."""

    STARTED = "started"
    BYTES = "bytes"
    FINISHED = "finished"
    SKIPPED = "skipped"
    FAILED = "failed"
    #: A 429 (or 503 with Retry-After) lowered the batch's pace; `pacing` says to what.
    RATE_LIMITED = "rate_limited"


@attrs.frozen
class ProgressEvent:
    """A cheap progress notification; `bytes` is the increment for BYTES events, `pacing`
    the batch's new concurrency and start rate for RATE_LIMITED ones."""

    kind: ProgressKind
    recording_id: str
    bytes: int = 0
    total: int | None = None
    result: DownloadResult | None = None
    pacing: PacingReport | None = None


ProgressCallback = Callable[[ProgressEvent], object]


_RESULT_KINDS = {
    DownloadStatus.DOWNLOADED: ProgressKind.FINISHED,
    DownloadStatus.SKIPPED: ProgressKind.SKIPPED,
    DownloadStatus.FAILED: ProgressKind.FAILED,
}


def result_event(result: DownloadResult) -> ProgressEvent:
    """The progress event that reports an item's final result."""
    kind = _RESULT_KINDS[result.status]
    return ProgressEvent(kind, result.recording_id, total=result.size, result=result)
