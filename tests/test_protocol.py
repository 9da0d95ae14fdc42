"""Pure tests of the protocol core: no socket, no clock unless passed in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from _statuses import ANSWERS, TRANSIENT
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from vobiz_async import (
    APIStatusError,
    BadRequestError,
    IntegrityError,
    InvalidRecordingIdError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    VobizError,
)
from vobiz_async.protocol import (
    MAX_RETRY_AFTER,
    MediaAnswer,
    address_problem,
    archive_key,
    backoff_delay,
    decipher_response,
    error_details,
    format_timestamp,
    is_retryable_status,
    make_status_error,
    media_answer,
    media_type,
    next_page_offset,
    next_page_params,
    parse_retry_after,
    parse_timestamp,
    quote_path_segment,
)

RECORDING_ERROR = {"api_id": "a1b2-c3", "error": "Recording not found"}
EXPORT_ERROR = {"status": "failure", "message": "An export is already in progress"}
GENERIC_ERROR = {
    "status": "error",
    "error": {"code": "UNAUTHORIZED", "message": "Invalid auth token", "details": {}},
    "timestamp": "2026-05-07T09:45:35Z",
    "requestId": "req-42",
}
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class TestErrorDetails:
    def test_recording_shape(self) -> None:
        """`{"api_id", "error": "…"}` gives the string and the api_id."""
        assert error_details(RECORDING_ERROR) == ("Recording not found", "a1b2-c3")

    def test_export_shape(self) -> None:
        """`{"status": "failure", "message": "…"}` falls back to `message`."""
        assert error_details(EXPORT_ERROR) == ("An export is already in progress", None)

    def test_generic_shape(self) -> None:
        """`error` as an object gives its `message`, and `requestId` is the correlation id."""
        assert error_details(GENERIC_ERROR) == ("Invalid auth token", "req-42")

    def test_error_object_without_message_uses_code(self) -> None:
        """An error object with only a code still yields something to show."""
        assert error_details({"error": {"code": "RATE_LIMITED"}}) == ("RATE_LIMITED", None)

    def test_empty_error_string_falls_back_to_message(self) -> None:
        """An empty `error` string does not hide a useful `message`."""
        assert error_details({"error": "", "message": "Bad range"}) == ("Bad range", None)

    @pytest.mark.parametrize("body", [None, "<html></html>", [1, 2], 42, {}])
    def test_not_an_error_object(self, body: object) -> None:
        """Bodies that are not JSON objects (or carry nothing) give no details."""
        assert error_details(body) == (None, None)


class TestMakeStatusError:
    @pytest.mark.parametrize(("status", "cls"), ANSWERS + TRANSIENT)
    def test_status_maps_to_class(self, status: int, cls: type[APIStatusError]) -> None:
        """Each status callers act on has its own class."""
        err = make_status_error(status, {}, RECORDING_ERROR)

        assert type(err) is cls
        assert err.status_code == status

    @pytest.mark.parametrize("status", [405, 410, 418, 451])
    def test_other_4xx_is_plain_status_error(self, status: int) -> None:
        """Statuses without a class of their own are still APIStatusError (not ServerError)."""
        err = make_status_error(status, {}, None)

        assert type(err) is APIStatusError
        assert err.status_code == status

    def test_every_status_error_is_a_vobiz_error(self) -> None:
        """Catching VobizError catches every status error."""
        assert isinstance(make_status_error(404, {}, None), VobizError)

    def test_carries_the_evidence(self) -> None:
        """Headers, body, message and api_id travel with the exception."""
        headers = {"Content-Type": "application/json", "Retry-After": "3"}

        err = make_status_error(404, headers, RECORDING_ERROR)

        assert err.message == "Recording not found"
        assert err.api_id == "a1b2-c3"
        assert err.body == RECORDING_ERROR
        assert err.headers["Retry-After"] == "3"
        assert str(err) == "404: Recording not found (api_id a1b2-c3)"

    def test_headers_case_insensitive(self) -> None:
        """`err.headers` looks names up case-insensitively, as HTTP headers are."""
        headers = CIMultiDictProxy(CIMultiDict({"retry-after": "3"}))

        err = make_status_error(429, headers, None)

        assert err.headers["Retry-After"] == "3"

    def test_generic_shape_request_id(self) -> None:
        """The generic error page's `requestId` becomes `api_id`."""
        err = make_status_error(401, {}, GENERIC_ERROR)

        assert (err.message, err.api_id) == ("Invalid auth token", "req-42")

    def test_export_shape(self) -> None:
        """The export error shape's `message` becomes the message."""
        err = make_status_error(403, {}, EXPORT_ERROR)

        assert isinstance(err, PermissionDeniedError)
        assert err.message == "An export is already in progress"
        assert err.api_id is None

    def test_html_gateway_page(self) -> None:
        """A proxy's HTML page gives a short readable message, not the markup."""
        err = make_status_error(502, {"Content-Type": "text/html"}, NGINX_502)

        assert isinstance(err, ServerError)
        assert err.message == "502 Bad Gateway"
        assert "<" not in str(err)
        assert err.body == NGINX_502

    def test_html_without_title_is_truncated(self) -> None:
        """An HTML or text body without a title is whitespace-collapsed and bounded."""
        err = make_status_error(503, {}, "Service   Unavailable\n" + "x" * 1000)

        assert err.message.startswith("Service Unavailable x")
        assert len(err.message) <= 200

    def test_no_body_uses_reason(self) -> None:
        """An empty body falls back to the HTTP reason phrase."""
        assert make_status_error(504, {}, None, reason="Gateway Timeout").message == (
            "Gateway Timeout"
        )

    def test_no_body_no_reason(self) -> None:
        """With nothing at all the message still names the status."""
        assert make_status_error(500, {}, None).message == "HTTP 500"


class TestDecipherResponse:
    def test_json_success(self) -> None:
        """A 2xx JSON body is returned parsed."""
        assert decipher_response(200, {}, b'{"api_id": "x", "objects": []}') == {
            "api_id": "x",
            "objects": [],
        }

    def test_no_content(self) -> None:
        """204 with an empty body gives None."""
        assert decipher_response(204, {}, b"") is None

    def test_non_json_success(self) -> None:
        """A 2xx that is not JSON is a ResponseValidationError naming the content type."""
        with pytest.raises(ResponseValidationError, match="text/html") as exc_info:
            decipher_response(200, {"Content-Type": "text/html"}, b"<h1>Welcome</h1>")

        assert exc_info.value.body == "<h1>Welcome</h1>"

    def test_json_error(self) -> None:
        """A non-2xx JSON body raises the typed error with its details."""
        with pytest.raises(NotFoundError) as exc_info:
            decipher_response(404, {}, b'{"api_id": "a1", "error": "Recording not found"}')

        assert exc_info.value.api_id == "a1"
        assert exc_info.value.message == "Recording not found"

    def test_html_error(self) -> None:
        """A non-2xx HTML body raises ServerError with the page's title."""
        with pytest.raises(ServerError, match="502 Bad Gateway"):
            decipher_response(502, {"Content-Type": "text/html"}, NGINX_502.encode())

    def test_undecodable_bytes(self) -> None:
        """Bytes that are not UTF-8 do not crash the error path."""
        with pytest.raises(ServerError):
            decipher_response(500, {}, b"\xff\xfe\x00garbage")


class TestRetryable:
    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
    def test_transient(self, status: int) -> None:
        """408, 429 and 5xx are worth retrying."""
        assert is_retryable_status(status)

    @pytest.mark.parametrize("status", [200, 204, 400, 401, 402, 403, 404, 409, 422])
    def test_answers(self, status: int) -> None:
        """Success and other 4xx are answers, not transient failures."""
        assert not is_retryable_status(status)


NOW = datetime(2026, 5, 7, 9, 45, 35, tzinfo=UTC)


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("", None),
            ("   ", None),
            ("0", 0.0),
            ("3", 3.0),
            (" 7 ", 7.0),
            ("1.5", 1.5),
            ("60", 60.0),
            ("120", MAX_RETRY_AFTER),
            ("-5", 0.0),
            ("soon", None),
            ("nan", None),
            ("Thu, 07 May 2026 09:45:45 GMT", 10.0),
            ("Thu, 07 May 2026 09:45:00 GMT", 0.0),
            ("Fri, 08 May 2026 09:45:35 GMT", MAX_RETRY_AFTER),
        ],
    )
    def test_table(self, value: str | None, expected: float | None) -> None:
        """Delta seconds and HTTP dates become a capped, non-negative wait; junk gives None."""
        assert parse_retry_after(value, now=NOW) == expected

    def test_custom_cap(self) -> None:
        """The cap is a parameter."""
        assert parse_retry_after("30", cap=5.0) == 5.0


class TestBackoffDelay:
    @pytest.mark.parametrize(
        ("attempt", "expected"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]
    )
    def test_without_jitter(self, attempt: int, expected: float) -> None:
        """With no jitter the delay is `min(0.5 * 2**n, 8)`."""
        assert backoff_delay(attempt, rand=lambda: 0.0) == expected

    @pytest.mark.parametrize(("attempt", "base"), [(0, 0.5), (3, 4.0), (12, 8.0)])
    def test_full_jitter_takes_a_quarter_off(self, attempt: int, base: float) -> None:
        """Maximal jitter shortens the delay by at most 25 %."""
        assert backoff_delay(attempt, rand=lambda: 1.0) == pytest.approx(base * 0.75)

    def test_retry_after_wins(self) -> None:
        """A server-requested wait replaces the computed backoff."""
        assert backoff_delay(5, 2.5, rand=lambda: 0.9) == 2.5

    def test_retry_after_zero_is_honoured(self) -> None:
        """`Retry-After: 0` means retry now, not fall back to backoff."""
        assert backoff_delay(3, 0.0) == 0.0

    @given(attempt=st.integers(min_value=0, max_value=5_000))
    def test_bounded(self, attempt: int) -> None:
        """Whatever the attempt number and jitter, the delay stays within (0, 8]."""
        delay = backoff_delay(attempt)

        assert 0.375 <= delay <= 8.0


class TestNextPageParams:
    @pytest.mark.parametrize("value", [None, ""])
    def test_last_page(self, value: str | None) -> None:
        """No `meta.next` means no next page."""
        assert next_page_params(value) is None

    def test_relative_path_without_api_prefix(self) -> None:
        """Only the query of Vobiz's relative `next` is used."""
        assert next_page_params("/v1/Account/MA_X/Recording/?limit=20&offset=20") == {
            "limit": "20",
            "offset": "20",
        }

    def test_filters_kept(self) -> None:
        """Filters in `next` carry over to the following request, percent-decoded."""
        assert next_page_params(
            "/v1/Account/MA_X/Recording/?limit=5&offset=10&recording_type=call"
            "&add_time__gte=2026-01-01+00%3A00%3A00"
        ) == {
            "limit": "5",
            "offset": "10",
            "recording_type": "call",
            "add_time__gte": "2026-01-01 00:00:00",
        }

    def test_absolute_url(self) -> None:
        """An absolute `next` (should Vobiz ever send one) works the same way."""
        assert next_page_params(
            "https://api.vobiz.ai/api/v1/Account/MA_X/Recording/?limit=20&offset=40"
        ) == {"limit": "20", "offset": "40"}


IST = timezone(timedelta(hours=5, minutes=30))


def refusal(value: str) -> str:
    """The pattern of parse_timestamp's one error message for `value`, and nothing else."""
    return rf"^not a Vobiz timestamp: {re.escape(repr(value))}$"


class TestParseTimestamp:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            # What Vobiz really sends: space, five fraction digits, +HH:MM.
            (
                "2026-05-07 09:45:35.79276+05:30",
                datetime(2026, 5, 7, 9, 45, 35, 792760, tzinfo=IST),
            ),
            (
                "2026-05-07 09:45:35.792761+05:30",
                datetime(2026, 5, 7, 9, 45, 35, 792761, tzinfo=IST),
            ),
            ("2026-05-07T09:45:35.5+05:30", datetime(2026, 5, 7, 9, 45, 35, 500000, tzinfo=IST)),
            ("2026-05-07 09:45:35+05:30", datetime(2026, 5, 7, 9, 45, 35, tzinfo=IST)),
            ("2026-05-07T04:15:35Z", datetime(2026, 5, 7, 4, 15, 35, tzinfo=UTC)),
            ("2026-05-07T04:15:35.123Z", datetime(2026, 5, 7, 4, 15, 35, 123000, tzinfo=UTC)),
            ("2026-05-07 04:15:35", datetime(2026, 5, 7, 4, 15, 35, tzinfo=UTC)),
            ("2026-05-07 09:45:35+0530", datetime(2026, 5, 7, 9, 45, 35, tzinfo=IST)),
            (
                "2026-05-07 01:45:35-03:00",
                datetime(2026, 5, 7, 1, 45, 35, tzinfo=timezone(timedelta(hours=-3))),
            ),
            (
                "2026-05-07 09:45:35.123456789+05:30",
                datetime(2026, 5, 7, 9, 45, 35, 123456, tzinfo=IST),
            ),
        ],
    )
    def test_variants(self, value: str, expected: datetime) -> None:
        """Space or T, 0-6 (or more, truncated) fraction digits, +HH:MM, +HHMM, Z or none."""
        parsed = parse_timestamp(value)

        assert parsed == expected
        assert parsed.utcoffset() == expected.utcoffset()

    def test_five_fraction_digits_are_tenths_of_milliseconds(self) -> None:
        """`.79276` is 792760 microseconds, not 79276."""
        assert parse_timestamp("2026-05-07 09:45:35.79276+05:30").microsecond == 792760

    def test_always_aware(self) -> None:
        """A timestamp without an offset is taken as UTC, never left naive."""
        assert parse_timestamp("2026-05-07 09:45:35").tzinfo is not None

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "yesterday",
            "2026-05-07",
            "2026/05/07 09:45:35",
            "2026-13-07 09:45:35+05:30",
            "2026-05-07 25:45:35+05:30",
            "2026-05-07 09:45:35+25:00",
            "2026-05-07 09:45:35+05:75",
            "2026-05-07 09:45:35 +05:30",
            "2026-05-07 09:45:35.+05:30",
        ],
    )
    def test_rejects(self, value: str) -> None:
        """Malformed timestamps raise ValueError naming the value rather than guess."""
        with pytest.raises(ValueError, match=refusal(value)):
            parse_timestamp(value)

    @given(
        moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
        digits=st.integers(min_value=0, max_value=9),
        sep=st.sampled_from([" ", "T"]),
        sign=st.sampled_from(["+", "-"]),
        hours=st.integers(min_value=0, max_value=29),
        minutes=st.integers(min_value=0, max_value=69),
        zulu=st.booleans(),
    )
    def test_against_an_oracle(
        self,
        moment: datetime,
        digits: int,
        sep: str,
        sign: str,
        hours: int,
        minutes: int,
        zulu: bool,
    ) -> None:
        """Every fraction length and offset, valid or not, read by the documented rules
        (the wire's own shape takes a faster path, which must agree)."""
        frac = f"{moment.microsecond:06d}{moment.microsecond % 1000:03d}"[:digits]
        offset = "Z" if zulu else f"{sign}{hours:02d}:{minutes:02d}"
        text = f"{moment:%Y-%m-%d}{sep}{moment:%H:%M:%S}{'.' if frac else ''}{frac}{offset}"
        if not zulu and (hours > 23 or minutes > 59):
            with pytest.raises(ValueError, match=refusal(text)):
                parse_timestamp(text)
            return
        delta = timedelta(hours=hours, minutes=minutes) * (-1 if sign == "-" else 1)
        micro = int(frac[:6].ljust(6, "0")) if frac else 0
        expected = moment.replace(microsecond=micro, tzinfo=UTC if zulu else timezone(delta))

        parsed = parse_timestamp(text)

        assert parsed == expected
        assert parsed.utcoffset() == expected.utcoffset()


class TestFormatTimestamp:
    def test_wire_form(self) -> None:
        """Aware datetimes format with a space and a `+HH:MM` offset."""
        value = datetime(2026, 5, 7, 9, 45, 35, 792760, tzinfo=IST)

        assert format_timestamp(value) == "2026-05-07 09:45:35.792760+05:30"

    def test_naive_is_utc(self) -> None:
        """A naive datetime is written as UTC, never without an offset."""
        assert format_timestamp(datetime(2026, 5, 7, 4, 15, 35)) == "2026-05-07 04:15:35+00:00"

    @given(
        value=st.datetimes(
            min_value=datetime(1900, 1, 1),
            max_value=datetime(2200, 1, 1),
            timezones=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
                lambda minutes: timezone(timedelta(minutes=minutes))
            ),
        )
    )
    def test_round_trip(self, value: datetime) -> None:
        """parse_timestamp(format_timestamp(dt)) gives back dt with its offset."""
        parsed = parse_timestamp(format_timestamp(value))

        assert parsed == value
        assert parsed.utcoffset() == value.utcoffset()


class TestQuotePathSegment:
    def test_uuid_unchanged(self) -> None:
        """The ids Vobiz issues (UUIDs) go into the path as they are."""
        rid = "d7801b2e-5a5c-4c1d-9d4e-1a2b3c4d5e6f"

        assert quote_path_segment(rid) == rid

    def test_reserved_characters_percent_encoded(self) -> None:
        """Allowed reserved characters are percent-encoded so they stay in one segment."""
        assert quote_path_segment("rec:1+2=x@y") == "rec%3A1%2B2%3Dx%40y"

    @pytest.mark.parametrize(
        "value",
        [
            "",
            ".",
            "..",
            "...",
            "../x",
            "x/../..",
            "a/b",
            "/abs",
            "a\\b",
            "a?b",
            "a#b",
            "%2e%2e",
            "a%2Fb",
            "abc\x00",
            "abc\r\nX-Evil: 1",
            "abc\n",
            "\nabc",
            "x" * 201,
        ],
    )
    def test_hostile_ids_refused(self, value: str) -> None:
        """Ids that could change the path, smuggle bytes or are empty are refused."""
        with pytest.raises(InvalidRecordingIdError):
            quote_path_segment(value)

    def test_non_string_refused(self) -> None:
        """Only strings are ids."""
        with pytest.raises(InvalidRecordingIdError):
            quote_path_segment(123)  # type: ignore[arg-type]

    def test_refusal_is_a_value_error(self) -> None:
        """InvalidRecordingIdError is both a VobizError and a ValueError."""
        with pytest.raises(ValueError, match="unsafe recording id"):
            quote_path_segment("../x")

    def test_what_names_the_thing(self) -> None:
        """The message says what was being quoted."""
        with pytest.raises(InvalidRecordingIdError, match="unsafe auth id"):
            quote_path_segment("MA/..", what="auth id")


@pytest.mark.parametrize(
    ("layout", "add_time", "key"),
    [
        ("flat", datetime(2026, 5, 7, 9, 45, tzinfo=UTC), "rec-1.mp3"),
        ("date", datetime(2026, 5, 7, 9, 45, tzinfo=UTC), "2026/05/07/rec-1.mp3"),
        ("date", None, "rec-1.mp3"),
    ],
)
def test_archive_key_layouts(layout: str, add_time: datetime | None, key: str) -> None:
    """A recording's key is its id and extension, under date folders for the date layout."""
    assert archive_key("rec-1", extension="mp3", add_time=add_time, layout=layout) == key


@pytest.mark.parametrize("hostile", ["../x", "/etc/passwd", "a/b", ".hidden", "a\nb", ""])
def test_archive_key_refuses_hostile_ids(hostile: str) -> None:
    """An id that could leave the archive's root never becomes a key."""
    with pytest.raises(InvalidRecordingIdError, match="not a safe file name"):
        archive_key(hostile, extension="mp3")


@pytest.mark.parametrize("extension", ["part", "../x", "", "MP3/"])
def test_archive_key_refuses_odd_extensions(extension: str) -> None:
    """The partial's extension and anything not a plain extension are refused."""
    with pytest.raises(ValueError, match="not a recording file extension"):
        archive_key("rec-1", extension=extension)


@pytest.mark.parametrize(
    ("container", "expected"),
    [("mp3", "audio/mpeg"), ("wav", "audio/wav"), (None, "application/octet-stream")],
)
def test_media_type_comes_from_the_container(container: str | None, expected: str) -> None:
    """The stored media type follows the sniffed bytes."""
    assert media_type(container) == expected


@pytest.mark.parametrize(
    ("address", "allow_loopback", "problem"),
    [
        ("93.184.215.14", False, None),
        ("2606:4700::6810:84e5", False, None),
        ("127.0.0.1", True, None),
        ("::1", True, None),
        ("127.0.0.1", False, "a loopback address"),
        ("169.254.169.254", False, "a link-local address"),
        ("fe80::1%eth0", False, "a link-local address"),
        ("10.0.0.1", False, "a private address"),
        ("172.16.5.4", False, "a private address"),
        ("192.168.1.1", False, "a private address"),
        ("100.64.0.1", False, "a private address"),
        ("fd00::1", False, "a private address"),
        ("::ffff:10.0.0.1", False, "a private address"),
        ("0.0.0.0", True, "an unspecified address"),  # noqa: S104
        ("::", True, "an unspecified address"),
        ("224.0.0.1", False, "a multicast address"),
        ("ff02::1", False, "a multicast address"),
        ("not-an-ip", False, "not an IP address: 'not-an-ip'"),
    ],
)
def test_address_problem(address: str, allow_loopback: bool, problem: str | None) -> None:
    """Media is fetched only from globally routable unicast addresses (loopback on request)."""
    assert address_problem(address, allow_loopback=allow_loopback) == problem


def _answer(status: int, headers: dict[str, str], **held: Any) -> MediaAnswer:
    state = {"offset": 0, "asked_from": 0, "etag": None, "total": None, **held}
    return media_answer(status, headers, **state)


@pytest.mark.parametrize(
    ("status", "headers", "held", "expected"),
    [
        # a whole body: its length, its strong ETag; a weak one proves nothing
        (200, {"Content-Length": "10", "ETag": '"a"'}, {}, ("body", 10, 10, '"a"')),
        (200, {"Content-Length": "10", "ETag": 'W/"a"'}, {}, ("body", 10, 10, None)),
        # a range asked, a whole body answered: start over with it
        (200, {"Content-Length": "10"}, {"offset": 4, "asked_from": 4}, ("body", 10, 10, None)),
        # encoded anyway: its length is the encoded one, the total unknown until decoded
        (200, {"Content-Length": "7", "Content-Encoding": "gzip"}, {}, ("body", 7, None, None)),
        # the range asked, from the version held
        (
            206,
            {"Content-Range": "bytes 4-9/10", "ETag": '"a"'},
            {"offset": 4, "asked_from": 4, "etag": '"a"', "total": 10},
            ("resume", 6, 10, '"a"'),
        ),
        # asked a little early to prove the overlap
        (
            206,
            {"Content-Range": "bytes 2-9/10"},
            {"offset": 4, "asked_from": 2},
            ("resume", 8, 10, None),
        ),
        # the partial already is the whole file
        (
            416,
            {"Content-Range": "bytes */10"},
            {"offset": 10, "asked_from": 10, "etag": '"a"'},
            ("complete", None, 10, '"a"'),
        ),
    ],
)
def test_media_answer_transfers(
    status: int, headers: dict[str, str], held: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    """Responses that carry bytes (or prove them held): what to expect and to keep."""
    answer = _answer(status, headers, **held)

    assert (answer.action, answer.expected, answer.total, answer.etag) == expected
    assert answer.error is None


@pytest.mark.parametrize(
    ("status", "headers", "held", "action", "error", "message"),
    [
        (200, {"Content-Encoding": "br"}, {}, "fail", IntegrityError, "unsupported"),
        (
            206,
            {"Content-Range": "bytes 0-9/10"},
            {"offset": 4, "asked_from": 4},
            "restart",
            IntegrityError,
            "unexpected Content-Range",
        ),
        (
            206,
            {"Content-Range": "bytes 4-9/10", "ETag": '"b"'},
            {"offset": 4, "asked_from": 4, "etag": '"a"'},
            "restart",
            IntegrityError,
            "changed",
        ),
        (
            206,
            {"Content-Range": "bytes 4-11/12"},
            {"offset": 4, "asked_from": 4, "total": 10},
            "restart",
            IntegrityError,
            "changed",
        ),
        (
            206,
            {"Content-Range": "bytes 4-9/10", "Content-Encoding": "gzip"},
            {"offset": 4, "asked_from": 4},
            "restart",
            IntegrityError,
            "encoded",
        ),
        # 416 without a proven version, or for another size: start over
        (
            416,
            {"Content-Range": "bytes */10"},
            {"offset": 10, "asked_from": 10},
            "restart",
            IntegrityError,
            "416",
        ),
        (
            416,
            {"Content-Range": "bytes */12"},
            {"offset": 10, "asked_from": 10, "etag": '"a"'},
            "restart",
            IntegrityError,
            "416",
        ),
        (403, {}, {}, "refresh", PermissionDeniedError, "403"),
        (404, {}, {}, "refresh", NotFoundError, "404"),
        (429, {"Retry-After": "3"}, {}, "retry", RateLimitError, "429"),
        (503, {}, {}, "retry", ServerError, "503"),
        (400, {}, {}, "fail", BadRequestError, "400"),
    ],
)
def test_media_answer_refusals(
    status: int,
    headers: dict[str, str],
    held: dict[str, Any],
    action: str,
    error: type[Exception],
    message: str,
) -> None:
    """Responses that carry no usable bytes: restart, refresh the URL, retry, or fail."""
    answer = _answer(status, headers, **held)

    assert answer.action == action
    assert isinstance(answer.error, error)
    assert message in str(answer.error)
    assert answer.retry_after == (3.0 if status == 429 else None)


NEXT = "/v1/Account/MA_X/Recording/?limit=10&offset={}"


@pytest.mark.parametrize(
    ("offset", "count", "next_ref", "seen", "expected"),
    [
        (0, 10, NEXT.format(10), (), 10),  # the ordinary step
        (20, 5, None, (), None),  # the last page
        (20, 0, NEXT.format(30), (), None),  # empty although next promises more: the end
        (0, 0, NEXT.format(10), (), None),  # an empty first page
        (0, 10, "/v1/Account/MA_X/Recording/?limit=10", (), 10),  # no offset: after the page
        (10, 10, NEXT.format(50), (0, 10), 50),  # a jump forward (recordings arrived)
    ],
)
def test_next_page_offset(
    offset: int, count: int, next_ref: str | None, seen: tuple[int, ...], expected: int | None
) -> None:
    """Where a listing goes on after a page, or None where it ends."""
    assert next_page_offset(offset, count, next_ref, seen) == expected


@pytest.mark.parametrize(
    ("offset", "next_ref", "seen", "message"),
    [
        (0, NEXT.format(0), (0,), "repeats offset 0: stopping"),
        (200, NEXT.format(200), (), "repeats offset 200: stopping"),
        (30, NEXT.format(10), (0, 10, 20, 30), "repeats offset 10: stopping"),
        (30, NEXT.format(15), (0, 10, 30), "goes back from offset 30 to 15: stopping"),
        (0, NEXT.format("x"), (), "malformed meta.next"),
        (0, NEXT.format(-10), (), "malformed meta.next"),
    ],
)
def test_next_page_offset_refuses_loops(
    offset: int, next_ref: str, seen: tuple[int, ...], message: str
) -> None:
    """A `meta.next` that would never end the listing is a `ResponseValidationError`."""
    with pytest.raises(ResponseValidationError, match=message):
        next_page_offset(offset, 10, next_ref, seen)
