"""Loopback services: nginx (or an aiohttp fallback) for media, and the fake Vobiz API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.data import BENCH_DIR, OUTPUT_ROOTS, STORAGE_ROOTS, WORK_DIR, Dataset

PEERS = BENCH_DIR / "peers"  # the measured clients
SERVERS = BENCH_DIR / "servers"  # what they talk to: the fake API, the fallback media server
AUTH_ID = "MA_BENCH0000000000000"
AUTH_TOKEN = "bench-token-not-a-secret"
NGINX_CONF = """\
worker_processes 1;
daemon off;
user root;
pid {nginx_dir}/nginx.pid;
error_log {nginx_dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ audio/mpeg mp3; audio/wav wav; application/json json; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000;
    access_log off;
    client_body_temp_path {nginx_dir}/client_body;
    proxy_temp_path {nginx_dir}/proxy;
    fastcgi_temp_path {nginx_dir}/fastcgi;
    uwsgi_temp_path {nginx_dir}/uwsgi;
    scgi_temp_path {nginx_dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""


def nginx_binary() -> str | None:
    """nginx lives in /usr/sbin on Debian, which a non-root PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdout:
        proc.stdout.close()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_printing_port(cmd: list[str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start a loopback script that prints its port on its first stdout line."""
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        stop(proc)
        raise RuntimeError(f"{cmd[1]} did not start; see {log}")
    return proc, int(line)


@contextmanager
def media_server(kind: str) -> Iterator[tuple[str, str]]:
    """Serve /tmpfs/ and /disk/ data roots; yield (base URL, server description)."""
    for root in STORAGE_ROOTS.values():
        root.mkdir(parents=True, exist_ok=True)
    nginx = nginx_binary()
    if kind == "nginx" and nginx is None:
        raise RuntimeError("nginx is not installed")
    if kind in ("nginx", "auto") and nginx is not None:
        with nginx_server(nginx) as base:
            yield base, nginx_version(nginx)
    else:
        with static_fallback_server() as base:
            yield base, "aiohttp static (fallback: no nginx)"


@contextmanager
def nginx_server(binary: str) -> Iterator[str]:
    nginx_dir = WORK_DIR / "nginx"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    locations = "\n".join(
        f"        location /{storage}/ {{ alias {root}/; }}"
        for storage, root in STORAGE_ROOTS.items()
    )
    conf = nginx_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(nginx_dir=nginx_dir, port=port, locations=locations))
    cmd = [binary, "-p", str(nginx_dir), "-c", str(conf), "-e", str(nginx_dir / "error.log")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextmanager
def static_fallback_server() -> Iterator[str]:
    roots = [f"{storage}={root}" for storage, root in STORAGE_ROOTS.items()]
    cmd = [sys.executable, str(SERVERS / "static_server.py"), *roots]
    proc, port = start_printing_port(cmd, WORK_DIR / "static_server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextmanager
def fake_api(dataset: Dataset, media_base: str, latency: float) -> Iterator[str]:
    """Run the library's own fake, `FakeVobiz` (servers/fake_vobiz.py, a process of its own),
    listing `dataset` with every `recording_url` on `media_base`; yield its base URL
    (`.../api/v1/`). One fake for the tests and the benchmarks, so one to keep faithful."""
    cmd = [
        sys.executable,
        str(SERVERS / "fake_vobiz.py"),
        *("--index", str(dataset.directory / "index.json")),
        *("--media-url", media_base + dataset.url_path),
        *("--auth-id", AUTH_ID, "--auth-token", AUTH_TOKEN),
        *("--latency", str(latency)),
    ]
    proc, port = start_printing_port(cmd, WORK_DIR / "fake_vobiz.log")
    try:
        yield f"http://127.0.0.1:{port}/api/v1/"
    finally:
        stop(proc)


def nginx_version(binary: str) -> str:
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")


def prepare_work_dirs() -> None:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    for root in OUTPUT_ROOTS.values():
        root.mkdir(parents=True, exist_ok=True)
