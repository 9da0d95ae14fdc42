"""What the fake reads from a request: the page, the byte range, an export body. Pure."""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Mapping
from typing import Any, Final


class Unsatisfiable(Exception):
    """The Range header asks only for bytes past the end."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return ``(start, stop)`` for a single byte range, None to ignore the header.

    Raise ``Unsatisfiable`` when the range starts past the end (RFC 9110 section 14.1.2).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    stop = size if not last else int(last) + 1
    if last and stop <= start:
        return None  # an invalid range is ignored, not refused
    if start >= size:
        raise Unsatisfiable
    return start, min(stop, size)


def parse_page(query: Mapping[str, str], max_limit: int) -> tuple[int, int] | str:
    """Return ``(limit, offset)`` from a list query, or the 400 message."""
    values = {"limit": 20, "offset": 0}
    for name in values:
        raw = query.get(name, "")
        if raw == "":
            continue
        if not raw.isdigit():
            return f"Invalid value for {name}: {raw!r}; expected a non-negative integer."
        values[name] = int(raw)
    if values["limit"] < 1:
        return "limit must be at least 1."
    return min(values["limit"], max_limit), values["offset"]


_DURATION_KEYS: Final = {"recording_storage_duration"} | {
    f"recording_storage_duration__{op}" for op in ("gt", "gte", "lt", "lte")
}


def _recipient_problem(body: dict[str, Any]) -> str | None:
    recipient = body.get("recipient")
    emails = recipient.get("customer_account") if isinstance(recipient, dict) else None
    if (
        not isinstance(emails, list)
        or not emails
        or not all(isinstance(e, str) and "@" in e for e in emails)
    ):
        return "recipient.customer_account must be a non-empty list of e-mail addresses."
    return None


def _durations(body: dict[str, Any]) -> list[str]:
    return [k for k in body if k.startswith("recording_storage_duration")]


def _choice_problem(body: dict[str, Any]) -> str | None:
    has_range = "from" in body or "to" in body
    if has_range and _durations(body):
        return "Use either from/to or recording_storage_duration, not both."
    if not has_range and not _durations(body):
        return "Either from/to or recording_storage_duration is required."
    return None


def _range_problem(body: dict[str, Any]) -> str | None:
    if "from" not in body and "to" not in body:
        return None
    try:
        start = dt.datetime.strptime(str(body.get("from")), "%Y-%m-%d %H:%M:%S")
        stop = dt.datetime.strptime(str(body.get("to")), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return "from and to must both be given as YYYY-MM-DD HH:MM:SS."
    return "from must not be later than to." if stop < start else None


def _duration_problem(body: dict[str, Any]) -> str | None:
    for key in _durations(body):
        value = body[key]
        if key not in _DURATION_KEYS or not isinstance(value, int) or isinstance(value, bool):
            return f"Invalid filter {key}."
    return None


# The export body's checks, in the order their messages take precedence.
_EXPORT_CHECKS: Final[tuple[Callable[[dict[str, Any]], str | None], ...]] = (
    _recipient_problem,
    _choice_problem,
    _range_problem,
    _duration_problem,
)


def export_problem(body: Any) -> str | None:
    """Return why an export request body is invalid, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    return next((p for check in _EXPORT_CHECKS if (p := check(body)) is not None), None)


PLIVO_FILTERS = (
    "add_time__gte",
    "add_time__gt",
    "add_time__lte",
    "add_time__lt",
    "from_number",
    "to_number",
)


def plivo_filters_keep(query: Mapping[str, str], wire: Mapping[str, Any]) -> bool:
    """Whether a recording's wire form passes the Plivo-style list filters in `query`."""
    from ..converter import structure
    from ..models import Recording
    from ..selection import digits, parse_when

    recording = structure(dict(wire), Recording)
    for key in ("from_number", "to_number"):
        wanted = query.get(key)
        have = getattr(recording, key)
        if wanted is not None and (have is None or digits(have) != digits(wanted)):
            return False
    bounds = [(key, parse_when(query[key])) for key in PLIVO_FILTERS[:4] if key in query]
    if bounds and recording.add_time is None:
        return False
    at = recording.add_time
    return all(at is not None and _COMPARE[key](at, bound) for key, bound in bounds)


_COMPARE: Final[dict[str, Callable[[dt.datetime, dt.datetime], bool]]] = {
    "add_time__gte": operator.ge,
    "add_time__gt": operator.gt,
    "add_time__lte": operator.le,
    "add_time__lt": operator.lt,
}
