"""The library's one cattrs converter, with explicit hooks for Vobiz's wire types.

Decimal strings stay exact (`Decimal`), money arrives as JSON numbers and goes back as
numbers, timestamps are tz-aware, and strings are never coerced from other types (cattrs'
default would turn a null into the string "None"). Unknown keys are ignored: Vobiz adds
fields without notice.

Recordings are structured field by field: only `recording_id` and `recording_url` are
essential, and any other field that is absent, null or unreadable becomes None, with one
warning per field name per process (naming the recording, never a value). A page keeps every
usable recording and lists the objects that are not (`Page.invalid`), so one odd object never
costs the rest of the page. Tests build a `forbid_extra_keys=True` twin as a drift alarm: it
rejects unknown keys and requires every documented field, as the docs describe them.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import UnionType
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import ResponseValidationError
from .models import ExportResult, InvalidRecording, Page, PageMeta, Recording
from .protocol import excerpt, format_timestamp, parse_timestamp

__all__ = ["ESSENTIAL_FIELDS", "make_converter", "structure", "unstructure"]

logger = logging.getLogger("vobiz_async")

T = TypeVar("T")

#: Without these a recording cannot be archived; every other field may be None.
ESSENTIAL_FIELDS = ("recording_id", "recording_url")
#: Fields the documented wire form itself leaves null at times.
_NULLABLE = frozenset({"recording_start_ms", "recording_end_ms", "conference_name", "api_id"})
#: Fields the documented wire form leaves out at times (list items carry no api_id).
_OPTIONAL_KEYS = frozenset({"api_id"})
_MISSING = object()
#: Field names already warned about in this process: one line each, not one per recording.
_warned: set[str] = set()


def _shown(value: Any) -> str:
    """A wire value an error names: a short escaped excerpt of a scalar, else its type (a
    nested container's repr could be megabytes, or recurse past the limit)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return excerpt(repr(value))
    return type(value).__name__


def _structure_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise TypeError(f"expected an integer, got {_shown(value)}")


def _structure_decimal(value: Any, _: object) -> Decimal:
    # A tuple, not `str | int | float`: isinstance is twice as fast with it.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"expected a decimal string or number, got {type(value).__name__}")
    try:
        # repr() keeps a float's shortest round-tripping digits: 0.004 -> Decimal("0.004").
        result = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ValueError(f"not a decimal: {_shown(value)}") from None
    if not result.is_finite():
        raise ValueError(f"not a finite decimal: {_shown(value)}")
    return result


def _structure_optional_decimal(value: Any, _: object) -> Decimal | None:
    """Directly, not through cattrs' generic Optional hook: two per recording listed."""
    return None if value is None else _structure_decimal(value, _)


def _structure_datetime(value: Any, _: type) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected a timestamp string, got {type(value).__name__}")
    return parse_timestamp(value)


def _money_to_wire(value: Decimal | None) -> int | float | str | None:
    """Money goes back as the JSON number the API sends: an int when whole, else a float,
    unless a float would change it; then the exact decimal string (which reads back equal)."""
    if value is None:
        return None
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        return int(value)
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else str(value)


_PLAIN_HOOKS: Mapping[type, Callable[[Any, Any], Any]] = {
    str: _structure_str,
    int: _structure_int,
    Decimal: _structure_decimal,
    datetime: _structure_datetime,
}


def _recording_fields() -> list[tuple[str, Callable[[Any, Any], Any]]]:
    """(name, hook for its non-None type) for every field of `Recording`, in order."""
    hints = typing.get_type_hints(Recording)
    fields = []
    for field in attrs.fields(Recording):
        hint = hints[field.name]
        if isinstance(hint, UnionType):
            (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        fields.append((field.name, _PLAIN_HOOKS[hint]))
    return fields


def _field_problem(name: str, raw: Any, hook: Callable[[Any, Any], Any]) -> tuple[Any, str | None]:
    """The structured value of one field, or None and what is wrong with it."""
    if raw is _MISSING:
        return None, None if name in _OPTIONAL_KEYS else "required field missing"
    if raw is None:
        return None, None if name in _NULLABLE else "null where a value is required"
    try:
        value = hook(raw, None)
    except (TypeError, ValueError) as err:
        return None, f"invalid value ({err})"
    if name in ESSENTIAL_FIELDS and not value.strip():
        return None, "empty"
    return value, None


def _structure_recording(strict: bool) -> Any:
    fields = _recording_fields()
    known = frozenset(name for name, _ in fields)

    def structure_recording(data: Any, _: type) -> Recording:
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a recording object, got {type(data).__name__}")
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for name, hook in fields:
            value, problem = _field_problem(name, data.get(name, _MISSING), hook)
            if problem is not None:
                problems[name] = problem
            elif value is not None:
                values[name] = value
        if strict and (extra := sorted(data.keys() - known)):
            problems["(extra)"] = f"extra fields found ({', '.join(map(str, extra))})"
        fatal = problems if strict else {n: p for n, p in problems.items() if n in ESSENTIAL_FIELDS}
        if fatal:
            raise ValueError("; ".join(f"{problem} @ $.{name}" for name, problem in fatal.items()))
        for name, problem in problems.items():
            _warn_once(name, f"recording {values['recording_id']}", problem)
        return Recording(**values)

    return structure_recording


def _warn_once(name: str, where: str, problem: str) -> None:
    """One WARNING per field name and process: the field, where, and the kind of problem
    (without the value, which the problem's parenthesis may quote)."""
    if name not in _warned:
        _warned.add(name)
        kind = problem.split(" (")[0]
        logger.warning("%s: field %s: %s; it is None (reported once per field)", where, name, kind)


def _meta_int(meta: Mapping[str, Any], name: str, default: int) -> int:
    try:
        return _structure_int(meta[name], int)
    except (KeyError, TypeError):
        problem = "required field missing" if name not in meta else "invalid value"
        _warn_once(f"meta.{name}", "listing", problem)
        return default


def _meta_link(meta: Mapping[str, Any], name: str) -> str | None:
    value = meta.get(name)
    if value is None or isinstance(value, str):
        return value or None
    _warn_once(f"meta.{name}", "listing", "invalid value")
    return None


def _lenient_meta(meta: Any, count: int) -> PageMeta:
    """Pagination metadata as far as it is readable: a page whose `meta` is missing or odd
    still yields its recordings (as a last page when `next` is unreadable), since the page
    size, offset and total only plan the requests; `meta.next` decides whether more follow."""
    if not isinstance(meta, Mapping):
        _warn_once("meta", "listing", "required field missing")
        meta = {}
    offset = _meta_int(meta, "offset", 0)
    return PageMeta(
        limit=_meta_int(meta, "limit", count),
        offset=offset,
        total_count=_meta_int(meta, "total_count", offset + count),
        next=_meta_link(meta, "next"),
        previous=_meta_link(meta, "previous"),
    )


def _structure_page(conv: cattrs.Converter, strict: bool) -> Any:
    def structure_page(value: Any, _: type) -> Page:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a list envelope, got {type(value).__name__}")
        objects = value.get("objects")
        if not isinstance(objects, list):
            raise TypeError("the list envelope has no objects list")
        if strict and not isinstance(value.get("meta"), Mapping):
            raise TypeError("the list envelope has no meta object")
        api_id = value.get("api_id")
        recordings: list[Recording] = []
        invalid: list[InvalidRecording] = []
        for item in objects:
            try:
                recordings.append(conv.structure(item, Recording))
            except (TypeError, ValueError) as err:
                if strict:
                    raise
                invalid.append(_invalid(item, str(err)))
        meta = value.get("meta")
        return Page(
            api_id=api_id if isinstance(api_id, str) else None,
            meta=(conv.structure(meta, PageMeta) if strict else _lenient_meta(meta, len(objects))),
            objects=recordings,
            invalid=invalid,
        )

    return structure_page


def _invalid(item: Any, problem: str) -> InvalidRecording:
    """Report a listed object that is not archivable, keeping its id when readable."""
    raw_id = item.get("recording_id") if isinstance(item, Mapping) else None
    recording_id = raw_id if isinstance(raw_id, str) and raw_id.strip() else None
    logger.warning("listing: skipping recording %s: %s", recording_id or "without an id", problem)
    return InvalidRecording(recording_id, problem)


def make_converter(*, forbid_extra_keys: bool = False) -> cattrs.Converter:
    """A converter with the library's hooks; production code uses the lenient one.

    `forbid_extra_keys=True` builds the tests' drift alarm: unknown keys, and any documented
    field missing or malformed, are errors instead of warnings.
    """
    conv = cattrs.Converter(forbid_extra_keys=forbid_extra_keys)
    # Simple types first: the generated class hooks below look these up.
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(Decimal, _structure_decimal)
    conv.register_structure_hook(Decimal | None, _structure_optional_decimal)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_structure_hook(Recording, _structure_recording(forbid_extra_keys))
    conv.register_unstructure_hook(Decimal, str)
    conv.register_unstructure_hook(datetime, format_timestamp)

    for cls in (PageMeta, ExportResult):
        conv.register_structure_hook(
            cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=forbid_extra_keys)
        )
    conv.register_unstructure_hook(
        Recording,
        make_dict_unstructure_fn(
            Recording,
            conv,
            recording_storage_rate=override(unstruct_hook=_money_to_wire),
            monthly_recording_storage_amount=override(unstruct_hook=_money_to_wire),
            api_id=override(omit_if_default=True),
        ),
    )
    conv.register_structure_hook(Page, _structure_page(conv, forbid_extra_keys))
    return conv


_converter = make_converter()


def structure(data: Any, cls: type[T], *, converter: cattrs.Converter | None = None) -> T:
    """Structure wire data into `cls`, raising `ResponseValidationError` with every problem."""
    try:
        return (converter or _converter).structure(data, cls)
    except RecursionError:
        # Nesting deeper than Python's stack: whatever touched it (cattrs, a repr) gave up.
        raise ResponseValidationError(
            f"unexpected {cls.__name__} shape from Vobiz: nested too deeply", body=None
        ) from None
    except (cattrs.BaseValidationError, TypeError, ValueError) as err:
        if isinstance(err, cattrs.BaseValidationError):
            problems = "; ".join(cattrs.transform_error(err))
        else:
            problems = str(err)
        raise ResponseValidationError(
            f"unexpected {cls.__name__} shape from Vobiz: {problems}", body=data
        ) from err


def unstructure(obj: Any) -> Any:
    """The wire form of a model."""
    return _converter.unstructure(obj)
