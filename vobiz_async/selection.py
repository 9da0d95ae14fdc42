"""Which recordings a run handles: by time, age, number, duration, type or call (pure).

A `Selection` is applied to every listed recording on the client, always: Vobiz documents
only `recording_type` and `call_uuid` as list filters, so a server that ignores the others
must never widen what is archived or deleted. What is sent to the server is only what
cannot narrow the listing wrongly: the documented filters, and the time bounds widened by
a day (a server that reads them in another zone still returns every recording the client
keeps). A recording whose field a selection needs is missing or unreadable is left out and
counted (`Verdict.UNREADABLE`), never included by accident.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import attrs

from .models import Recording

__all__ = ["Selection", "Verdict", "digits", "parse_age", "parse_when"]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
#: What the server's time bounds are widened by (see the module's doc).
_SERVER_MARGIN = timedelta(days=1)
_SERVER_TIME = "%Y-%m-%d %H:%M:%S"


def parse_when(text: str) -> datetime:
    """An ISO 8601 date or date-time as an aware datetime; UTC when it has no offset.

    `2026-05-03` is that day's midnight UTC; `2026-05-03T09:30`, `2026-05-03 09:30:00+05:30`
    and `2026-05-03T04:00:00Z` are read as written.
    """
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 date or date-time: {text!r} (e.g. 2026-05-03 or "
            "2026-05-03T09:30:00+05:30)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_age(text: str) -> timedelta:
    """An age like `90s`, `15m`, `36h`, `7d`, `2w` or `1d12h` (a bare number is seconds)."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return timedelta(seconds=float(value))
    parts = _AGE_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not an age: {text!r} (e.g. 90s, 15m, 36h, 7d, 2w)")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def digits(number: str) -> str:
    """A phone number's digits only: `+91 98765-43210` and `919876543210` are one number."""
    return "".join(ch for ch in number if ch.isdigit())


class Verdict(enum.Enum):
    """What a selection says of one recording."""

    KEEP = "keep"
    #: Readable, and outside the selection.
    LEAVE = "leave"
    #: A field the selection needs is missing or unreadable: left out, and counted.
    UNREADABLE = "unreadable"


def _when(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    return parse_when(value)


def _age(value: timedelta | str | None) -> timedelta | None:
    return value if value is None or isinstance(value, timedelta) else parse_age(value)


@attrs.frozen
class Selection:
    """Which recordings to handle; every field None selects everything.

    `after` is inclusive (`add_time >= after`) and `before` exclusive (`add_time < before`);
    `min_age` keeps recordings added at least that long ago, `max_age` those added at most
    that long ago, both measured from one `now` per run. Numbers compare by digits only.
    `min_duration` compares with `recording_duration_ms`. Strings are parsed as the CLI's
    flags are (`after="2026-05-01"`, `min_age="7d"`).
    """

    after: datetime | None = attrs.field(default=None, converter=_when)
    before: datetime | None = attrs.field(default=None, converter=_when)
    min_age: timedelta | None = attrs.field(default=None, converter=_age)
    max_age: timedelta | None = attrs.field(default=None, converter=_age)
    from_number: str | None = None
    to_number: str | None = None
    min_duration: timedelta | None = attrs.field(default=None, converter=_age)
    recording_type: str | None = None
    call_uuid: str | None = None

    @property
    def is_empty(self) -> bool:
        """Whether the selection keeps every recording."""
        return all(value is None for value in attrs.astuple(self, recurse=False))

    def window(self, now: datetime) -> tuple[datetime | None, datetime | None, bool]:
        """`(lowest, highest, highest_inclusive)`: the add_time bounds that `now` and the
        dates make; None where unbounded."""
        lows = [t for t in (self.after, _minus(now, self.max_age)) if t is not None]
        low = max(lows) if lows else None
        until = _minus(now, self.min_age)  # inclusive: added at least min_age ago
        if self.before is not None and (until is None or self.before <= until):
            return low, self.before, False
        return low, until, until is not None

    def verdict(self, recording: Recording, now: datetime) -> Verdict:
        """Whether `recording` is selected, left out, or unreadable for this selection."""
        checks = (self._time, self._numbers, self._duration, self._exact)
        verdicts = [check(recording, now) for check in checks]
        if Verdict.UNREADABLE in verdicts:
            return Verdict.UNREADABLE
        return Verdict.LEAVE if Verdict.LEAVE in verdicts else Verdict.KEEP

    def server_filters(self, now: datetime) -> dict[str, str]:
        """The list request's filters: only those that cannot drop a selected recording
        (see the module's doc); the whole selection is applied again on the client."""
        filters: dict[str, str] = {}
        if self.recording_type is not None:
            filters["recording_type"] = self.recording_type
        if self.call_uuid is not None:
            filters["call_uuid"] = self.call_uuid
        low, high, _ = self.window(now)
        if low is not None:
            filters["add_time__gte"] = (low - _SERVER_MARGIN).astimezone(UTC).strftime(_SERVER_TIME)
        if high is not None:
            filters["add_time__lt"] = (high + _SERVER_MARGIN).astimezone(UTC).strftime(_SERVER_TIME)
        return filters

    def _time(self, recording: Recording, now: datetime) -> Verdict:
        low, high, inclusive = self.window(now)
        if low is None and high is None:
            return Verdict.KEEP
        added = recording.add_time
        if added is None:
            return Verdict.UNREADABLE
        if low is not None and added < low:
            return Verdict.LEAVE
        if high is not None and (added > high or (added == high and not inclusive)):
            return Verdict.LEAVE
        return Verdict.KEEP

    def _numbers(self, recording: Recording, now: datetime) -> Verdict:
        pairs = ((self.from_number, recording.from_number), (self.to_number, recording.to_number))
        verdict = Verdict.KEEP
        for wanted, value in pairs:
            if wanted is None:
                continue
            if not value or not digits(value):
                return Verdict.UNREADABLE
            if digits(value) != digits(wanted):
                verdict = Verdict.LEAVE
        return verdict

    def _duration(self, recording: Recording, now: datetime) -> Verdict:
        if self.min_duration is None:
            return Verdict.KEEP
        duration = recording.recording_duration_ms
        if duration is None or not duration.is_finite():
            return Verdict.UNREADABLE
        wanted = Decimal(str(self.min_duration.total_seconds())) * 1000
        return Verdict.KEEP if duration >= wanted else Verdict.LEAVE

    def _exact(self, recording: Recording, now: datetime) -> Verdict:
        pairs = (
            (self.recording_type, recording.recording_type),
            (self.call_uuid, recording.call_uuid),
        )
        verdict = Verdict.KEEP
        for wanted, value in pairs:
            if wanted is None:
                continue
            if value is None:
                return Verdict.UNREADABLE
            if value != wanted:
                verdict = Verdict.LEAVE
        return verdict


def _minus(now: datetime, age: timedelta | None) -> datetime | None:
    return None if age is None else now - age
