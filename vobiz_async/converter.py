"""The library's one cattrs converter, with explicit hooks for Vobiz's wire types.

Decimal strings stay exact (`Decimal`), money arrives as JSON numbers and goes back as
numbers, timestamps are tz-aware, and strings are never coerced from other types (cattrs'
default would turn a null into the string "None"). Unknown keys are ignored: Vobiz adds
fields without notice. Tests build a `forbid_extra_keys=True` twin as a drift alarm.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import ResponseValidationError
from .models import ExportResult, Page, PageMeta, Recording
from .protocol import format_timestamp, parse_timestamp

__all__ = ["make_converter", "structure", "unstructure"]

T = TypeVar("T")


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
    raise TypeError(f"expected an integer, got {value!r}")


def _structure_decimal(value: Any, _: object) -> Decimal:
    # A tuple, not `str | int | float`: isinstance is twice as fast with it.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"expected a decimal string or number, got {type(value).__name__}")
    try:
        # repr() keeps a float's shortest round-tripping digits: 0.004 -> Decimal("0.004").
        result = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ValueError(f"not a decimal: {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return result


def _structure_optional_decimal(value: Any, _: object) -> Decimal | None:
    """Directly, not through cattrs' generic Optional hook: two per recording listed."""
    return None if value is None else _structure_decimal(value, _)


def _structure_datetime(value: Any, _: type) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected a timestamp string, got {type(value).__name__}")
    return parse_timestamp(value)


def _money_to_wire(value: Decimal) -> int | float | str:
    """Money goes back as the JSON number the API sends: an int when whole, else a float,
    unless a float would change it; then the exact decimal string (which reads back equal)."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        return int(value)
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else str(value)


def _structure_page(conv: cattrs.Converter) -> Any:
    def structure_page(value: Any, _: type) -> Page:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a list envelope, got {type(value).__name__}")
        objects = value.get("objects")
        if objects is None:
            objects = []
        if not isinstance(objects, list):
            raise TypeError("objects must be a list")
        api_id = value.get("api_id")
        return Page(
            api_id=api_id if isinstance(api_id, str) else None,
            meta=conv.structure(value.get("meta"), PageMeta),
            objects=[conv.structure(item, Recording) for item in objects],
        )

    return structure_page


def make_converter(*, forbid_extra_keys: bool = False) -> cattrs.Converter:
    """A converter with the library's hooks; production code uses the lenient one."""
    conv = cattrs.Converter(forbid_extra_keys=forbid_extra_keys)
    # Simple types first: the generated class hooks below look these up.
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(Decimal, _structure_decimal)
    conv.register_structure_hook(Decimal | None, _structure_optional_decimal)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_unstructure_hook(Decimal, str)
    conv.register_unstructure_hook(datetime, format_timestamp)

    for cls in (Recording, PageMeta, ExportResult):
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
    conv.register_structure_hook(Page, _structure_page(conv))
    return conv


_converter = make_converter()


def structure(data: Any, cls: type[T], *, converter: cattrs.Converter | None = None) -> T:
    """Structure wire data into `cls`, raising `ResponseValidationError` with every problem."""
    try:
        return (converter or _converter).structure(data, cls)
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
