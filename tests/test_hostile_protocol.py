"""The pure decisions behind issue 26's hostile servers, by table: URL redaction, body
excerpts, the bounded error message, nested JSON, the transfer-rate floor and the IPv4 an
IPv6 address carries. The same behaviours through real sockets are in test_hostile.py."""

from __future__ import annotations

import pickle

import pytest

from vobiz_async.errors import (
    APIConnectionError,
    NotFoundError,
    ResponseValidationError,
    VobizError,
)
from vobiz_async.protocol import (
    SpeedFloor,
    address_problem,
    content_decoder,
    decipher_response,
    excerpt,
    make_status_error,
    parse_timestamp,
    quote_path_segment,
    redact_urls,
)
from vobiz_async.webhooks import WebhookPayloadError, parse_body, parse_callback

SIGNED = "https://media.example.com/r/abc.mp3?X-Amz-Signature=SECRET&X-Amz-Credential=CRED"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SIGNED, "https://media.example.com/r/abc.mp3"),
        (f"url='{SIGNED}'", "url='https://media.example.com/r/abc.mp3'"),
        (f'url="{SIGNED}"', 'url="https://media.example.com/r/abc.mp3"'),
        (f"({SIGNED})", "(https://media.example.com/r/abc.mp3)"),
        (f"URL('{SIGNED}')", "URL('https://media.example.com/r/abc.mp3')"),
        (f"<{SIGNED}>", "<https://media.example.com/r/abc.mp3>"),
        # an escaped quote inside a repr ends the URL too
        (f"'it\\'s {SIGNED}\\' end'", "'it\\'s https://media.example.com/r/abc.mp3\\' end'"),
        # several in one text, http and https, any case of the scheme
        (
            "a http://h:8080/x?t=1 b HTTPS://H/y?sig=2#frag c",
            "a http://h:8080/x b HTTPS://H/y c",
        ),
        # userinfo, with and without a password
        ("https://user:pass@host.example/p?q=1", "https://host.example/p"),
        ("see http://token@10.0.0.1:81/a/b.", "see http://10.0.0.1:81/a/b."),
        # a fragment alone, a query on a bare host, an IPv6 host
        ("https://h.example/p#secret", "https://h.example/p"),
        ("https://h.example?X-Amz-Signature=S", "https://h.example"),
        ("http://[::1]:8000/p?sig=S", "http://[::1]:8000/p"),
        # no URL: unchanged
        ("GET media.example.com/r/abc.mp3 failed", "GET media.example.com/r/abc.mp3 failed"),
        ("", ""),
    ],
)
def test_redact_urls(text: str, expected: str) -> None:
    """Every http(s) URL keeps scheme, host, port and path; query, fragment, userinfo go."""
    assert redact_urls(text) == expected


@pytest.mark.parametrize(
    "error",
    [
        VobizError(f"failed: {SIGNED}"),
        APIConnectionError(f"GET failed: ClientResponseError: url='{SIGNED}'"),
        ResponseValidationError(f"odd answer from {SIGNED}", body=None),
        NotFoundError(f"gone: {SIGNED}", status_code=404),
    ],
)
def test_every_error_is_redacted_once_at_its_root(error: VobizError) -> None:
    """`VobizError` itself drops the query, for every subclass, in str, repr and a pickle."""
    for text in (str(error), repr(error), str(pickle.loads(pickle.dumps(error)))):  # noqa: S301 (our own bytes)
        assert "SECRET" not in text
        assert "CRED" not in text
        assert "media.example.com/r/abc.mp3" in text


def test_an_error_message_is_bounded() -> None:
    """No error message holds megabytes, whatever it was built from."""
    error = VobizError("x" * 1_000_000)

    assert len(str(error)) < 2100
    assert str(error).endswith("…(998000 more characters)")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"ID3\x00\x01", "b'ID3\\x00\\x01'"),
        (b"a" * 64, "b'" + "a" * 64 + "'"),
        (b"a" * 100, "b'" + "a" * 64 + "'…(36 more bytes)"),
        ("Bad Gateway", "Bad Gateway"),
        ("tab\there\n", "tab\\there\\n"),
        ("é" * 70, "é" * 64 + "…(6 more characters)"),
        ("", ""),
    ],
)
def test_excerpt(data: bytes | str, expected: str) -> None:
    """At most 64 bytes (characters of text), escaped, and how many more there were."""
    assert excerpt(data) == expected


def test_a_status_error_quotes_a_page_briefly() -> None:
    """An HTML error page without a title is quoted in at most 64 characters."""
    err = make_status_error(503, {}, "\x00\x01garbage " * 10_000)

    assert len(err.message) < 150
    assert err.message.startswith("\\x00\\x01garbage")
    assert err.message.endswith("more characters)")


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (quote_path_segment, "x/" * 100_000),
        (parse_timestamp, "2026-" * 100_000),
        (content_decoder, "br" * 100_000),
    ],
)
def test_a_refused_value_is_quoted_briefly(call: object, arg: str) -> None:
    """A hostile id, timestamp or encoding is named in a short excerpt, not whole."""
    with pytest.raises(
        ValueError, match=r"unsafe recording id|not a Vobiz timestamp|unsupported Content-Encoding"
    ) as exc_info:
        call(arg)  # type: ignore[operator]

    assert len(str(exc_info.value)) < 200


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000],
)
def test_nested_json_from_the_api_is_a_validation_error(body: bytes) -> None:
    """JSON nested past Python's recursion limit is ResponseValidationError, not a
    RecursionError."""
    for status in (200, 500):
        with pytest.raises(ResponseValidationError, match="nested too deeply"):
            decipher_response(status, {"Content-Type": "application/json"}, body)


@pytest.mark.parametrize("body", [b"[" * 60_000, b'{"a":' * 12_000])
def test_nested_json_in_a_callback_is_a_payload_error(body: bytes) -> None:
    """A nested callback body is a WebhookPayloadError (a 400), not a RecursionError."""
    with pytest.raises(WebhookPayloadError, match="nested too deeply"):
        parse_body("application/json", body)


@pytest.mark.parametrize(
    ("chunks", "slow_at"),
    [
        # (bytes, seconds since the start) per chunk; floor 100 B/s over 1 s
        ([(50, 0.5), (10, 0.9)], None),  # the window has not ended yet
        ([(50, 0.5), (10, 1.0)], 1),  # 60 B in the first second
        ([(100, 1.0)], None),  # exactly the floor
        ([(500, 0.2), (1, 1.1), (1, 1.6), (1, 2.2)], 3),  # fast, then a trickle
        ([(0, 0.1), (5000, 30.0)], None),  # a long stall then a burst: 166 B/s averaged
        ([(1, t / 10) for t in range(1, 100)], 9),  # 10 B/s: slow at the first window's end
        ([(120, t) for t in range(1, 20)], None),  # steady above the floor: never
    ],
)
def test_speed_floor(chunks: list[tuple[int, float]], slow_at: int | None) -> None:
    """A transfer is slow when a whole window averaged below the floor, as curl's
    --speed-limit/--speed-time."""
    floor = SpeedFloor(100.0, 1.0, started=0.0)

    verdicts = [floor.slow(size, now) for size, now in chunks]

    first = verdicts.index(True) if True in verdicts else None
    assert first == slow_at
    assert floor.message() == "transfer slower than 100 B/s for 1 s"


@pytest.mark.parametrize(
    ("address", "allow_loopback", "problem"),
    [
        # the IPv4 forms an IPv6 address carries, cloud metadata in each
        ("64:ff9b::a9fe:a9fe", False, "a link-local address"),  # NAT64
        ("64:ff9b::169.254.169.254", False, "a link-local address"),
        ("::a9fe:a9fe", False, "a link-local address"),  # IPv4-compatible
        ("::ffff:0:a9fe:a9fe", False, "a link-local address"),  # IPv4-translated
        ("::ffff:169.254.169.254", False, "a link-local address"),  # IPv4-mapped
        ("2002:a9fe:a9fe::1", False, "a link-local address"),  # 6to4
        ("2001:0:4136:e378:8000:63bf:5601:5601", False, "a link-local address"),  # Teredo
        # private, loopback and unspecified IPv4 behind them
        ("64:ff9b::a00:1", False, "a private address"),
        ("2002:c0a8:101::1", False, "a private address"),
        ("::ffff:0:a00:1", False, "a private address"),
        ("64:ff9b::7f00:1", False, "a loopback address"),
        ("64:ff9b::7f00:1", True, None),
        ("::127.0.0.1", False, "a loopback address"),
        ("64:ff9b::", False, "an unspecified address"),
        ("64:ff9b::e000:1", False, "a multicast address"),
        # NAT64's local-use prefix is a site's own: private whatever it carries
        ("64:ff9b:1::a9fe:a9fe", False, "a link-local address"),
        ("64:ff9b:1::808:808", False, "a private address"),
        # a global IPv4 behind any of them is fetched
        ("64:ff9b::808:808", False, None),
        ("::ffff:0:808:808", False, None),
        ("2002:808:808::1", False, None),
        # plain IPv6 keeps its own meaning: ::1 and :: are not IPv4
        ("::1", False, "a loopback address"),
        ("::1", True, None),
        ("::", False, "an unspecified address"),
        ("2606:4700:4700::1111", False, None),
    ],
)
def test_embedded_ipv4_is_judged_as_ipv4(
    address: str, allow_loopback: bool, problem: str | None
) -> None:
    """An IPv6 address is judged as the IPv4 address it carries."""
    assert address_problem(address, allow_loopback=allow_loopback) == problem


def test_a_callback_keeps_no_signed_record_url() -> None:
    """A RecordStop's signed RecordUrl is kept (and spooled) without its query."""
    event = parse_callback(
        {"Event": "RecordStop", "RecordingID": "rec-1", "RecordUrl": f"{SIGNED}#frag"}
    )

    assert event is not None
    assert event.record_url == "https://media.example.com/r/abc.mp3"
