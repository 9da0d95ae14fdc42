"""The opt-in pytest plugin gives users a running fake and a session for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from vobiz_async import AsyncSession
from vobiz_async.testing import FakeVobiz


async def test_default_fake_has_twenty_recordings(vobiz_session: AsyncSession) -> None:
    """Without a marker the fake serves 20 recordings."""
    page = await vobiz_session.recordings.list()
    assert page.meta.total_count == 20


@pytest.mark.vobiz_fake(recordings=3, seed=7)
async def test_marker_configures_the_fake(
    vobiz_fake: FakeVobiz, vobiz_session: AsyncSession, tmp_path: Path
) -> None:
    """The marker's keyword arguments reach FakeVobiz, and the session downloads from it."""
    report = await vobiz_session.recordings.download_many(vobiz_session.recordings.list(), tmp_path)
    assert report.ok
    assert sorted(r.recording_id for r in report.results) == sorted(vobiz_fake.recording_ids)
    assert all(r.sha256 == vobiz_fake.sha256(r.recording_id) for r in report.results)
