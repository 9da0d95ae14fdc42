"""`vobiz-recordings serve` as a real process: kill -9 after a 200, SIGTERM, Ctrl-C.

FakeVobiz serves from this test's event loop; the receiver runs in a child process bound to
127.0.0.1 on a free port. Children get the default SIGINT disposition and a session of their
own, and are always killed in a `finally`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from _procs import default_sigint

from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.testing import FakeVobiz

TOKEN = "serve-test-token-Jx7fQ2"
PUBLIC_URL = "https://hooks.example.test/vobiz/recording"
TIMEOUT = 30.0
_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)(/\S*)")


def sign(nonce: str) -> dict[str, str]:
    """V3 headers for PUBLIC_URL, from the documented formula."""
    mac = hmac.new(TOKEN.encode(), f"{PUBLIC_URL}.{nonce}".encode(), hashlib.sha256)
    return {
        "X-Vobiz-Signature-V3": base64.b64encode(mac.digest()).decode(),
        "X-Vobiz-Signature-V3-Nonce": nonce,
    }


class Receiver:
    """One `serve` child process and where it listens."""

    def __init__(self, proc: asyncio.subprocess.Process, origin: str, path: str) -> None:
        self.proc = proc
        self.origin = origin
        self.path = path


async def spawn_serve(env: Mapping[str, str], *args: str) -> asyncio.subprocess.Process:
    """`vobiz_async serve` on 127.0.0.1 (any port) for PUBLIC_URL, SIGINT at its default."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--public-url",
        PUBLIC_URL,
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
        start_new_session=True,
    )


async def start_serve(env: Mapping[str, str], *args: str) -> Receiver:
    """`spawn_serve`, once it says where it listens."""
    proc = await spawn_serve(env, *args)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        match = _LISTENING.search(line.decode())
        if match is None:
            _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
            raise AssertionError(f"no listening line: {line!r}; stderr: {err.decode()}")
    except BaseException:
        await stop(proc)
        raise
    return Receiver(proc, match.group(1), match.group(2))


async def stop(proc: asyncio.subprocess.Process) -> None:
    """Kill `proc` if it still runs, and reap it."""
    if proc.returncode is None:
        proc.kill()
    await proc.communicate()


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """Wait for `proc` to exit; its code and stderr."""
    _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=3, seed=16, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture(name="env")
def _env(fake: FakeVobiz) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}
    return {
        **base,
        "VOBIZ_AUTH_ID": fake.auth_id,
        "VOBIZ_AUTH_TOKEN": TOKEN,
        "VOBIZ_BASE_URL": fake.base_url,
    }


async def health(client: aiohttp.ClientSession, receiver: Receiver) -> dict[str, int]:
    async with client.get(receiver.origin + "/healthz") as resp:
        data: dict[str, int] = await resp.json()
        return data


async def settled(client: aiohttp.ClientSession, receiver: Receiver) -> dict[str, int]:
    """The receiver's counters once something is archived or failed (or after ~25 s)."""
    for _ in range(500):
        counters = await health(client, receiver)
        if counters["archived"] + counters["failed"]:
            break
        await asyncio.sleep(0.05)
    return counters


async def test_kill_9_after_the_200_loses_nothing(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """The receiver killed with SIGKILL right after answering 200 (download not finished)
    archives and verifies the recording after a restart; SIGTERM then exits 0."""
    out = tmp_path / "missing" / "archive"
    spool = tmp_path / "state" / "hooks" / "spool.jsonl"
    args = ("--out", str(out), "--spool", str(spool))
    rid = fake.recording_ids[0]
    body = {"Event": "RecordStop", "RecordingID": rid, "RecordUrl": "https://x/r.mp3"}
    fake.media_latency = 30.0  # the first process never gets the bytes
    async with aiohttp.ClientSession() as client:
        first = await start_serve(env, *args)
        try:
            async with client.post(
                first.origin + first.path, data=body, headers=sign("40000000000000000001")
            ) as resp:
                status = resp.status
            first.proc.kill()
            await first.proc.communicate()
        finally:
            await stop(first.proc)
        assert status == 200
        assert not list(out.glob(f"{rid}.mp3")) + list(out.glob(f"{rid}.wav"))
        assert spool.is_file()

        fake.media_latency = 0.0
        second = await start_serve(env, *args)
        try:
            counters = await settled(client, second)
            second.proc.send_signal(signal.SIGTERM)
            code, err = await finish(second.proc)
        finally:
            await stop(second.proc)

    assert (counters["archived"], counters["failed"], counters["queued"]) == (1, 0, 0)
    assert code == 0, err
    files = [p for p in out.iterdir() if p.stem == rid and p.suffix in (".mp3", ".wav")]
    assert len(files) == 1
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == fake.sha256(rid)
    with Manifest(out / MANIFEST_NAME) as manifest:
        entry = manifest.get(rid)
    assert entry is not None
    assert entry.sha256 == fake.sha256(rid)
    assert TOKEN not in err


async def test_ctrl_c_exits_130(fake: FakeVobiz, env: dict[str, str], tmp_path: Path) -> None:
    """SIGINT stops the receiver with exit 130 and no traceback."""
    receiver = await start_serve(env, "--out", str(tmp_path / "archive"))
    try:
        receiver.proc.send_signal(signal.SIGINT)
        code, err = await finish(receiver.proc)
    finally:
        await stop(receiver.proc)

    assert code == 130, err
    assert "Traceback" not in err
    assert (tmp_path / "archive").is_dir()  # --out is created when missing


async def test_sigterm_drains_for_a_bounded_time_and_keeps_the_rest(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM with a download stuck in flight exits 0 after --drain-seconds; the recording
    stays spooled (default spool inside --out) and the next start archives it."""
    out = tmp_path / "archive"
    args = ("--out", str(out), "--drain-seconds", "0.3")
    rid = fake.recording_ids[1]
    body = {"Event": "RecordStop", "RecordingID": rid, "RecordFile": "/r.mp3"}
    fake.media_latency = 60.0
    async with aiohttp.ClientSession() as client:
        first = await start_serve(env, *args)
        try:
            async with client.post(
                first.origin + first.path, data=body, headers=sign("40000000000000000002")
            ) as resp:
                assert resp.status == 200
            first.proc.send_signal(signal.SIGTERM)
            code, err = await finish(first.proc)
        finally:
            await stop(first.proc)
        assert code == 0, err
        assert (out / "vobiz-webhooks.spool.jsonl").is_file()
        assert not [p for p in out.iterdir() if p.stem == rid and p.suffix != ".part"]

        fake.media_latency = 0.0
        second = await start_serve(env, *args)
        try:
            counters = await settled(client, second)
        finally:
            await stop(second.proc)

    assert counters["archived"] == 1
    saved = [p for p in out.iterdir() if p.stem == rid and p.suffix in (".mp3", ".wav")]
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in saved] == [fake.sha256(rid)]


async def test_wrong_token_fails_at_start_with_exit_3(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """A token Vobiz refuses stops `serve` before it listens: exit 3, token not printed."""
    wrong = "wrong-token-Pq3zV9"
    proc = await spawn_serve({**env, "VOBIZ_AUTH_TOKEN": wrong}, "--out", str(tmp_path / "archive"))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        await stop(proc)

    assert proc.returncode == 3, err.decode()
    assert wrong not in (out + err).decode()
    assert "listening" not in out.decode()


async def test_sync_every_archives_a_recording_no_callback_announced(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """`--sync-every` runs the list-and-download backstop for the recent window at start."""
    from datetime import UTC, datetime

    out = tmp_path / "archive"
    recent = fake.add_recording(add_time=datetime.now(UTC)).recording_id
    async with aiohttp.ClientSession() as client:
        receiver = await start_serve(env, "--out", str(out), "--sync-every", "1h")
        try:
            counters = await settled(client, receiver)
        finally:
            await stop(receiver.proc)

    assert (counters["archived"], counters["failed"], counters["accepted"]) == (1, 0, 0)
    saved = sorted(p.stem for p in out.iterdir() if p.suffix in (".mp3", ".wav"))
    assert saved == [recent]  # the generated recordings are months old: not in the window


async def test_kill_9_after_a_transcripts_200_then_restart_stores_it(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """A transcript answered 200 while its recording was still downloading, then SIGKILL:
    the next start archives the recording and stores the transcript beside it, and its
    log says so per recording at INFO, with no media URL query and no token."""
    out = tmp_path / "archive"
    rid = fake.recording_ids[2]
    stop_body = {
        "Event": "RecordStop",
        "RecordingID": rid,
        "RecordUrl": "https://media.vobiz.ai/r.mp3?X-Amz-Signature=NeverLogMe55",
    }
    transcript = {
        "transcription": "Please call me back tomorrow.",
        "transcription_id": "tr-kill-9",
        "recording_id": rid,
        "duration": "8",
        "error": "",
    }
    fake.media_latency = 30.0  # the first process never gets the bytes
    async with aiohttp.ClientSession() as client:
        first = await start_serve(env, "--out", str(out))
        try:
            statuses = []
            for nonce, body in (
                ("40000000000000000003", stop_body),
                ("40000000000000000004", transcript),
            ):
                async with client.post(
                    first.origin + first.path, data=body, headers=sign(nonce)
                ) as resp:
                    statuses.append(resp.status)
            first.proc.kill()
            await first.proc.communicate()
        finally:
            await stop(first.proc)
        assert statuses == [200, 200]
        assert not (out / f"{rid}.transcript.json").exists()

        fake.media_latency = 0.0
        second = await start_serve(env, "--out", str(out))
        try:
            for _ in range(500):
                counters = await health(client, second)
                if counters["transcripts"]:
                    break
                await asyncio.sleep(0.05)
            second.proc.send_signal(signal.SIGTERM)
            code, err = await finish(second.proc)
        finally:
            await stop(second.proc)

    assert (counters["archived"], counters["transcripts"]) == (1, 1)
    assert code == 0, err
    stored = (out / f"{rid}.transcript.json").read_text(encoding="utf-8")
    assert json.loads(stored) == transcript
    with Manifest(out / MANIFEST_NAME) as manifest:
        assert manifest.transcript_path(rid) == f"{rid}.transcript.json"
    assert f"INFO vobiz_async: recording {rid}: archived" in err
    assert f"INFO vobiz_async: transcript tr-kill-9 of recording {rid}: stored" in err
    assert "NeverLogMe55" not in err
    assert TOKEN not in err
