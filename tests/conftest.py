"""Fixtures shared by the test modules.

The `fake` here is the empty one the `test_download_*` modules share; a module whose
recordings differ brings its own `fake`, which takes precedence.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _download_helpers import Scripted

from vobiz_async import AsyncSession
from vobiz_async.testing import FakeVobiz

# The opt-in plugin users get; loading it here also tests it (tests/test_pytest_plugin.py).
pytest_plugins = ["vobiz_async.pytest_plugin"]

ENV_VARS = ("VOBIZ_AUTH_ID", "VOBIZ_AUTH_TOKEN", "VOBIZ_BASE_URL")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own Vobiz credentials."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(name="session")
async def _session(fake: FakeVobiz) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(**fake.session_kwargs()) as session:
        yield session


@pytest.fixture(name="moto_url", scope="module")
def _moto_url() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for one module (moto is imported only when asked for)."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=0) as fake:
        yield fake


@pytest.fixture(name="dest")
def _dest(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture(name="scripted")
async def _scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture(name="tls_context")
def _tls_context(tmp_path: Path) -> ssl.SSLContext:
    """A server-side TLS context with a throwaway self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(  # noqa: S603 - a fixed argument list, no shell
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
