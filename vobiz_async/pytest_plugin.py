"""pytest fixtures for testing code that uses vobiz_async, backed by `FakeVobiz`.

Enable them in your `conftest.py` (needs pytest-asyncio)::

    pytest_plugins = ["vobiz_async.pytest_plugin"]

    @pytest.mark.vobiz_fake(recordings=50, fault_rate=0.1)
    async def test_archive(vobiz_session, vobiz_fake, tmp_path):
        report = await vobiz_session.recordings.download_many(
            vobiz_session.recordings.list(), tmp_path
        )
        assert report.ok

`vobiz_fake` is a running `FakeVobiz` (20 recordings unless the `vobiz_fake` marker passes
other `FakeVobiz` keyword arguments); `vobiz_session` is an `AsyncSession` connected to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .session import AsyncSession
from .testing import FakeVobiz

__all__ = ["pytest_configure", "vobiz_fake", "vobiz_session"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vobiz_fake(**kwargs): FakeVobiz keyword arguments for the vobiz_fake fixture"
    )


@pytest_asyncio.fixture(name="vobiz_fake")
async def vobiz_fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeVobiz]:
    """A running fake Vobiz on 127.0.0.1."""
    marker = request.node.get_closest_marker("vobiz_fake")
    kwargs: dict[str, Any] = {"recordings": 20, **(marker.kwargs if marker else {})}
    async with FakeVobiz(**kwargs) as fake:
        yield fake


@pytest_asyncio.fixture(name="vobiz_session")
async def vobiz_session(vobiz_fake: FakeVobiz) -> AsyncIterator[AsyncSession]:
    """An `AsyncSession` authenticated against `vobiz_fake`."""
    async with AsyncSession(**vobiz_fake.session_kwargs()) as session:
        yield session
