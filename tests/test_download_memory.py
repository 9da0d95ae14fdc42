"""Memory: a 400 MB recording streamed from a server in another process keeps RSS flat,
and small bodies' read buffers do not fault in fresh pages one file after another.

The server runs in a subprocess (`tests/_media_server.py`) so that only the downloader's
memory counts toward this process's peak RSS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from _nginx import nginx
from _procs import default_sigint

from vobiz_async import AsyncSession, DownloadStatus
from vobiz_async.testing import FakeVobiz

SIZE = 400 * 2**20
BUDGET = 64 * 2**20
SERVER = Path(__file__).with_name("_media_server.py")
#: What asyncio does with a socket read of a 100 KiB body, 200 times over: a 256 KiB buffer,
#: filled in part, shrunk to what arrived and freed. Prints the page faults it cost.
READ_BUFFERS = """
import resource, sys
import vobiz_async.offload
if sys.argv[1] == "primed":
    vobiz_async.offload.raise_mmap_threshold()
body = bytes(range(256)) * 400
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    buffer = bytearray(256 * 1024)
    buffer[: len(body)] = body
    del buffer[len(body) :]
    del buffer
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def peak_rss() -> int:
    """This process's peak resident set size in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux `clear_refs` 5); False if not possible."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
        return True
    return False


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.fixture(name="server")
def _server() -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """The media server subprocess and the JSON line it printed on start-up."""
    with subprocess.Popen(  # noqa: S603 - our own script, no shell
        [sys.executable, str(SERVER), str(SIZE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    ) as proc:
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            yield proc, info
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def test_400mb_recording_adds_under_64mb_rss(
    server: tuple[subprocess.Popen[str], dict[str, Any]], tmp_path: Path
) -> None:
    """A 400 MB recording streams to disk verified, adding < 64 MB to peak RSS."""
    proc, info = server
    rid = info.pop("recording_id")
    assert info["base_url"].startswith("http://127.0.0.1:")

    async with AsyncSession(**info) as session:
        reset = reset_peak_rss()
        before = peak_rss()
        result = await session.recordings.download(rid, tmp_path)
        grew = peak_rss() - before

    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.size == SIZE
    assert grew < BUDGET, f"peak RSS grew by {grew / 2**20:.1f} MB (peak reset: {reset})"

    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write("sha256\n")
    proc.stdin.flush()
    served = json.loads(await asyncio.to_thread(proc.stdout.readline))["sha256"]
    assert result.sha256 == served
    assert result.path is not None
    assert result.path.stat().st_size == SIZE
    assert await asyncio.to_thread(file_sha256, result.path) == served


def read_buffer_faults(mode: str) -> int:
    """The page faults of READ_BUFFERS in a fresh interpreter."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and script, no shell
        [sys.executable, "-c", READ_BUFFERS, mode],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=default_sigint,
    )
    return int(done.stdout)


def test_read_buffers_stay_on_the_heap() -> None:
    """Once a batch starts, shrunk 256 KiB read buffers stop mapping fresh pages per read."""
    unprimed = read_buffer_faults("plain")
    if unprimed < 200 * 10:
        pytest.skip(f"this allocator maps no fresh pages per buffer ({unprimed} faults)")
    primed = read_buffer_faults("primed")
    assert primed < unprimed / 10, f"{primed} page faults primed, {unprimed} without"


#: A child that archives the recordings the fake lists (media on nginx) at `concurrency`
#: and prints its peak RSS from /proc, with nothing but the library in its memory.
MANY_IN_FLIGHT = """
import asyncio, json, sys, tempfile
from vobiz_async import AsyncSession

async def main(kwargs, concurrency, dest):
    async with AsyncSession(**kwargs, max_connections=concurrency) as session:
        report = await session.recordings.download_many(
            session.recordings.list(limit=100), dest, concurrency=concurrency
        )
    status = open("/proc/self/status").read()
    peak_kb = int(status.split("VmHWM:")[1].split()[0])
    print(json.dumps({"ok": report.ok, "downloaded": len(report.downloaded), "peak": peak_kb}))

asyncio.run(main(json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
"""


@pytest.mark.parametrize(
    ("concurrency", "size", "budget_mb"), [(64, 4_000_000, 64), (256, 1_000_000, 96)]
)
async def test_many_transfers_in_flight_stay_under_the_budget(
    tmp_path: Path, concurrency: int, size: int, budget_mb: int
) -> None:
    """nginx serving `concurrency` recordings at once: the archiving process's peak RSS
    stays within the budget (64 MB at 64 in flight, 96 MB at 256), all verified."""
    www = tmp_path / "www"
    www.mkdir()
    body = b"ID3\\x04\\x00" + bytes(range(256)) * (size // 256)
    for i in range(concurrency):
        (www / f"r{i}.mp3").write_bytes(body)
    with nginx(www, tmp_path / "nginx") as base:
        async with FakeVobiz(recordings=0, record_requests=False) as fake:
            for i in range(concurrency):
                fake.add_recording(recording_url=f"{base}r{i}.mp3", size=1)
            kwargs = json.dumps(dict(fake.session_kwargs()))
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                MANY_IN_FLIGHT,
                kwargs,
                str(concurrency),
                str(tmp_path / "archive"),
                stdout=asyncio.subprocess.PIPE,
                preexec_fn=default_sigint,
            )
            out, _ = await child.communicate()

    assert child.returncode == 0
    done = json.loads(out)
    assert done["ok"]
    assert done["downloaded"] == concurrency
    assert done["peak"] / 1024 < budget_mb, f"peak RSS {done['peak'] / 1024:.1f} MB"
    for path in (tmp_path / "archive").iterdir():
        assert path.stat().st_size == len(body)
