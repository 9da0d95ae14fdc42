"""AsyncSession against FakeVobiz on 127.0.0.1: auth, retries, typed errors, ownership."""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from _statuses import ANSWERS
from _waiting import eventually
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

import vobiz_async.session
from vobiz_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncSession,
    AuthenticationError,
    ConfigurationError,
    InvalidRecordingIdError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    Recording,
    ResponseValidationError,
    ServerError,
)
from vobiz_async.testing import FakeVobiz


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=57, seed=0) as fake:
        yield fake


@pytest.fixture(name="sleeps")
def _sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the session's retry delays instead of waiting them out.

    Only `vobiz_async.session` sees the recorder, so the fake server's own sleeps are real.
    """
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        delays.append(delay)
        await real_sleep(0)
        return result

    proxy = types.ModuleType("asyncio")
    proxy.__dict__.update(vars(asyncio))
    proxy.sleep = sleep  # type: ignore[attr-defined]
    monkeypatch.setattr(vobiz_async.session, "asyncio", proxy)
    return delays


def calls(fake: FakeVobiz, operation: str) -> int:
    """How many requests of `operation` reached the fake."""
    return sum(1 for r in fake.stats.requests if r.operation == operation)


def without_api_id(rec: Recording) -> dict[str, Any]:
    """The wire form of a recording minus the per-response api_id."""
    data = rec.to_dict()
    data.pop("api_id", None)
    return data


# --- auth and the happy path --------------------------------------------------------------


async def test_auth_headers_sent(fake: FakeVobiz, session: AsyncSession) -> None:
    """The fake accepts the request only with the right X-Auth-ID and X-Auth-Token."""
    rid = fake.recording_ids[0]

    rec = await session.recordings.get(rid)

    assert rec.recording_id == rid
    (request,) = fake.stats.requests
    assert request.credentials
    assert request.status == 200


async def test_get_matches_wire(fake: FakeVobiz, session: AsyncSession) -> None:
    """get() gives the recording the server sent, with the retrieve's api_id."""
    rid = fake.recording_ids[3]

    rec = await session.recordings.get(rid)

    assert rec.api_id
    assert without_api_id(rec) == without_api_id(Recording.from_dict(fake.recordings[rid].wire()))


async def test_exact_path(fake: FakeVobiz, session: AsyncSession) -> None:
    """The request path keeps Vobiz's case and trailing slash (a wrong one answers 401)."""
    rid = fake.recording_ids[0]

    await session.recordings.get(rid)

    assert fake.stats.requests[0].path == f"/api/v1/Account/{fake.auth_id}/Recording/{rid}/"


async def test_unknown_fields_tolerated(fake: FakeVobiz, session: AsyncSession) -> None:
    """A recording with fields the model does not know still structures."""
    added = fake.add_recording(
        extra_fields={"transcription": {"status": "done", "words": [1, 2]}, "brand": None}
    )

    rec = await session.recordings.get(added.recording_id)

    assert rec.recording_id == added.recording_id


async def test_percent_encoded_id_on_the_wire(fake: FakeVobiz, session: AsyncSession) -> None:
    """An id with reserved characters is percent-encoded on the wire and found."""
    fake.add_recording("rec:1+2")

    rec = await session.recordings.get("rec:1+2")

    assert rec.recording_id == "rec:1+2"
    assert fake.stats.requests[0].path.endswith("/Recording/rec%3A1%2B2/")


async def test_hostile_id_never_sent(fake: FakeVobiz, session: AsyncSession) -> None:
    """A path-traversal id is refused before anything reaches the server."""
    with pytest.raises(InvalidRecordingIdError):
        await session.recordings.get("../../auth/me")

    assert fake.stats.requests == []


async def test_delete(fake: FakeVobiz, session: AsyncSession) -> None:
    """delete() removes the recording (204); a second delete is a NotFoundError."""
    rid = fake.recording_ids[0]

    assert await session.recordings.delete(rid) is None
    assert rid not in fake.recording_ids
    with pytest.raises(NotFoundError):
        await session.recordings.delete(rid)


# --- typed errors -------------------------------------------------------------------------


async def test_wrong_token_is_authentication_error(fake: FakeVobiz) -> None:
    """401 for a rotated token is an AuthenticationError, and is not retried."""
    async with AsyncSession(fake.auth_id, "rotated-token", base_url=fake.base_url) as session:
        with pytest.raises(AuthenticationError) as exc_info:
            await session.recordings.get(fake.recording_ids[0])

    assert exc_info.value.status_code == 401
    assert exc_info.value.message == "Incorrect authentication credentials."
    assert exc_info.value.api_id
    assert calls(fake, "get") == 1


async def test_not_found(session: AsyncSession) -> None:
    """404 is a NotFoundError carrying Vobiz's message and api_id."""
    with pytest.raises(NotFoundError) as exc_info:
        await session.recordings.get("00000000-0000-4000-8000-000000000000")

    assert exc_info.value.message == "Recording not found"
    assert exc_info.value.api_id


@pytest.mark.parametrize(("status", "cls"), ANSWERS)
async def test_answers_not_retried(
    fake: FakeVobiz, session: AsyncSession, status: int, cls: type[APIStatusError]
) -> None:
    """Non-transient 4xx raise their typed error after a single request."""
    fake.api_fault("get", status)

    with pytest.raises(cls):
        await session.recordings.get(fake.recording_ids[0])

    assert calls(fake, "get") == 1


async def test_generic_error_shape(fake: FakeVobiz, session: AsyncSession) -> None:
    """The generic error page's nested message and requestId reach the exception."""
    fake.api_fault("get", 403, body="generic")

    with pytest.raises(PermissionDeniedError) as exc_info:
        await session.recordings.get(fake.recording_ids[0])

    assert exc_info.value.message == "Forbidden"
    assert exc_info.value.api_id is not None
    assert exc_info.value.api_id.startswith("req_")


async def test_html_gateway_error(
    fake: FakeVobiz, session: AsyncSession, sleeps: list[float]
) -> None:
    """A proxy's HTML 502 ends as a ServerError with a readable message."""
    fake.api_fault("get", 502, times=3, body="html")

    with pytest.raises(ServerError) as exc_info:
        await session.recordings.get(fake.recording_ids[0])

    assert exc_info.value.status_code == 502
    assert exc_info.value.message == "502 Bad Gateway"
    assert "<" not in str(exc_info.value)


async def test_non_json_success(fake: FakeVobiz, session: AsyncSession) -> None:
    """A 200 that is not JSON is a ResponseValidationError."""
    fake.api_fault("get", 200, body="html")

    with pytest.raises(ResponseValidationError, match="text/html"):
        await session.recordings.get(fake.recording_ids[0])


# --- retries ------------------------------------------------------------------------------


async def test_retries_then_success(
    fake: FakeVobiz, session: AsyncSession, sleeps: list[float]
) -> None:
    """Two 503s then a 200: the caller sees only the recording."""
    fake.api_fault("get", 503, times=2)

    rec = await session.recordings.get(fake.recording_ids[0])

    assert rec.recording_id == fake.recording_ids[0]
    assert calls(fake, "get") == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_transient_statuses_retried(
    fake: FakeVobiz, session: AsyncSession, sleeps: list[float], status: int
) -> None:
    """408, 429 and 5xx are retried on GET."""
    fake.api_fault("get", status)

    await session.recordings.get(fake.recording_ids[0])

    assert calls(fake, "get") == 2


async def test_retries_exhausted(
    fake: FakeVobiz, session: AsyncSession, sleeps: list[float]
) -> None:
    """After max_retries (2) the last 503 is raised as a ServerError with its evidence."""
    fake.api_fault("get", 503, times=3)

    with pytest.raises(ServerError) as exc_info:
        await session.recordings.get(fake.recording_ids[0])

    assert exc_info.value.status_code == 503
    assert exc_info.value.api_id
    assert exc_info.value.message == "Service Unavailable"
    assert calls(fake, "get") == 3


async def test_rate_limit_exhausted(
    fake: FakeVobiz, session: AsyncSession, sleeps: list[float]
) -> None:
    """A 429 that does not clear is a RateLimitError whose headers keep Retry-After."""
    fake.api_fault("get", 429, times=3, retry_after=1)

    with pytest.raises(RateLimitError) as exc_info:
        await session.recordings.get(fake.recording_ids[0])

    assert exc_info.value.headers["Retry-After"] == "1"


async def test_max_retries_zero(fake: FakeVobiz, sleeps: list[float]) -> None:
    """max_retries=0 sends each call once."""
    fake.api_fault("get", 503)

    async with AsyncSession(**fake.session_kwargs(), max_retries=0) as session:
        with pytest.raises(ServerError):
            await session.recordings.get(fake.recording_ids[0])

    assert calls(fake, "get") == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("status", "retry_after", "waited"),
    [(429, 7, 7.0), (503, 3600, 60.0), (503, "Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
    ids=["honoured", "capped-at-60s", "http-date-in-the-past"],
)
async def test_retry_after_sets_the_wait(
    fake: FakeVobiz,
    session: AsyncSession,
    sleeps: list[float],
    status: int,
    retry_after: int | str,
    waited: float,
) -> None:
    """The wait before a retry is the server's Retry-After; an absurd one is capped at 60 s,
    and an HTTP date in the past means retry at once."""
    fake.api_fault("get", status, retry_after=retry_after)

    await session.recordings.get(fake.recording_ids[0])

    assert sleeps == [waited]


async def test_backoff_without_retry_after(
    fake: FakeVobiz, session: AsyncSession, sleeps: list[float]
) -> None:
    """Without Retry-After the waits follow 0.5 s, 1 s less jitter."""
    fake.api_fault("get", 503, times=2)

    await session.recordings.get(fake.recording_ids[0])

    assert len(sleeps) == 2
    assert 0.375 <= sleeps[0] <= 0.5
    assert 0.75 <= sleeps[1] <= 1.0


async def test_retry_after_zero_really_retries(fake: FakeVobiz, session: AsyncSession) -> None:
    """With real sleeping, `Retry-After: 0` retries at once."""
    fake.api_fault("list", 503, retry_after=0)

    page = await session.recordings.list(limit=5)

    assert len(page.objects) == 5
    assert calls(fake, "list") == 2


async def test_delete_retried(fake: FakeVobiz, session: AsyncSession, sleeps: list[float]) -> None:
    """DELETE is idempotent and retried on 503."""
    rid = fake.recording_ids[0]
    fake.api_fault("delete", 503)

    await session.recordings.delete(rid)

    assert calls(fake, "delete") == 2
    assert rid not in fake.recording_ids


async def test_connection_refused(sleeps: list[float]) -> None:
    """A server that is gone gives APIConnectionError after the retries."""
    async with FakeVobiz(recordings=1) as fake:
        kwargs = fake.session_kwargs()

    async with AsyncSession(**kwargs) as session:
        with pytest.raises(APIConnectionError):
            await session.recordings.list()

    assert len(sleeps) == 2


async def test_timeout(fake: FakeVobiz) -> None:
    """A response slower than `timeout` is an APITimeoutError."""
    fake.latency = 0.3

    async with AsyncSession(**fake.session_kwargs(), timeout=0.05, max_retries=0) as session:
        with pytest.raises(APITimeoutError):
            await session.recordings.list()


async def test_cancellation_not_wrapped(fake: FakeVobiz, session: AsyncSession) -> None:
    """Cancelling a call raises CancelledError, never a VobizError."""
    fake.latency = 0.3
    task = asyncio.ensure_future(session.recordings.list())
    # Cancelled while its request is at the server, however long this machine took to send it.
    assert await eventually(lambda: fake.stats.api_in_flight == 1)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


# --- export and bulk delete ---------------------------------------------------------------


async def test_export(fake: FakeVobiz, session: AsyncSession) -> None:
    """export() posts the documented body and returns the 202's result."""
    result = await session.recordings.export(["ops@example.com"], recording_storage_duration=7)

    assert result.status == "success"
    assert result.api_id
    assert fake.stats.export_bodies == [
        {"recipient": {"customer_account": ["ops@example.com"]}, "recording_storage_duration": 7}
    ]


async def test_export_never_retried(
    fake: FakeVobiz, session: AsyncSession, sleeps: list[float]
) -> None:
    """A 503 on export is raised after one request: a retry could start a second export."""
    fake.api_fault("export", 503)

    with pytest.raises(ServerError):
        await session.recordings.export(["ops@example.com"], recording_storage_duration=7)

    assert calls(fake, "export") == 1
    assert sleeps == []


async def test_export_already_running(fake: FakeVobiz, session: AsyncSession) -> None:
    """A second export while one runs is a PermissionDeniedError with Vobiz's message."""
    await session.recordings.export("ops@example.com", recording_storage_duration=7)

    with pytest.raises(PermissionDeniedError, match="already in progress"):
        await session.recordings.export("ops@example.com", recording_storage_duration=7)


async def test_bulk_delete_filters_in_query(fake: FakeVobiz, session: AsyncSession) -> None:
    """bulk_delete() filters arrive in the query string and delete only what matches."""
    target = fake.add_recording(call_uuid="11111111-2222-4333-8444-555555555555")
    before = len(fake.recording_ids)

    await session.recordings.bulk_delete(call_uuid=target.call_uuid)

    assert fake.stats.bulk_delete_queries == [{"call_uuid": target.call_uuid}]
    assert target.recording_id not in fake.recording_ids
    assert len(fake.recording_ids) == before - 1


async def test_bulk_delete_refused_without_filters(fake: FakeVobiz, session: AsyncSession) -> None:
    """bulk_delete() with no filter never reaches the server."""
    with pytest.raises(ValueError, match="all_recordings"):
        await session.recordings.bulk_delete()

    assert fake.stats.requests == []
    assert len(fake.recording_ids) == 57


# --- credentials, configuration and ownership ---------------------------------------------


def test_missing_credentials() -> None:
    """No arguments and no env vars is a ConfigurationError at construction."""
    with pytest.raises(ConfigurationError, match="VOBIZ_AUTH_TOKEN"):
        AsyncSession()


def test_missing_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """An auth id without a token is a ConfigurationError too."""
    monkeypatch.setenv("VOBIZ_AUTH_ID", "MA_ENV")

    with pytest.raises(ConfigurationError):
        AsyncSession()


async def test_env_var_fallback(fake: FakeVobiz, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and base URL come from VOBIZ_* env vars when not passed."""
    monkeypatch.setenv("VOBIZ_AUTH_ID", fake.auth_id)
    monkeypatch.setenv("VOBIZ_AUTH_TOKEN", fake.auth_token)
    monkeypatch.setenv("VOBIZ_BASE_URL", fake.base_url)

    async with AsyncSession() as session:
        page = await session.recordings.list(limit=1)

    assert page.meta.total_count == 57


async def test_arguments_beat_env(fake: FakeVobiz, monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit arguments win over env vars."""
    monkeypatch.setenv("VOBIZ_AUTH_ID", "MA_WRONG")
    monkeypatch.setenv("VOBIZ_AUTH_TOKEN", "wrong")
    monkeypatch.setenv("VOBIZ_BASE_URL", "https://api.example.invalid/api/v1/")

    async with AsyncSession(**fake.session_kwargs()) as session:
        page = await session.recordings.list(limit=1)

    assert page.meta.total_count == 57


def test_default_base_url() -> None:
    """Without VOBIZ_BASE_URL the session talks to Vobiz's production API."""
    session = AsyncSession("MA_X", "tok")

    assert session.base_url == URL("https://api.vobiz.ai/api/v1/")


def test_plain_http_refused_off_loopback() -> None:
    """Credentials are never sent over plain http to a remote host."""
    with pytest.raises(ConfigurationError, match="https"):
        AsyncSession("MA_X", "tok", base_url="http://api.vobiz.ai/api/v1/")


def test_token_not_in_repr(fake: FakeVobiz) -> None:
    """repr() and str() of a session never show the token."""
    session = AsyncSession(**fake.session_kwargs())

    assert fake.auth_token not in repr(session)
    assert fake.auth_token not in str(session)
    assert fake.auth_id in repr(session)


async def test_token_not_logged(
    fake: FakeVobiz,
    session: AsyncSession,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Debug logging of requests, retries and errors never contains the token."""
    caplog.set_level(logging.DEBUG)
    fake.api_fault("get", 503)
    fake.api_fault("list", 401)

    await session.recordings.get(fake.recording_ids[0])
    with pytest.raises(AuthenticationError):
        await session.recordings.list()

    logged = [r for r in caplog.records if r.name.startswith("vobiz_async")]
    assert logged, "requests are logged at debug"
    for record in caplog.records:
        assert fake.auth_token not in record.getMessage()
        assert fake.auth_token not in repr(record.args)


async def test_requests_logged_at_debug(
    fake: FakeVobiz, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request is logged at debug with method, path and status."""
    caplog.set_level(logging.DEBUG, logger="vobiz_async")
    rid = fake.recording_ids[0]

    await session.recordings.get(rid)

    messages = [r.getMessage() for r in caplog.records if r.name == "vobiz_async"]
    assert any("GET" in m and f"/Recording/{rid}/" in m and "200" in m for m in messages)


async def test_borrowed_http_session_not_closed(fake: FakeVobiz) -> None:
    """A caller's aiohttp.ClientSession is used and left open."""
    async with aiohttp.ClientSession() as http:
        async with AsyncSession(**fake.session_kwargs(), http_session=http) as session:
            await session.recordings.list(limit=1)
            assert session.http is http

        assert not http.closed
        async with http.get(fake.base_url) as resp:  # still usable
            assert resp.status == 401


async def test_owned_http_session_closed(fake: FakeVobiz) -> None:
    """The ClientSession the session opened itself is closed on exit."""
    async with AsyncSession(**fake.session_kwargs()) as session:
        await session.recordings.list(limit=1)
        http = session.http

    assert http.closed


async def test_one_connection_pool(fake: FakeVobiz, session: AsyncSession) -> None:
    """Successive calls reuse one ClientSession and its pooled connection, not one per request."""
    http = session.http
    fake.stats.reset()

    await session.recordings.list(limit=1)
    await session.recordings.get(fake.recording_ids[0])
    await session.check_credentials()

    assert session.http is http
    assert len(fake.stats.requests) == 3
    assert fake.stats.connections == 1  # all three over one kept-alive TCP connection


async def test_deprecation_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Deprecation and Sunset headers are logged once each, however many responses carry them."""
    headers = {"Deprecation": "true", "Sunset": "Wed, 31 Dec 2026 23:59:59 GMT"}

    async def listing(request: web.Request) -> web.Response:
        meta = {"limit": 20, "offset": 0, "total_count": 0, "next": None, "previous": None}
        body = {"api_id": "x", "meta": meta, "objects": []}
        return web.json_response(body, headers=headers)

    app = web.Application()
    app.router.add_get("/api/v1/Account/MA_X/Recording/", listing)
    caplog.set_level(logging.WARNING, logger="vobiz_async")
    async with TestServer(app, host="127.0.0.1") as server:
        base_url = str(server.make_url("/api/v1/"))
        async with AsyncSession("MA_X", "tok", base_url=base_url) as session:
            for _ in range(3):
                await session.recordings.list()

    messages = [r.getMessage() for r in caplog.records if r.name == "vobiz_async"]
    assert len([m for m in messages if "Deprecation" in m]) == 1
    assert len([m for m in messages if "Sunset" in m and "2026" in m]) == 1


async def test_check_credentials_accepts_good_ones(fake: FakeVobiz, session: AsyncSession) -> None:
    """check_credentials() answers with the account for valid credentials."""
    account = await session.check_credentials()

    assert account["auth_id"] == fake.auth_id
    assert [(r.operation, r.status, r.credentials) for r in fake.stats.requests] == [
        ("auth_me", 200, True)
    ]


async def test_check_credentials_rejects_a_bad_token(fake: FakeVobiz) -> None:
    """check_credentials() raises AuthenticationError for a wrong token."""
    kwargs = {**fake.session_kwargs(), "auth_token": "wrong"}
    async with AsyncSession(**kwargs) as session:
        with pytest.raises(AuthenticationError):
            await session.check_credentials()
