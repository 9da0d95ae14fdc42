"""Request building only: exact URLs, queries and bodies, checked with aioresponses.

aioresponses patches `ClientSession._request`, skipping the connector and the stream
reader, so behaviour on the wire is tested against a real loopback server elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import ClientResponse
from aioresponses import aioresponses
from yarl import URL

from vobiz_async import AsyncSession, InvalidRecordingIdError, VobizError

RID = "d7801b2e-5a5c-4c1d-9d4e-1a2b3c4d5e6f"
ACCOUNT = "https://api.vobiz.ai/api/v1/Account/MA_TEST/"
EMPTY_PAGE = {
    "api_id": "x",
    "meta": {"limit": 20, "next": None, "offset": 0, "previous": None, "total_count": 0},
    "objects": [],
}
RECORDING = {
    "add_time": "2026-05-07 09:45:35.79276+05:30",
    "api_id": "api-1",
    "call_uuid": "c1",
    "conference_name": None,
    "from_number": "+918031274121",
    "monthly_recording_storage_amount": 0,
    "recording_duration_ms": "7880.00000",
    "recording_end_ms": None,
    "recording_format": "mp3",
    "recording_id": RID,
    "recording_start_ms": None,
    "recording_storage_duration": 0,
    "recording_storage_rate": 0.004,
    "recording_type": "call",
    "recording_url": f"https://media.vobiz.ai/{RID}.mp3",
    "resource_uri": f"/v1/Account/MA_TEST/Recording/{RID}/",
    "rounded_recording_duration": 60,
    "to_number": "918071387428",
}


class _Response(ClientResponse):
    """aioresponses 0.7.9 omits aiohttp 3.14's required `stream_writer` (aioresponses #289)."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture(name="mocked")
def _mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    monkeypatch.setattr("aioresponses.core.ClientResponse", _Response)
    with aioresponses() as m:
        yield m


@pytest.fixture(name="session")
async def _session(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncSession]:
    monkeypatch.delenv("VOBIZ_BASE_URL", raising=False)
    async with AsyncSession("MA_TEST", "s3cret-token", max_retries=0) as session:
        yield session


def sent(mocked: aioresponses) -> list[tuple[str, URL]]:
    """Every (method, URL) the session asked aiohttp for, in order."""
    return list(mocked.requests)


def call_kwargs(mocked: aioresponses) -> dict[str, Any]:
    """The keyword arguments of the only request sent."""
    ((call,),) = mocked.requests.values()
    kwargs: dict[str, Any] = call.kwargs
    return kwargs


async def test_get_url(session: AsyncSession, mocked: aioresponses) -> None:
    """get() asks for `Account/{id}/Recording/{rid}/` with Vobiz's case and trailing slash."""
    mocked.get(f"{ACCOUNT}Recording/{RID}/", payload=RECORDING)

    await session.recordings.get(RID)

    assert sent(mocked) == [("GET", URL(f"{ACCOUNT}Recording/{RID}/"))]


async def test_auth_headers(session: AsyncSession, mocked: aioresponses) -> None:
    """Both credential headers go with an API request."""
    mocked.get(f"{ACCOUNT}Recording/{RID}/", payload=RECORDING)

    await session.recordings.get(RID)

    headers = call_kwargs(mocked)["headers"]
    assert headers["X-Auth-ID"] == "MA_TEST"
    assert headers["X-Auth-Token"] == "s3cret-token"


async def test_reserved_characters_percent_encoded(
    session: AsyncSession, mocked: aioresponses
) -> None:
    """An id with `+` is percent-encoded, so it cannot turn into a space or a new segment."""
    mocked.get(f"{ACCOUNT}Recording/rec%2B1/", payload={**RECORDING, "recording_id": "rec+1"})

    rec = await session.recordings.get("rec+1")

    assert rec.recording_id == "rec+1"
    assert sent(mocked) == [("GET", URL(f"{ACCOUNT}Recording/rec%2B1/"))]


HOSTILE_IDS = ["../x", "..", ".", "", "a/b", "../../Account/OTHER", "a?b=c", "a#frag", "%2e%2e"]


@pytest.mark.parametrize("method", ["get", "delete"])
@pytest.mark.parametrize("rid", HOSTILE_IDS)
async def test_hostile_id_refused(
    session: AsyncSession, mocked: aioresponses, rid: str, method: str
) -> None:
    """get() and delete() refuse ids that would change the path, before any request."""
    with pytest.raises(InvalidRecordingIdError):
        await getattr(session.recordings, method)(rid)

    assert sent(mocked) == []


async def test_list_url_and_query(session: AsyncSession, mocked: aioresponses) -> None:
    """list() sends the page size and filters in the query of `Recording/`."""
    url = (
        f"{ACCOUNT}Recording/?limit=20&recording_type=call&call_uuid=c1"
        "&add_time__gte=2026-01-01+00:00:00"
    )
    mocked.get(url, payload=EMPTY_PAGE)

    await session.recordings.list(
        limit=20, recording_type="call", call_uuid="c1", add_time__gte=datetime(2026, 1, 1)
    )

    ((method, got),) = sent(mocked)
    assert method == "GET"
    assert got.path == "/api/v1/Account/MA_TEST/Recording/"
    assert dict(got.query) == {
        "limit": "20",
        "recording_type": "call",
        "call_uuid": "c1",
        "add_time__gte": "2026-01-01 00:00:00",
    }


async def test_list_omits_unset_filters(session: AsyncSession, mocked: aioresponses) -> None:
    """Filters left at None are not sent as the string "None"."""
    mocked.get(f"{ACCOUNT}Recording/", payload=EMPTY_PAGE)

    await session.recordings.list(call_uuid=None)

    assert sent(mocked) == [("GET", URL(f"{ACCOUNT}Recording/"))]


@pytest.mark.parametrize("limit", [0, -1, 101])
def test_list_limit_bounds(session: AsyncSession, limit: int) -> None:
    """A page size outside 1-100 is refused when the pager is built."""
    with pytest.raises(ValueError, match="limit"):
        session.recordings.list(limit=limit)


async def test_delete_url(session: AsyncSession, mocked: aioresponses) -> None:
    """delete() sends DELETE to the recording's URL and returns None on 204."""
    mocked.delete(f"{ACCOUNT}Recording/{RID}/", status=204)

    assert await session.recordings.delete(RID) is None
    assert sent(mocked) == [("DELETE", URL(f"{ACCOUNT}Recording/{RID}/"))]


async def test_bulk_delete_filters_in_query(session: AsyncSession, mocked: aioresponses) -> None:
    """bulk_delete() puts its filters in the query of `Recording/BulkDelete/`, not a body."""
    mocked.delete(
        f"{ACCOUNT}Recording/BulkDelete/?add_time__lte=2026-01-01+00:00:00&call_uuid=c1",
        status=202,
        payload={"api_id": "b1"},
    )

    await session.recordings.bulk_delete(add_time__lte="2026-01-01 00:00:00", call_uuid="c1")

    ((method, got),) = sent(mocked)
    assert (method, got.path) == ("DELETE", "/api/v1/Account/MA_TEST/Recording/BulkDelete/")
    assert dict(got.query) == {"add_time__lte": "2026-01-01 00:00:00", "call_uuid": "c1"}
    kwargs = call_kwargs(mocked)
    assert kwargs.get("json") is None
    assert kwargs.get("data") is None


async def test_bulk_delete_without_filters_refused(
    session: AsyncSession, mocked: aioresponses
) -> None:
    """bulk_delete() with no filter would wipe the account: refused, nothing sent."""
    with pytest.raises(ValueError, match="all_recordings=True"):
        await session.recordings.bulk_delete()

    assert sent(mocked) == []


async def test_bulk_delete_none_filters_refused(
    session: AsyncSession, mocked: aioresponses
) -> None:
    """Filters that are all None count as no filter."""
    with pytest.raises(ValueError, match="all_recordings=True"):
        await session.recordings.bulk_delete(call_uuid=None)

    assert sent(mocked) == []


async def test_bulk_delete_unknown_filter(session: AsyncSession, mocked: aioresponses) -> None:
    """A misspelt filter is an error, not silently dropped (which could widen the delete)."""
    with pytest.raises(TypeError, match="add_time_lte"):
        await session.recordings.bulk_delete(add_time_lte="2026-01-01 00:00:00")

    assert sent(mocked) == []


async def test_bulk_delete_everything_explicitly(
    session: AsyncSession, mocked: aioresponses
) -> None:
    """all_recordings=True sends the unfiltered bulk delete."""
    mocked.delete(f"{ACCOUNT}Recording/BulkDelete/", status=202, payload={"api_id": "b1"})

    await session.recordings.bulk_delete(all_recordings=True)

    assert sent(mocked) == [("DELETE", URL(f"{ACCOUNT}Recording/BulkDelete/"))]


async def test_export_body(session: AsyncSession, mocked: aioresponses) -> None:
    """export() POSTs the documented JSON body to `export/recording/`."""
    mocked.post(
        f"{ACCOUNT}export/recording/", status=202, payload={"api_id": "e1", "status": "success"}
    )

    result = await session.recordings.export(
        ["ops@example.com"], start=datetime(2026, 1, 1), end=datetime(2026, 1, 31, 23, 59, 59)
    )

    assert result.status == "success"
    assert sent(mocked) == [("POST", URL(f"{ACCOUNT}export/recording/"))]
    assert call_kwargs(mocked)["json"] == {
        "recipient": {"customer_account": ["ops@example.com"]},
        "from": "2026-01-01 00:00:00",
        "to": "2026-01-31 23:59:59",
    }


async def test_export_by_storage_duration(session: AsyncSession, mocked: aioresponses) -> None:
    """export() by storage age sends that filter instead of from/to."""
    mocked.post(
        f"{ACCOUNT}export/recording/", status=202, payload={"api_id": "e1", "status": "success"}
    )

    await session.recordings.export("ops@example.com", recording_storage_duration__gte=7)

    assert call_kwargs(mocked)["json"] == {
        "recipient": {"customer_account": ["ops@example.com"]},
        "recording_storage_duration__gte": 7,
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"start": datetime(2026, 1, 1)},
        {
            "start": datetime(2026, 1, 1),
            "end": datetime(2026, 2, 1),
            "recording_storage_duration": 3,
        },
    ],
)
async def test_export_selection_must_be_one(
    session: AsyncSession, mocked: aioresponses, kwargs: dict[str, Any]
) -> None:
    """export() needs exactly one complete selection, by time or by storage age."""
    with pytest.raises(ValueError, match="export"):
        await session.recordings.export(["ops@example.com"], **kwargs)

    assert sent(mocked) == []


@pytest.mark.parametrize("recipients", [[], ["not-an-email"], ""])
async def test_export_needs_recipients(
    session: AsyncSession, mocked: aioresponses, recipients: list[str] | str
) -> None:
    """export() without a usable recipient address is refused before sending."""
    with pytest.raises(ValueError, match="recipient"):
        await session.recordings.export(recipients, recording_storage_duration=3)

    assert sent(mocked) == []


@pytest.mark.parametrize("auth_id", ["MA/../x", "..", "MA_X?y=1"])
def test_hostile_auth_id_refused(auth_id: str) -> None:
    """An auth id that would change the account path is refused at construction."""
    with pytest.raises(VobizError):
        AsyncSession(auth_id, "tok")


async def test_base_url_without_trailing_slash(mocked: aioresponses) -> None:
    """A base URL given without its trailing slash still keeps the `/api/v1/` prefix."""
    mocked.get(f"{ACCOUNT}Recording/{RID}/", payload=RECORDING)

    async with AsyncSession(
        "MA_TEST", "tok", base_url="https://api.vobiz.ai/api/v1", max_retries=0
    ) as session:
        await session.recordings.get(RID)

    assert sent(mocked) == [("GET", URL(f"{ACCOUNT}Recording/{RID}/"))]
