"""Recording payloads written by others parse: Vobiz's docs and SDK mocks, Plivo's SDK
fixtures, a third-party mock and the seed's own two examples (issue 12, section 1).

Every file under `tests/payloads/` is a payload kept as its author wrote it; where each one
comes from (repository, path, commit, or page) is in `tests/payloads/SOURCES.md`.

The expected values are worked out here from the JSON itself, with the standard library
(`Decimal`, `datetime.fromisoformat`), never from the converter under test: a field the
payload carries in a readable form comes through with that value and type, and a field it
leaves out, sends null or sends unreadable is None.

The strict drift-alarm converter rejects most of these payloads: Plivo's leave out
`from_number`/`to_number` or the storage fields, Vobiz's C# mock leaves out
`conference_name`, `recording_start_ms` and `recording_end_ms`, the OpenAPI list item
carries two undocumented keys (`duration`, `file_format`). `test_strict_converter_names_
every_departure` pins exactly which keys each payload lacks, adds or garbles.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs
import pytest

from vobiz_async import Page, Recording, ResponseValidationError
from vobiz_async.converter import make_converter, structure

PAYLOADS = Path(__file__).parent / "payloads"
STRICT = make_converter(forbid_extra_keys=True)

#: Field name -> the wire type the documented shape gives it.
STR_FIELDS = frozenset(
    {
        "recording_id",
        "recording_url",
        "call_uuid",
        "recording_format",
        "recording_type",
        "from_number",
        "to_number",
        "conference_name",
        "resource_uri",
        "api_id",
    }
)
DECIMAL_FIELDS = frozenset(
    {
        "recording_duration_ms",
        "recording_start_ms",
        "recording_end_ms",
        "recording_storage_rate",
        "monthly_recording_storage_amount",
    }
)
INT_FIELDS = frozenset({"rounded_recording_duration", "recording_storage_duration"})
TIME_FIELDS = frozenset({"add_time"})
FIELDS = STR_FIELDS | DECIMAL_FIELDS | INT_FIELDS | TIME_FIELDS
ESSENTIAL = ("recording_id", "recording_url")
#: Where the documented shape itself sends null (VOBIZ_API.md), and what list items omit.
DOCUMENTED_NULLABLE = frozenset(
    {"recording_start_ms", "recording_end_ms", "conference_name", "api_id"}
)
DOCUMENTED_OPTIONAL = frozenset({"api_id"})

#: Real list payloads whose meta is missing or odd: each must still yield every recording
#: (`test_envelope_parses_and_loses_nothing`); their meta is not compared with the payload.
ODD_META = {
    "vobiz-docs__list_all_recordings_openapi_example.json": "no meta at all",
    "vobiz-csharp-sdk__ListRecordingsTest_MockServerTest_1.json": "meta.previous is an object",
    "vobiz-csharp-sdk__ListRecordingsTest_MockServerTest_2.json": "meta.previous is an object",
    "thirdparty-vobiz-cli__recordings_test_list.json": "meta is only {'next': ''}",
}
#: Real bodies that are not list envelopes at all: no `objects` list to read.
NOT_ENVELOPES = frozenset({"vobiz-docs-old__list_all_recordings.json"})


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def payload_names() -> list[str]:
    return sorted(p.name for p in PAYLOADS.glob("*.json"))


def is_envelope(body: Any) -> bool:
    """A list envelope (also the older docs' retrieve answer), not one flat recording."""
    return isinstance(body, dict) and "objects" in body


SINGLE = [n for n in payload_names() if not is_envelope(load(n)) and n not in NOT_ENVELOPES]
ENVELOPES = [n for n in payload_names() if is_envelope(load(n))]


def envelope_params() -> list[str]:
    """Every list envelope; those with odd meta must still yield every recording."""
    return ENVELOPES


def listed_objects() -> list[Any]:
    """(file, index) of every object in every list payload, broken envelopes included."""
    return [
        pytest.param(name, index, id=f"{name}[{index}]")
        for name in ENVELOPES
        for index in range(len(load(name)["objects"]))
    ]


def every_recording() -> list[Any]:
    """(file, index or None) of every recording-shaped object in the corpus."""
    return [pytest.param(name, None, id=name) for name in SINGLE] + listed_objects()


def recording_at(name: str, index: int | None) -> Any:
    body = load(name)
    return body if index is None else body["objects"][index]


# ------------------------------------------------------------------ the oracle


def expected_value(field: str, raw: Any) -> Any:
    """What a field should become, judged from its JSON value alone; None if unreadable."""
    if raw is None or isinstance(raw, bool):
        return None
    if field in STR_FIELDS:
        return raw if isinstance(raw, str) else None
    if field in INT_FIELDS:
        if isinstance(raw, int):
            return raw
        return int(raw) if isinstance(raw, str) and raw.isdigit() else None
    if field in DECIMAL_FIELDS:
        if isinstance(raw, int):
            return Decimal(raw)
        if isinstance(raw, float):
            return Decimal(repr(raw))
        if not isinstance(raw, str):
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            return None
        return value if value.is_finite() else None
    assert field in TIME_FIELDS
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def archivable(obj: Any) -> bool:
    """Issue 12's rule: a usable recording_id and recording_url make a recording."""
    return isinstance(obj, dict) and all(
        isinstance(obj.get(f), str) and obj[f].strip() for f in ESSENTIAL
    )


def readable_id(obj: Any) -> str | None:
    """The id an unusable object is reported under: its recording_id, if a usable string."""
    raw = obj.get("recording_id") if isinstance(obj, dict) else None
    return raw if isinstance(raw, str) and raw.strip() else None


def assert_fields(rec: Recording, obj: dict[str, Any]) -> None:
    """Every field of `rec` is what `obj` carries for it, with the right type, or None."""
    for field in attrs.fields(Recording):
        name = field.name
        actual = getattr(rec, name)
        expected = expected_value(name, obj[name]) if name in obj else None
        assert actual == expected, name
        if expected is None:
            continue
        assert type(actual) is type(expected), name
        if isinstance(expected, Decimal):
            assert str(actual) == str(expected), f"{name} lost digits"
        if isinstance(expected, datetime):
            assert actual.utcoffset() == expected.utcoffset(), name


def test_corpus_is_complete() -> None:
    """Every payload file is listed in SOURCES.md, and the corpus holds 20 to 36 of them."""
    sources = (PAYLOADS / "SOURCES.md").read_text(encoding="utf-8")
    names = payload_names()

    assert 20 <= len(names) <= 36
    assert [n for n in names if f"`{n}`" not in sources] == []
    assert set(ODD_META) <= set(ENVELOPES)


def test_oracle_reads_the_wire_forms() -> None:
    """The test's own expectations follow the documented wire forms (guards the oracle)."""
    assert expected_value("add_time", "2026-05-07 09:45:35.79276+05:30") == datetime.fromisoformat(
        "2026-05-07T09:45:35.792760+05:30"
    )
    assert expected_value("add_time", "add_time") is None
    assert str(expected_value("recording_duration_ms", "7880.00000")) == "7880.00000"
    assert expected_value("recording_end_ms", {"key": "value"}) is None
    assert expected_value("recording_storage_rate", 0.005) == Decimal("0.005")
    assert expected_value("recording_storage_duration", "723") == 723
    assert expected_value("conference_name", "") == ""


# ------------------------------------------------------------------ lenient: it all parses


@pytest.mark.parametrize("name", SINGLE)
def test_single_recording_parses(name: str) -> None:
    """A flat retrieve body parses; each field is the payload's value or None."""
    body = load(name)

    rec = Recording.from_dict(body)

    assert rec.recording_id == body["recording_id"]
    assert rec.recording_url == body["recording_url"]
    assert_fields(rec, body)


@pytest.mark.parametrize("name", envelope_params())
def test_envelope_parses_and_loses_nothing(name: str) -> None:
    """A list envelope yields its usable recordings in order, reports the rest, loses none."""
    body = load(name)

    page = Page.from_dict(body)

    assert len(page.objects) + len(page.invalid) == len(body["objects"])
    good = [obj for obj in body["objects"] if archivable(obj)]
    assert [r.recording_id for r in page.objects] == [obj["recording_id"] for obj in good]
    for rec, obj in zip(page.objects, good, strict=True):
        assert_fields(rec, obj)
    bad = [obj for obj in body["objects"] if not archivable(obj)]
    assert [i.recording_id for i in page.invalid] == [readable_id(obj) for obj in bad]


@pytest.mark.parametrize("name", [n for n in ENVELOPES if n not in ODD_META])
def test_envelope_meta_comes_through(name: str) -> None:
    """The envelope's api_id and pagination meta are the payload's own."""
    body = load(name)

    page = Page.from_dict(body)

    assert page.api_id == body.get("api_id")
    meta = body["meta"]
    assert (page.meta.limit, page.meta.offset, page.meta.total_count) == (
        meta["limit"],
        meta["offset"],
        meta["total_count"],
    )
    assert (page.meta.next, page.meta.previous) == (meta.get("next"), meta.get("previous"))


@pytest.mark.parametrize(("name", "index"), listed_objects())
def test_listed_object_parses_on_its_own(name: str, index: int) -> None:
    """Each listed object parses alone (even in a rejected envelope), or names what it lacks."""
    obj = load(name)["objects"][index]

    if not archivable(obj):
        missing = [f for f in ESSENTIAL if not (isinstance(obj.get(f), str) and obj[f].strip())]
        assert missing, "a listed object that is not even a JSON object"
        with pytest.raises(ResponseValidationError, match=missing[0]):
            Recording.from_dict(obj)
        return
    assert_fields(Recording.from_dict(obj), obj)


@pytest.mark.parametrize("name", sorted(NOT_ENVELOPES))
def test_body_without_objects_is_a_validation_error(name: str) -> None:
    """The older docs' `recordings` + `pagination` shape is a ResponseValidationError naming why."""
    body = load(name)
    assert "objects" not in body

    with pytest.raises(ResponseValidationError, match=r"no (meta|objects)"):
        Page.from_dict(body)


# ------------------------------------------------------------------ one odd object


@pytest.fixture(name="real_page")
def _real_page() -> dict[str, Any]:
    """Plivo's Java fixture: a real list page of three complete, distinct recordings."""
    body: dict[str, Any] = load("plivo-java__recordingListResponse.json")
    assert len({o["recording_id"] for o in body["objects"]}) == len(body["objects"]) == 3
    return body


@pytest.mark.parametrize(
    ("break_it", "kept_id"),
    [
        pytest.param(lambda o: o.update(recording_url=None), True, id="url-null"),
        pytest.param(lambda o: o.update(recording_url="  "), True, id="url-blank"),
        pytest.param(lambda o: o.update(recording_url=42), True, id="url-number"),
        pytest.param(lambda o: o.pop("recording_url"), True, id="url-missing"),
        pytest.param(lambda o: o.pop("recording_id"), False, id="id-missing"),
        pytest.param(lambda o: o.update(recording_id=""), False, id="id-empty"),
        pytest.param(lambda o: o.update(recording_id=["x"]), False, id="id-list"),
    ],
)
def test_one_malformed_object_among_good_ones(
    real_page: dict[str, Any], break_it: Any, kept_id: bool
) -> None:
    """Good recordings survive one unusable object, reported in page.invalid (id when readable)."""
    body = copy.deepcopy(real_page)
    odd = body["objects"][1]
    odd_id = odd["recording_id"]
    break_it(odd)

    page = Page.from_dict(body)

    first, _, third = real_page["objects"]
    assert [r.recording_id for r in page.objects] == [first["recording_id"], third["recording_id"]]
    assert_fields(page.objects[0], first)
    assert_fields(page.objects[1], third)
    assert len(page.invalid) == 1
    assert page.invalid[0].recording_id == (odd_id if kept_id else None)
    assert ("recording_url" if kept_id else "recording_id") in page.invalid[0].problem


def test_non_object_in_objects_is_reported(real_page: dict[str, Any]) -> None:
    """A listed entry that is not even an object is reported, without an id."""
    body = copy.deepcopy(real_page)
    body["objects"].insert(1, "c2186400-1c8c-1124-a664-0026b945b522")

    page = Page.from_dict(body)

    assert len(page.objects) == 3
    assert [i.recording_id for i in page.invalid] == [None]


def test_malformed_optional_field_keeps_the_recording(real_page: dict[str, Any]) -> None:
    """A bad add_time among good objects costs that field, not the recording."""
    body = copy.deepcopy(real_page)
    body["objects"][1]["add_time"] = "yesterday"

    page = Page.from_dict(body)

    assert [r.recording_id for r in page.objects] == [
        o["recording_id"] for o in real_page["objects"]
    ]
    assert page.objects[1].add_time is None
    assert page.invalid == []


# ------------------------------------------------------------------ strict: the drift alarm


def strict_departures(obj: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(documented fields the strict converter must flag, unknown keys it must name)."""
    flagged = {f for f in FIELDS - DOCUMENTED_OPTIONAL if f not in obj}
    for field in FIELDS & obj.keys():
        raw = obj[field]
        value = expected_value(field, raw)
        unreadable = value is None and not (raw is None and field in DOCUMENTED_NULLABLE)
        blank = field in ESSENTIAL and isinstance(value, str) and not value.strip()
        if unreadable or blank:
            flagged.add(field)
    return flagged, set(obj.keys() - FIELDS)


@pytest.mark.parametrize(("name", "index"), every_recording())
def test_strict_converter_names_every_departure(name: str, index: int | None) -> None:
    """The drift alarm names exactly the missing/malformed fields and unknown keys, or passes."""
    obj = recording_at(name, index)
    flagged, extra = strict_departures(obj)

    if not flagged and not extra:
        assert structure(obj, Recording, converter=STRICT) == Recording.from_dict(obj)
        return
    with pytest.raises(ResponseValidationError) as caught:
        structure(obj, Recording, converter=STRICT)
    message = str(caught.value)
    named = set(re.findall(r"@ \$\.(\w+)", message))
    assert named == flagged
    found = re.search(r"extra fields found \(([^)]*)\)", message)
    assert set(found.group(1).split(", ") if found else []) == extra
