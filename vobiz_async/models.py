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

__all__ = ["ExportResult", "Page", "PageMeta", "Recording"]


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


@attrs.frozen
class Recording:
    """One call, conference or trunk recording.

    `recording_format` is the format Vobiz was asked for; the downloader sniffs the bytes,
    which may differ. `recording_type` is an open set: new values may appear.
    """

    recording_id: str
    call_uuid: str
    recording_url: str = attrs.field(repr=False)
    recording_format: str
    recording_type: str
    add_time: datetime = attrs.field(converter=_aware)
    recording_duration_ms: Decimal
    recording_start_ms: Decimal | None
    recording_end_ms: Decimal | None
    rounded_recording_duration: int
    from_number: str
    to_number: str
    conference_name: str | None
    recording_storage_duration: int
    recording_storage_rate: Decimal
    monthly_recording_storage_amount: Decimal
    resource_uri: str
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
class Page:
    """One page of a listing."""

    api_id: str | None
    meta: PageMeta
    objects: list[Recording]

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
