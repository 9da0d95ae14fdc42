"""The first hour of a new user: the real `vobiz-recordings` in a subprocess, with good and
bad input, each error one clear line and never a traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import attrs
import pytest

from vobiz_async.testing import FakeVobiz

TIMEOUT = 40.0


@attrs.frozen
class Result:
    """What one run of the command line left behind."""

    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def start(
    *args: str,
    env: Mapping[str, str],
    python_flags: tuple[str, ...] = (),
    stdout: int = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """Start `python -m vobiz_async ARGS...` with SIGINT at its default."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *python_flags,
        "-m",
        "vobiz_async",
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_default_sigint,
    )


async def finish(proc: asyncio.subprocess.Process) -> Result:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, (out or b"").decode(), (err or b"").decode())


Cli = Callable[..., Awaitable[Result]]


@pytest.fixture(name="base_env")
def _base_env() -> dict[str, str]:
    """This process's environment without any VOBIZ_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=45, seed=1) as fake:
        yield fake


@pytest.fixture(name="env")
def _env(base_env: dict[str, str], fake: FakeVobiz) -> dict[str, str]:
    return {
        **base_env,
        "VOBIZ_AUTH_ID": fake.auth_id,
        "VOBIZ_AUTH_TOKEN": fake.auth_token,
        "VOBIZ_BASE_URL": fake.base_url,
    }


@pytest.fixture(name="cli")
def _cli(env: dict[str, str]) -> Cli:
    """Run the command line configured for the fake, in Python's development mode."""

    async def cli(*args: str, env_extra: Mapping[str, str] | None = None) -> Result:
        proc = await start(*args, env={**env, **(env_extra or {})}, python_flags=("-X", "dev"))
        return await finish(proc)

    return cli


# -- 1: stopping a listing early -----------------------------------------------------------


@pytest.mark.parametrize("limit", ["1", "5", "19"])
async def test_list_limit_leaves_nothing_on_stderr(cli: Cli, limit: str) -> None:
    """`list --limit N` below a page prints N lines and no unclosed-session error."""
    result = await cli("list", "--limit", limit)

    assert result.code == 0, result.output
    assert len(result.out.splitlines()) == int(limit)
    assert result.err == ""
