"""nginx on 127.0.0.1 for the tests whose subject is how a real web server behaves.

`.ci/run` installs nginx (Debian's package); elsewhere the tests that need it are skipped,
except under CI, where a missing nginx is a failure rather than a silent skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _procs import default_sigint

CONF = """\
worker_processes 1;
daemon off;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    types {{ audio/mpeg mp3; audio/wav wav; }}
    default_type application/octet-stream;
    sendfile on;
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /media/ {{
            alias {root}/;
{directives}
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx's path, or skip (fail under CI, which installs it)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; .ci/run installs it")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def nginx(root: Path, prefix: Path, directives: str = "") -> Iterator[str]:
    """Serve `root` at `http://127.0.0.1:PORT/media/` with extra location `directives`;
    yield that URL."""
    binary = nginx_binary()
    prefix.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = prefix / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read pytest's tmp dirs
    conf.write_text(
        CONF.format(user=user, prefix=prefix, port=port, root=root, directives=directives)
    )
    cmd = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    proc = subprocess.Popen(  # noqa: S603
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_sigint
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                assert proc.stderr is not None
                raise RuntimeError(f"nginx exited: {proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/media/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
