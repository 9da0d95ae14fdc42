"""What is at risk at Vobiz and what could be released there (pure; `status` does the I/O).

Vobiz deletes every recording `retention_days` (30) after its `add_time` and bills for what
it stores. A listed recording the archive does not hold is *missing*; a missing one whose
deletion is less than `warn_hours` away, or past, is *at risk*; one the archive holds is
*releasable*, and its `monthly_recording_storage_amount` is what deleting it at Vobiz saves.
A recording whose `add_time` is unreadable is counted at risk: nothing proves it is not.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from .models import Recording

__all__ = ["AT_RISK_IDS_KEPT", "CustodyStatus", "StatusTally", "expires_within"]

#: `at_risk_ids` names at most this many recordings (the count is always whole).
AT_RISK_IDS_KEPT = 100


def expires_within(
    recording: Recording, now: datetime, *, retention_days: float, warn_hours: float
) -> bool:
    """Whether Vobiz deletes `recording` less than `warn_hours` from `now` (or already
    should have); an unreadable `add_time` counts as expiring."""
    if recording.add_time is None:
        return True
    expires = recording.add_time + timedelta(days=retention_days)
    return expires - now < timedelta(hours=warn_hours)


@attrs.frozen
class CustodyStatus:
    """The `status` command's answer; `to_json()` is its `--json` object, key for key."""

    at_vobiz: int
    archived: int
    missing: int
    at_risk: int
    at_risk_ids: tuple[str, ...]
    releasable: int
    releasable_amount: Decimal
    released: int

    def to_json(self) -> dict[str, Any]:
        """Exactly the documented keys; the amount as a decimal string."""
        return {
            "at_vobiz": self.at_vobiz,
            "archived": self.archived,
            "missing": self.missing,
            "at_risk": self.at_risk,
            "at_risk_ids": list(self.at_risk_ids),
            "releasable": self.releasable,
            "releasable_amount": str(self.releasable_amount),
            "released": self.released,
        }


@attrs.define
class StatusTally:
    """Counts a listing as it streams by, so that millions of recordings cost no memory."""

    now: datetime
    retention_days: float = 30.0
    warn_hours: float = 72.0
    at_vobiz: int = 0
    archived: int = 0
    at_risk: int = 0
    at_risk_ids: list[str] = attrs.field(factory=list)
    amount: Decimal = Decimal(0)

    def add(self, recording: Recording, *, archived: bool) -> None:
        """Count one listed recording, held by the archive or not."""
        self.at_vobiz += 1
        if archived:
            self.archived += 1
            self.amount += recording.monthly_recording_storage_amount or Decimal(0)
            return
        risky = expires_within(
            recording, self.now, retention_days=self.retention_days, warn_hours=self.warn_hours
        )
        if risky:
            self.at_risk += 1
            if len(self.at_risk_ids) < AT_RISK_IDS_KEPT:
                self.at_risk_ids.append(recording.recording_id)

    def status(self, *, released: int) -> CustodyStatus:
        """The answer, with `released`: the index's recordings already deleted at Vobiz."""
        return CustodyStatus(
            at_vobiz=self.at_vobiz,
            archived=self.archived,
            missing=self.at_vobiz - self.archived,
            at_risk=self.at_risk,
            at_risk_ids=tuple(self.at_risk_ids),
            releasable=self.archived,
            releasable_amount=self.amount,
            released=released,
        )
