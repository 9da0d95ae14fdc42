"""Tests for the public embedded fake, over loopback with a plain aiohttp client."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import aiohttp
import pytest
from _waiting import eventually

from vobiz_async.testing import FakeVobiz


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=45, seed=3) as fake:
        yield fake


@pytest.fixture(name="http")
async def _http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def creds(fake: FakeVobiz) -> dict[str, str]:
    return {"X-Auth-ID": fake.auth_id, "X-Auth-Token": fake.auth_token}


def api(fake: FakeVobiz, tail: str) -> str:
    return f"{fake.base_url}Account/{fake.auth_id}/{tail}"


def one(fake: FakeVobiz, rid: str) -> str:
    return api(fake, f"Recording/{quote(rid, safe='')}/")


async def get_json(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def fetch(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, Any, bytes]:
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, resp.headers, await resp.read()


# ------------------------------------------------------------------ lifecycle and list


async def test_session_kwargs_point_at_loopback(fake: FakeVobiz) -> None:
    """session_kwargs hands out the credentials and a 127.0.0.1 API root with a slash."""
    kwargs = fake.session_kwargs()

    assert kwargs["auth_id"] == "MA_FAKE00000000000000"
    assert kwargs["auth_token"] == fake.auth_token
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1/", kwargs["base_url"])
    assert re.fullmatch(r"http://localhost:\d+/", fake.foreign_base_url)


async def test_explicit_start_and_close() -> None:
    """start() and close() work without async-with; base_url needs a running fake."""
    fake = FakeVobiz(recordings=1)
    with pytest.raises(RuntimeError):
        _ = fake.base_url

    await fake.start()
    try:
        async with aiohttp.ClientSession() as http:
            status, _ = await get_json(http, f"{fake.base_url}auth/me", creds(fake))
    finally:
        await fake.close()

    assert status == 200


async def test_auth_me(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """auth/me answers 200 with the account id."""
    status, body = await get_json(http, f"{fake.base_url}auth/me", creds(fake))

    assert status == 200
    assert body["auth_id"] == fake.auth_id


async def test_list_first_page_envelope(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """The first page has 20 objects, a relative next without /api, and no previous."""
    status, body = await get_json(http, api(fake, "Recording/"), creds(fake))

    assert status == 200
    assert set(body) == {"api_id", "meta", "objects"}
    assert body["meta"] == {
        "limit": 20,
        "next": f"/v1/Account/{fake.auth_id}/Recording/?limit=20&offset=20",
        "offset": 0,
        "previous": None,
        "total_count": 45,
    }
    assert [o["recording_id"] for o in body["objects"]] == fake.recording_ids[:20]


async def test_list_walks_every_page_by_next(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """Following meta.next's limit/offset yields every id once, newest first, then null."""
    seen: list[str] = []
    query: dict[str, str] = {"limit": "7"}
    while True:
        url = api(fake, "Recording/?" + "&".join(f"{k}={v}" for k, v in query.items()))
        _, body = await get_json(http, url, creds(fake))
        seen += [o["recording_id"] for o in body["objects"]]
        if body["meta"]["next"] is None:
            break
        assert body["meta"]["next"].startswith("/v1/")
        query = dict(parse_qsl(urlsplit(body["meta"]["next"]).query))

    assert seen == fake.recording_ids
    assert body["meta"]["previous"] == f"/v1/Account/{fake.auth_id}/Recording/?limit=7&offset=35"


async def test_list_limit_is_clamped(http: aiohttp.ClientSession) -> None:
    """A limit above 100 is served as 100."""
    async with FakeVobiz(recordings=150) as fake:
        _, body = await get_json(http, api(fake, "Recording/?limit=500"), creds(fake))

    assert body["meta"]["limit"] == 100
    assert len(body["objects"]) == 100


@pytest.mark.parametrize("query", ["limit=abc", "limit=-1", "limit=0", "offset=-5", "offset=x"])
async def test_list_bad_paging_is_400(
    fake: FakeVobiz, http: aiohttp.ClientSession, query: str
) -> None:
    """Non-integer or negative limit/offset answer 400 in the recording error shape."""
    status, body = await get_json(http, api(fake, f"Recording/?{query}"), creds(fake))

    assert status == 400
    assert set(body) == {"api_id", "error"}


async def test_list_filter_by_type_keeps_filter_in_next(http: aiohttp.ClientSession) -> None:
    """recording_type filters, and next carries the filter along."""
    async with FakeVobiz(recordings=300, seed=1) as fake:
        url = api(fake, "Recording/?limit=5&recording_type=conference&bogus=1")
        _, body = await get_json(http, url, creds(fake))
        expected = [r for r in fake.recordings.values() if r.recording_type == "conference"]

    assert {o["recording_type"] for o in body["objects"]} == {"conference"}
    assert body["meta"]["total_count"] == len(expected)
    assert [o["recording_id"] for o in body["objects"]] == [r.recording_id for r in expected[:5]]
    assert "recording_type=conference" in body["meta"]["next"]
    assert "offset=5" in body["meta"]["next"]


async def test_list_filter_by_call_uuid(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """call_uuid filters to the recordings of that call."""
    rec = fake.add_recording(call_uuid="call-1")
    fake.add_recording(call_uuid="call-1")
    target = fake.recordings[fake.recording_ids[10]]

    _, mine = await get_json(http, api(fake, "Recording/?call_uuid=call-1"), creds(fake))
    _, theirs = await get_json(
        http, api(fake, f"Recording/?call_uuid={target.call_uuid}"), creds(fake)
    )

    assert mine["meta"]["total_count"] == 2
    assert rec.recording_id in [o["recording_id"] for o in mine["objects"]]
    assert target.recording_id in [o["recording_id"] for o in theirs["objects"]]
    assert {o["call_uuid"] for o in theirs["objects"]} == {target.call_uuid}


async def test_list_no_match_is_empty_200(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """A filter that matches nothing answers 200 with no objects and null links."""
    status, body = await get_json(http, api(fake, "Recording/?call_uuid=nope"), creds(fake))

    assert status == 200
    assert body["objects"] == []
    assert body["meta"]["next"] is None
    assert body["meta"]["total_count"] == 0


async def test_wire_object_has_vobiz_quirks(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """Objects carry decimal strings, Vobiz add_time, a /v1 resource_uri and unknown keys."""
    _, body = await get_json(http, api(fake, "Recording/?limit=45"), creds(fake))
    objects = body["objects"]
    first = objects[0]

    assert {len(re.split(r"[.+-]", o["add_time"][11:])[1]) for o in objects} == {5, 6}
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{5,6}[+-]\d\d:\d\d", o["add_time"])
        for o in objects
    )
    assert re.fullmatch(r"\d+\.00000", first["recording_duration_ms"])
    assert first["resource_uri"] == f"/v1/Account/{fake.auth_id}/Recording/{first['recording_id']}/"
    assert first["recording_region"] == "ap-south-1"
    assert isinstance(first["rounded_recording_duration"], int)
    assert first["rounded_recording_duration"] % 60 == 0
    assert first["recording_format"] in ("mp3", "wav")
    assert first["recording_url"].endswith(f".{first['recording_format']}")


async def test_same_seed_same_recordings() -> None:
    """Generation is deterministic from the seed."""
    a, b, c = FakeVobiz(recordings=30, seed=7), FakeVobiz(recordings=30, seed=7), FakeVobiz(30)

    assert a.recording_ids == b.recording_ids != c.recording_ids
    rid = a.recording_ids[4]
    assert a.recordings[rid].add_time == b.recordings[rid].add_time
    assert a.sha256(rid) == b.sha256(rid)


async def test_lazy_construction_of_100k_is_cheap(http: aiohttp.ClientSession) -> None:
    """100,000 recordings start and serve a first and a deep page generating only those."""
    async with FakeVobiz(recordings=100_000) as fake:
        _, first = await get_json(http, api(fake, "Recording/?limit=100"), creds(fake))
        _, deep = await get_json(http, api(fake, "Recording/?offset=99990"), creds(fake))
        # work done, not seconds on this machine
        generated = fake._catalogue.generate.cache_info().misses
        rid = deep["objects"][-1]["recording_id"]
        status, _ = await get_json(http, one(fake, rid), creds(fake))

    assert generated <= 100 + 10
    assert first["meta"]["total_count"] == 100_000
    assert len(deep["objects"]) == 10
    assert deep["meta"]["next"] is None
    assert status == 200


# ------------------------------------------------------------------ auth


async def test_missing_credentials_is_401(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """No auth headers: 401 with the recording error shape."""
    status, body = await get_json(http, api(fake, "Recording/"), {})

    assert status == 401
    assert body["error"] == "Authentication credentials were not provided."
    assert "api_id" in body


async def test_wrong_token_is_401(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """A wrong token is refused."""
    headers = {**creds(fake), "X-Auth-Token": "rotated"}

    status, _ = await get_json(http, f"{fake.base_url}auth/me", headers)

    assert status == 401


async def test_lowercased_path_is_401(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """Paths are case-sensitive, and a lower-cased one looks like an auth failure."""
    url = f"{fake.base_url}account/{fake.auth_id}/recording/"

    status, body = await get_json(http, url, creds(fake))

    assert status == 401
    assert set(body) == {"api_id", "error"}


async def test_other_account_is_refused(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """Another account's path answers 403."""
    url = f"{fake.base_url}Account/MA_SOMEONEELSE000000/Recording/"

    status, _ = await get_json(http, url, creds(fake))

    assert status == 403


# ------------------------------------------------------------------ retrieve, delete, bulk, export


async def test_retrieve_is_flat_with_api_id(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """Retrieve answers the flat object plus api_id, equal to the list's object."""
    rid = fake.recording_ids[3]
    _, page = await get_json(http, api(fake, "Recording/?limit=5"), creds(fake))
    (listed,) = [o for o in page["objects"] if o["recording_id"] == rid]

    status, body = await get_json(http, one(fake, rid), creds(fake))

    assert status == 200
    assert set(body) == {*listed, "api_id"}  # flat: the object's own keys, no envelope
    api_id = body.pop("api_id")
    assert isinstance(api_id, str)
    assert api_id
    assert body == listed


async def test_retrieve_unknown_is_404(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """An unknown id answers 404 Recording not found."""
    status, body = await get_json(http, one(fake, "no-such-id"), creds(fake))

    assert status == 404
    assert body["error"] == "Recording not found"


async def test_delete_then_gone(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """DELETE answers 204 with no body, then retrieve, media and a second DELETE are 404."""
    rid = fake.recording_ids[0]
    media = fake.recordings[rid].recording_url

    async with http.delete(one(fake, rid), headers=creds(fake)) as resp:
        deleted = resp.status, await resp.read()
    async with http.delete(one(fake, rid), headers=creds(fake)) as resp:
        again = resp.status
    got, _ = await get_json(http, one(fake, rid), creds(fake))
    media_status, _, _ = await fetch(http, media, creds(fake))

    assert deleted == (204, b"")
    assert (again, got, media_status) == (404, 404, 404)
    assert rid not in fake.recording_ids
    assert len(fake.recordings) == 44


async def test_bulk_delete_by_type(http: aiohttp.ClientSession) -> None:
    """BulkDelete answers 202, removes what matches and records the query."""
    async with FakeVobiz(recordings=200, seed=2) as fake:
        url = api(fake, "Recording/BulkDelete/?recording_type=trunk")
        trunks = sum(r.recording_type == "trunk" for r in fake.recordings.values())
        async with http.delete(url, headers=creds(fake)) as resp:
            status, body = resp.status, await resp.json()
        left = {r.recording_type for r in fake.recordings.values()}
        count = len(fake.recording_ids)

    assert status == 202
    assert set(body) == {"api_id", "message"}
    assert trunks > 0
    assert count == 200 - trunks
    assert "trunk" not in left
    assert fake.stats.bulk_delete_queries == [{"recording_type": "trunk"}]


async def test_bulk_delete_by_add_time(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """add_time__gte/__lte select a window of recordings."""
    ids = fake.recording_ids
    newest, oldest = fake.recordings[ids[5]], fake.recordings[ids[9]]
    query = f"add_time__gte={quote(oldest.add_time)}&add_time__lte={quote(newest.add_time)}"

    async with http.delete(api(fake, f"Recording/BulkDelete/?{query}"), headers=creds(fake)) as r:
        status = r.status

    assert status == 202
    assert fake.recording_ids == ids[:5] + ids[10:]


async def test_bulk_delete_bad_time_is_400(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """An unparseable add_time filter answers 400 and deletes nothing."""
    url = api(fake, "Recording/BulkDelete/?add_time__gte=yesterday")

    async with http.delete(url, headers=creds(fake)) as resp:
        status = resp.status

    assert status == 400
    assert len(fake.recording_ids) == 45


EXPORT = {
    "recipient": {"customer_account": ["ops@example.com"]},
    "from": "2026-05-01 00:00:00",
    "to": "2026-05-07 23:59:59",
}


async def test_export_then_busy_then_free(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """Export answers 202, the next call 403 already-in-progress, the one after 202."""
    url = api(fake, "export/recording/")
    results = []
    for _ in range(3):
        async with http.post(url, json=EXPORT, headers=creds(fake)) as resp:
            results.append((resp.status, await resp.json()))

    assert results[0][0] == 202
    assert results[0][1]["status"] == "success"
    assert "api_id" in results[0][1]
    assert results[1] == (403, {"status": "failure", "message": "An export is already in progress"})
    assert results[2][0] == 202
    assert fake.stats.export_bodies == [EXPORT] * 3


@pytest.mark.parametrize(
    "body",
    [
        {"recipient": {"customer_account": []}, "from": "2026-05-01 00:00:00", "to": "x"},
        {"recipient": {"customer_account": ["a@b.c"]}},
        {**EXPORT, "recording_storage_duration__gt": 3},
        {**EXPORT, "from": "2026-05-01"},
        ["not", "an", "object"],
    ],
)
async def test_export_bad_body_is_400(
    fake: FakeVobiz, http: aiohttp.ClientSession, body: Any
) -> None:
    """A malformed export body answers 400 in the export failure shape."""
    async with http.post(api(fake, "export/recording/"), json=body, headers=creds(fake)) as resp:
        status, reply = resp.status, await resp.json()

    assert status == 400
    assert reply["status"] == "failure"
    assert reply["message"]


async def test_export_by_storage_duration(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """recording_storage_duration filters are an accepted alternative to from/to."""
    body = {"recipient": {"customer_account": ["a@b.c"]}, "recording_storage_duration__gte": 7}

    async with http.post(api(fake, "export/recording/"), json=body, headers=creds(fake)) as resp:
        status = resp.status

    assert status == 202


# ------------------------------------------------------------------ API faults


@pytest.mark.parametrize(
    ("shape", "check"),
    [
        ("json", lambda b: set(b) == {"api_id", "error"}),
        ("generic", lambda b: b["status"] == "error" and set(b["error"]) >= {"code", "message"}),
        ("export", lambda b: b["status"] == "failure" and "message" in b),
    ],
)
async def test_api_fault_json_shapes(
    fake: FakeVobiz, http: aiohttp.ClientSession, shape: Any, check: Any
) -> None:
    """api_fault produces each JSON error shape with Retry-After."""
    fake.api_fault("list", 429, retry_after="3", body=shape)

    async with http.get(api(fake, "Recording/"), headers=creds(fake)) as resp:
        status, retry_after, body = resp.status, resp.headers.get("Retry-After"), await resp.json()

    assert (status, retry_after) == (429, "3")
    assert check(body)


async def test_api_fault_html_gateway_page(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """body="html" answers a text/html proxy page."""
    fake.api_fault("get", 502, body="html")

    async with http.get(one(fake, fake.recording_ids[0]), headers=creds(fake)) as resp:
        status, ctype, text = resp.status, resp.content_type, await resp.text()

    assert (status, ctype) == (502, "text/html")
    assert "<h1>502 Bad Gateway</h1>" in text


async def test_api_fault_heals_after_times(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """A fault with times=2 fails two calls of that operation, then service resumes."""
    fake.api_fault("auth_me", 503, times=2)
    url = f"{fake.base_url}auth/me"

    statuses = [(await get_json(http, url, creds(fake)))[0] for _ in range(3)]

    assert statuses == [503, 503, 200]


async def test_latency_delays_api_responses(http: aiohttp.ClientSession) -> None:
    """latency is added to API responses."""
    async with FakeVobiz(recordings=1, latency=0.05) as fake:
        started = time.perf_counter()
        await get_json(http, f"{fake.base_url}auth/me", creds(fake))
        elapsed = time.perf_counter() - started

    assert elapsed >= 0.05


# ------------------------------------------------------------------ media


async def test_media_requires_auth(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """The media URL answers 401 without the auth headers."""
    url = fake.recordings[fake.recording_ids[0]].recording_url

    status, _, _ = await fetch(http, url, {})

    assert status == 401


async def test_media_serves_the_advertised_bytes(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """The body matches body()/sha256()/size() with length, type, strong ETag and ranges."""
    rid = fake.recording_ids[1]
    rec = fake.recordings[rid]

    status, headers, body = await fetch(http, rec.recording_url, creds(fake))

    assert status == 200
    assert body == fake.body(rid)
    assert hashlib.sha256(body).hexdigest() == fake.sha256(rid) == rec.sha256()
    assert int(headers["Content-Length"]) == fake.size(rid) == len(body)
    assert headers["Content-Type"] == (
        "audio/wav" if rec.recording_format == "wav" else "audio/mpeg"
    )
    assert re.fullmatch(r'"[0-9a-f]{32}"', headers["ETag"])
    assert headers["Accept-Ranges"] == "bytes"
    assert 10_000 < len(body) < 20_000_000


async def test_media_head_sends_no_body(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """HEAD on media answers the headers only."""
    rid = fake.recording_ids[1]

    async with http.head(fake.recordings[rid].recording_url, headers=creds(fake)) as resp:
        status, length, body = resp.status, resp.headers["Content-Length"], await resp.read()

    assert (status, int(length), body) == (200, fake.size(rid), b"")


async def test_generated_bodies_sniff_as_their_container(
    http: aiohttp.ClientSession,
) -> None:
    """Generated bodies start with RIFF/WAVE, ID3 or an FF E3 frame sync, per container."""
    async with FakeVobiz(recordings=40, seed=5, wav_as_mp3_rate=0.2) as fake:
        heads = []
        for rec in fake.recordings.values():
            headers = {**creds(fake), "Range": "bytes=0-11"}
            _, _, head = await fetch(http, rec.recording_url, headers)
            heads.append((rec, head))

    kinds = set()
    for rec, head in heads:
        if rec.container == "wav":
            assert head[:4] == b"RIFF"
            assert head[8:12] == b"WAVE"
        else:
            assert head[:3] == b"ID3" or head[:2] == b"\xff\xe3"
        kinds.add((rec.container, rec.recording_format, head[:2]))
    assert ("wav", "mp3", b"RI") in kinds
    assert {("mp3", "mp3", b"ID"), ("mp3", "mp3", b"\xff\xe3"), ("wav", "wav", b"RI")} <= kinds


async def test_wav_as_mp3(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """A WAV body can be advertised as .mp3 and served as audio/mpeg."""
    rec = fake.add_recording(container="wav", recording_format="mp3", size=1000)

    _, headers, body = await fetch(http, rec.recording_url, creds(fake))

    assert rec.recording_url.endswith(".mp3")
    assert headers["Content-Type"] == "audio/mpeg"
    assert body[:4] == b"RIFF"
    assert body[8:16] == b"WAVEfmt "
    assert body[36:40] == b"data"
    assert int.from_bytes(body[4:8], "little") == 992
    assert len(body) == 1000


async def test_range_request_is_206(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """Range bytes=N- answers 206 with Content-Range and the tail."""
    rid = fake.recording_ids[2]
    size = fake.size(rid)
    headers = {**creds(fake), "Range": "bytes=100-"}

    status, got, body = await fetch(http, fake.recordings[rid].recording_url, headers)

    assert status == 206
    assert got["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert body == fake.body(rid)[100:]


async def test_closed_range_and_matching_if_range(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """Range bytes=N-M with a matching If-Range answers exactly those bytes."""
    rid = fake.recording_ids[2]
    headers = {**creds(fake), "Range": "bytes=10-19", "If-Range": fake.etag(rid)}

    status, _, body = await fetch(http, fake.recordings[rid].recording_url, headers)

    assert (status, body) == (206, fake.body(rid)[10:20])


async def test_if_range_mismatch_is_full_200(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """If-Range with another ETag answers 200 with the full body."""
    rid = fake.recording_ids[2]
    headers = {**creds(fake), "Range": "bytes=100-", "If-Range": '"stale"'}

    status, _, body = await fetch(http, fake.recordings[rid].recording_url, headers)

    assert status == 200
    assert body == fake.body(rid)


async def test_unsatisfiable_range_is_416(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """A range past the end answers 416 with bytes */total."""
    rid = fake.recording_ids[2]
    headers = {**creds(fake), "Range": f"bytes={fake.size(rid)}-"}

    status, got, _ = await fetch(http, fake.recordings[rid].recording_url, headers)

    assert status == 416
    assert got["Content-Range"] == f"bytes */{fake.size(rid)}"


async def test_accept_encoding_is_ignored(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """Media is never compressed."""
    rid = fake.recording_ids[2]
    headers = {**creds(fake), "Accept-Encoding": "gzip, deflate"}

    _, got, body = await fetch(http, fake.recordings[rid].recording_url, headers)

    assert "Content-Encoding" not in got
    assert len(body) == fake.size(rid)


async def test_huge_recording_ranges_cost_nothing(
    fake: FakeVobiz, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 400 MB recording serves a far range at once, consistent across requests."""
    rec = fake.add_recording(size=400_000_000)
    far = 399_000_000
    first = {**creds(fake), "Range": f"bytes={far}-{far + 199}"}
    second = {**creds(fake), "Range": f"bytes={far + 100}-{far + 299}"}

    made: list[int] = []  # the blocks of the body the fake generated: work, not seconds
    make_block = fake._catalogue.block

    def counted(rec: Any, block: int) -> bytes:
        made.append(block)
        return make_block(rec, block)

    monkeypatch.setattr(fake._catalogue, "block", counted)

    _, got, a = await fetch(http, rec.recording_url, first)
    _, _, b = await fetch(http, rec.recording_url, second)

    assert 0 < len(made) <= 4  # at most two blocks per 200-byte range, none before them
    assert got["Content-Range"] == f"bytes {far}-{far + 199}/400000000"
    assert a[100:] == b[:100]
    assert len(a) == len(b) == 200


# ------------------------------------------------------------------ media faults


async def read_into(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], into: bytearray
) -> None:
    async with http.get(url, headers=headers) as resp:
        async for chunk in resp.content.iter_chunked(65536):
            into += chunk


async def test_drop_fault_breaks_the_body_then_heals(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """drop aborts mid-body; a Range resume from what arrived completes the file."""
    rid = fake.recording_ids[0]
    url = fake.recordings[rid].recording_url
    fake.media_fault(rid, "drop")
    received = bytearray()

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_into(http, url, creds(fake), received)
    headers = {**creds(fake), "Range": f"bytes={len(received)}-", "If-Range": fake.etag(rid)}
    status, _, rest = await fetch(http, url, headers)

    assert 0 < len(received) < fake.size(rid)
    assert status == 206
    assert hashlib.sha256(bytes(received) + rest).hexdigest() == fake.sha256(rid)


async def test_short_fault_is_detected(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """short declares the full length, sends less; the client sees a payload error."""
    rid = fake.recording_ids[0]
    fake.media_fault(rid, "short")

    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(http, fake.recordings[rid].recording_url, creds(fake))
    status, _, body = await fetch(http, fake.recordings[rid].recording_url, creds(fake))

    assert (status, len(body)) == (200, fake.size(rid))


async def test_status_fault_with_retry_after(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """status answers the given status with Retry-After for `times` requests."""
    rid = fake.recording_ids[0]
    fake.media_fault(rid, "status", times=2, status=429, retry_after="1")
    url = fake.recordings[rid].recording_url

    results = [await fetch(http, url, creds(fake)) for _ in range(3)]

    assert [r[0] for r in results] == [429, 429, 200]
    assert results[0][1]["Retry-After"] == "1"


async def test_no_range_fault_answers_200(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """no_range ignores Range and sends the whole body."""
    rid = fake.recording_ids[0]
    fake.media_fault(rid, "no_range")
    headers = {**creds(fake), "Range": "bytes=100-"}

    status, _, body = await fetch(http, fake.recordings[rid].recording_url, headers)

    assert (status, len(body)) == (200, fake.size(rid))


async def test_etag_change_defeats_if_range(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """etag_change gives a new ETag, so If-Range with the old one answers the full 200."""
    rid = fake.recording_ids[0]
    old = fake.etag(rid)
    fake.media_fault(rid, "etag_change")
    headers = {**creds(fake), "Range": "bytes=100-", "If-Range": old}

    status, got, body = await fetch(http, fake.recordings[rid].recording_url, headers)

    assert status == 200
    assert got["ETag"] != old
    assert got["ETag"] == fake.etag(rid)
    assert body == fake.body(rid)


async def test_expired_url_is_repaired_by_retrieve(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """expired refuses the listed URL until a retrieve hands out a fresh one."""
    rid = fake.recording_ids[0]
    stale = fake.recordings[rid].recording_url
    fake.media_fault(rid, "expired")

    refused, _, body = await fetch(http, stale, creds(fake))
    _, fresh = await get_json(http, one(fake, rid), creds(fake))
    ok, _, _ = await fetch(http, fresh["recording_url"], creds(fake))
    still, _, _ = await fetch(http, stale, creds(fake))

    assert refused == 403
    assert b"URL expired" in body
    assert fresh["recording_url"] != stale
    assert "token=2" in fresh["recording_url"]
    assert (ok, still) == (200, 403)


async def test_expired_twice_refuses_the_fresh_url(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """expired with times=2 refuses the first fresh URL too."""
    rid = fake.recording_ids[0]
    fake.media_fault(rid, "expired", times=2, status=410)

    _, fresh = await get_json(http, one(fake, rid), creds(fake))
    status, _, _ = await fetch(http, fresh["recording_url"], creds(fake))

    assert status == 410


async def test_slow_fault_can_be_cancelled(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """slow trickles the body; cancelling the reader leaves nothing in flight."""
    rid = fake.recording_ids[0]
    fake.media_fault(rid, "slow")

    async def read_all() -> None:
        async with http.get(fake.recordings[rid].recording_url, headers=creds(fake)) as resp:
            await resp.read()

    task = asyncio.create_task(read_all())
    assert await eventually(lambda: fake.stats.media_bytes_sent > 0)
    assert not task.done()
    assert fake.stats.media_in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await eventually(lambda: fake.stats.media_in_flight == 0)
    assert 0 < fake.stats.media_bytes_sent < fake.size(rid)


async def test_fault_rate_faults_are_transient(http: aiohttp.ClientSession) -> None:
    """With fault_rate=1 every recording fails once, retryably, then serves in full."""
    async with FakeVobiz(recordings=12, seed=4, fault_rate=1.0) as fake:
        first: list[tuple[int | str, str | None]] = []
        second: list[bool] = []
        for rec in fake.recordings.values():
            try:
                status, headers, _ = await fetch(http, rec.recording_url, creds(fake))
                first.append((status, headers.get("Retry-After")))
            except aiohttp.ClientPayloadError:
                first.append(("payload", None))
            status, _, body = await fetch(http, rec.recording_url, creds(fake))
            second.append(status == 200 and len(body) == rec.size)

    assert set(first) <= {("payload", None), (503, "0"), (429, "0")}
    assert len(set(first)) == 3
    assert all(second)


# ------------------------------------------------------------------ redirects


async def test_foreign_redirect_without_credentials(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """The media URL redirects to localhost storage, which serves the body without auth."""
    rec = fake.add_recording(redirect_foreign=True, size=5000)

    status, headers, _ = await fetch(http, rec.recording_url, creds(fake))
    location = headers["Location"]
    got, _, body = await fetch(http, location, {})

    assert status == 302
    assert location.startswith(fake.foreign_base_url + "storage/")
    assert (got, body) == (200, fake.body(rec.recording_id))
    assert fake.stats.foreign_credentials_seen == 0


async def test_foreign_host_counts_leaked_credentials(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """Credentials arriving at the foreign host are counted."""
    rec = fake.add_recording(redirect_foreign=True, size=5000)

    status, _, body = await fetch_following(http, rec.recording_url, creds(fake))

    assert (status, len(body)) == (200, 5000)
    assert fake.stats.foreign_credentials_seen == 1
    assert [r.operation for r in fake.stats.requests] == ["media", "storage"]
    assert fake.stats.requests[1].host.startswith("localhost:")


async def fetch_following(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, Any, bytes]:
    async with http.get(url, headers=headers) as resp:  # aiohttp keeps X-Auth-* across hosts
        return resp.status, resp.headers, await resp.read()


async def test_foreign_redirect_requires_auth_first(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """The redirecting media URL still answers 401 without credentials."""
    rec = fake.add_recording(redirect_foreign=True)

    status, _, _ = await fetch(http, rec.recording_url, {})

    assert status == 401


async def test_storage_needs_signature(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """The storage URL without its signature answers 403 XML."""
    rec = fake.add_recording(redirect_foreign=True)
    _, headers, _ = await fetch(http, rec.recording_url, creds(fake))

    status, got, _ = await fetch(http, headers["Location"].split("?")[0], {})

    assert status == 403
    assert got["Content-Type"].startswith("application/xml")


async def test_storage_supports_range(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """The foreign host answers Range with 206 too."""
    rec = fake.add_recording(redirect_foreign=True, size=5000)
    _, headers, _ = await fetch(http, rec.recording_url, creds(fake))

    status, _, body = await fetch(http, headers["Location"], {"Range": "bytes=4000-"})

    assert (status, body) == (206, fake.body(rec.recording_id)[4000:])


async def test_multi_hop_redirect(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """extra_hops adds same-host redirects before the foreign one."""
    rec = fake.add_recording(redirect_foreign=True, extra_hops=1, size=100)

    first, h1, _ = await fetch(http, rec.recording_url, creds(fake))
    second, h2, _ = await fetch(http, h1["Location"], creds(fake))
    third, _, body = await fetch(http, h2["Location"], {})

    assert urlsplit(h1["Location"]).hostname == "127.0.0.1"
    assert urlsplit(h2["Location"]).hostname == "localhost"
    assert (first, second, third) == (302, 302, 200)
    assert body == fake.body(rec.recording_id)


async def test_faults_on_a_redirecting_recording(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """A status fault acts on the first Vobiz hop; a body fault where the body is served."""
    rec = fake.add_recording(redirect_foreign=True, extra_hops=1, size=1000)
    fake.media_fault(rec.recording_id, "status", status=503, retry_after="0")
    fake.media_fault(rec.recording_id, "short")

    refused, _, _ = await fetch(http, rec.recording_url, creds(fake))
    _, hop, _ = await fetch(http, rec.recording_url, creds(fake))
    _, storage, _ = await fetch(http, hop["Location"], creds(fake))
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(http, storage["Location"], {})
    status, _, body = await fetch(http, storage["Location"], {})

    assert refused == 503
    assert (status, body) == (200, fake.body(rec.recording_id))


async def test_foreign_rate_marks_recordings(http: aiohttp.ClientSession) -> None:
    """foreign_redirect_rate=1 makes every generated media URL redirect."""
    async with FakeVobiz(recordings=3, foreign_redirect_rate=1.0) as fake:
        statuses = [
            (await fetch(http, r.recording_url, creds(fake)))[0] for r in fake.recordings.values()
        ]

    assert statuses == [302, 302, 302]


# ------------------------------------------------------------------ ids and overrides


HOSTILE = ["../../x", "/abs", "....", "a\x00b", "a b", "x:y", "BulkDelete2", "é%2F"]


async def test_hostile_ids_are_listed_verbatim(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """Hostile ids are stored and listed as is, and their media is reachable."""
    for rid in HOSTILE:
        fake.add_recording(rid, size=64)

    _, body = await get_json(http, api(fake, f"Recording/?limit={len(HOSTILE)}"), creds(fake))
    bodies = [
        (await fetch(http, fake.recordings[rid].recording_url, creds(fake)))[2] for rid in HOSTILE
    ]

    assert [o["recording_id"] for o in body["objects"]] == HOSTILE[::-1]
    assert bodies == [fake.body(rid) for rid in HOSTILE]


@pytest.mark.parametrize("rid", ["....", "a b", "x:y", "../../x", "a\x00b"])
async def test_hostile_ids_can_be_retrieved(
    fake: FakeVobiz, http: aiohttp.ClientSession, rid: str
) -> None:
    """Percent-encoded hostile ids reach retrieve decoded."""
    fake.add_recording(rid)

    status, body = await get_json(http, one(fake, rid), creds(fake))

    assert (status, body["recording_id"]) == (200, rid)


async def test_add_recording_overrides(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """recording_url, add_time and extra_fields appear on the wire verbatim."""
    fake.add_recording(
        "odd",
        recording_url="file:///etc/passwd",
        add_time="2026-05-07T09:45:35Z",
        extra_fields={"brand_new_field": [1, 2]},
    )

    _, body = await get_json(http, one(fake, "odd"), creds(fake))

    assert body["recording_url"] == "file:///etc/passwd"
    assert body["add_time"] == "2026-05-07T09:45:35Z"
    assert body["brand_new_field"] == [1, 2]
    assert fake.recording_ids[0] == "odd"


async def test_duplicate_id_is_refused(fake: FakeVobiz) -> None:
    """add_recording refuses an id that exists, generated or added."""
    fake.add_recording("dup")

    with pytest.raises(ValueError, match="already exists"):
        fake.add_recording("dup")
    with pytest.raises(ValueError, match="already exists"):
        fake.add_recording(fake.recording_ids[-1])


async def test_remove_recording(fake: FakeVobiz) -> None:
    """remove_recording drops a recording from the order; a second removal is a KeyError."""
    rid = fake.recording_ids[20]

    fake.remove_recording(rid)

    assert rid not in fake.recordings
    assert len(fake.recording_ids) == 44
    with pytest.raises(KeyError):
        fake.remove_recording(rid)


async def test_paging_after_removals(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """Offsets skip removed recordings."""
    ids = fake.recording_ids
    for rid in ids[3:30:2]:
        fake.remove_recording(rid)

    _, body = await get_json(http, api(fake, "Recording/?limit=10&offset=10"), creds(fake))

    assert [o["recording_id"] for o in body["objects"]] == fake.recording_ids[10:20]


# ------------------------------------------------------------------ stats


async def test_stats_count_requests_and_reset(fake: FakeVobiz, http: aiohttp.ClientSession) -> None:
    """stats records each request with its operation and status; reset() clears it."""
    rid = fake.recording_ids[0]
    await get_json(http, api(fake, "Recording/"), creds(fake))
    await fetch(http, fake.recordings[rid].recording_url, creds(fake))
    await get_json(http, api(fake, "Recording/"), {})

    stats = fake.stats
    assert [(r.operation, r.status, r.credentials) for r in stats.requests] == [
        ("list", 200, True),
        ("media", 200, True),
        ("list", 401, False),
    ]
    assert (stats.api_requests, stats.media_requests) == (2, 1)
    assert stats.media_bytes_sent == fake.size(rid)
    assert stats.api_in_flight_max == stats.media_in_flight_max == 1

    stats.reset()

    assert (stats.requests, stats.api_requests, stats.media_bytes_sent) == ([], 0, 0)


async def test_stats_count_new_connections_only(
    fake: FakeVobiz, http: aiohttp.ClientSession
) -> None:
    """A keep-alive connection counts once; after reset() only newly opened ones count."""
    for _ in range(3):
        await get_json(http, api(fake, "Recording/"), creds(fake))
    assert fake.stats.connections == 1

    fake.stats.reset()
    await get_json(http, api(fake, "Recording/"), creds(fake))  # the same pooled connection
    assert fake.stats.connections == 0

    async with aiohttp.ClientSession() as other:
        await get_json(other, api(fake, "Recording/"), creds(fake))
    assert fake.stats.connections == 1


async def test_media_in_flight_max(http: aiohttp.ClientSession) -> None:
    """Concurrent media requests show up in media_in_flight_max."""
    async with FakeVobiz(recordings=4) as fake:
        for rid in fake.recording_ids:  # trickled: all four are still in flight when counted
            fake.media_fault(rid, "slow")
        urls = [r.recording_url for r in fake.recordings.values()]
        fetches = asyncio.gather(*(fetch(http, u, creds(fake)) for u in urls))
        assert await eventually(lambda: fake.stats.media_in_flight == 4)
        fetches.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetches
        assert await eventually(lambda: fake.stats.media_in_flight == 0)

    assert fake.stats.media_in_flight_max == 4
