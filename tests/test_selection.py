"""`Selection`: which recordings a run handles, decided on the client (table tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import attrs
import pytest

from vobiz_async.models import Recording
from vobiz_async.selection import Selection, Verdict, digits, parse_age, parse_when

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))
BASE = Recording(
    recording_id="r1",
    recording_url="https://media.vobiz.ai/r1.mp3",
    call_uuid="c1",
    recording_type="call",
    add_time=datetime(2026, 5, 3, 9, 45, tzinfo=IST),  # 04:15 UTC
    recording_duration_ms=Decimal("7880.00000"),
    from_number="+91 98765-43210",
    to_number="919812345678",
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-03", datetime(2026, 5, 3, tzinfo=UTC)),
        ("2026-05-03T09:30", datetime(2026, 5, 3, 9, 30, tzinfo=UTC)),
        ("2026-05-03 09:30:00+05:30", datetime(2026, 5, 3, 4, 0, tzinfo=UTC)),
        ("2026-05-03T04:00:00Z", datetime(2026, 5, 3, 4, 0, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    """ISO dates and date-times; UTC when no offset is given."""
    assert parse_when(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "03/05/2026"])
def test_parse_when_refuses(text: str) -> None:
    """Anything but ISO 8601 is a clear ValueError."""
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("36h", 129600),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
        ("45", 45),
        ("1.5h", 5400),
        ("250ms", 0.25),
    ],
)
def test_parse_age(text: str, seconds: float) -> None:
    """rclone-style ages, alone or combined."""
    assert parse_age(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "-1d", "7x", "d7", "1d 2h", "1dd"])
def test_parse_age_refuses(text: str) -> None:
    """A malformed age is a clear ValueError."""
    with pytest.raises(ValueError, match="not an age"):
        parse_age(text)


def test_digits() -> None:
    """Numbers compare by digits only."""
    assert digits("+91 98765-43210") == digits("919876543210") == "919876543210"


@pytest.mark.parametrize(
    ("selection", "changes", "verdict"),
    [
        (Selection(), {}, Verdict.KEEP),
        # after is inclusive, before exclusive, offsets honoured
        (Selection(after="2026-05-03T04:15:00Z"), {}, Verdict.KEEP),
        (Selection(after="2026-05-03T04:15:01Z"), {}, Verdict.LEAVE),
        (Selection(before="2026-05-03T04:15:00Z"), {}, Verdict.LEAVE),
        (Selection(before="2026-05-03T04:15:01Z"), {}, Verdict.KEEP),
        (Selection(after="2026-05-03 09:45:00+05:30"), {}, Verdict.KEEP),
        (Selection(before="2026-05-03"), {}, Verdict.LEAVE),
        (Selection(after="2026-05-03"), {}, Verdict.KEEP),
        # ages from one now: the recording is 29 days 7 h 45 min old
        (Selection(min_age="29d"), {}, Verdict.KEEP),
        (Selection(min_age="30d"), {}, Verdict.LEAVE),
        (Selection(max_age="30d"), {}, Verdict.KEEP),
        (Selection(max_age="29d"), {}, Verdict.LEAVE),
        (Selection(min_age="1d", before="2026-05-03"), {}, Verdict.LEAVE),
        # unreadable time: left out and counted
        (Selection(after="2026-01-01"), {"add_time": None}, Verdict.UNREADABLE),
        (Selection(min_age="1d"), {"add_time": None}, Verdict.UNREADABLE),
        (Selection(recording_type="call"), {"add_time": None}, Verdict.KEEP),
        # numbers by digits
        (Selection(from_number="919876543210"), {}, Verdict.KEEP),
        (Selection(from_number="+91-98765 43210"), {}, Verdict.KEEP),
        (Selection(from_number="+91 98765 43211"), {}, Verdict.LEAVE),
        (Selection(to_number="+91 98123 45678"), {}, Verdict.KEEP),
        (Selection(to_number="+1"), {"to_number": None}, Verdict.UNREADABLE),
        (Selection(from_number="+1"), {"from_number": "anonymous"}, Verdict.UNREADABLE),
        # duration
        (Selection(min_duration="7s"), {}, Verdict.KEEP),
        (Selection(min_duration="7880ms"), {}, Verdict.KEEP),
        (Selection(min_duration="8s"), {}, Verdict.LEAVE),
        (Selection(min_duration="1s"), {"recording_duration_ms": None}, Verdict.UNREADABLE),
        # exact fields
        (Selection(recording_type="conference"), {}, Verdict.LEAVE),
        (Selection(call_uuid="c1"), {}, Verdict.KEEP),
        (Selection(call_uuid="c2"), {"call_uuid": None}, Verdict.UNREADABLE),
        # an unreadable field outweighs a readable mismatch
        (Selection(call_uuid="zz", after="2026-01-01"), {"add_time": None}, Verdict.UNREADABLE),
    ],
)
def test_verdict(selection: Selection, changes: dict[str, object], verdict: Verdict) -> None:
    """Each field's boundary, inclusive or exclusive as documented."""
    assert selection.verdict(attrs.evolve(BASE, **changes), NOW) is verdict


def test_server_filters_never_narrow() -> None:
    """Only documented filters and day-widened time bounds go to the server."""
    selection = Selection(
        after="2026-05-03", before="2026-05-10", from_number="+91 1", recording_type="call"
    )
    assert selection.server_filters(NOW) == {
        "recording_type": "call",
        "add_time__gte": "2026-05-02 00:00:00",
        "add_time__lt": "2026-05-11 00:00:00",
    }
    assert Selection(max_age="1d").server_filters(NOW) == {"add_time__gte": "2026-05-30 12:00:00"}
    assert Selection().server_filters(NOW) == {}
    assert Selection().is_empty
    assert not Selection(call_uuid="x").is_empty
