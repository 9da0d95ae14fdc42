"""The receiver feeds one long-lived batch: one sink, one pacing gate, one S3 client for the
process, and no listing of the destination per callback (issue 22, item 7).

`serve` runs in this test's event loop against FakeVobiz, both on 127.0.0.1; S3 is moto on
127.0.0.1 behind the recording proxy of `test_s3_sink.py`. The counts are taken at real
seams (the sink class, the gate class, `os.listdir`/`os.scandir`, the S3 client factory, the
requests moto receives), never at the receiver itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_s3_sink import S3Proxy, _admin, _aws_env, _bucket, _proxy

from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.pacing import PacingGate
from vobiz_async.receiver import ServeConfig, serve
from vobiz_async.sinks import DirectorySink, S3Sink
from vobiz_async.testing import FakeVobiz

__all__ = ["_admin", "_aws_env", "_bucket", "_proxy"]  # fixtures, imported for use here

TOKEN = "receiver-batch-token-Vd3kP9"
PUBLIC_URL = "https://hooks.example.test/vobiz/recording"
CALLBACKS = 5
_nonces = itertools.count(50_000_000_000_000_000_000)


def signed(nonce: str) -> dict[str, str]:
    """V3 headers for PUBLIC_URL, from the documented formula."""
    mac = hmac.new(TOKEN.encode(), f"{PUBLIC_URL}.{nonce}".encode(), hashlib.sha256)
    return {
        "X-Vobiz-Signature-V3": base64.b64encode(mac.digest()).decode(),
        "X-Vobiz-Signature-V3-Nonce": nonce,
    }


def counting(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, counts: list[Any], key: Any = None
) -> None:
    """Wrap `owner.name` so that each call appends `key(*args)` (or True) to `counts`."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts.append(True if key is None else key(*args))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=CALLBACKS, seed=22, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture(name="gates")
def _gates(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every `PacingGate` made while the test runs."""
    made: list[Any] = []
    counting(monkeypatch, PacingGate, "__init__", made)
    return made


def serve_config(fake: FakeVobiz, dest: str | Path, spool: Path, **options: Any) -> ServeConfig:
    """`serve` for `dest` on 127.0.0.1 (a free port) against `fake`, with its credentials."""
    return ServeConfig(
        public_url=PUBLIC_URL,
        dest=str(dest),
        auth_id=fake.auth_id,
        auth_token=fake.auth_token,
        base_url=fake.base_url,
        host="127.0.0.1",
        port=0,
        spool=str(spool),
        **options,
    )


@contextlib.asynccontextmanager
async def serve_in_loop(config: ServeConfig) -> AsyncIterator[str]:
    """`receiver.serve(config)` in this loop; yields where callbacks go, and stops it (as
    Ctrl-C does) on the way out."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, on_ready=ready.set_result))
    try:
        done, _ = await asyncio.wait({ready, task}, timeout=30, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()  # serve ended early: show why
        assert ready in done, "serve never said where it listens"
        yield ready.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def serving(fake: FakeVobiz, dest: str, spool: Path) -> AsyncIterator[str]:
    """`serve` in this loop on 127.0.0.1 for `dest`; yields where callbacks go, and stops it
    (as Ctrl-C does) on the way out."""
    config = serve_config(fake, dest, spool)
    async with serve_in_loop(config) as url:
        yield url


async def fire_and_settle(url: str, rids: list[str]) -> dict[str, int]:
    """POST a signed RecordStop per recording, one after another, each waited for until it
    is archived or failed (so every callback meets an archive that already grew); the
    receiver's counters then."""
    origin = url.rsplit("/vobiz", 1)[0]
    async with aiohttp.ClientSession() as client:

        async def counters() -> dict[str, int]:
            async with client.get(origin + "/healthz") as resp:
                data: dict[str, int] = await resp.json()
                return data

        now = await counters()
        settled = now["archived"] + now["failed"]
        for rid in rids:
            body = {"Event": "RecordStop", "RecordingID": rid, "RecordUrl": "https://x/r.mp3"}
            async with client.post(url, data=body, headers=signed(str(next(_nonces)))) as resp:
                assert resp.status == 200
            settled += 1
            for _ in range(1500):
                now = await counters()
                if now["archived"] + now["failed"] >= settled:
                    break
                await asyncio.sleep(0.02)
    return now


async def test_callbacks_share_one_sink_one_gate_and_never_list_the_folder_again(
    fake: FakeVobiz, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gates: list[Any]
) -> None:
    """Five callbacks into a folder: the sink is prepared once, one pacing gate is made, the
    folder is listed at most once for the whole process, and every recording is archived
    and indexed byte for byte."""
    out = tmp_path / "archive"
    prepared: list[Any] = []
    counting(monkeypatch, DirectorySink, "prepare", prepared)
    listed: list[str] = []

    def folder(path: Any = ".", *_: Any) -> str:
        return os.path.realpath(os.fspath(path))

    counting(monkeypatch, os, "listdir", listed, folder)
    counting(monkeypatch, os, "scandir", listed, folder)

    async with serving(fake, str(out), tmp_path / "spool.jsonl") as url:
        counters = await fire_and_settle(url, fake.recording_ids)

    assert (counters["archived"], counters["failed"]) == (CALLBACKS, 0)
    assert len(prepared) == 1
    assert len(gates) == 1
    assert listed.count(folder(out)) <= 1
    with Manifest(out / MANIFEST_NAME) as manifest:
        for rid in fake.recording_ids:
            entry = manifest.get(rid)
            assert entry is not None
            path = out / entry.path
            assert hashlib.sha256(path.read_bytes()).hexdigest() == fake.sha256(rid)


async def test_s3_callbacks_share_one_client_and_list_the_prefix_once(
    fake: FakeVobiz,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gates: list[Any],
    bucket: str,
    admin: Any,
    proxy: S3Proxy,
) -> None:
    """Five callbacks into `s3://`: one S3 client for the process, one pacing gate, and the
    ListObjectsV2 requests stay at the bucket check and one listing of the prefix, whatever
    the number of callbacks; every object holds the recording's bytes."""
    from aiobotocore.session import AioSession

    clients: list[Any] = []
    counting(monkeypatch, AioSession, "create_client", clients)
    prepared: list[Any] = []
    counting(monkeypatch, S3Sink, "prepare", prepared)

    async with serving(fake, f"s3://{bucket}/calls/", tmp_path / "spool.jsonl") as url:
        counters = await fire_and_settle(url, fake.recording_ids)

    assert (counters["archived"], counters["failed"]) == (CALLBACKS, 0)
    assert len(clients) == 1
    assert len(prepared) == 1
    assert len(gates) == 1
    # Whole-prefix listings stay at the bucket check and at most one more; a callback's own
    # lookup is one listing narrowed to its key (`calls/<id>.`), never the whole prefix.
    listings = proxy.calls("GET", "list-type")
    assert len([c for c in listings if c.query.get("prefix", "") in ("", "calls/")]) <= 2
    assert all(c.query.get("prefix", "").startswith("calls/") for c in listings)
    stored = admin.list_objects_v2(Bucket=bucket, Prefix="calls/")["Contents"]
    by_id = {o["Key"].removeprefix("calls/").rpartition(".")[0]: o["Key"] for o in stored}
    for rid in fake.recording_ids:
        body = admin.get_object(Bucket=bucket, Key=by_id[rid])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == fake.sha256(rid)


async def test_a_destination_wide_failure_does_not_stop_the_receiver_for_good(
    fake: FakeVobiz, tmp_path: Path, bucket: str, admin: Any, proxy: S3Proxy
) -> None:
    """A bucket missing when the receiver starts fails the first callback's recording; once
    the bucket exists, the next callback's recording is archived (the stopped batch is
    replaced, and the new one checks the destination again)."""
    missing = f"{bucket}-later"
    first, second = fake.recording_ids[:2]

    async with serving(fake, f"s3://{missing}/", tmp_path / "spool.jsonl") as url:
        before = await fire_and_settle(url, [first])
        admin.create_bucket(Bucket=missing)
        after = await fire_and_settle(url, [first, second])

    assert (before["archived"], before["failed"]) == (0, 1)
    assert after["archived"] == 2  # the failed one, called back again, and the new one
    stored = {
        o["Key"].rpartition(".")[0] for o in admin.list_objects_v2(Bucket=missing)["Contents"]
    }
    assert stored == {first, second}
