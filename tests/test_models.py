"""The models and their one converter: wire shapes in, typed objects out, and back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from vobiz_async import (
    AsyncSession,
    ExportResult,
    Page,
    PageMeta,
    Recording,
    ResponseValidationError,
)
from vobiz_async.converter import make_converter, structure

RID = "d7801b2e-5a5c-4c1d-9d4e-1a2b3c4d5e6f"
STRICT = make_converter(forbid_extra_keys=True)
IST = timezone(timedelta(hours=5, minutes=30))


def wire_recording(**changes: Any) -> dict[str, Any]:
    """One recording exactly as Vobiz's retrieve endpoint sends it."""
    data: dict[str, Any] = {
        "add_time": "2026-05-07 09:45:35.79276+05:30",
        "api_id": "6f2c1e3a-0b1d-11f1-9d4e-0242ac110002",
        "call_uuid": "3c2e1f0a-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
        "conference_name": None,
        "from_number": "+918031274121",
        "monthly_recording_storage_amount": 0,
        "recording_duration_ms": "7880.00000",
        "recording_end_ms": "1778127343672.00000",
        "recording_format": "mp3",
        "recording_id": RID,
        "recording_start_ms": "1778127335792.00000",
        "recording_storage_duration": 0,
        "recording_storage_rate": 0.004,
        "recording_type": "call",
        "recording_url": f"https://media.vobiz.ai/v1/Account/MA_TEST/Recording/{RID}.mp3",
        "resource_uri": f"/v1/Account/MA_TEST/Recording/{RID}/",
        "rounded_recording_duration": 60,
        "to_number": "918071387428",
    }
    data.update(changes)
    return data


def wire_page(objects: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    """A list envelope around `objects`."""
    return {
        "api_id": "list-api-id",
        "meta": {
            "limit": 20,
            "next": None,
            "offset": 0,
            "previous": None,
            "total_count": len(objects),
            **meta,
        },
        "objects": objects,
    }


class TestRecordingFromDict:
    def test_typed_fields(self) -> None:
        """Decimal strings become Decimal, money stays exact, add_time is tz-aware."""
        rec = Recording.from_dict(wire_recording())

        assert rec.recording_id == RID
        assert rec.add_time == datetime(2026, 5, 7, 9, 45, 35, 792760, tzinfo=IST)
        assert rec.add_time.utcoffset() == timedelta(hours=5, minutes=30)
        assert rec.recording_duration_ms == Decimal("7880.00000")
        assert rec.recording_start_ms == Decimal("1778127335792")
        assert rec.recording_storage_rate == Decimal("0.004")
        assert rec.monthly_recording_storage_amount == Decimal(0)
        assert rec.rounded_recording_duration == 60
        assert rec.conference_name is None
        assert rec.api_id == "6f2c1e3a-0b1d-11f1-9d4e-0242ac110002"

    def test_decimal_types(self) -> None:
        """Every decimal and money field is a Decimal, never a float."""
        rec = Recording.from_dict(wire_recording())

        for value in (
            rec.recording_duration_ms,
            rec.recording_start_ms,
            rec.recording_end_ms,
            rec.recording_storage_rate,
            rec.monthly_recording_storage_amount,
        ):
            assert type(value) is Decimal

    def test_float_money_is_exact(self) -> None:
        """A float on the wire becomes the Decimal of its shortest repr, not binary noise."""
        rec = Recording.from_dict(wire_recording(monthly_recording_storage_amount=0.1))

        assert rec.monthly_recording_storage_amount == Decimal("0.1")

    def test_list_item_without_api_id(self) -> None:
        """Recordings inside a list carry no api_id; it defaults to None."""
        data = wire_recording()
        del data["api_id"]

        assert Recording.from_dict(data).api_id is None

    def test_null_start_and_end(self) -> None:
        """Some trunk captures have null start/end: they stay None."""
        rec = Recording.from_dict(
            wire_recording(recording_type="trunk", recording_start_ms=None, recording_end_ms=None)
        )

        assert (rec.recording_start_ms, rec.recording_end_ms) == (None, None)

    def test_empty_conference_name(self) -> None:
        """An empty conference name stays an empty string, distinct from null."""
        assert Recording.from_dict(wire_recording(conference_name="")).conference_name == ""

    def test_unknown_recording_type(self) -> None:
        """recording_type is an open set: a new value is kept as is."""
        assert Recording.from_dict(wire_recording(recording_type="sip")).recording_type == "sip"

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2026-05-07 09:45:35.79276+05:30", datetime(2026, 5, 7, 4, 15, 35, 792760, UTC)),
            ("2026-05-07T09:45:35.79276+05:30", datetime(2026, 5, 7, 4, 15, 35, 792760, UTC)),
            ("2026-05-07T04:15:35Z", datetime(2026, 5, 7, 4, 15, 35, tzinfo=UTC)),
            ("2026-05-07 04:15:35", datetime(2026, 5, 7, 4, 15, 35, tzinfo=UTC)),
            ("2026-05-07 09:45:35.792760+05:30", datetime(2026, 5, 7, 4, 15, 35, 792760, UTC)),
        ],
    )
    def test_add_time_variants(self, value: str, expected: datetime) -> None:
        """add_time accepts space or T, five or six fraction digits, +05:30, Z or no offset."""
        assert Recording.from_dict(wire_recording(add_time=value)).add_time == expected

    def test_unknown_keys_tolerated(self) -> None:
        """Fields Vobiz adds without notice are ignored by the production converter."""
        rec = Recording.from_dict(wire_recording(transcription_url="https://x", is_stereo=True))

        assert rec == Recording.from_dict(wire_recording())

    def test_token_free_repr(self) -> None:
        """The recording URL (a credentialed resource) is kept out of repr."""
        assert "media.vobiz.ai" not in repr(Recording.from_dict(wire_recording()))

    def test_frozen(self) -> None:
        """Recordings are immutable."""
        rec = Recording.from_dict(wire_recording())

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            rec.recording_id = "other"  # type: ignore[misc]


def strict(data: Any) -> Recording:
    """The drift alarm: the documented shape, every field required, no unknown key."""
    return structure(data, Recording, converter=STRICT)


class TestStrictRecordingRejects:
    """What the drift alarm flags: the shapes Vobiz documents, field by field."""

    @pytest.mark.parametrize(
        "field", ["recording_id", "call_uuid", "recording_url", "from_number", "resource_uri"]
    )
    def test_null_string(self, field: str) -> None:
        """A null where a string is required is an error, never the string "None"."""
        with pytest.raises(ResponseValidationError, match=field):
            strict(wire_recording(**{field: None}))

    def test_number_for_string(self) -> None:
        """Numbers are not silently coerced into string fields."""
        with pytest.raises(ResponseValidationError, match="to_number"):
            strict(wire_recording(to_number=918071387428))

    def test_missing_field(self) -> None:
        """A missing required field is reported by name."""
        data = wire_recording()
        del data["call_uuid"]

        with pytest.raises(ResponseValidationError, match="call_uuid"):
            strict(data)

    @pytest.mark.parametrize("value", ["seven", "NaN", "Infinity", "", True, None, [1]])
    def test_bad_decimal(self, value: object) -> None:
        """recording_duration_ms must be a finite decimal string or number."""
        with pytest.raises(ResponseValidationError, match="recording_duration_ms"):
            strict(wire_recording(recording_duration_ms=value))

    @pytest.mark.parametrize("field", ["recording_start_ms", "recording_end_ms"])
    @pytest.mark.parametrize("value", ["seven", "NaN", "", True, [1]])
    def test_bad_optional_decimal(self, field: str, value: object) -> None:
        """The optional decimals take null, or the same decimals as the required ones."""
        with pytest.raises(ResponseValidationError, match=field):
            strict(wire_recording(**{field: value}))

    @pytest.mark.parametrize("value", [60.5, "sixty", True, None])
    def test_bad_int(self, value: object) -> None:
        """rounded_recording_duration must be a whole number."""
        with pytest.raises(ResponseValidationError, match="rounded_recording_duration"):
            strict(wire_recording(rounded_recording_duration=value))

    @pytest.mark.parametrize(
        "value", ["yesterday", "2026-05-07", 1778127335, None, "2026-05-07 09:45:35+25:00"]
    )
    def test_bad_add_time(self, value: object) -> None:
        """add_time must be a readable timestamp string."""
        with pytest.raises(ResponseValidationError, match="add_time"):
            strict(wire_recording(add_time=value))

    def test_every_problem_reported(self) -> None:
        """One error lists every bad field, not just the first."""
        with pytest.raises(ResponseValidationError) as exc_info:
            strict(wire_recording(recording_id=None, add_time="never"))

        assert "recording_id" in str(exc_info.value)
        assert "add_time" in str(exc_info.value)

    def test_error_keeps_body(self) -> None:
        """The offending body travels with the error for debugging."""
        data = wire_recording(recording_id=None)

        with pytest.raises(ResponseValidationError) as exc_info:
            strict(data)

        assert exc_info.value.body == data

    @pytest.mark.parametrize("value", [None, "recording", [], 42])
    def test_not_an_object(self, value: object) -> None:
        """A body that is not a JSON object is a ResponseValidationError."""
        with pytest.raises(ResponseValidationError):
            Recording.from_dict(value)  # type: ignore[arg-type]


class TestRecordingLenient:
    """Only recording_id and recording_url are essential; the rest may be anything."""

    @pytest.fixture(autouse=True)
    def _fresh_warnings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("vobiz_async.converter._warned", set())

    @pytest.mark.parametrize(
        "field",
        ["conference_name", "recording_start_ms", "recording_end_ms", "from_number", "add_time"],
    )
    def test_absent_field_is_none(self, field: str) -> None:
        """A field left out (as Vobiz's C# SDK mock does) becomes None."""
        data = wire_recording()
        del data[field]

        assert getattr(Recording.from_dict(data), field) is None

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("add_time", "never"),
            ("recording_duration_ms", "seven"),
            ("rounded_recording_duration", 60.5),
            ("to_number", 918071387428),
            ("call_uuid", None),
            ("recording_storage_rate", "NaN"),
        ],
    )
    def test_malformed_field_is_none_and_warned_once(
        self, field: str, value: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A malformed or null field becomes None, with one warning naming the field and the
        recording (never the value), however many recordings carry it."""
        first = Recording.from_dict(wire_recording(**{field: value}))
        second = Recording.from_dict(wire_recording(recording_id="other", **{field: value}))

        assert getattr(first, field) is None
        assert getattr(second, field) is None
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1
        assert field in warnings[0]
        assert RID in warnings[0]
        assert value is None or repr(value) not in warnings[0]

    def test_minimal_openapi_item(self) -> None:
        """The docs' OpenAPI list item (id, url, duration, file_format) is archivable."""
        rec = Recording.from_dict(
            {
                "recording_id": RID,
                "recording_url": "https://media.vobiz.ai/r.mp3",
                "duration": 12,
                "file_format": "mp3",
            }
        )

        assert (rec.recording_id, rec.recording_url) == (RID, "https://media.vobiz.ai/r.mp3")
        assert rec.add_time is None
        assert rec.recording_format is None

    @pytest.mark.parametrize("field", ["recording_id", "recording_url"])
    @pytest.mark.parametrize("value", [None, "", "   ", 42, ["x"]])
    def test_essential_fields_are_required(self, field: str, value: object) -> None:
        """Without a usable id or URL there is nothing to archive: an error naming it."""
        with pytest.raises(ResponseValidationError, match=field):
            Recording.from_dict(wire_recording(**{field: value}))

    def test_missing_essential_field_never_shows_the_url(self) -> None:
        """A bad id's error does not carry the recording URL (it may be signed) in its
        message."""
        with pytest.raises(ResponseValidationError) as exc_info:
            Recording.from_dict(wire_recording(recording_id=None))

        assert "media.vobiz.ai" not in str(exc_info.value)

    def test_to_dict_with_absent_fields(self) -> None:
        """A sparse recording goes back to the wire with nulls, and reads back equal."""
        rec = Recording.from_dict({"recording_id": RID, "recording_url": "https://m/r.mp3"})

        wire = rec.to_dict()

        assert wire["add_time"] is None
        assert wire["recording_storage_rate"] is None
        assert Recording.from_dict(json.loads(json.dumps(wire))) == rec


class TestToDict:
    def test_wire_shapes(self) -> None:
        """to_dict gives back the API's own shapes: decimal strings, numeric money, timestamps."""
        data = Recording.from_dict(wire_recording()).to_dict()

        assert data["recording_duration_ms"] == "7880.00000"
        assert data["recording_start_ms"] == "1778127335792.00000"
        assert data["recording_storage_rate"] == 0.004
        assert data["monthly_recording_storage_amount"] == 0
        assert type(data["monthly_recording_storage_amount"]) is int
        assert data["add_time"] == "2026-05-07 09:45:35.792760+05:30"
        assert data["conference_name"] is None

    def test_same_as_wire(self) -> None:
        """A documented recording round-trips to the same JSON except for add_time's padding."""
        wire = wire_recording()

        assert Recording.from_dict(wire).to_dict() == {
            **wire,
            "add_time": "2026-05-07 09:45:35.792760+05:30",
        }

    def test_json_serialisable(self) -> None:
        """to_dict's output goes straight into json.dumps."""
        json.dumps(Recording.from_dict(wire_recording(recording_start_ms=None)).to_dict())

    def test_api_id_omitted_when_absent(self) -> None:
        """A list item without api_id does not grow a null api_id."""
        data = wire_recording()
        del data["api_id"]

        assert "api_id" not in Recording.from_dict(data).to_dict()


class TestDriftAlarm:
    @pytest.fixture(name="strict")
    def _strict(self) -> Callable[[Any], Recording]:
        converter = make_converter(forbid_extra_keys=True)
        return lambda data: structure(data, Recording, converter=converter)

    def test_documented_shape_passes(self, strict: Callable[[Any], Recording]) -> None:
        """The documented retrieve body has no key the model does not know."""
        assert strict(wire_recording()) == Recording.from_dict(wire_recording())

    def test_new_field_flagged(self, strict: Callable[[Any], Recording]) -> None:
        """A field Vobiz adds is flagged by name by the strict converter."""
        with pytest.raises(ResponseValidationError, match="transcription_url"):
            strict(wire_recording(transcription_url="https://x"))

    def test_default_converter_tolerates(self) -> None:
        """The same body passes the default converter."""
        rec = structure(wire_recording(transcription_url="https://x"), Recording)

        assert rec.recording_id == RID

    def test_new_field_inside_page_flagged(self) -> None:
        """The strict converter also checks recordings nested in a page."""
        body = wire_page([wire_recording(transcription_url="https://x")])

        with pytest.raises(ResponseValidationError, match="transcription_url"):
            structure(body, Page, converter=make_converter(forbid_extra_keys=True))


_DIGITS = st.integers(min_value=0, max_value=6)
_OFFSETS = st.one_of(
    st.just("Z"),
    st.just(""),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
        lambda m: f"{'-' if m < 0 else '+'}{abs(m) // 60:02d}:{abs(m) % 60:02d}"
    ),
)


@st.composite
def wire_timestamps(draw: st.DrawFn) -> str:
    """add_time strings as Vobiz (and its docs) write them."""
    moment = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
    digits = draw(_DIGITS)
    sep = draw(st.sampled_from([" ", "T"]))
    frac = f".{moment.microsecond:06d}"[: digits + 1] if digits else ""
    return f"{moment:%Y-%m-%d}{sep}{moment:%H:%M:%S}{frac}{draw(_OFFSETS)}"


_DECIMAL_STRINGS = st.decimals(allow_nan=False, allow_infinity=False, places=5).map(str)
_MONEY = st.one_of(
    st.integers(min_value=0, max_value=10**9),
    st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
)


def wire_recordings() -> st.SearchStrategy[dict[str, Any]]:
    """Wire-like recording dicts, including nulls and numbers where Vobiz sends them."""
    return st.fixed_dictionaries(
        {
            "recording_id": st.uuids().map(str),
            "call_uuid": st.uuids().map(str),
            "recording_url": st.text(min_size=1).filter(str.strip),
            "recording_format": st.sampled_from(["mp3", "wav"]),
            "recording_type": st.one_of(
                st.sampled_from(["call", "conference", "trunk"]), st.text()
            ),
            "add_time": wire_timestamps(),
            "recording_duration_ms": _DECIMAL_STRINGS,
            "recording_start_ms": st.none() | _DECIMAL_STRINGS,
            "recording_end_ms": st.none() | _DECIMAL_STRINGS,
            "rounded_recording_duration": st.integers(min_value=0, max_value=10**7),
            "from_number": st.text(),
            "to_number": st.text(),
            "conference_name": st.none() | st.text(),
            "recording_storage_duration": st.integers(min_value=0, max_value=10**4),
            "recording_storage_rate": _MONEY,
            "monthly_recording_storage_amount": _MONEY,
            "resource_uri": st.text(),
        },
        optional={"api_id": st.text(), "some_new_field": st.integers()},
    )


class TestRoundTrip:
    @given(data=wire_recordings())
    def test_from_dict_to_dict(self, data: dict[str, Any]) -> None:
        """Recording.from_dict(r.to_dict()) == r for any wire-like recording."""
        rec = Recording.from_dict(data)

        assert Recording.from_dict(rec.to_dict()) == rec

    @given(data=wire_recordings())
    def test_wire_form_is_stable(self, data: dict[str, Any]) -> None:
        """The wire form survives JSON and a second round trip unchanged."""
        wire = Recording.from_dict(data).to_dict()

        assert Recording.from_dict(json.loads(json.dumps(wire))).to_dict() == wire

    @given(data=wire_recordings())
    def test_add_time_aware(self, data: dict[str, Any]) -> None:
        """add_time is tz-aware whatever form it arrived in."""
        assert Recording.from_dict(data).add_time.utcoffset() is not None


class TestPage:
    def test_envelope(self) -> None:
        """A list envelope becomes a Page of Recordings with its meta."""
        body = wire_page(
            [wire_recording()],
            total_count=57,
            next="/v1/Account/MA_TEST/Recording/?limit=20&offset=20",
        )

        page = Page.from_dict(body)

        assert page.api_id == "list-api-id"
        assert page.meta == PageMeta(
            limit=20,
            offset=0,
            total_count=57,
            next="/v1/Account/MA_TEST/Recording/?limit=20&offset=20",
            previous=None,
        )
        assert page.objects == [Recording.from_dict(wire_recording())]

    def test_empty(self) -> None:
        """No match is a page with no objects and a null next."""
        page = Page.from_dict(wire_page([]))

        assert page.objects == []
        assert page.meta.total_count == 0
        assert page.meta.next is None

    def test_unknown_meta_key_tolerated(self) -> None:
        """New keys in meta do not break listing."""
        page = Page.from_dict(wire_page([], cursor="abc"))

        assert page.meta.limit == 20

    @pytest.mark.parametrize(
        "body",
        [
            None,
            [],
            "objects",
            {"api_id": "x", "meta": {"limit": 20, "offset": 0, "total_count": 1}, "objects": {}},
        ],
    )
    def test_wrong_shape(self, body: object) -> None:
        """A 2xx body that is not a list envelope is a ResponseValidationError."""
        with pytest.raises(ResponseValidationError):
            Page.from_dict(body)  # type: ignore[arg-type]

    def test_bad_items_reported_good_ones_kept(self) -> None:
        """Objects without a usable id or URL are listed as invalid; the rest of the page is
        kept, odd optional fields included (as None)."""
        good = wire_recording(recording_id="good-1")
        odd = wire_recording(recording_id="good-2", add_time="never")
        no_url = wire_recording(recording_id="no-url", recording_url=None)
        no_id = wire_recording(recording_id="")

        page = Page.from_dict(wire_page([good, no_url, odd, no_id, "junk"]))

        assert [r.recording_id for r in page.objects] == ["good-1", "good-2"]
        assert page.objects[1].add_time is None
        assert [i.recording_id for i in page.invalid] == ["no-url", None, None]
        assert "recording_url" in page.invalid[0].problem
        assert "recording_id" in page.invalid[1].problem

    @pytest.mark.parametrize(
        "meta",
        [
            None,
            {"next": ""},
            {"limit": 20, "offset": 0, "total_count": 1, "previous": {"offset": 0}},
            {"limit": "twenty", "offset": [], "total_count": None, "next": 7},
        ],
    )
    def test_odd_meta_still_yields_the_recordings(self, meta: Any) -> None:
        """A page whose meta is missing (Vobiz's own OpenAPI example) or odd (its C# SDK
        mock's object-valued `previous`) keeps its recordings, as a last page."""
        body: dict[str, Any] = {"objects": [wire_recording()]}
        if meta is not None:
            body["meta"] = meta

        page = Page.from_dict(body)

        assert [r.recording_id for r in page.objects] == [RID]
        assert page.meta.next is None
        assert page.meta.total_count >= 1

    def test_strict_converter_wants_meta(self) -> None:
        """The drift alarm still fails a page without meta."""
        with pytest.raises(ResponseValidationError, match="no meta"):
            structure({"objects": []}, Page, converter=STRICT)

    def test_strict_converter_still_rejects_a_bad_item(self) -> None:
        """The drift alarm fails the whole page on one malformed recording."""
        with pytest.raises(ResponseValidationError, match="add_time"):
            structure(wire_page([wire_recording(add_time="never")]), Page, converter=STRICT)

    @pytest.mark.parametrize(
        ("body", "missing"),
        [
            ({"api_id": "x", "meta": {"limit": 20, "offset": 0, "total_count": 0}}, "objects"),
            (
                {"meta": {"limit": 20, "offset": 0, "total_count": 0}, "objects": None},
                "objects",
            ),
        ],
    )
    def test_unusable_envelope_says_what_is_missing(
        self, body: dict[str, Any], missing: str
    ) -> None:
        """An envelope without meta or an objects list is an error that names the part."""
        with pytest.raises(ResponseValidationError, match=f"no {missing}"):
            Page.from_dict(body)


class TestExportResult:
    def test_documented_body(self) -> None:
        """The export's 202 body `{api_id, status}` structures."""
        assert structure({"api_id": "e1", "status": "success"}, ExportResult) == ExportResult(
            api_id="e1", status="success"
        )


# --- get() and the older list-shaped body ------------------------------------------------


@pytest.fixture(name="get_body")
def _get_body() -> dict[str, Any]:
    return {"body": wire_recording()}


@pytest.fixture(name="server")
async def _server(get_body: dict[str, Any]) -> AsyncIterator[TestServer]:
    async def recording(request: web.Request) -> web.Response:
        return web.json_response(get_body["body"])

    app = web.Application()
    app.router.add_get("/api/v1/Account/MA_TEST/Recording/{rid}/", recording)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


@pytest.fixture(name="session")
async def _session(server: TestServer) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(
        "MA_TEST", "tok", base_url=str(server.make_url("/api/v1/")), max_retries=0
    ) as session:
        yield session


class TestGetEnvelope:
    async def test_flat_object(self, session: AsyncSession) -> None:
        """The documented flat retrieve body gives a Recording with its api_id."""
        rec = await session.recordings.get(RID)

        assert rec == Recording.from_dict(wire_recording())

    async def test_older_list_envelope(
        self, session: AsyncSession, get_body: dict[str, Any]
    ) -> None:
        """The older docs' list-shaped body is unwrapped to objects[0], keeping api_id."""
        item = wire_recording()
        del item["api_id"]
        get_body["body"] = {**wire_page([item]), "api_id": "envelope-api-id"}

        rec = await session.recordings.get(RID)

        assert rec.recording_id == RID
        assert rec.api_id == "envelope-api-id"

    async def test_empty_envelope(self, session: AsyncSession, get_body: dict[str, Any]) -> None:
        """An envelope with no objects is a ResponseValidationError, not an IndexError."""
        get_body["body"] = wire_page([])

        with pytest.raises(ResponseValidationError):
            await session.recordings.get(RID)

    async def test_envelope_with_junk_object(
        self, session: AsyncSession, get_body: dict[str, Any]
    ) -> None:
        """An envelope whose objects[0] is not an object is a ResponseValidationError."""
        get_body["body"] = {"api_id": "x", "objects": ["not-a-recording"]}

        with pytest.raises(ResponseValidationError):
            await session.recordings.get(RID)

    async def test_wrong_shape(self, session: AsyncSession, get_body: dict[str, Any]) -> None:
        """A JSON body that is not a recording is a ResponseValidationError."""
        get_body["body"] = {"api_id": "x", "status": "ok"}

        with pytest.raises(ResponseValidationError):
            await session.recordings.get(RID)


def _decimals(*, places: int | None = None) -> st.SearchStrategy[Decimal]:
    return st.decimals(allow_nan=False, allow_infinity=False, places=places)


@st.composite
def built_recordings(draw: st.DrawFn) -> Recording:
    """Recordings built directly, with values the wire never shows but the type allows."""
    maybe_decimal = st.none() | _decimals()
    maybe_text = st.none() | st.text()
    return Recording(
        recording_id=draw(st.text(min_size=1).filter(str.strip)),
        call_uuid=draw(maybe_text),
        recording_url=draw(st.text(min_size=1).filter(str.strip)),
        recording_format=draw(st.none() | st.sampled_from(["mp3", "wav", "ogg"])),
        recording_type=draw(maybe_text),
        add_time=draw(st.none() | st.datetimes(timezones=st.none() | st.timezones())),
        recording_duration_ms=draw(maybe_decimal),
        recording_start_ms=draw(maybe_decimal),
        recording_end_ms=draw(maybe_decimal),
        rounded_recording_duration=draw(st.none() | st.integers()),
        from_number=draw(maybe_text),
        to_number=draw(maybe_text),
        conference_name=draw(maybe_text),
        recording_storage_duration=draw(st.none() | st.integers(min_value=0)),
        recording_storage_rate=draw(maybe_decimal),
        monthly_recording_storage_amount=draw(maybe_decimal),
        resource_uri=draw(maybe_text),
        api_id=draw(maybe_text),
    )


@given(recording=built_recordings())
def test_built_recording_round_trips(recording: Recording) -> None:
    """Any Recording survives to_dict -> JSON -> from_dict unchanged."""
    wire = json.loads(json.dumps(recording.to_dict()))
    assert Recording.from_dict(wire) == recording
