"""Fixtures shared by the test modules; each module brings its own `fake` (sizes differ)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

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
