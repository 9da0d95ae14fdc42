"""Typed, immutable models of what the Recording API returns.

Structuring and unstructuring go through one private cattrs converter
(`vobiz_async.converter`); these classes only declare the shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timezone
from decimal import Decimal
from typing import Any

import attrs

__all__ = ["ExportResult", "InvalidRecording", "Page", "PageMeta", "Recording"]


def _aware(value: datetime) -> datetime:
    """A timestamp as the wire carries it: a fixed UTC offset.

    A naive time is taken as UTC, as the parser does; a zone (`ZoneInfo`) becomes its offset
    at that moment, so equality does not depend on the zone's rules (PEP 495 makes times in
    a gap or fold unequal to every other zone's).
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value.tzinfo, timezone):
        return value
    offset = value.utcoffset()
    assert offset is not None  # tzinfo is set
    return value.replace(tzinfo=timezone(offset), fold=0)


def _aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


@attrs.frozen
class Recording:
    """One call, conference or trunk recording.

    Only `recording_id` and `recording_url` are essential: every other field is None when
    Vobiz left it out, sent null, or sent something unreadable (the converter logs which
    field, once). `recording_format` is the format Vobiz was asked for; the downloader sniffs
    the bytes, which may differ. `recording_type` is an open set: new values may appear.
    """

    recording_id: str
    recording_url: str = attrs.field(repr=False)
    call_uuid: str | None = None
    recording_format: str | None = None
    recording_type: str | None = None
    add_time: datetime | None = attrs.field(default=None, converter=_aware_or_none)
    recording_duration_ms: Decimal | None = None
    recording_start_ms: Decimal | None = None
    recording_end_ms: Decimal | None = None
    rounded_recording_duration: int | None = None
    from_number: str | None = None
    to_number: str | None = None
    conference_name: str | None = None
    recording_storage_duration: int | None = None
    recording_storage_rate: Decimal | None = None
    monthly_recording_storage_amount: Decimal | None = None
    resource_uri: str | None = None
    api_id: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recording:
        """Structure one recording from its wire form; unknown keys are ignored."""
        from .converter import structure

        return structure(data, cls)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: JSON-serialisable, in the API's own shapes."""
        from .converter import unstructure

        result: dict[str, Any] = unstructure(self)
        return result


@attrs.frozen
class PageMeta:
    """Offset-pagination metadata; `next`/`previous` are relative paths or None."""

    limit: int
    offset: int
    total_count: int
    next: str | None = None
    previous: str | None = None


@attrs.frozen
class InvalidRecording:
    """A listed object that cannot be archived: it has no usable `recording_id` or
    `recording_url`. `recording_id` is kept when it was readable, for the report."""

    recording_id: str | None
    problem: str


@attrs.frozen
class Page:
    """One page of a listing: every usable recording, and the objects that were not."""

    api_id: str | None
    meta: PageMeta
    objects: list[Recording]
    invalid: list[InvalidRecording] = attrs.field(factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Page:
        """Structure a list envelope `{"api_id", "meta", "objects"}`."""
        from .converter import structure

        return structure(data, cls)


@attrs.frozen
class ExportResult:
    """The answer to an export request: Vobiz e-mails the link later."""

    api_id: str | None
    status: str
    message: str | None = None
