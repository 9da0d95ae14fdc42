"""`serve` into governed object storage, its index, and transcripts that wait (issue 25 §2,
§3): the `--s3-*` flags on every object the receiver writes (recording single PUT and
multipart, sidecar, transcript), a bucket refusing a setting refused before anything
listens, `--index` for `s3://`, and `/healthz` counting transcripts whose recording has not
come.

Everything binds 127.0.0.1: FakeVobiz for the API and media, moto (and its KMS) for S3, and
the receiver, as a child process (`vobiz_async serve`) or in this loop (`receiver.serve`).
Signatures are computed here from the documented formula.
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
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _waiting import eventually
from test_cli import run_cli
from test_receiver_batch import serve_config, serve_in_loop
from test_s3_governance import _kms_key, _locked, _plain  # buckets and a KMS key in moto
from test_s3_sink import _admin, _aws_env  # the fake AWS environment (moto_url: conftest)
from test_webhooks_serve import finish, spawn_serve, start_serve, stop

from vobiz_async.errors import ConfigurationError
from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.protocol import sidecar_key
from vobiz_async.receiver import serve, transcript_key
from vobiz_async.sinks.s3 import retain_until
from vobiz_async.testing import FakeVobiz

__all__ = ["_admin", "_aws_env", "_kms_key", "_locked", "_plain"]  # fixtures, imported for use here

boto3 = pytest.importorskip("boto3")

#: `test_webhooks_serve.spawn_serve` signs for this URL with this token.
TOKEN = "serve-test-token-Jx7fQ2"
PUBLIC_URL = "https://hooks.example.test/vobiz/recording"
MiB = 1024 * 1024
#: Above the receiver's S3 part size (8 MiB): uploaded in parts, stamped by a copy.
MULTIPART = 8 * MiB + 10
_nonces = itertools.count(52_000_000_000_000_000_000)


def sign() -> dict[str, str]:
    """V3 headers for PUBLIC_URL with a fresh nonce, from the documented formula."""
    nonce = str(next(_nonces))
    mac = hmac.new(TOKEN.encode(), f"{PUBLIC_URL}.{nonce}".encode(), hashlib.sha256)
    return {
        "X-Vobiz-Signature-V3": base64.b64encode(mac.digest()).decode(),
        "X-Vobiz-Signature-V3-Nonce": nonce,
    }


def record_stop(rid: str) -> dict[str, str]:
    return {"Event": "RecordStop", "RecordingID": rid, "RecordingDuration": "8"}


def transcription(rid: str, tid: str) -> dict[str, str]:
    return {
        "transcription": "Hello, I am calling about my loan application.",
        "transcription_id": tid,
        "recording_id": rid,
        "duration": "8",
        "error": "",
    }


@pytest.fixture(autouse=True)
def _endpoint(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=25, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture(name="env")
def _env(fake: FakeVobiz) -> dict[str, str]:
    """The child's environment: this test's fake AWS (`_aws_env`, `_endpoint`) and Vobiz."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}
    return {
        **base,
        "VOBIZ_AUTH_ID": fake.auth_id,
        "VOBIZ_AUTH_TOKEN": TOKEN,
        "VOBIZ_BASE_URL": fake.base_url,
    }


def media_requests(fake: FakeVobiz) -> int:
    return sum(1 for r in fake.stats.requests if r.operation in ("media", "storage"))


async def health(client: aiohttp.ClientSession, origin: str) -> dict[str, int]:
    async with client.get(origin + "/healthz") as resp:
        data: dict[str, int] = await resp.json()
        return data


async def until(
    client: aiohttp.ClientSession, origin: str, name: str, value: int
) -> dict[str, int]:
    """The receiver's counters once `name` reaches `value` (or after ~25 s)."""
    for _ in range(500):
        counters = await health(client, origin)
        if counters[name] >= value:
            break
        await asyncio.sleep(0.05)
    return counters


async def post(client: aiohttp.ClientSession, url: str, body: Mapping[str, str]) -> int:
    async with client.post(url, data=dict(body), headers=sign()) as resp:
        await resp.read()
        return resp.status


# ------------------------------------------------------------------ governed objects


def governance_flags(kms_key: str) -> list[str]:
    return [
        *("--s3-storage-class", "GLACIER_IR", "--s3-sse", "aws:kms"),
        *("--s3-sse-kms-key-id", kms_key, "--s3-object-lock-mode", "GOVERNANCE"),
        *("--s3-retain-days", "1", "--s3-legal-hold"),
    ]


def assert_governed(head: dict[str, Any], kms_key: str, before: datetime, after: datetime) -> None:
    assert head.get("StorageClass") == "GLACIER_IR"
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(kms_key)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    until_date = head["ObjectLockRetainUntilDate"]
    lowest = retain_until(before, 1) - timedelta(seconds=1)
    assert lowest <= until_date <= retain_until(after, 1) + timedelta(seconds=1)
    assert head["ObjectLockLegalHoldStatus"] == "ON"


async def test_serve_governs_every_object_and_indexes_transcripts(
    fake: FakeVobiz,
    env: dict[str, str],
    locked: str,
    admin: Any,
    kms_key: str,
    tmp_path: Path,
) -> None:
    """`serve --out s3://... --s3-* --metadata sidecar --index PATH`: a single-PUT and a
    multipart recording, their sidecars and their transcripts each carry the storage class,
    the SSE-KMS key, GOVERNANCE retention from the upload and the legal hold, as one version
    per key; the index holds both recordings and where their transcripts are."""
    small = fake.add_recording(size=40_000).recording_id
    big = fake.add_recording(size=MULTIPART).recording_id
    index = tmp_path / "state" / "index.sqlite"
    args = [
        *("--out", f"s3://{locked}/calls/", "--spool", str(tmp_path / "spool.jsonl")),
        *("--index", str(index), "--metadata", "sidecar", *governance_flags(kms_key)),
    ]
    before = datetime.now(UTC)
    async with aiohttp.ClientSession() as client:
        hook = await start_serve(env, *args)
        try:
            url = hook.origin + hook.path
            statuses = [await post(client, url, record_stop(rid)) for rid in (small, big)]
            counters = await until(client, hook.origin, "archived", 2)
            statuses += [
                await post(client, url, transcription(rid, f"tr-{n}"))
                for n, rid in enumerate((small, big))
            ]
            counters = await until(client, hook.origin, "transcripts", 2)
            hook.proc.send_signal(signal.SIGTERM)
            code, err = await finish(hook.proc)
        finally:
            await stop(hook.proc)
    after = datetime.now(UTC)

    assert statuses == [200] * 4
    assert (counters["archived"], counters["failed"], counters["transcripts"]) == (2, 0, 2)
    assert code == 0, err
    with Manifest(index) as manifest:
        entries = {rid: manifest.get(rid) for rid in (small, big)}
        transcripts = {rid: manifest.transcript_path(rid) for rid in (small, big)}
    keys = []
    for rid, entry in entries.items():
        assert entry is not None, rid
        assert entry.sha256 == fake.sha256(rid)
        assert transcripts[rid] == transcript_key(entry.path)
        keys += [entry.path, sidecar_key(entry.path), transcript_key(entry.path)]
    listed = admin.list_objects_v2(Bucket=locked, Prefix="calls/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"calls/{key}" for key in keys)
    for key in keys:
        assert_governed(
            admin.head_object(Bucket=locked, Key=f"calls/{key}"), kms_key, before, after
        )
    answer = admin.list_object_versions(Bucket=locked, Prefix="calls/")
    assert "DeleteMarkers" not in answer
    assert sorted(v["Key"] for v in answer["Versions"]) == sorted(f"calls/{k}" for k in keys)
    with contextlib.closing(sqlite3.connect(index)) as db:
        paths = {row[0] for row in db.execute("SELECT path FROM recordings")}
    assert paths == {entry.path for entry in entries.values() if entry is not None}


async def test_serve_lock_flags_on_a_bucket_without_object_lock(
    fake: FakeVobiz, env: dict[str, str], plain: str, admin: Any, tmp_path: Path
) -> None:
    """Lock flags into a bucket without Object Lock: one line naming the bucket, exit 1,
    before anything listens; nothing fetched or stored."""
    fake.add_recording(size=1_000)
    proc = await spawn_serve(
        env,
        *("--out", f"s3://{plain}/x/", "--spool", str(tmp_path / "spool.jsonl")),
        *("--s3-object-lock-mode", "GOVERNANCE", "--s3-retain-days", "1"),
    )
    try:
        assert proc.stdout is not None
        out, err_bytes = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await stop(proc)
    err = err_bytes.decode()

    assert proc.returncode == 1, err
    assert "listening" not in out.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Object Lock" in lines[0]
    assert plain in lines[0]
    assert media_requests(fake) == 0
    assert "Contents" not in admin.list_objects_v2(Bucket=plain)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--s3-storage-class", "GLACIER_IR"], "--s3-storage-class applies to s3://"),
        (["--s3-legal-hold"], "--s3-legal-hold applies to s3://"),
        (["--s3-sse", "aws:kms", "--s3-sse-kms-key-id", "k"], "--s3-sse applies to s3://"),
    ],
)
async def test_serve_refuses_s3_flags_with_a_folder(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path, flags: list[str], says: str
) -> None:
    """An `--s3-*` flag with a folder `--out` is one usage line, exit 2; nothing created."""
    out = tmp_path / "archive"
    done = await run_cli(*("serve", "--public-url", PUBLIC_URL, "--out", str(out), *flags), env=env)

    assert done.code == 2, done.output
    assert done.err.strip().splitlines() == [f"error: {says} destinations, not the folder {out}"]
    assert not out.exists()
    assert media_requests(fake) == 0


async def test_serve_refuses_a_retention_without_its_mode(env: dict[str, str]) -> None:
    """`--s3-retain-days` without `--s3-object-lock-mode` on serve: exit 2, as download."""
    done = await run_cli(
        *("serve", "--public-url", PUBLIC_URL, "--out", "s3://bucket/x/"),
        *("--s3-retain-days", "1"),
        env=env,
    )

    assert done.code == 2, done.output
    assert "--s3-retain-days needs --s3-object-lock-mode" in done.err


# ------------------------------------------------------------------ serve in this loop


def origin_of(url: str) -> str:
    return url.removesuffix("/vobiz/recording")


async def test_healthz_counts_a_transcript_until_its_recording_lands(
    fake: FakeVobiz, tmp_path: Path
) -> None:
    """A transcript whose recording is not archived is `transcripts_waiting` 1 on
    `/healthz`; once the recording lands and the transcript is stored beside it, 0."""
    rid = fake.add_recording(size=2_000).recording_id
    out = tmp_path / "archive"
    config = serve_config(fake, str(out), tmp_path / "spool.jsonl")
    async with serve_in_loop(config) as url, aiohttp.ClientSession() as client:
        assert await post(client, url, transcription(rid, "tr-first")) == 200
        waiting = await health(client, origin_of(url))
        assert await post(client, url, record_stop(rid)) == 200
        stored = await until(client, origin_of(url), "transcripts", 1)

    assert (waiting["transcripts_waiting"], waiting["transcripts"]) == (1, 0)
    assert (stored["transcripts_waiting"], stored["transcripts"]) == (0, 1)
    assert (out / f"{rid}.transcript.json").is_file()


async def test_index_overrides_a_folders_own(fake: FakeVobiz, tmp_path: Path) -> None:
    """For a folder, `index=` (`--index`) is the index serve writes, not `OUT/<index>`."""
    rid = fake.add_recording(size=2_000).recording_id
    out, index = tmp_path / "archive", tmp_path / "elsewhere.sqlite"
    config = serve_config(fake, str(out), tmp_path / "spool.jsonl", index=str(index))
    async with serve_in_loop(config) as url, aiohttp.ClientSession() as client:
        assert await post(client, url, record_stop(rid)) == 200
        assert await post(client, url, transcription(rid, "tr-ix")) == 200
        await until(client, origin_of(url), "transcripts", 1)

    assert not (out / MANIFEST_NAME).exists()
    with Manifest(index) as manifest:
        assert manifest.get(rid) is not None
        assert manifest.transcript_path(rid) == f"{rid}.transcript.json"


def spool_transcript(spool: Path, rid: str, tid: str, at: float) -> None:
    """Append a transcript line as the receiver writes it."""
    line = {
        "op": "transcript",
        "transcript": {
            "transcription_id": tid,
            "recording_id": rid,
            "fields": transcription(rid, tid),
        },
        "nonces": [],
        "at": at,
    }
    with spool.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


async def test_waiting_transcripts_are_said_at_start_and_a_stale_one_warned_once(
    fake: FakeVobiz, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At start, one INFO line counts the transcripts waiting; one waiting over 30 days
    (its recording gone at Vobiz) is a WARNING once, even when looked at again, and is
    kept, like the fresh one, which gets no warning."""
    spool = tmp_path / "spool.jsonl"
    spool_transcript(spool, "rec-gone", "tr-old", time.time() - 31 * 86400)
    spool_transcript(spool, "rec-later", "tr-new", time.time())
    out = tmp_path / "archive"
    with caplog.at_level(logging.INFO, logger="vobiz_async"):
        config = serve_config(fake, str(out), spool)
        async with serve_in_loop(config) as url, aiohttp.ClientSession() as client:
            # Another transcript of the same recording: it is looked up again.
            assert await post(client, url, transcription("rec-gone", "tr-again")) == 200
            counters = await health(client, origin_of(url))
            assert await eventually(
                lambda: (
                    "transcript tr-again of recording rec-gone: accepted" in caplog.text
                    and caplog.text.count("rec-gone is not archived yet") >= 2
                )
            )

    assert counters["transcripts_waiting"] == 3
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum("2 transcript(s) in the spool not stored yet" in m for m in infos) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    stale = [m for m in warnings if "has waited" in m]
    assert len(stale) == 1, warnings
    assert "transcript tr-old of recording rec-gone has waited 31 days" in stale[0]
    ops = [json.loads(line)["op"] for line in spool.read_text().splitlines()]
    assert "transcript_stored" not in ops


async def test_library_refuses_s3_settings_for_a_folder(fake: FakeVobiz, tmp_path: Path) -> None:
    """`ServeConfig` with an S3 setting and a folder `dest`: `ConfigurationError` naming
    the setting, before anything listens or is written."""
    out = tmp_path / "archive"
    config = serve_config(fake, str(out), tmp_path / "spool.jsonl", object_lock_legal_hold=True)

    with pytest.raises(ConfigurationError, match="object_lock_legal_hold applies to s3://"):
        await serve(config, on_ready=lambda url: pytest.fail(f"listened on {url}"))

    assert not (out / MANIFEST_NAME).exists()
