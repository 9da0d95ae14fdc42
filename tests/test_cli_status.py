"""`vobiz-recordings status`: counts and exit codes through the real entry point."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_cli import env_for, run_cli

from vobiz_async.testing import FakeVobiz

KEYS = {
    "at_vobiz",
    "archived",
    "missing",
    "at_risk",
    "at_risk_ids",
    "releasable",
    "releasable_amount",
    "released",
}


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=8, seed=4) as fake:
        yield fake


@pytest.fixture(name="env")
def _env(fake: FakeVobiz) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}
    return env_for(base, fake)


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def test_status_before_and_after_download(env: dict[str, str], tmp_path: Path) -> None:
    """Nothing archived: every recording missing; after a download: none missing, exit 0.
    status itself writes nothing."""
    out = tmp_path / "out"
    before = _listing(tmp_path)
    first = await run_cli(
        "status", "--out", str(out), "--json", "--retention-days", "100000", env=env
    )
    assert _listing(tmp_path) == before
    assert first.code == 0, first.err
    counts = json.loads(first.out)
    assert set(counts) == KEYS
    assert counts["at_vobiz"] == 8
    assert counts["missing"] == 8
    assert counts["archived"] == 0
    done = await run_cli("download", "--out", str(out), env=env)
    assert done.code == 0, done.err
    after = json.loads((await run_cli("status", "--out", str(out), "--json", env=env)).out)
    assert after["archived"] == 8
    assert after["missing"] == 0
    assert after["at_risk"] == 0


async def test_status_exit_codes(env: dict[str, str], tmp_path: Path) -> None:
    """1 when recordings are at risk (unarchived, about to expire), 2 usage, 3 credentials."""
    out = str(tmp_path / "out")
    risky = await run_cli("status", "--out", out, "--retention-days", "0", env=env)
    assert risky.code == 1, risky.err
    usage = await run_cli("status", "--out", out, "--after", "not-a-date", env=env)
    assert usage.code == 2
    bad = await run_cli("status", "--out", out, env={**env, "VOBIZ_AUTH_TOKEN": "wrong"})
    assert bad.code == 3, bad.err
