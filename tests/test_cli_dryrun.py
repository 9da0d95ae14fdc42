"""`download --dry-run`: decides as a real run would, and changes nothing (issue 24 §2)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_cli import env_for, run_cli

from vobiz_async.testing import FakeVobiz


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=10, seed=5) as fake:
        yield fake


@pytest.fixture(name="env")
def _env(fake: FakeVobiz) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}
    return env_for(base, fake)


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


async def test_dry_run_on_an_empty_destination(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """Everything would be fetched; no media request, no folder created."""
    out = tmp_path / "out"
    fake.stats.reset()
    result = await run_cli("download", "--out", str(out), "--dry-run", "--json", env=env)
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert {"would_download", "would_skip", "would_delete", "releasable_amount"} <= set(plan)
    assert plan["would_download"] == 10
    assert plan["would_skip"] == 0
    assert plan["would_delete"] == 0
    assert fake.stats.media_requests == 0
    assert not out.exists()


async def test_dry_run_after_a_download_skips_and_writes_nothing(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """Against an archive: what is indexed and present is skipped; the tree is unchanged."""
    out = tmp_path / "out"
    done = await run_cli("download", "--out", str(out), env=env)
    assert done.code == 0, done.err
    next(p for p in out.iterdir() if p.suffix in (".mp3", ".wav")).unlink()
    before = _listing(tmp_path)
    fake.stats.reset()
    result = await run_cli("download", "--out", str(out), "--dry-run", "--json", env=env)
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["would_download"] == 1
    assert plan["would_skip"] == 9
    assert fake.stats.media_requests == 0
    assert _listing(tmp_path) == before


async def test_dry_run_plans_only_the_given_ids(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """`--ids` and `--ids-file` narrow the plan as they narrow the real run; an id already
    gone at Vobiz has nothing to fetch."""
    wanted = fake.recording_ids[:2]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"{fake.recording_ids[2]}\n# a comment\n")
    fake.stats.reset()
    result = await run_cli(
        "download",
        "--out",
        str(tmp_path / "out"),
        "--dry-run",
        "--json",
        "--ids",
        *wanted,
        "gone-0000",
        "--ids-file",
        str(ids_file),
        env=env,
    )
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["would_download"] == 3
    assert sorted(plan["download_ids"]) == sorted([*wanted, fake.recording_ids[2]])
    assert fake.stats.media_requests == 0
    assert not (tmp_path / "out").exists()
