"""Transcription callbacks on the receiver's URL: stored beside their recordings (issue 25
§3), and the receiver's per-recording log lines and id-only RecordStop (issue 26).

Signatures are computed here from the documented formula, never by the code under test.
Every server binds 127.0.0.1: FakeVobiz for the API and media, the receiver's app, and moto
for the S3 case.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from _waiting import eventually
from aiohttp import web
from test_s3_sink import _admin, _aws_env, _bucket  # the fake AWS environment (moto_url: conftest)

from vobiz_async import AsyncSession
from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.receiver import Receiver, Spool, transcript_key
from vobiz_async.testing import FakeVobiz
from vobiz_async.webhooks import (
    TranscriptEvent,
    WebhookPayloadError,
    WebhookVerifier,
    create_app,
    parse_callback,
    parse_transcription,
)

__all__ = ["_admin", "_aws_env", "_bucket"]  # fixtures, imported for use here

TOKEN = "transcripts-token-Qw3zX8"
OTHER_TOKEN = "not-vobiz-token-Lp6tG1"
PUBLIC_URL = "https://hooks.example.test/vobiz/recording"
SIGNED_QUERY = "X-Amz-Signature=QueryShouldNeverShow77"
_nonces = itertools.count(30_000_000_000_000_000_000)


def sign(token: str = TOKEN) -> dict[str, str]:
    """V3 headers for PUBLIC_URL with a fresh nonce, from the documented formula."""
    nonce = str(next(_nonces))
    mac = hmac.new(token.encode(), f"{PUBLIC_URL}.{nonce}".encode(), hashlib.sha256)
    return {
        "X-Vobiz-Signature-V3": base64.b64encode(mac.digest()).decode(),
        "X-Vobiz-Signature-V3-Nonce": nonce,
    }


def record_stop(rid: str, *, with_url: bool = True) -> dict[str, str]:
    """The form `<Record callbackUrl>` posts when a recording is finished."""
    fields = {
        "Event": "RecordStop",
        "RecordingID": rid,
        "RecordingDuration": "8",
        "CallUUID": "4f6e8a1c-0000-4000-8000-000000000011",
    }
    if with_url:
        fields["RecordUrl"] = f"https://media.vobiz.ai/{rid}.mp3?{SIGNED_QUERY}"
    return fields


def transcription_form(rid: str, tid: str = "tr-0001", **extra: str) -> dict[str, str]:
    """The form Vobiz posts to a `transcriptionUrl`: every value a string."""
    return {
        "transcription": "Hello, I am calling about my loan application.",
        "transcription_id": tid,
        "recording_id": rid,
        "duration": "8",
        "call_uuid": "4f6e8a1c-0000-4000-8000-000000000011",
        "transcription_charge": "0.05000",
        "transcription_rate": "0.05000",
        "error": "",
        **extra,
    }


def transcription_json(rid: str, tid: str = "tr-0002") -> dict[str, Any]:
    """The same callback as JSON: numbers and null stay numbers and null."""
    return {
        "transcription": "नमस्ते, payment due on the 5th.",
        "transcription_id": tid,
        "recording_id": rid,
        "duration": 8,
        "call_uuid": "4f6e8a1c-0000-4000-8000-000000000012",
        "transcription_charge": 0.05,
        "transcription_rate": 0.05,
        "error": None,
    }


# -- parsing ------------------------------------------------------------------------------


def test_transcription_fields_parse_to_a_transcript_kept_as_sent() -> None:
    """A transcription callback is a TranscriptEvent holding every field as sent, and not
    a finished recording."""
    fields = transcription_json("rec-1")

    event = parse_transcription(fields)

    assert event == TranscriptEvent("tr-0002", "rec-1", fields)
    assert parse_callback(fields) is None
    assert TranscriptEvent.from_dict(event.to_dict()) == event


@pytest.mark.parametrize(
    "fields",
    [
        record_stop("rec-1"),
        {**record_stop("rec-1"), "transcription": "text"},  # Event=RecordStop wins
        {"recording_id": "rec-1", "record_url": "https://media.vobiz.ai/r.mp3"},
        {},
    ],
    ids=["record-stop", "record-stop-with-text", "rest-callback", "empty"],
)
def test_other_callbacks_are_not_transcripts(fields: dict[str, str]) -> None:
    """Without a transcription field, or with `Event=RecordStop`, it is no transcript."""
    assert parse_transcription(fields) is None


def test_transcript_without_its_id_gets_a_stable_one() -> None:
    """No `transcription_id`: the id is a digest of the fields, the same for a retry."""
    fields = {k: v for k, v in transcription_form("rec-1").items() if k != "transcription_id"}

    first, again = parse_transcription(fields), parse_transcription(dict(fields))

    assert first is not None
    assert again is not None
    assert first.transcription_id == again.transcription_id
    assert first.transcription_id.startswith("sha256-")


@pytest.mark.parametrize(
    "fields",
    [
        {"transcription": "text"},
        transcription_form("../etc/passwd"),
        transcription_form("rec-1", tid="x" * 201),
        transcription_form("rec-1", tid="a\nb"),
    ],
    ids=["no-recording", "unsafe-recording", "long-id", "control-char-id"],
)
def test_unusable_transcript_is_a_payload_error(fields: dict[str, str]) -> None:
    """A transcript naming no usable recording, or with an unusable id, is a typed error."""
    with pytest.raises(WebhookPayloadError):
        parse_transcription(fields)


def test_transcript_nested_too_deeply_is_a_payload_error() -> None:
    """Fields that cannot be written out as JSON are refused when parsed (a 400), never
    left to fail when the transcript is stored."""
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]

    with pytest.raises(WebhookPayloadError):
        parse_transcription({**transcription_form("rec-1"), "words": nested})


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("rec-1.mp3", "rec-1.transcript.json"),
        ("2026/05/07/rec-1.wav", "2026/05/07/rec-1.transcript.json"),
        ("a.b.mp3", "a.b.transcript.json"),
    ],
)
def test_transcript_key_replaces_the_extension(key: str, expected: str) -> None:
    """`<recording key without extension>.transcript.json`, in the recording's folder."""
    assert transcript_key(key) == expected


# -- the receiver, in process -------------------------------------------------------------


@attrs.define
class Hook:
    """A running receiver app in front of FakeVobiz, and a client that calls it."""

    receiver: Receiver
    url: str
    spool: Path
    client: aiohttp.ClientSession

    async def post(
        self, body: Mapping[str, Any], *, as_json: bool = False, token: str = TOKEN
    ) -> int:
        """POST a signed callback; its status."""
        kwargs: dict[str, Any] = {"json": body} if as_json else {"data": dict(body)}
        async with self.client.post(self.url, headers=sign(token), **kwargs) as resp:
            await resp.read()
            return resp.status

    async def archived(self, rid: str) -> None:
        """POST a RecordStop for `rid` and wait until it is archived."""
        before = self.receiver.counters.archived
        assert await self.post(record_stop(rid)) == 200
        assert await eventually(lambda: self.receiver.counters.archived > before)

    async def healthz(self) -> dict[str, int]:
        async with self.client.get(self.url.replace("/vobiz/recording", "/healthz")) as resp:
            data: dict[str, int] = await resp.json()
            return data

    def spool_ops(self) -> list[str]:
        lines = self.spool.read_text().splitlines() if self.spool.exists() else []
        return [json.loads(line)["op"] for line in lines]


MakeHook = Callable[..., Awaitable[Hook]]


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=6, seed=25, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture(name="out")
def _out(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture(name="make_hook")
async def _make_hook(fake: FakeVobiz, out: Path, tmp_path: Path) -> AsyncIterator[MakeHook]:
    """Start receivers (sharing one destination and spool) on 127.0.0.1."""
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(aiohttp.ClientSession())
        spool_path = tmp_path / "state" / "spool.jsonl"

        async def make(dest: str | None = None) -> Hook:
            session = await stack.enter_async_context(
                AsyncSession(fake.auth_id, TOKEN, base_url=fake.base_url)
            )
            manifest = None
            if dest is None:  # a folder keeps its index; object storage has none (as `serve`)
                manifest = stack.enter_context(Manifest(out / MANIFEST_NAME))
            spool = Spool(spool_path)
            stack.callback(spool.close)
            receiver = Receiver(session, dest or str(out), spool, manifest=manifest)
            runner = web.AppRunner(
                create_app(WebhookVerifier(PUBLIC_URL, TOKEN), receiver), access_log=None
            )
            await runner.setup()
            stack.push_async_callback(receiver.close, 0)
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            await receiver.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/vobiz/recording"
            return Hook(receiver, url, spool_path, client)

        yield make


def recording_file(out: Path, rid: str) -> Path:
    files = [p for p in out.glob(f"{rid}.*") if p.suffix in (".mp3", ".wav")]
    assert len(files) == 1, files
    return files[0]


@pytest.mark.parametrize(
    ("body_of", "as_json"),
    [(transcription_form, False), (transcription_json, True)],
    ids=["form", "json"],
)
async def test_signed_transcript_is_stored_beside_its_recording(
    make_hook: MakeHook,
    fake: FakeVobiz,
    out: Path,
    body_of: Callable[[str], dict[str, Any]],
    as_json: bool,
) -> None:
    """A signed transcription callback (form or JSON) for an archived recording lands as
    `<id>.transcript.json` beside it, its fields as sent, and the index records it."""
    hook = await make_hook()
    rid = fake.recording_ids[0]
    await hook.archived(rid)
    body = body_of(rid)

    status = await hook.post(body, as_json=as_json)
    assert await eventually(lambda: hook.receiver.counters.transcripts == 1)

    assert status == 200
    stored = out / f"{rid}.transcript.json"
    assert recording_file(out, rid).with_suffix(".transcript.json") == stored
    assert json.loads(stored.read_text(encoding="utf-8")) == body
    with Manifest(out / MANIFEST_NAME) as manifest:
        assert manifest.transcript_path(rid) == f"{rid}.transcript.json"
    assert (await hook.healthz())["transcripts"] == 1
    assert not [p.name for p in out.iterdir() if p.suffix == ".tmp"]  # noqa: ASYNC240


async def test_transcript_that_arrives_first_is_placed_once_the_recording_lands(
    make_hook: MakeHook, fake: FakeVobiz, out: Path
) -> None:
    """A transcript for a recording not archived yet is spooled and kept; it is stored as
    soon as the recording is archived."""
    hook = await make_hook()
    rid = fake.recording_ids[1]

    assert await hook.post(transcription_form(rid)) == 200
    await hook.receiver.placed()
    assert not (out / f"{rid}.transcript.json").exists()
    assert hook.receiver.transcripts_waiting() == 1
    assert (await hook.healthz())["transcripts"] == 0
    await hook.archived(rid)
    assert await eventually(lambda: hook.receiver.counters.transcripts == 1)

    assert json.loads((out / f"{rid}.transcript.json").read_text()) == transcription_form(rid)
    assert hook.receiver.transcripts_waiting() == 0


async def test_transcript_during_the_download_is_placed_after_it(
    make_hook: MakeHook, fake: FakeVobiz, out: Path
) -> None:
    """A transcript that comes while its recording is still downloading waits for it."""
    hook = await make_hook()
    rid = fake.recording_ids[2]
    fake.media_latency = 0.5
    assert await hook.post(record_stop(rid)) == 200

    assert await hook.post(transcription_json(rid), as_json=True) == 200
    assert await eventually(lambda: hook.receiver.counters.transcripts == 1)

    assert hook.receiver.counters.archived == 1
    assert json.loads((out / f"{rid}.transcript.json").read_text()) == transcription_json(rid)


async def test_transcript_with_an_error_is_stored_too(
    make_hook: MakeHook, fake: FakeVobiz, out: Path
) -> None:
    """A transcript whose `error` is set says why there is no text: it is stored as well."""
    hook = await make_hook()
    rid = fake.recording_ids[0]
    await hook.archived(rid)
    body = transcription_form(rid, transcription="", error="audio too short to transcribe")

    assert await hook.post(body) == 200
    assert await eventually(lambda: hook.receiver.counters.transcripts == 1)

    assert json.loads((out / f"{rid}.transcript.json").read_text())["error"] == (
        "audio too short to transcribe"
    )


async def test_transcript_the_sink_refused_is_stored_after_the_next_archive(
    make_hook: MakeHook, fake: FakeVobiz, out: Path
) -> None:
    """A transcript whose write failed stays spooled and is stored once the destination
    takes writes again, which the next archived recording shows."""
    hook = await make_hook()
    first, second = fake.recording_ids[:2]
    await hook.archived(first)
    blocker = out / f"{first}.transcript.json"
    blocker.mkdir()  # the rename onto it fails, as on a full or read-only disk

    assert await hook.post(transcription_form(first)) == 200
    await hook.receiver.placed()
    assert (hook.receiver.transcripts_waiting(), hook.receiver.counters.transcripts) == (1, 0)
    blocker.rmdir()
    await hook.archived(second)
    assert await eventually(lambda: hook.receiver.counters.transcripts == 1)

    assert json.loads(blocker.read_text()) == transcription_form(first)
    assert hook.receiver.transcripts_waiting() == 0


async def test_forged_transcript_is_refused_and_nothing_is_stored(
    make_hook: MakeHook, fake: FakeVobiz, out: Path
) -> None:
    """A transcription callback signed with another token gets 403: nothing spooled or
    stored."""
    hook = await make_hook()
    rid = fake.recording_ids[0]
    await hook.archived(rid)

    status = await hook.post(transcription_form(rid), token=OTHER_TOKEN)
    await hook.receiver.placed()

    assert status == 403
    assert "transcript" not in hook.spool_ops()
    assert not (out / f"{rid}.transcript.json").exists()
    health = await hook.healthz()
    assert (health["rejected"], health["transcripts"]) == (1, 0)


async def test_duplicate_transcript_is_acknowledged_and_stored_once(
    make_hook: MakeHook, fake: FakeVobiz, out: Path
) -> None:
    """Vobiz's retry of a transcript (fresh nonce, same transcription_id) answers 200, is
    counted a duplicate and is neither spooled nor stored again."""
    hook = await make_hook()
    rid = fake.recording_ids[0]
    await hook.archived(rid)
    assert await hook.post(transcription_form(rid)) == 200
    assert await eventually(lambda: hook.receiver.counters.transcripts == 1)
    (out / f"{rid}.transcript.json").unlink()  # a second store would put it back

    status = await hook.post(transcription_form(rid, transcription="retried"))
    await hook.receiver.placed()

    assert status == 200
    assert hook.spool_ops().count("transcript") == 1
    assert hook.spool_ops().count("transcript_stored") == 1
    assert not (out / f"{rid}.transcript.json").exists()
    health = await hook.healthz()
    assert (health["transcripts"], health["duplicate"]) == (1, 1)


async def test_restart_places_a_transcript_spooled_before_its_recording(
    make_hook: MakeHook, fake: FakeVobiz, out: Path
) -> None:
    """A transcript spooled while its recording's download was cut short by a stop is
    stored after the next start archives the recording."""
    fake.media_latency = 30.0
    first = await make_hook()
    rid = fake.recording_ids[3]
    assert await first.post(record_stop(rid)) == 200
    assert await first.post(transcription_form(rid)) == 200
    await first.receiver.close(0)  # stops mid-download, as a crash would
    assert not (out / f"{rid}.transcript.json").exists()
    fake.media_latency = 0.0

    second = await make_hook()
    assert await eventually(lambda: second.receiver.counters.transcripts == 1)

    assert second.receiver.counters.archived == 1
    assert json.loads((out / f"{rid}.transcript.json").read_text()) == transcription_form(rid)


async def test_restart_places_a_transcript_whose_recording_was_archived_meanwhile(
    make_hook: MakeHook, fake: FakeVobiz, out: Path, tmp_path: Path
) -> None:
    """A transcript spooled for a recording the receiver never saw is placed at the next
    start once the archive holds that recording (here: archived by another run)."""
    first = await make_hook()
    rid = fake.recording_ids[4]
    assert await first.post(transcription_form(rid)) == 200
    await first.receiver.placed()
    await first.receiver.close(0)
    async with AsyncSession(fake.auth_id, TOKEN, base_url=fake.base_url) as session:
        result = await session.recordings.download(rid, out, manifest=out / MANIFEST_NAME)
    assert result.ok

    second = await make_hook()
    assert await eventually(lambda: second.receiver.counters.transcripts == 1)

    assert (out / f"{rid}.transcript.json").is_file()


async def test_spool_compaction_keeps_a_waiting_transcript(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """Compacting the spool keeps a transcript whose recording is not archived yet."""
    hook = await make_hook()
    rid = fake.recording_ids[5]
    assert await hook.post(transcription_form(rid)) == 200
    await hook.receiver.placed()

    hook.receiver.spool.compact(keep_finished=0)
    reread = Spool(hook.spool)

    assert list(reread.transcripts) == ["tr-0001"]
    assert reread.transcript_states == {"tr-0001": "pending"}


# -- issue 26: one log line per recording; a RecordStop without its URL ------------------


async def test_each_recording_is_logged_at_info_without_query_or_token(
    make_hook: MakeHook, fake: FakeVobiz, caplog: pytest.LogCaptureFixture
) -> None:
    """Accepted, archived and failed recordings each log a line naming the id and the
    outcome; no line holds the media URL's query or the token."""
    hook = await make_hook()
    good, bad = fake.recording_ids[:2]
    with caplog.at_level(logging.INFO, logger="vobiz_async"):
        await hook.archived(good)
        fake.api_fault("get", 404)
        assert await hook.post(record_stop(bad)) == 200
        assert await eventually(lambda: hook.receiver.counters.failed == 1)

    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, f"recording {good}: accepted (record callback)") in lines
    assert (logging.INFO, f"recording {good}: archived") in lines
    assert (logging.INFO, f"recording {bad}: accepted (record callback)") in lines
    assert any(level >= logging.INFO and f"recording {bad}: failed" in m for level, m in lines)
    assert "QueryShouldNeverShow77" not in caplog.text
    assert TOKEN not in caplog.text


async def test_record_stop_without_record_url_is_queued_and_archived(
    make_hook: MakeHook, fake: FakeVobiz, out: Path
) -> None:
    """A signed RecordStop without `RecordUrl` is queued all the same: the download goes
    by id."""
    hook = await make_hook()
    rid = fake.recording_ids[0]

    status = await hook.post(record_stop(rid, with_url=False))
    assert await eventually(lambda: hook.receiver.counters.archived == 1)

    assert status == 200
    path = recording_file(out, rid)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake.sha256(rid)


# -- object storage -----------------------------------------------------------------------


@pytest.fixture(name="s3_endpoint")
def _s3_endpoint(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


async def test_transcript_is_stored_beside_its_recording_in_s3(
    make_hook: MakeHook, fake: FakeVobiz, bucket: str, admin: Any, s3_endpoint: str
) -> None:
    """Into `s3://bucket/prefix/`, the transcript is one `application/json` object beside
    the recording's object, its body the callback's fields."""
    del s3_endpoint
    hook = await make_hook(f"s3://{bucket}/vobiz/")
    rid = fake.recording_ids[0]
    await hook.archived(rid)

    assert await hook.post(transcription_json(rid), as_json=True) == 200
    assert await eventually(lambda: hook.receiver.counters.transcripts == 1)

    listed = {o["Key"] for o in admin.list_objects_v2(Bucket=bucket, Prefix="vobiz/")["Contents"]}
    recordings = {key for key in listed if key.endswith((".mp3", ".wav"))}
    assert len(recordings) == 1
    assert listed - recordings == {f"vobiz/{rid}.transcript.json"}
    got = admin.get_object(Bucket=bucket, Key=f"vobiz/{rid}.transcript.json")
    assert got["ContentType"] == "application/json"
    assert json.loads(got["Body"].read()) == transcription_json(rid)
