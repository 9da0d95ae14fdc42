"""The release pass's decisions (pure, `vobiz_async.release`): when a recording may be deleted
at Vobiz, what a DELETE's answer means, and which results are candidates."""

from __future__ import annotations

import pytest

from vobiz_async.errors import (
    APIConnectionError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    VobizError,
)
from vobiz_async.manifest import ManifestEntry
from vobiz_async.release import Action, Candidates, Deletion, Verified, decide, delete_outcome
from vobiz_async.results import DownloadResult, DownloadStatus, ProgressEvent, result_event
from vobiz_async.sinks import Stored

SHA = "ab" * 32
OTHER = "cd" * 32
ENTRY = ManifestEntry("r1", "r1.mp3", 10, SHA, "mp3", None, "2026-12-01T00:00:00+00:00")


def stored(size: int = 10, sha256: str | None = SHA) -> Stored:
    return Stored("r1.mp3", "/a/r1.mp3", size, sha256=sha256)


@pytest.mark.parametrize(
    ("entry", "verified", "found", "repaired", "action"),
    [
        # no committed index entry: never deleted
        (None, Verified(10, SHA), None, False, Action.KEEP),
        (None, None, stored(), False, Action.KEEP),
        # verified in this run, and the index holds that very copy
        (ENTRY, Verified(10, SHA), None, False, Action.RELEASE),
        (ENTRY, Verified(10, SHA.upper()), None, False, Action.RELEASE),
        # verified, but the index says otherwise (it refused the write, say)
        (ENTRY, Verified(10, OTHER), None, False, Action.KEEP),
        (ENTRY, Verified(11, SHA), None, False, Action.KEEP),
        # archived earlier: re-read now
        (ENTRY, None, stored(), False, Action.RELEASE),
        (ENTRY, None, None, False, Action.REPAIR),  # missing or unreadable
        (ENTRY, None, stored(size=9), False, Action.REPAIR),  # truncated
        (ENTRY, None, stored(sha256=OTHER), False, Action.REPAIR),  # corrupted in place
        (ENTRY, None, stored(sha256=None), False, Action.REPAIR),  # nothing proves it
        # already fetched again once: still failing means kept, not fetched forever
        (ENTRY, None, stored(sha256=OTHER), True, Action.KEEP),
        (ENTRY, None, None, True, Action.KEEP),
    ],
)
def test_decide(
    entry: ManifestEntry | None,
    verified: Verified | None,
    found: Stored | None,
    repaired: bool,
    action: Action,
) -> None:
    got, reason = decide(entry, verified=verified, stored=found, repaired=repaired)
    assert got is action
    assert (reason is None) == (action is Action.RELEASE)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, Deletion.DELETED),
        (NotFoundError("gone", status_code=404), Deletion.DELETED),
        (AuthenticationError("no", status_code=401), Deletion.STOP),
        (PermissionDeniedError("no", status_code=403), Deletion.STOP),
        (ServerError("oops", status_code=500), Deletion.FAILED),
        (APIConnectionError("reset"), Deletion.FAILED),
    ],
)
def test_delete_outcome(error: VobizError | None, outcome: Deletion) -> None:
    assert delete_outcome(error) is outcome


def test_candidates_keep_archived_ids_and_never_a_failed_one() -> None:
    """Downloaded ones with what was verified, skipped ones to re-prove; a failure removes
    its id for good, even when a repeat of it was skipped earlier or later."""
    seen: list[ProgressEvent] = []
    candidates = Candidates(then=seen.append)
    events = [
        DownloadResult("a", DownloadStatus.DOWNLOADED, size=3, sha256=SHA),
        DownloadResult("b", DownloadStatus.SKIPPED, size=3, sha256=SHA),
        DownloadResult("c", DownloadStatus.SKIPPED),  # a repeat, while "c" is pending
        DownloadResult("c", DownloadStatus.FAILED, error=VobizError("x")),
        DownloadResult("c", DownloadStatus.SKIPPED),
        DownloadResult("a", DownloadStatus.SKIPPED),  # a repeat does not undo "verified"
    ]
    for result in events:
        candidates(result_event(result))
    assert candidates.found == {"a": Verified(3, SHA), "b": None}
    assert len(seen) == len(events)
