"""Acceptance tests of `vobiz-recordings`: the real entry point in a subprocess, FakeVobiz here.

The fake serves from this test's event loop while the child process runs, so every child is
started with `asyncio.create_subprocess_exec` and awaited, never with a blocking call.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import attrs
import pytest
from _procs import default_sigint

from vobiz_async import DownloadReport, Recording, __version__
from vobiz_async.cli.output import print_summary
from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.pacing import PacingReport
from vobiz_async.testing import FakeVobiz

#: A wrong token nobody could mistake for other output.
WRONG_TOKEN = "wrong-token-Zq8xK3vT"
ANSI = re.compile(r"\x1b[\[\]()]")
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


async def start_cli(
    *args: str,
    env: Mapping[str, str],
    stdin: int = asyncio.subprocess.DEVNULL,
    stdout: int = asyncio.subprocess.PIPE,
    python_flags: tuple[str, ...] = (),
) -> asyncio.subprocess.Process:
    """Start `python [FLAGS] -m vobiz_async ARGS...` with SIGINT at its default."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *python_flags,
        "-m",
        "vobiz_async",
        *args,
        env=dict(env),
        stdin=stdin,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )


async def finish(proc: asyncio.subprocess.Process, stdin: bytes | None = None) -> Result:
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, (out or b"").decode(), (err or b"").decode())


async def run_cli(*args: str, env: Mapping[str, str], stdin: bytes | None = None) -> Result:
    pipe = asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL
    return await finish(await start_cli(*args, env=env, stdin=pipe), stdin)


Cli = Callable[..., Awaitable[Result]]


def env_for(base: Mapping[str, str], fake: FakeVobiz, **overrides: str) -> dict[str, str]:
    return {
        **base,
        "VOBIZ_AUTH_ID": fake.auth_id,
        "VOBIZ_AUTH_TOKEN": fake.auth_token,
        "VOBIZ_BASE_URL": fake.base_url,
        **overrides,
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved(folder: Path) -> dict[str, Path]:
    """The final audio files in `folder` by recording id."""
    if not folder.is_dir():
        return {}
    files = [p for p in folder.iterdir() if p.suffix in (".mp3", ".wav")]
    by_id = {p.stem: p for p in files}
    assert len(by_id) == len(files), f"one recording saved twice: {sorted(files)}"
    return by_id


def parts(folder: Path) -> list[Path]:
    """The `.part` files left in `folder`."""
    return sorted(folder.glob("*.part"))


def size_of(path: Path) -> int:
    """The size of `path`, 0 if it does not exist."""
    return path.stat().st_size if path.is_file() else 0


def assert_archived(fake: FakeVobiz, folder: Path, ids: list[str]) -> None:
    """`folder` holds exactly `ids`, each byte for byte what the fake serves."""
    files = saved(folder)
    assert sorted(files) == sorted(ids)
    for rid, path in files.items():
        assert sha256(path) == fake.sha256(rid), f"{path.name} differs from the served bytes"


def summary(result: Result) -> str:
    """The closing summary line of a download."""
    lines = result.out.splitlines()
    assert lines, f"no output; stderr: {result.err}"
    return next(line for line in lines if line.startswith("downloaded "))


@pytest.fixture(name="base_env")
def _base_env() -> dict[str, str]:
    """This process's environment without any VOBIZ_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(
        recordings=12, seed=0, wav_as_mp3_rate=0.25, foreign_redirect_rate=0.25
    ) as fake:
        yield fake


@pytest.fixture(name="env")
def _env(base_env: dict[str, str], fake: FakeVobiz) -> dict[str, str]:
    return env_for(base_env, fake)


@pytest.fixture(name="cli")
def _cli(env: dict[str, str]) -> Cli:
    """Run `python -m vobiz_async ARGS...` configured for the fake."""

    async def cli(*args: str, stdin: bytes | None = None) -> Result:
        return await run_cli(*args, env=env, stdin=stdin)

    return cli


@pytest.fixture(name="out")
def _out(tmp_path: Path) -> Path:
    return tmp_path / "archive"


# -- entry points -------------------------------------------------------------------------


async def test_console_script_help(base_env: dict[str, str]) -> None:
    """The installed `vobiz-recordings` script runs and lists every command."""
    script = shutil.which("vobiz-recordings", path=str(Path(sys.executable).parent))
    assert script is not None, "console script not installed next to the interpreter"
    proc = await asyncio.create_subprocess_exec(
        script,
        "--help",
        env=base_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    result = await finish(proc)

    assert result.code == 0, result.err
    assert result.out.startswith("usage: vobiz-recordings")
    for command in ("list", "get", "delete", "download", "verify", "demo", "fake-server"):
        assert command in result.out


async def test_version(base_env: dict[str, str]) -> None:
    """`--version` prints the package version."""
    result = await run_cli("--version", env=base_env)

    assert result.code == 0
    assert result.out.strip() == f"vobiz-recordings {__version__}"


# -- download -----------------------------------------------------------------------------


async def test_download_with_faults_saves_every_file_intact(
    cli: Cli, fake: FakeVobiz, out: Path
) -> None:
    """Dropped, short, 503 and expired-URL transfers all end byte for byte right, exit 0."""
    ids = fake.recording_ids
    fake.media_fault(ids[0], "drop")
    fake.media_fault(ids[1], "short")
    fake.media_fault(ids[2], "status", status=503, retry_after=0)
    fake.media_fault(ids[3], "expired")
    fake.media_fault(ids[4], "drop", times=2)

    result = await cli("download", "--out", str(out), "--concurrency", "4")

    assert result.code == 0, result.output
    assert_archived(fake, out, ids)
    assert not parts(out)
    statuses = {r.status for r in fake.stats.requests if r.operation in ("media", "storage")}
    assert {403, 503} <= statuses, "the status faults were never served"


async def test_download_writes_manifest_of_every_file(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """The manifest lists every saved file, one entry each, with its size and the served
    sha256."""
    fake.media_fault(fake.recording_ids[0], "drop")

    result = await cli("download", "--out", str(out))

    assert result.code == 0, result.output
    files = saved(out)
    with Manifest(out / MANIFEST_NAME) as manifest:
        assert sorted(e.recording_id for e in manifest) == sorted(fake.recording_ids)
        for entry in manifest:
            assert out / entry.path == files[entry.recording_id]
            assert entry.size == fake.size(entry.recording_id)
            assert entry.sha256 == fake.sha256(entry.recording_id)
        assert len(manifest) == len(fake.recording_ids)


async def test_verify_after_download_passes(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """`verify DIR` on a fresh archive finds nothing wrong and exits 0."""
    fake.media_fault(fake.recording_ids[0], "short")
    assert (await cli("download", "--out", str(out))).code == 0

    result = await cli("verify", str(out))

    assert result.code == 0, result.output
    assert f"verified {len(fake.recording_ids)} of {len(fake.recording_ids)} files" in result.out


@pytest.mark.parametrize(
    ("status", "times"),
    [(404, 2), (500, 50)],
    ids=["not-found-even-after-refresh", "server-error-every-attempt"],
)
async def test_permanent_failure_exits_1_and_saves_the_rest(
    cli: Cli, fake: FakeVobiz, out: Path, status: int, times: int
) -> None:
    """One recording that never downloads: exit 1, named with its reason; the rest are
    saved."""
    ids = fake.recording_ids
    doomed = ids[5]
    fake.media_fault(doomed, "status", status=status, times=times, retry_after=0)

    result = await cli("download", "--out", str(out))

    assert result.code == 1, result.output
    assert summary(result).startswith(f"downloaded {len(ids) - 1}, skipped 0, failed 1;")
    [reason] = [line for line in result.out.splitlines() if doomed in line]
    assert reason.strip().startswith(f"failed {doomed}: {status}")
    assert_archived(fake, out, [rid for rid in ids if rid != doomed])
    assert "Traceback" not in result.output


async def test_download_creates_the_folder(cli: Cli, fake: FakeVobiz, tmp_path: Path) -> None:
    """`--out` may name a folder that does not exist yet, nested or not."""
    out = tmp_path / "not" / "there" / "yet"

    result = await cli("download", "--out", str(out), "--ids", fake.recording_ids[0])

    assert result.code == 0, result.output
    assert_archived(fake, out, fake.recording_ids[:1])


@pytest.fixture(name="made")
def _made(out: Path) -> Path:
    """The destination folder, created empty."""
    out.mkdir()
    return out


async def test_download_into_an_existing_folder(cli: Cli, fake: FakeVobiz, made: Path) -> None:
    """An existing, empty `--out` folder is filled."""
    out = made

    result = await cli("download", "--out", str(out))

    assert result.code == 0, result.output
    assert_archived(fake, out, fake.recording_ids)


async def test_rerun_skips_what_is_saved(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """A second run finds everything in the manifest and on disk: no media request, exit 0."""
    assert (await cli("download", "--out", str(out))).code == 0
    before = fake.stats.media_requests

    result = await cli("download", "--out", str(out))

    assert result.code == 0, result.output
    assert summary(result).startswith(f"downloaded 0, skipped {len(fake.recording_ids)}, ")
    assert fake.stats.media_requests == before


async def test_rerun_refetches_a_file_whose_size_changed(
    cli: Cli, fake: FakeVobiz, out: Path
) -> None:
    """A saved file truncated since is fetched again on the next run."""
    assert (await cli("download", "--out", str(out))).code == 0
    rid = fake.recording_ids[3]
    path = saved(out)[rid]
    path.write_bytes(path.read_bytes()[:1000])

    result = await cli("download", "--out", str(out))

    assert result.code == 0, result.output
    assert summary(result).startswith("downloaded 1, ")
    assert_archived(fake, out, fake.recording_ids)


async def test_overwrite_fetches_everything_again(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """`--overwrite` downloads files already saved."""
    assert (await cli("download", "--out", str(out))).code == 0

    result = await cli("download", "--out", str(out), "--overwrite")

    assert result.code == 0, result.output
    assert summary(result).startswith(f"downloaded {len(fake.recording_ids)}, skipped 0")
    assert_archived(fake, out, fake.recording_ids)


async def test_download_ids(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """`--ids A B` downloads exactly those recordings."""
    wanted = fake.recording_ids[2:4]

    result = await cli("download", "--out", str(out), "--ids", *wanted)

    assert result.code == 0, result.output
    assert_archived(fake, out, wanted)


async def test_download_ids_file(cli: Cli, fake: FakeVobiz, out: Path, tmp_path: Path) -> None:
    """`--ids-file F` downloads exactly the ids listed one a line, blank lines ignored."""
    wanted = fake.recording_ids[1:8:3]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(["", *wanted, "  ", ""]) + "\n")

    result = await cli("download", "--out", str(out), "--ids-file", str(ids_file))

    assert result.code == 0, result.output
    assert_archived(fake, out, wanted)


async def test_download_ids_from_stdin(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """`--ids-file -` reads the ids from standard input."""
    wanted = fake.recording_ids[-2:]

    result = await cli(
        "download", "--out", str(out), "--ids-file", "-", stdin="\n".join(wanted).encode()
    )

    assert result.code == 0, result.output
    assert_archived(fake, out, wanted)


async def test_download_recording_type(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """`--recording-type T` downloads only recordings of that type."""
    trunks = [rid for rid in fake.recording_ids if fake.recordings[rid].recording_type == "trunk"]
    assert trunks

    result = await cli("download", "--out", str(out), "--recording-type", "trunk")

    assert result.code == 0, result.output
    assert_archived(fake, out, trunks)


async def test_missing_ids_file_is_a_usage_error(cli: Cli, out: Path, tmp_path: Path) -> None:
    """`--ids-file` naming no file is a mistake on the command line: exit 2, one line."""
    result = await cli("download", "--out", str(out), "--ids-file", str(tmp_path / "nope.txt"))

    assert result.code == 2, result.output
    assert "nope.txt" in result.err
    assert "Traceback" not in result.output


async def test_unknown_id_fails_that_item(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """An id Vobiz does not know is a failed item with a reason, not a crash."""
    known = fake.recording_ids[0]
    missing = "00000000-0000-4000-8000-000000000000"

    result = await cli("download", "--out", str(out), "--ids", known, missing)

    assert result.code == 1, result.output
    assert f"failed {missing}: 404" in result.out
    assert_archived(fake, out, [known])


async def test_piped_output_is_plain(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """Without a terminal: no escape codes, plain lines, a closing summary line."""
    fake.media_fault(fake.recording_ids[0], "drop")

    result = await cli("download", "--out", str(out))

    assert result.code == 0, result.output
    assert not ANSI.search(result.output)
    assert "\r" not in result.output
    last = result.out.splitlines()[-1]
    assert last.startswith(f"downloaded {len(fake.recording_ids)}, skipped 0, failed 0; ")
    assert re.search(r" in \d+\.\ds \(.*/s\)$", last)


async def test_piped_progress_lines_while_running(base_env: dict[str, str], tmp_path: Path) -> None:
    """A run longer than the interval prints plain `progress:` lines on stderr."""
    async with FakeVobiz(recordings=2, seed=4) as fake:
        slow = fake.add_recording(size=480_000).recording_id  # about 6 s at the "slow" rate
        fake.media_fault(slow, "slow")
        result = await run_cli(
            "download", "--out", str(tmp_path / "a"), env=env_for(base_env, fake)
        )

    assert result.code == 0, result.output
    progress = [line for line in result.err.splitlines() if line.startswith("progress: ")]
    assert progress, result.err
    assert re.fullmatch(r"progress: \d+/3 files \(.*\), .*/s", progress[0])
    assert not ANSI.search(result.output)


# -- Ctrl-C -------------------------------------------------------------------------------


async def wait_for_bytes(part: Path, proc: asyncio.subprocess.Process) -> None:
    """Return once the file `part` has bytes in it."""
    for _ in range(300):
        if size_of(part) > 0:
            return
        assert proc.returncode is None, "the download ended before it could be interrupted"
        await asyncio.sleep(0.05)
    raise AssertionError(f"{part.name} never appeared")


async def test_ctrl_c_stops_cleanly_and_rerun_completes(
    base_env: dict[str, str], out: Path
) -> None:
    """SIGINT mid-download: exit 130, no partial final file; a re-run resumes and
    completes."""
    async with FakeVobiz(recordings=6, seed=2) as fake:
        big = fake.add_recording(size=2_000_000).recording_id  # ~25 s at the "slow" rate
        # Only the big one trickles: a slow fault left unserved by the first run would
        # slow the re-run down instead.
        fake.media_fault(big, "slow")
        env = env_for(base_env, fake)

        proc = await start_cli("download", "--out", str(out), "--concurrency", "8", env=env)
        await wait_for_bytes(out / f"{big}.part", proc)
        proc.send_signal(signal.SIGINT)
        interrupted = await finish(proc)

        assert interrupted.code == 130, interrupted.output
        assert "interrupted" in interrupted.err
        assert "Traceback" not in interrupted.output
        for rid, path in saved(out).items():
            assert sha256(path) == fake.sha256(rid), f"{path.name} is a partial final file"
        assert big not in saved(out)
        assert out / f"{big}.part" in parts(out), "the in-flight .part file was not kept"
        unfinished = [rid for rid in fake.recording_ids if rid not in saved(out)]

        sent_before = fake.stats.media_bytes_sent
        rerun = await run_cli("download", "--out", str(out), env=env)

        assert rerun.code == 0, rerun.output
        assert_archived(fake, out, fake.recording_ids)
        assert not parts(out)
        resent = fake.stats.media_bytes_sent - sent_before
        assert resent < sum(fake.size(rid) for rid in unfinished), "nothing was resumed"


# -- verify -------------------------------------------------------------------------------


@pytest.fixture(name="archive")
async def _archive(cli: Cli, fake: FakeVobiz, out: Path) -> dict[str, Path]:
    """A folder the command line has archived every recording of the fake into."""
    result = await cli("download", "--out", str(out))
    assert result.code == 0, result.output
    return saved(out)


async def test_verify_finds_a_flipped_byte(
    cli: Cli, archive: dict[str, Path], out: Path, fake: FakeVobiz
) -> None:
    """A file with one byte changed: exit 1, and the file is named."""
    rid = fake.recording_ids[2]
    path = archive[rid]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    result = await cli("verify", str(out))

    assert result.code == 1, result.output
    [problem] = [line for line in result.out.splitlines() if rid in line]
    assert "sha256 differs" in problem
    assert path.name in problem
    assert "1 problem" in result.out


async def test_verify_finds_a_missing_file(
    cli: Cli, archive: dict[str, Path], out: Path, fake: FakeVobiz
) -> None:
    """A deleted file: exit 1, reported as missing by name."""
    rid = fake.recording_ids[-1]
    archive[rid].unlink()

    result = await cli("verify", str(out))

    assert result.code == 1, result.output
    [problem] = [line for line in result.out.splitlines() if rid in line]
    assert problem.startswith("missing")
    assert archive[rid].name in problem


async def test_verify_finds_a_truncated_file(
    cli: Cli, archive: dict[str, Path], out: Path, fake: FakeVobiz
) -> None:
    """A shortened file: exit 1, reported as a size difference."""
    rid = fake.recording_ids[0]
    archive[rid].write_bytes(archive[rid].read_bytes()[:-1])

    result = await cli("verify", str(out))

    assert result.code == 1, result.output
    assert f"size differs: {archive[rid].name} ({rid})" in result.out


async def test_verify_with_manifest_elsewhere(
    cli: Cli, archive: dict[str, Path], out: Path, tmp_path: Path
) -> None:
    """`--manifest F` checks DIR against a manifest kept outside it."""
    moved = tmp_path / "elsewhere.jsonl"
    (out / MANIFEST_NAME).rename(moved)

    result = await cli("verify", str(out), "--manifest", str(moved))

    assert result.code == 0, result.output
    assert f"verified {len(archive)} of {len(archive)} files" in result.out


# -- list and get -------------------------------------------------------------------------


@pytest.fixture(name="many")
async def _many() -> AsyncIterator[FakeVobiz]:
    """More recordings than one page holds."""
    async with FakeVobiz(recordings=150, seed=1) as fake:
        yield fake


@pytest.fixture(name="list_cli")
def _list_cli(base_env: dict[str, str], many: FakeVobiz) -> Cli:
    async def cli(*args: str) -> Result:
        return await run_cli(*args, env=env_for(base_env, many))

    return cli


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


async def test_list_json_round_trips(list_cli: Cli, many: FakeVobiz) -> None:
    """`list --json` prints every recording, in order, as wire JSON that round-trips."""
    result = await list_cli("list", "--json")

    assert result.code == 0, result.err
    rows = json_lines(result.out)
    assert [row["recording_id"] for row in rows] == many.recording_ids
    for row in rows:
        assert Recording.from_dict(row).to_dict() == row


async def test_list_piped_is_json_lines(list_cli: Cli, many: FakeVobiz) -> None:
    """Without a terminal, `list` prints JSON Lines even without `--json`."""
    result = await list_cli("list", "--limit", "3")

    assert result.code == 0, result.err
    assert [row["recording_id"] for row in json_lines(result.out)] == many.recording_ids[:3]


@pytest.mark.parametrize("limit", [1, 5, 100, 101])
async def test_list_limit(list_cli: Cli, many: FakeVobiz, limit: int) -> None:
    """`--limit N` prints the first N recordings."""
    result = await list_cli("list", "--json", "--limit", str(limit))

    assert result.code == 0, result.err
    assert [row["recording_id"] for row in json_lines(result.out)] == many.recording_ids[:limit]


@pytest.mark.parametrize("kind", ["conference", "trunk", "call"])
async def test_list_recording_type(list_cli: Cli, many: FakeVobiz, kind: str) -> None:
    """`--recording-type T` lists exactly the recordings of that type."""
    expected = [rid for rid in many.recording_ids if many.recordings[rid].recording_type == kind]
    assert expected

    result = await list_cli("list", "--json", "--recording-type", kind)

    assert result.code == 0, result.err
    rows = json_lines(result.out)
    assert [row["recording_id"] for row in rows] == expected
    assert {row["recording_type"] for row in rows} == {kind}


async def test_list_call_uuid(list_cli: Cli, many: FakeVobiz) -> None:
    """`--call-uuid U` lists the recordings of that call only."""
    call = many.recordings[many.recording_ids[7]].call_uuid
    expected = [rid for rid in many.recording_ids if many.recordings[rid].call_uuid == call]

    result = await list_cli("list", "--json", "--call-uuid", call)

    assert result.code == 0, result.err
    assert [row["recording_id"] for row in json_lines(result.out)] == expected


async def test_get_json(list_cli: Cli, many: FakeVobiz) -> None:
    """`get ID --json` prints that one recording, equal to its list entry."""
    rid = many.recording_ids[42]
    listed = json_lines((await list_cli("list", "--json", "--limit", "50")).out)[42]

    result = await list_cli("get", rid, "--json")

    assert result.code == 0, result.err
    [row] = json_lines(result.out)
    recording = Recording.from_dict(row)
    assert recording.recording_id == rid
    assert recording.to_dict() == row
    assert attrs.evolve(recording, api_id=None) == Recording.from_dict(listed)


async def test_get_unknown_id_exits_1(cli: Cli) -> None:
    """`get` of an id Vobiz does not know: exit 1 with a one-line NotFound error."""
    result = await cli("get", "00000000-0000-4000-8000-000000000000")

    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("error: NotFoundError: 404")
    assert len(result.err.splitlines()) == 1


# -- on a terminal --------------------------------------------------------------------------


async def drain(master: int) -> bytes:
    """Everything written to the terminal whose controlling side is `master`."""
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    while True:
        try:
            data = await loop.run_in_executor(None, os.read, master, 65536)
        except OSError:  # EIO: every process has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).replace(b"\r\n", b"\n")


async def run_on_tty(
    *args: str, env: Mapping[str, str], attach: str, typed: bytes = b""
) -> tuple[Result, bytes]:
    """Run the command line with `attach` ("stdin", "stdout" or "stderr") on a terminal."""
    master, slave = os.openpty()
    streams = {
        "stdin": asyncio.subprocess.DEVNULL,
        "stdout": asyncio.subprocess.PIPE,
        "stderr": asyncio.subprocess.PIPE,
    }
    streams[attach] = slave
    reader = asyncio.create_task(drain(master))
    try:
        os.write(master, typed)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vobiz_async",
            *args,
            env=dict(env),
            preexec_fn=default_sigint,
            **streams,
        )
        os.close(slave)
        slave = -1
        result = await finish(proc)
        screen = await asyncio.wait_for(reader, TIMEOUT)
    finally:
        if slave >= 0:
            os.close(slave)
        reader.cancel()
        os.close(master)
    return result, screen


async def test_list_on_a_terminal_is_a_table(env: dict[str, str], fake: FakeVobiz) -> None:
    """`list` on a terminal prints a header and one row per recording, not JSON."""
    result, screen = await run_on_tty("list", "--limit", "3", env=env, attach="stdout")

    assert result.code == 0, result.err
    lines = screen.decode().splitlines()
    assert lines[0].split()[:3] == ["RECORDING", "ID", "ADDED"]
    assert [line.split()[0] for line in lines[1:]] == fake.recording_ids[:3]


async def test_download_on_a_terminal_shows_a_progress_bar(
    env: dict[str, str], fake: FakeVobiz, out: Path
) -> None:
    """With a terminal on stderr the download draws a bar, and still ends with the summary."""
    result, screen = await run_on_tty("download", "--out", str(out), env=env, attach="stderr")

    assert result.code == 0, screen.decode(errors="replace")
    count = len(fake.recording_ids)
    assert b"archiving" in screen
    assert f"{count}/{count}".encode() in screen
    assert summary(result).startswith(f"downloaded {len(fake.recording_ids)}, ")
    assert_archived(fake, out, fake.recording_ids)


@pytest.mark.parametrize(("answer", "deleted"), [(b"y\n", True), (b"n\n", False), (b"\n", False)])
async def test_delete_asks_on_a_terminal(
    env: dict[str, str], fake: FakeVobiz, answer: bytes, deleted: bool
) -> None:
    """Without `--yes` on a terminal, `delete` asks; only a yes deletes."""
    rid = fake.recording_ids[0]

    result, _ = await run_on_tty("delete", rid, env=env, attach="stdin", typed=answer)

    assert result.code == 0, result.output
    assert "[y/N]" in result.out
    assert (rid not in fake.recordings) is deleted
    assert (f"deleted {rid}" in result.out) is deleted


# -- fake-server ----------------------------------------------------------------------------


async def test_fake_server_serves_the_command_line(base_env: dict[str, str]) -> None:
    """`fake-server` prints working settings, answers `list`, and stops on Ctrl-C with 130."""
    proc = await start_cli("fake-server", "--count", "5", env=base_env)
    settings: dict[str, str] = {}
    try:
        while "VOBIZ_AUTH_TOKEN" not in settings:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
            assert line, "fake-server ended early"
            if match := re.match(r"export (VOBIZ_\w+)=(\S+)", line):
                settings[match[1]] = match[2]
        listing = await run_cli("list", "--json", env={**base_env, **settings})
    finally:
        proc.send_signal(signal.SIGINT)
        stopped = await finish(proc)

    assert listing.code == 0, listing.err
    assert len(json_lines(listing.out)) == 5
    assert stopped.code == 130, stopped.output
    assert "Traceback" not in stopped.output


# -- delete -------------------------------------------------------------------------------


async def test_delete_without_yes_or_terminal_refuses(cli: Cli, fake: FakeVobiz) -> None:
    """`delete ID` with no terminal to ask and no `--yes`: exit 2, nothing deleted."""
    rid = fake.recording_ids[0]

    result = await cli("delete", rid)

    assert result.code == 2, result.output
    assert "--yes" in result.err
    assert rid in fake.recordings
    assert not any(r.operation == "delete" for r in fake.stats.requests)


async def test_delete_with_yes(cli: Cli, fake: FakeVobiz) -> None:
    """`delete A B --yes` deletes both; `get` then exits 1 with NotFound."""
    doomed = fake.recording_ids[:2]

    result = await cli("delete", *doomed, "--yes")

    assert result.code == 0, result.output
    assert result.out.splitlines() == [f"deleted {rid}" for rid in doomed]
    assert not any(rid in fake.recordings for rid in doomed)
    gone = await cli("get", doomed[0])
    assert gone.code == 1
    assert "NotFoundError" in gone.err


async def test_delete_unknown_id_exits_1(cli: Cli, fake: FakeVobiz) -> None:
    """Deleting an id that is not there fails that id and deletes the others."""
    rid = fake.recording_ids[0]
    missing = "00000000-0000-4000-8000-000000000000"

    result = await cli("delete", missing, rid, "--yes")

    assert result.code == 1, result.output
    assert f"failed {missing}: 404" in result.err
    assert f"deleted {rid}" in result.out
    assert rid not in fake.recordings


# -- usage, configuration and authentication ------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["download"],
        ["download", "--out", "{tmp}", "--concurrency", "0"],
        ["list", "--limit", "0"],
        ["list", "--limit", "many"],
        ["get"],
        ["delete"],
        ["verify", "{tmp}"],
        ["download", "--out", "{tmp}", "--no-such-flag"],
    ],
    ids=[
        "no-command",
        "unknown-command",
        "download-without-out",
        "zero-concurrency",
        "zero-limit",
        "word-limit",
        "get-without-id",
        "delete-without-id",
        "verify-without-manifest",
        "unknown-flag",
    ],
)
async def test_usage_errors_exit_2(cli: Cli, tmp_path: Path, argv: list[str]) -> None:
    """A command line that cannot be carried out exits 2 without a traceback."""
    result = await cli(*(arg.replace("{tmp}", str(tmp_path)) for arg in argv))

    assert result.code == 2, result.output
    assert result.err
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["get", "{rid}"],
        ["download", "--out", "{out}"],
        ["download", "--out", "{out}", "--ids", "{rid}"],
        ["delete", "--yes", "{rid}"],
    ],
    ids=["list", "get", "download", "download-ids", "delete"],
)
async def test_bad_token_flag_exits_3_without_leaking_it(
    cli: Cli, fake: FakeVobiz, out: Path, argv: list[str]
) -> None:
    """`--auth-token WRONG`: exit 3, one clear line on stderr, the token printed nowhere."""
    rid = fake.recording_ids[0]
    args = [arg.format(rid=rid, out=out) for arg in argv]

    result = await cli(*args, "--auth-token", WRONG_TOKEN)

    assert result.code == 3, result.output
    assert len(result.err.splitlines()) == 1, result.err
    assert result.err.startswith("error: AuthenticationError: 401")
    assert "Traceback" not in result.output
    assert WRONG_TOKEN not in result.output
    assert fake.auth_token not in result.output
    assert rid in fake.recordings
    assert not saved(out)


async def test_bad_token_env_exits_3_without_leaking_it(
    base_env: dict[str, str], fake: FakeVobiz, out: Path
) -> None:
    """A wrong VOBIZ_AUTH_TOKEN: exit 3, one line, no traceback, the token printed nowhere."""
    env = env_for(base_env, fake, VOBIZ_AUTH_TOKEN=WRONG_TOKEN)

    result = await run_cli("download", "--out", str(out), env=env)

    assert result.code == 3, result.output
    assert len(result.err.splitlines()) == 1, result.err
    assert "AuthenticationError" in result.err
    assert "Traceback" not in result.output
    assert WRONG_TOKEN not in result.output


@pytest.mark.parametrize(
    "argv", [["list"], ["download", "--out", "{out}"]], ids=["list", "download"]
)
async def test_bad_token_with_debug_never_prints_it(cli: Cli, out: Path, argv: list[str]) -> None:
    """`--debug` shows the traceback but still never the token."""
    result = await cli(
        *(arg.format(out=out) for arg in argv), "--debug", "--auth-token", WRONG_TOKEN
    )

    assert result.code == 3, result.output
    assert "Traceback (most recent call last):" in result.err, result.err
    traceback = result.err.split("Traceback (most recent call last):", 1)[1]
    assert "AuthenticationError: 401" in traceback  # the traceback of the refusal itself
    assert WRONG_TOKEN not in result.output


async def test_debug_download_never_prints_the_token(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """A successful `--debug` download, retries and URL refresh included, hides the token."""
    fake.media_fault(fake.recording_ids[0], "expired")
    fake.media_fault(fake.recording_ids[1], "status", status=503, retry_after=0)

    result = await cli("download", "--out", str(out), "--debug")

    assert result.code == 0, result.output
    assert "DEBUG" in result.err
    assert fake.auth_token not in result.output


@pytest.mark.parametrize(
    ("option", "value", "code", "error"),
    [
        ("--auth-token", WRONG_TOKEN, 3, "AuthenticationError"),
        ("--base-url", "http://127.0.0.1:9/api/v1/", 1, "APIConnectionError"),
    ],
    ids=["auth-token", "base-url"],
)
async def test_options_before_the_command_are_honoured(
    cli: Cli, option: str, value: str, code: int, error: str
) -> None:
    """`vobiz-recordings OPTION VALUE list`, the order `--help` shows, uses VALUE."""
    result = await cli(option, value, "list")

    assert result.code == code, f"{option} before the command was ignored: {result.output}"
    assert error in result.err
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("drop", "argv"),
    [
        (("VOBIZ_AUTH_ID", "VOBIZ_AUTH_TOKEN", "VOBIZ_BASE_URL"), ["list"]),
        (("VOBIZ_AUTH_TOKEN",), ["download", "--out", "{out}"]),
        (("VOBIZ_AUTH_ID",), ["get", "x"]),
    ],
    ids=["nothing-set", "no-token", "no-id"],
)
async def test_missing_credentials_exit_3(
    env: dict[str, str], out: Path, drop: tuple[str, ...], argv: list[str]
) -> None:
    """No auth id or token anywhere: exit 3 with a one-line ConfigurationError."""
    env = {k: v for k, v in env.items() if k not in drop}

    result = await run_cli(*(arg.format(out=out) for arg in argv), env=env)

    assert result.code == 3, result.output
    assert result.err.startswith("error: ConfigurationError: ")
    assert "VOBIZ_AUTH_TOKEN" in result.err
    assert len(result.err.splitlines()) == 1
    assert "Traceback" not in result.output


async def test_plain_http_base_url_exits_3(cli: Cli) -> None:
    """A plain-http base URL off loopback is refused before any request: exit 3."""
    result = await cli("list", "--base-url", "http://vobiz.example/api/v1/")

    assert result.code == 3, result.output
    assert result.err.startswith("error: ConfigurationError: ")
    assert "Traceback" not in result.output


# -- demo ---------------------------------------------------------------------------------


async def test_demo_runs_offline(base_env: dict[str, str], out: Path) -> None:
    """`demo` needs no VOBIZ_* settings: it archives, verifies, summarises and exits 0."""
    result = await run_cli("demo", "--count", "30", "--out", str(out), env=base_env)

    assert result.code == 0, result.output
    assert "downloaded 30, skipped 0, failed 0; " in result.out
    assert "credentials sent to the foreign host: 0" in result.out
    assert len(saved(out)) == 30
    assert len(Manifest(out / MANIFEST_NAME)) == 30
    assert not ANSI.search(result.output)
    check = await run_cli("verify", str(out), env=base_env)
    assert check.code == 0, check.output


def test_summary_says_how_the_batch_was_rate_limited() -> None:
    """The closing summary prints the batch's rate-limit line when a 429 paced it."""
    limited = PacingReport(16, 16, 12, 2, 6, 40.0)
    out = io.StringIO()
    print_summary(DownloadReport(results=[], elapsed=1.0, rate_limit=limited), out)
    assert "rate limited 12 times: concurrency lowered to 6 for 40 s\n" in out.getvalue()
