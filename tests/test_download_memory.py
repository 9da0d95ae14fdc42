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
from _procs import default_sigint

from vobiz_async import AsyncSession, DownloadStatus

SIZE = 400 * 2**20
BUDGET = 64 * 2**20
SERVER = Path(__file__).with_name("_media_server.py")
#: What asyncio does with a socket read of a 100 KiB body, 200 times over: a 256 KiB buffer,
#: filled in part, shrunk to what arrived and freed. Prints the page faults it cost.
READ_BUFFERS = """
import resource, sys
import vobiz_async.download
if sys.argv[1] == "primed":
    vobiz_async.download._raise_mmap_threshold()
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
