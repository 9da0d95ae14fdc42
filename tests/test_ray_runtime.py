"""`ray_runtime`: shard sizing, reaching a Ray cluster, and a local Ray on loopback only.

The CLI tests run `vobiz-recordings` in a child process against the fake on 127.0.0.1. The
local-Ray test starts Ray in a child process of its own with a clean environment (this
suite's other Ray tests import Ray with loopback-only settings that would hide a regression),
and looks at every socket Ray's processes listen on.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _procs import default_sigint

from vobiz_async import ConfigurationError
from vobiz_async.ray_runtime import SHARD_SIZES, shard_size_for, split_address
from vobiz_async.testing import FakeVobiz

#: Ample for importing Ray and failing; the command hung for good before the fix.
BOUND = 90.0

#: Whatever a Ray process started here tries to reach over HTTP goes to a closed loopback
#: port (see tests/test_scaleout.py): nothing leaves 127.0.0.1.
LOOPBACK_PROXIES = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost",
    "NO_PROXY": "127.0.0.1,localhost",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: Settings of this suite or the caller's shell that would change what Ray does.
RAY_SETTINGS = ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")


def child_env(ray_tmp: Path | None = None) -> dict[str, str]:
    """The environment of a child: no VOBIZ_ or Ray settings of ours; Ray's temporary
    folder `ray_tmp` if given (where `auto` then finds no record of another cluster)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_") and k not in RAY_SETTINGS
    }
    env.update(LOOPBACK_PROXIES)
    if ray_tmp is not None:
        env["RAY_TMPDIR"] = str(ray_tmp)
    return env


# -- shard sizing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "cpus", "requested", "expected"),
    [
        (197, 2, None, 50),  # the job that made one shard of 2,000: now 4 shards, 2 per CPU
        (197, 1, None, 50),
        (10, 8, None, 50),  # never below 50: a shard's task costs more than 50 recordings
        (0, 4, None, 50),
        (1_000, 2, None, 100),  # 10 shards, ~4 per CPU (the ladder rounds down)
        (5_000, 2, None, 500),
        (20_000, 4, None, 1000),
        (1_000_000, 2, None, 2000),  # never above 2,000
        (1_000_000, 512, None, 250),
        (197, 2, 2000, 2000),  # --shard-size wins
        (197, 2, 7, 7),
    ],
)
def test_shard_size_comes_from_the_job_and_the_cpus(
    total: int, cpus: int, requested: int | None, expected: int
) -> None:
    """Several shards per CPU from the ladder, bounded 50..2,000; a requested size wins."""
    assert shard_size_for(total, cpus, requested) == expected


def test_a_job_that_grows_within_a_step_keeps_its_shard_size() -> None:
    """Sizes come from a coarse ladder, so a re-run after a few new recordings cuts the
    same shards (and finds them in the shard journal)."""
    assert {shard_size_for(total, 2) for total in range(800, 1600)} == {100}
    assert set(SHARD_SIZES) >= {shard_size_for(n, c) for n in range(0, 90_000, 997) for c in (1, 3)}


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("head.example:6380", ("head.example", 6380)),
        ("[::1]:6379", ("::1", 6379)),
        ("ray://head.example", ("head.example", 10001)),
        ("ray://head.example:10002", ("head.example", 10002)),
    ],
)
def test_addresses_are_split_into_host_and_port(address: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, [V6]:PORT and ray:// (Ray Client's port by default)."""
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["head.example", "127.0.0.1:0", "host:port", ":6379"])
def test_an_address_without_a_port_is_refused_naming_the_flag(address: str) -> None:
    """One line naming --ray-address, before any connection."""
    with pytest.raises(ConfigurationError, match="--ray-address"):
        split_address(address)


# -- the command line -----------------------------------------------------------------------


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=5, seed=5) as fake:
        yield fake


async def start_cli(*args: str, fake: FakeVobiz, env: dict[str, str]) -> Any:
    """`vobiz-recordings ARGS` started in a child process, credentials in its environment."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        *args,
        env={
            **env,
            "VOBIZ_AUTH_ID": fake.auth_id,
            "VOBIZ_AUTH_TOKEN": fake.auth_token,
            "VOBIZ_BASE_URL": fake.base_url,
        },
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )


async def run_cli(*args: str, fake: FakeVobiz, env: dict[str, str]) -> tuple[int, str, str]:
    """`vobiz-recordings ARGS` in a child process; killed if it outlives `BOUND`."""
    proc = await start_cli(*args, fake=fake, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), BOUND)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"`{' '.join(args)}` still ran after {BOUND} s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_an_unreachable_ray_address_is_one_line_and_exit_3(
    fake: FakeVobiz, tmp_path: Path
) -> None:
    """`--ray-address 127.0.0.1:1` (nothing listens): exit 3, one line naming the flag and
    the address, instead of a `ray.init` that hangs for good."""
    pytest.importorskip("ray")
    code, _, err = await run_cli(
        "download", "--out", str(tmp_path / "archive"), "--engine", "ray",
        "--ray-address", "127.0.0.1:1", fake=fake, env=child_env(tmp_path),
    )  # fmt: skip
    assert code == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "--ray-address" in lines[0]
    assert "127.0.0.1:1" in lines[0]
    assert "refused" in lines[0]


async def test_ray_address_auto_without_a_cluster_says_so_in_our_words(
    fake: FakeVobiz, tmp_path: Path
) -> None:
    """`--ray-address auto` with no cluster recorded: exit 3, naming our flag, not Ray's
    "setting `--address` flag"."""
    pytest.importorskip("ray")
    code, _, err = await run_cli(
        "download", "--out", str(tmp_path / "archive"), "--engine", "ray",
        "--ray-address", "auto", fake=fake, env=child_env(tmp_path),
    )  # fmt: skip
    assert code == 3, err
    assert len(err.strip().splitlines()) == 1, err
    assert "--ray-address auto" in err
    assert "`--address` flag" not in err
    assert "Traceback" not in err


def raylet_logs(ray_tmp: Path) -> list[Path]:
    """The raylet logs of every Ray session started with `ray_tmp` as Ray's folder."""
    sessions = list(ray_tmp.glob("ray/session_2*/logs"))
    assert sessions  # a Ray did start there
    return [logs / "raylet.out" for logs in sessions if (logs / "raylet.out").exists()]


async def test_ctrl_c_while_a_local_ray_starts_interrupts_the_start(
    fake: FakeVobiz, tmp_path: Path
) -> None:
    """SIGINT as soon as Ray's GCS runs: exit 130 without waiting for Ray to finish
    starting (its raylet never starts), and no Ray process is left behind."""
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    ray_tmp = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # Ray's socket paths are short
    try:
        proc = await start_cli(
            "download", "--out", str(tmp_path / "archive"), "--engine", "ray",
            fake=fake, env=child_env(ray_tmp),
        )  # fmt: skip
        driver = psutil.Process(proc.pid)

        async def gcs_started() -> list[Any]:
            while True:
                children = driver.children(recursive=True)
                if any(child.name() == "gcs_server" for child in children):
                    return list(children)
                await asyncio.sleep(0.02)

        started = await asyncio.wait_for(gcs_started(), BOUND)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), BOUND)
        assert proc.returncode == 130, err
        assert b"interrupted" in err
        assert await asyncio.to_thread(raylet_logs, ray_tmp) == []
        _, alive = await asyncio.to_thread(psutil.wait_procs, started, BOUND)
        assert alive == []
    finally:
        await asyncio.to_thread(shutil.rmtree, ray_tmp, True)


# -- a local Ray ----------------------------------------------------------------------------

#: Starts a local Ray the library's way, prints the pid, waits for stdin to close.
LOCAL_RAY = textwrap.dedent(
    """
    import os, sys
    import ray
    from vobiz_async import ray_runtime
    assert ray_runtime.connect(ray, None)
    print(os.getpid(), flush=True)
    sys.stdin.read()
    ray.shutdown()
    """
)

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listening(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """`(pid, process name, address, port)` of every TCP listening and UDP bound socket."""
    psutil = pytest.importorskip("psutil")
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            sockets = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.NoSuchProcess:
            continue
        for sock in sockets:
            if sock.status == psutil.CONN_LISTEN or (sock.type == 2 and not sock.raddr):
                found.append((pid, name, sock.laddr.ip, sock.laddr.port))
    return found


def test_a_local_ray_listens_on_loopback_only() -> None:
    """Every socket that gcs_server, the raylet, the workers, both agents and the driver
    listen on is 127.0.0.1, and Ray's token notice stays off the terminal."""
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen(  # noqa: S603 - our interpreter
        [sys.executable, "-c", LOCAL_RAY],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.communicate(timeout=BOUND)[1]
        driver = psutil.Process(int(line))
        ray_pids = {driver.pid, *(child.pid for child in driver.children(recursive=True))}
        names = {psutil.Process(pid).name() for pid in ray_pids if psutil.pid_exists(pid)}
        assert {"gcs_server", "raylet"} <= names, names
        sockets = listening(ray_pids)
        assert {name for _, name, _, _ in sockets} >= {"gcs_server", "raylet"}, sockets
        assert [s for s in sockets if s[2] not in LOOPBACK] == []
    finally:
        _, err = proc.communicate(input="", timeout=BOUND)
    assert "Token authentication" not in err, err


#: Tries `connect` on the address in argv[1] and prints its error.
CONNECT = textwrap.dedent(
    """
    import sys
    import ray
    from vobiz_async import ConfigurationError, ray_runtime
    if ray_runtime.dialled_address(sys.argv[1]).startswith("127."):
        print("SKIP Ray dials loopback on this machine")
        sys.exit()
    try:
        ray_runtime.connect(ray, sys.argv[1], timeout=10)
    except ConfigurationError as err:
        print(err)
    """
)


def test_a_cluster_ray_would_not_dial_is_refused_as_unreachable() -> None:
    """Something on 127.0.0.1 only: Ray dials this machine's own address instead (and would
    retry that for good), so the check dials that address too and names both."""
    pytest.importorskip("ray")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        done = subprocess.run(  # noqa: S603 - our interpreter
            [sys.executable, "-c", CONNECT, address],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=BOUND,
            check=False,
            preexec_fn=default_sigint,
        )
    if done.stdout.startswith("SKIP"):
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stderr
    assert f"cannot reach a Ray cluster at {address} (--ray-address; Ray dials" in done.stdout
