"""`StatusTally`: what is at risk at Vobiz and what could be released (table tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from vobiz_async.custody import AT_RISK_IDS_KEPT, StatusTally, expires_within
from vobiz_async.models import Recording

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _recording(rid: str, age: timedelta | None, amount: str | None = "0.0025") -> Recording:
    return Recording(
        recording_id=rid,
        recording_url=f"https://media.vobiz.ai/{rid}.mp3",
        add_time=None if age is None else NOW - age,
        monthly_recording_storage_amount=None if amount is None else Decimal(amount),
    )


@pytest.mark.parametrize(
    ("age", "expiring"),
    [
        (timedelta(days=1), False),
        (timedelta(days=27), False),  # 72 h left: not less than the warning
        (timedelta(days=27, seconds=1), True),
        (timedelta(days=29), True),
        (timedelta(days=31), True),  # past: Vobiz may delete it any moment
        (None, True),  # unreadable add_time: nothing proves it is safe
    ],
)
def test_expires_within(age: timedelta | None, expiring: bool) -> None:
    """A recording is at risk when its deletion is less than warn_hours away, or past."""
    recording = _recording("r", age)
    assert expires_within(recording, NOW, retention_days=30, warn_hours=72) is expiring


def test_tally_counts_every_key() -> None:
    """Archived ones are releasable (their amounts summed); missing ones may be at risk."""
    tally = StatusTally(NOW)
    tally.add(_recording("a", timedelta(days=2), "0.0025"), archived=True)
    tally.add(_recording("b", timedelta(days=29), "0.0100"), archived=True)
    tally.add(_recording("c", timedelta(days=29)), archived=False)
    tally.add(_recording("d", timedelta(days=3)), archived=False)
    tally.add(_recording("e", None, None), archived=False)
    assert tally.status(released=7).to_json() == {
        "at_vobiz": 5,
        "archived": 2,
        "missing": 3,
        "at_risk": 2,
        "at_risk_ids": ["c", "e"],
        "releasable": 2,
        "releasable_amount": "0.0125",
        "released": 7,
    }


def test_tally_names_at_most_a_hundred() -> None:
    """The count of recordings at risk is whole; only the first hundred are named."""
    tally = StatusTally(NOW, retention_days=30, warn_hours=72)
    for n in range(AT_RISK_IDS_KEPT + 5):
        tally.add(_recording(f"r{n}", timedelta(days=30)), archived=False)
    status = tally.status(released=0)
    assert status.at_risk == AT_RISK_IDS_KEPT + 5
    assert len(status.at_risk_ids) == AT_RISK_IDS_KEPT
