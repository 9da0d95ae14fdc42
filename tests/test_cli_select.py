"""The selection flags on `list` and `download` (issue 24 §1), through the real entry point."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_cli import env_for, json_lines, run_cli, saved

from vobiz_async import AsyncSession
from vobiz_async.testing import FakeVobiz


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=40, seed=2) as fake:
        yield fake


@pytest.fixture(name="env")
def _env(fake: FakeVobiz) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}
    return env_for(base, fake)


async def _window(fake: FakeVobiz) -> tuple[datetime, datetime, list[str]]:
    """Two listed add_times and the ids in [low, high), newest first."""
    async with AsyncSession(**fake.session_kwargs(), max_retries=0) as session:
        every = [r async for r in session.recordings.list(limit=100)]
    times = sorted({r.add_time for r in every if r.add_time is not None})
    low, high = times[len(times) // 4], times[3 * len(times) // 4]
    ids = [r.recording_id for r in every if r.add_time is not None and low <= r.add_time < high]
    assert 0 < len(ids) < len(every)
    return low, high, ids


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


async def test_list_after_before(fake: FakeVobiz, env: dict[str, str]) -> None:
    """`--after` is inclusive, `--before` exclusive: exactly the window is listed."""
    low, high, ids = await _window(fake)
    result = await run_cli("list", "--json", "--after", _iso(low), "--before", _iso(high), env=env)
    assert result.code == 0, result.err
    assert [row["recording_id"] for row in json_lines(result.out)] == ids


async def test_download_archives_only_the_selection(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """`download --after --before` saves the selected recordings and nothing else."""
    low, high, ids = await _window(fake)
    out = tmp_path / "out"
    args = ("download", "--out", str(out), "--after", _iso(low), "--before", _iso(high))
    result = await run_cli(*args, env=env)
    assert result.code == 0, result.err
    assert sorted(saved(out)) == sorted(ids)


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--after", "yesterday-ish"),
        ("list", "--min-age", "seven days"),
        ("download", "--out", "OUT", "--ids", "abc", "--after", "2026-01-01"),
    ],
)
async def test_selection_usage_errors(
    env: dict[str, str], tmp_path: Path, args: tuple[str, ...]
) -> None:
    """An unreadable date or age, and ids with a selection (refused), are usage errors."""
    args = tuple(str(tmp_path / "out") if a == "OUT" else a for a in args)
    result = await run_cli(*args, env=env)
    assert result.code == 2, result.err
    assert not (tmp_path / "out").exists()
