"""The RecordStop webhook receiver: signatures, parsing, and end to end against FakeVobiz.

Expected signatures are computed here from `hmac`/`hashlib`/`base64` and the formula in
VOBIZ_API.md, never by the code under test. Every server binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from multidict import CIMultiDict

from vobiz_async import AsyncSession, ConfigurationError
from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.receiver import (
    Receiver,
    ServeConfig,
    Spool,
    default_spool_path,
    parse_basic_auth,
    parse_duration,
    parse_listen,
)
from vobiz_async.testing import FakeVobiz
from vobiz_async.webhooks import (
    NonceCache,
    RecordingEvent,
    SignatureVersion,
    WebhookPayloadError,
    WebhookVerifier,
    create_app,
    parse_callback,
    verify_signature,
)

TOKEN = "sub-account-token-Hq2vN8"
OTHER_TOKEN = "someone-elses-token-Wd5pL1"
PARENT_TOKEN = "parent-token-Mz4cR7"
PASSWORD = "basic-password-Tk9sB3"
PUBLIC_URL = "https://hooks.example.test/vobiz/recording"
_nonces = itertools.count(10_000_000_000_000_000_000)


def expected_signature(url: str, nonce: str, token: str, *, v3: bool = True) -> str:
    """Vobiz's formula, written out independently of the code under test."""
    base = url.split("?", 1)[0]
    message = f"{base}.{nonce}" if v3 else f"{base}{nonce}"
    digest = hmac.new(token.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def fresh_nonce() -> str:
    return str(next(_nonces))


def signed_headers(
    url: str = PUBLIC_URL,
    *,
    token: str = TOKEN,
    nonce: str | None = None,
    v3: bool = True,
    v2: bool = True,
    parent: str | None = None,
) -> dict[str, str]:
    """The headers Vobiz sends for a callback to `url`."""
    headers: dict[str, str] = {}
    if v3:
        n3 = nonce or fresh_nonce()
        headers["X-Vobiz-Signature-V3-Nonce"] = n3
        headers["X-Vobiz-Signature-V3"] = expected_signature(url, n3, token)
        if parent:
            headers["X-Vobiz-Signature-MA-V3"] = expected_signature(url, n3, parent)
    if v2:
        n2 = nonce or fresh_nonce()
        headers["X-Vobiz-Signature-V2-Nonce"] = n2
        headers["X-Vobiz-Signature-V2"] = expected_signature(url, n2, token, v3=False)
        if parent:
            headers["X-Vobiz-Signature-MA-V2"] = expected_signature(url, n2, parent, v3=False)
    return headers


def one_signature(header: str, nonce: str, signature: str) -> dict[str, str]:
    """A request carrying just one V3-family signature (`header`) and its nonce."""
    return {"X-Vobiz-Signature-V3-Nonce": nonce, header: signature}


def parent_signed(nonce: str) -> dict[str, str]:
    """A sub-account callback signed only as MA-V3, with the parent token."""
    return one_signature(
        "X-Vobiz-Signature-MA-V3", nonce, expected_signature(PUBLIC_URL, nonce, PARENT_TOKEN)
    )


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def record_stop(rid: str, **extra: str) -> dict[str, str]:
    """The form `<Record callbackUrl>` posts when a recording is finished."""
    return {
        "Event": "RecordStop",
        "RecordingID": rid,
        "RecordUrl": f"https://media.vobiz.ai/v1/Account/MA_X/Recording/{rid}.mp3",
        "RecordingDuration": "8",
        "RecordingDurationMs": "7880",
        "RecordingStartMs": "1778127327912",
        "RecordingEndMs": "1778127335792",
        "RecordingEndReason": "hangup",
        "CallUUID": "4f6e8a1c-0000-4000-8000-000000000001",
        "From": "+919900000001",
        "To": "+919900000002",
        **extra,
    }


def rest_callback(rid: str) -> dict[str, Any]:
    """The snake_case body of the start-recording API's `callback_url`."""
    return {
        "api_id": "6e3b1f7a-0000-4000-8000-00000000beef",
        "record_url": f"https://media.vobiz.ai/{rid}.mp3",
        "call_uuid": "4f6e8a1c-0000-4000-8000-000000000002",
        "recording_id": rid,
        "recording_duration": 8,
        "recording_duration_ms": 7880,
        "recording_start_ms": 1778127327912,
        "recording_end_ms": 1778127335792,
    }


def check(headers: Mapping[str, str], url: str = PUBLIC_URL, **kw: Any) -> Any:
    return verify_signature(CIMultiDict(headers), url, TOKEN, **kw)


# -- signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "version"),
    [({"v2": False}, SignatureVersion.V3), ({"v3": False}, SignatureVersion.V2)],
    ids=["v3", "v2-only"],
)
def test_signature_validates_as_its_version(
    kind: dict[str, bool], version: SignatureVersion
) -> None:
    """A V3 signature computed from the formula is accepted as V3; without V3 headers a
    valid V2 signature is accepted, and says so."""
    result = check(signed_headers(**kind))

    assert result.valid
    assert result.version is version


def test_non_default_port_is_part_of_the_signed_url() -> None:
    """A URL with a non-default port is signed with its port; dropping it fails."""
    url = "https://hooks.example.test:8443/vobiz/recording"
    headers = signed_headers(url, v2=False)

    assert check(headers, url).valid
    assert not check(headers, "https://hooks.example.test/vobiz/recording").valid


def test_query_is_stripped_before_signing() -> None:
    """The configured URL's query is removed: Vobiz signs the URL without it."""
    url = "https://hooks.example.test/vobiz/recording?tenant=7&x=y"
    nonce = fresh_nonce()
    headers = one_signature(
        "X-Vobiz-Signature-V3", nonce, expected_signature(url.split("?")[0], nonce, TOKEN)
    )
    with_query = one_signature(
        "X-Vobiz-Signature-V3",
        nonce,
        base64.b64encode(
            hmac.new(TOKEN.encode(), f"{url}.{nonce}".encode(), hashlib.sha256).digest()
        ).decode(),
    )

    assert check(headers, url).valid
    assert not check(with_query, url).valid


def test_tampered_nonce_is_refused() -> None:
    """Changing the nonce after signing invalidates the signature."""
    headers = signed_headers(v2=False)
    headers["X-Vobiz-Signature-V3-Nonce"] += "1"

    assert not check(headers).valid


def test_another_tokens_signature_is_refused() -> None:
    """A signature made with a different auth token is refused, V3 and V2 alike."""
    assert not check(signed_headers(token=OTHER_TOKEN)).valid


def test_v2_is_not_the_same_formula_as_v3() -> None:
    """A V3-style signature (with the dot) in the V2 header is refused."""
    nonce = fresh_nonce()
    headers = {
        "X-Vobiz-Signature-V2-Nonce": nonce,
        "X-Vobiz-Signature-V2": expected_signature(PUBLIC_URL, nonce, TOKEN, v3=True),
    }

    assert not check(headers).valid


def test_ma_v3_validates_with_the_parent_token() -> None:
    """A sub-account callback signed only as MA-V3 validates with the parent token."""
    headers = parent_signed(fresh_nonce())

    with_parent = check(headers, parent_auth_token=PARENT_TOKEN)

    assert with_parent.valid
    assert with_parent.version is SignatureVersion.MA_V3
    assert not check(headers).valid  # no parent token configured: nothing to check it with
    assert not check(headers, parent_auth_token=OTHER_TOKEN).valid


def test_missing_signature_fails_closed() -> None:
    """No signature headers, a signature without its nonce, or garbage: all refused."""
    headers = signed_headers(v2=False)
    del headers["X-Vobiz-Signature-V3-Nonce"]

    assert not check({}).valid
    assert not check(headers).valid
    assert not check({"X-Vobiz-Signature-V3": "%%%", "X-Vobiz-Signature-V3-Nonce": "1"}).valid


def test_unversioned_legacy_signature_is_not_used() -> None:
    """`X-Vobiz-Signature` alone (legacy SHA1 / body HMAC) never validates a callback."""
    nonce = fresh_nonce()
    legacy = base64.b64encode(
        hmac.new(TOKEN.encode(), f"{PUBLIC_URL}{nonce}".encode(), hashlib.sha1).digest()
    ).decode()

    assert not check({"X-Vobiz-Signature": legacy, "X-Vobiz-Signature-V2-Nonce": nonce}).valid


def test_verifier_requires_basic_credentials_when_configured() -> None:
    """With Basic auth configured a valid signature alone is not enough, and vice versa."""
    verifier = WebhookVerifier(PUBLIC_URL, TOKEN, basic_auth=("vobiz", PASSWORD))
    good = basic_header("vobiz", PASSWORD)
    bad = basic_header("vobiz", "wrong")

    assert verifier.check(CIMultiDict({**signed_headers(), "Authorization": good})).valid
    assert not verifier.check(CIMultiDict(signed_headers())).valid
    assert not verifier.check(CIMultiDict({**signed_headers(), "Authorization": bad})).valid
    assert not verifier.check(CIMultiDict({"Authorization": good})).valid


def test_secrets_stay_out_of_reprs() -> None:
    """The verifier and the serve configuration never show a token or the password."""
    verifier = WebhookVerifier(
        PUBLIC_URL, TOKEN, parent_auth_token=PARENT_TOKEN, basic_auth=("vobiz", PASSWORD)
    )
    config = ServeConfig(
        public_url=PUBLIC_URL,
        dest="archive",
        auth_token=TOKEN,
        parent_auth_token=PARENT_TOKEN,
        basic_auth=("vobiz", PASSWORD),
    )

    for text in (repr(verifier), str(verifier), repr(config)):
        for secret in (TOKEN, PARENT_TOKEN, PASSWORD):
            assert secret not in text


# -- payloads -----------------------------------------------------------------------------


def test_record_stop_form_parses() -> None:
    """A RecordStop form becomes a RecordingEvent with typed fields."""
    event = parse_callback(record_stop("rec-1"))

    assert event == RecordingEvent(
        recording_id="rec-1",
        shape="record",
        record_url="https://media.vobiz.ai/v1/Account/MA_X/Recording/rec-1.mp3",
        call_uuid="4f6e8a1c-0000-4000-8000-000000000001",
        duration_ms=7880,
        start_ms=1778127327912,
        end_ms=1778127335792,
        end_reason="hangup",
    )


def test_rest_callback_parses_with_decimal_strings() -> None:
    """The snake_case REST shape parses, ms fields as ints or decimal strings."""
    body = {**rest_callback("rec-2"), "recording_duration_ms": "7880.00000"}

    event = parse_callback(body)

    assert event is not None
    assert (event.recording_id, event.shape, event.duration_ms) == ("rec-2", "rest", 7880)
    assert event.api_id == "6e3b1f7a-0000-4000-8000-00000000beef"


@pytest.mark.parametrize(
    "fields",
    [
        {**record_stop("rec-3"), "Event": "Record"},  # recording started
        {k: v for k, v in record_stop("rec-3").items() if k != "Event"},  # the action request
        {"Event": "Hangup", "CallUUID": "x"},
        {"recording_id": "rec-3"},  # REST shape without a record_url
        {},
    ],
    ids=["started", "action", "other-event", "rest-no-url", "empty"],
)
def test_not_a_finished_recording_is_none(fields: dict[str, str]) -> None:
    """Callbacks that do not announce a finished file parse to None."""
    assert parse_callback(fields) is None


def test_record_stop_without_its_url_is_still_a_finished_recording() -> None:
    """A RecordStop without `RecordUrl` or `RecordFile` names a finished recording all the
    same: downloads go by id (issue 26)."""
    fields = {k: v for k, v in record_stop("rec-5").items() if k != "RecordUrl"}

    event = parse_callback(fields)

    assert event is not None
    assert (event.recording_id, event.record_url, event.duration_ms) == ("rec-5", None, 7880)


def test_record_file_counts_as_the_file() -> None:
    """`RecordFile` stands in for `RecordUrl`."""
    fields = {k: v for k, v in record_stop("rec-4").items() if k != "RecordUrl"}
    fields["RecordFile"] = "/recordings/rec-4.mp3"

    event = parse_callback(fields)

    assert event is not None
    assert event.record_url == "/recordings/rec-4.mp3"


@pytest.mark.parametrize("rid", ["", "../etc/passwd", "a/b", ".hidden"])
def test_unusable_recording_id_is_a_payload_error(rid: str) -> None:
    """A finished recording whose id is missing or unsafe is a typed error."""
    with pytest.raises(WebhookPayloadError):
        parse_callback(record_stop(rid))


def test_nonce_cache_forgets_after_the_window() -> None:
    """A nonce is remembered within the window and forgotten after it."""
    cache = NonceCache(window=600)
    cache.add("n1", now=1000.0)

    assert cache.seen("n1", now=1599.0)
    assert not cache.seen("n1", now=1601.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("45s", 45.0), ("30m", 1800.0), ("1h", 3600.0), ("1.5h", 5400.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """`--sync-every` durations in seconds, minutes and hours."""
    assert parse_duration(text) == seconds


def test_cli_value_parsers_refuse_garbage() -> None:
    """Bad `--listen`, `--sync-every` and `--basic-auth` values are clear errors."""
    import argparse

    assert parse_listen("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert parse_listen("[::1]:9") == ("::1", 9)
    for bad_call in (
        lambda: parse_listen("8000"),
        lambda: parse_duration("soon"),
        lambda: parse_duration("0"),
        lambda: parse_basic_auth("nopassword"),
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            bad_call()


def test_default_spool_is_in_the_folder_or_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool defaults to a file in --out, or under XDG_STATE_HOME for a remote dest."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    local = default_spool_path(str(tmp_path / "archive"))
    remote = default_spool_path("s3://bucket/recordings")

    assert local == tmp_path / "archive" / "vobiz-webhooks.spool.jsonl"
    assert remote.parent == tmp_path / "state" / "vobiz-async"
    assert remote != default_spool_path("s3://bucket/other")


def test_spool_skips_a_torn_last_line(tmp_path: Path) -> None:
    """A line cut short by a crash is skipped; complete lines before it still count."""
    path = tmp_path / "spool.jsonl"
    good = {"op": "accepted", "event": {"recording_id": "rec-1", "shape": "record"}, "at": 1.0}
    path.write_text(json.dumps(good) + '\n{"op": "accepted", "event": {"recor')

    spool = Spool(path)
    spool.append({"op": "archived", "recording_id": "rec-9", "at": 2.0})
    spool.close()

    assert [e.recording_id for e in Spool(path).pending()] == ["rec-1"]
    assert Spool(path).states["rec-9"] == "archived"


def test_a_second_receiver_cannot_take_the_same_spool(tmp_path: Path) -> None:
    """The spool's lock refuses a second holder until the first closes it."""
    first, second = Spool(tmp_path / "spool.jsonl"), Spool(tmp_path / "spool.jsonl")
    first.lock()

    with pytest.raises(ConfigurationError, match="another receiver"):
        second.lock()
    first.close()
    second.lock()
    second.close()


def test_compaction_keeps_pending_and_recent_and_drops_old_finished(tmp_path: Path) -> None:
    """Compaction keeps every pending event and recent outcomes; old outcomes go."""
    path = tmp_path / "spool.jsonl"
    now = time.time()
    old = now - 30 * 86400

    def accepted(rid: str, at: float) -> dict[str, Any]:
        return {"op": "accepted", "event": {"recording_id": rid, "shape": "record"}, "at": at}

    lines = [
        accepted("old-done", old),
        {"op": "archived", "recording_id": "old-done", "at": old + 5},
        accepted("old-pending", old),
        accepted("recent-done", now - 3600),
        {"op": "archived", "recording_id": "recent-done", "at": now - 3500},
        accepted("failed-then-pending", old),
        {"op": "failed", "recording_id": "failed-then-pending", "at": old + 5},
        accepted("failed-then-pending", old + 10),
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    spool = Spool(path)
    spool.lock()

    dropped = spool.compact()
    spool.close()

    reloaded = Spool(path)
    assert dropped == 5
    assert [e.recording_id for e in reloaded.pending()] == ["old-pending", "failed-then-pending"]
    assert reloaded.states == {
        "old-pending": "pending",
        "recent-done": "archived",
        "failed-then-pending": "pending",
    }


# -- end to end, in process ---------------------------------------------------------------


@attrs.define
class Hook:
    """A running receiver app in front of FakeVobiz, and a client that calls it."""

    fake: FakeVobiz
    receiver: Receiver
    url: str
    out: Path
    client: aiohttp.ClientSession
    basic: tuple[str, str] | None = None

    async def post(
        self,
        body: Mapping[str, Any],
        *,
        as_json: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], float]:
        """POST a callback; the status, headers and seconds it took to answer."""
        sent = dict(signed_headers() if headers is None else headers)
        if self.basic is not None:
            sent.setdefault("Authorization", basic_header(*self.basic))
        started = time.monotonic()
        kwargs: dict[str, Any] = {"json": body} if as_json else {"data": dict(body)}
        async with self.client.post(self.url, headers=sent, **kwargs) as resp:
            await resp.read()
            return resp.status, dict(resp.headers), time.monotonic() - started

    async def archive(
        self,
        body: Mapping[str, Any],
        *,
        as_json: bool = False,
        headers: Mapping[str, str] | None = None,
        count: int = 1,
    ) -> int:
        """POST a callback and wait until `count` recordings settled; the status."""
        status, _, _ = await self.post(body, as_json=as_json, headers=headers)
        await self.settled(count)
        return status

    async def post_idle(
        self, body: Mapping[str, str], *, headers: Mapping[str, str] | None = None
    ) -> int:
        """POST a callback that must start nothing; the status, after a pause for a wrongly
        started download to show in the fake's stats."""
        status, _, _ = await self.post(body, headers=headers)
        # The sink queues before the answer leaves, so this holds on a machine of any speed.
        assert self.receiver.pending() == 0
        await asyncio.sleep(0.2)
        return status

    async def healthz(self) -> dict[str, int]:
        async with self.client.get(self.url.rsplit("/vobiz", 1)[0] + "/healthz") as resp:
            assert resp.status == 200
            data: dict[str, int] = await resp.json()
            return data

    async def settled(self, count: int) -> None:
        """Wait until `count` recordings are archived or failed."""
        c = self.receiver.counters
        for _ in range(1000):
            if c.archived + c.failed >= count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"only {c.archived} archived, {c.failed} failed of {count}")


MakeHook = Callable[..., Awaitable[Hook]]


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=60, seed=16, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture(name="make_hook")
async def _make_hook(fake: FakeVobiz, tmp_path: Path) -> AsyncIterator[MakeHook]:
    """Start receivers (sharing one archive folder and spool) on 127.0.0.1."""
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(aiohttp.ClientSession())
        out = tmp_path / "archive"

        async def make(
            *,
            queue_size: int = 1000,
            concurrency: int = 4,
            basic: tuple[str, str] | None = None,
            parent: str | None = None,
        ) -> Hook:
            session = await stack.enter_async_context(
                AsyncSession(fake.auth_id, TOKEN, base_url=fake.base_url)
            )
            manifest = stack.enter_context(Manifest(out / MANIFEST_NAME))
            spool = Spool(out / "spool.jsonl")
            stack.callback(spool.close)
            receiver = Receiver(
                session,
                str(out),
                spool,
                queue_size=queue_size,
                concurrency=concurrency,
                manifest=manifest,
            )
            verifier = WebhookVerifier(
                PUBLIC_URL, TOKEN, parent_auth_token=parent, basic_auth=basic
            )
            runner = web.AppRunner(create_app(verifier, receiver), access_log=None)
            await runner.setup()
            stack.push_async_callback(receiver.close, 0)
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            await receiver.start()
            url = f"http://127.0.0.1:{port}/vobiz/recording"
            return Hook(fake, receiver, url, out, client, basic)

        yield make


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archived_file(out: Path, rid: str) -> Path:
    files = [p for p in out.glob(f"{rid}.*") if p.suffix in (".mp3", ".wav")]
    assert len(files) == 1, f"{rid}: {files}"
    return files[0]


def assert_verified(hook: Hook, rid: str) -> None:
    """The archive holds `rid` byte for byte as served, and the manifest agrees."""
    path = archived_file(hook.out, rid)
    assert sha256_of(path) == hook.fake.sha256(rid)
    with Manifest(hook.out / MANIFEST_NAME) as manifest:
        entry = manifest.get(rid)
    assert entry is not None
    assert entry.sha256 == hook.fake.sha256(rid)


@pytest.mark.parametrize(
    ("index", "body_of", "as_json"),
    [(0, record_stop, False), (1, rest_callback, True)],
    ids=["form-record-stop", "json-rest-callback"],
)
async def test_signed_callback_is_archived(
    make_hook: MakeHook,
    fake: FakeVobiz,
    index: int,
    body_of: Callable[[str], Mapping[str, Any]],
    as_json: bool,
) -> None:
    """A signed RecordStop form, or a signed REST callback in JSON, leads to a verified
    archived recording."""
    hook = await make_hook()
    rid = fake.recording_ids[index]

    status = await hook.archive(body_of(rid), as_json=as_json)

    assert status == 200
    assert_verified(hook, rid)


async def test_forged_callback_is_refused_and_fetches_nothing(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """A callback signed with another token gets 403, and nothing is fetched or spooled."""
    hook = await make_hook()
    fake.stats.reset()

    status = await hook.post_idle(
        record_stop(fake.recording_ids[0]), headers=signed_headers(token=OTHER_TOKEN)
    )

    assert status == 403
    assert fake.stats.api_requests == fake.stats.media_requests == 0
    assert hook.receiver.pending() == 0
    assert (await hook.healthz())["rejected"] == 1


@pytest.mark.parametrize(
    "replayed",
    [lambda headers: headers, lambda headers: {k: v for k, v in headers.items() if "V3" not in k}],
    ids=["same-headers", "v3-headers-stripped"],
)
async def test_replayed_nonce_does_nothing_whatever_its_body(
    make_hook: MakeHook,
    fake: FakeVobiz,
    replayed: Callable[[dict[str, str]], dict[str, str]],
) -> None:
    """A second request with a seen nonce answers 200 and fetches nothing, even for a new id;
    a captured request replayed with only its V2 signature is known by its V2 nonce."""
    hook = await make_hook()
    first, second = fake.recording_ids[:2]
    headers = signed_headers()
    await hook.post(record_stop(first), headers=headers)
    await hook.settled(1)
    fake.stats.reset()

    status = await hook.post_idle(record_stop(second), headers=replayed(headers))

    assert status == 200
    assert fake.stats.api_requests == fake.stats.media_requests == 0
    assert not list(hook.out.glob(f"{second}.*"))
    assert hook.receiver.pending() == 0
    assert (await hook.healthz())["duplicate"] == 1


async def test_duplicate_recording_id_fetches_nothing_more(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """Vobiz's retry of an archived recording (fresh nonce) answers 200 and downloads nothing."""
    hook = await make_hook()
    rid = fake.recording_ids[0]
    await hook.archive(record_stop(rid))
    fake.stats.reset()

    status = await hook.post_idle(record_stop(rid))

    assert status == 200
    assert fake.stats.api_requests == fake.stats.media_requests == 0
    assert (await hook.healthz())["duplicate"] == 1


async def test_failed_download_is_queued_again_on_a_repeat(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """A repeated callback for a recording whose download failed gets another chance."""
    hook = await make_hook()
    rid = fake.recording_ids[0]
    fake.api_fault("get", 404)
    await hook.archive(record_stop(rid))
    assert hook.receiver.counters.failed == 1

    status = await hook.archive(record_stop(rid), count=2)

    assert status == 200
    assert_verified(hook, rid)


async def test_start_and_action_callbacks_are_ignored_until_record_stop(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """`Event=Record` and the action request are ignored and do not mark the id seen."""
    hook = await make_hook()
    rid = fake.recording_ids[0]
    fields = record_stop(rid)
    action = {k: v for k, v in fields.items() if k != "Event"}
    fake.stats.reset()

    started, _, _ = await hook.post({**fields, "Event": "Record"})
    acted, _, _ = await hook.post(action)
    await asyncio.sleep(0.1)
    assert fake.stats.api_requests == fake.stats.media_requests == 0
    stopped, _, _ = await hook.post(fields)
    await hook.settled(1)

    assert (started, acted, stopped) == (200, 200, 200)
    assert_verified(hook, rid)
    assert hook.receiver.counters.ignored == 2


async def test_v2_only_callback_is_accepted_with_a_warning(
    make_hook: MakeHook, fake: FakeVobiz, caplog: pytest.LogCaptureFixture
) -> None:
    """A V2-only callback is archived and a warning says only V2 validated."""
    hook = await make_hook()
    rid = fake.recording_ids[0]

    with caplog.at_level(logging.WARNING, logger="vobiz_async"):
        status, _, _ = await hook.post(record_stop(rid), headers=signed_headers(v3=False))
    await hook.settled(1)

    assert status == 200
    assert "V2 signature only" in caplog.text
    assert_verified(hook, rid)


async def test_ma_v3_callback_is_archived_with_the_parent_token(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """A sub-account callback signed only with the parent token is accepted when configured."""
    hook = await make_hook(parent=PARENT_TOKEN)
    rid = fake.recording_ids[0]
    headers = parent_signed(fresh_nonce())

    status = await hook.archive(record_stop(rid), headers=headers)

    assert status == 200
    assert_verified(hook, rid)


async def test_basic_auth_is_checked_as_well_as_the_signature(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """With Basic auth configured, a wrong password is 403 even with a valid signature."""
    hook = await make_hook(basic=("vobiz", PASSWORD))
    rid = fake.recording_ids[0]
    wrong = basic_header("vobiz", "not-it")

    refused, _, _ = await hook.post(
        record_stop(rid), headers={**signed_headers(), "Authorization": wrong}
    )
    unsigned, _, _ = await hook.post(record_stop(rid), headers={})
    accepted, _, _ = await hook.post(record_stop(rid))
    await hook.settled(1)

    assert (refused, unsigned, accepted) == (403, 403, 200)
    assert_verified(hook, rid)


async def test_body_over_64_kib_is_413(make_hook: MakeHook, fake: FakeVobiz) -> None:
    """A signed callback with a body over 64 KiB gets 413 and nothing is queued."""
    hook = await make_hook()
    body = record_stop(fake.recording_ids[0], Padding="x" * (65 * 1024))

    status, _, _ = await hook.post(body)
    forged, _, _ = await hook.post(body, headers=signed_headers(token=OTHER_TOKEN))

    assert (status, forged) == (413, 403)
    assert hook.receiver.pending() == 0


async def test_full_queue_answers_503_with_retry_after(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """When the queue is full the callback gets 503 and Retry-After; its retry gets in later."""
    hook = await make_hook(queue_size=2, concurrency=1)
    fake.media_latency = 30.0  # nothing finishes while the test looks
    first, second, third = fake.recording_ids[:3]
    await hook.post(record_stop(first))
    await hook.post(record_stop(second))
    headers = signed_headers()

    status, answer, _ = await hook.post(record_stop(third), headers=headers)

    assert status == 503
    assert int(answer["Retry-After"]) > 0
    health = await hook.healthz()
    assert (health["queued"], health["rejected"], health["accepted"]) == (2, 1, 2)
    # The refused request's nonce was not remembered: the same retry is not a "replay".
    hook.receiver.queue_size = 3
    again, _, _ = await hook.post(record_stop(third), headers=headers)
    assert again == 200
    assert (await hook.healthz())["accepted"] == 3


async def test_fifty_callbacks_twenty_at_a_time_answer_fast_while_downloads_crawl(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """50 callbacks, 20 in flight at once, all answer 200 while media is slow; the answers
    never wait for a download."""
    hook = await make_hook()
    fake.media_latency = 20.0
    ids = fake.recording_ids[:50]
    gate = asyncio.Semaphore(20)

    async def call(rid: str) -> tuple[int, float]:
        async with gate:
            status, _, took = await hook.post(record_stop(rid))
            return status, took

    answers = await asyncio.gather(*(call(rid) for rid in ids))

    assert [status for status, _ in answers] == [200] * 50
    assert max(took for _, took in answers) < fake.media_latency  # none waited for a download
    health = await hook.healthz()
    assert health["accepted"] == 50
    assert health["archived"] == 0  # every answer came back before any download finished
    assert health["queued"] == 50


async def test_healthz_counts_and_hides_secrets(
    make_hook: MakeHook, fake: FakeVobiz, caplog: pytest.LogCaptureFixture
) -> None:
    """/healthz is a flat object of int counters, and no token or password is in it or the
    logs, even at debug level with refused requests."""
    hook = await make_hook(parent=PARENT_TOKEN, basic=("vobiz", PASSWORD))
    rid = fake.recording_ids[0]
    with caplog.at_level(logging.DEBUG):
        await hook.post(record_stop(rid))
        await hook.settled(1)
        await hook.post(record_stop(rid))
        await hook.post(record_stop(rid), headers={**signed_headers(token=OTHER_TOKEN)})
        await hook.post(
            record_stop(rid),
            headers={**signed_headers(), "Authorization": basic_header("x", "y")},
        )
        async with hook.client.get(hook.url.replace("/vobiz/recording", "/healthz")) as resp:
            raw = await resp.text()

    health = json.loads(raw)
    assert health == {
        "accepted": 1,
        "duplicate": 1,
        "rejected": 2,
        "queued": 0,
        "archived": 1,
        "failed": 0,
        "transcripts": 0,
        "transcripts_waiting": 0,
    }
    for secret in (TOKEN, PARENT_TOKEN, PASSWORD):
        assert secret not in raw
        assert secret not in caplog.text
        assert secret not in repr(hook.receiver)


async def test_restart_resumes_what_the_spool_holds(make_hook: MakeHook, fake: FakeVobiz) -> None:
    """An event spooled but not archived when the receiver stopped is archived on restart."""
    fake.media_latency = 30.0
    first = await make_hook()
    rid = fake.recording_ids[0]
    await first.post(record_stop(rid))
    await first.receiver.close(0)  # stops mid-download, as a crash would
    assert not list(first.out.glob(f"{rid}.mp3")) + list(first.out.glob(f"{rid}.wav"))
    fake.media_latency = 0.0

    second = await make_hook()
    await second.settled(1)

    assert second.receiver.counters.archived == 1
    assert_verified(second, rid)


async def test_backstop_sync_archives_a_recording_no_callback_announced(
    make_hook: MakeHook, fake: FakeVobiz
) -> None:
    """`sync_recent` queues a recent recording nobody called back about, once."""
    from datetime import UTC, datetime

    hook = await make_hook()
    recent = fake.add_recording(add_time=datetime.now(UTC)).recording_id

    queued = await hook.receiver.sync_recent(3600)
    await hook.settled(1)
    again = await hook.receiver.sync_recent(3600)

    assert (queued, again) == (1, 0)  # the generated recordings are months old
    assert_verified(hook, recent)
