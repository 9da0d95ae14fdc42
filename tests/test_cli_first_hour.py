"""The first hour of a new user: the real `vobiz-recordings` in a subprocess, with good and
bad input, each error one clear line and never a traceback."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest
from _procs import default_sigint
from test_cli import TIMEOUT, Result, finish, start_cli

from vobiz_async import AsyncSession
from vobiz_async.testing import FakeVobiz

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
        proc = await start_cli(*args, env={**env, **(env_extra or {})}, python_flags=("-X", "dev"))
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


# -- 2: a closed stdout --------------------------------------------------------------------


async def run_into_closed_pipe(*args: str, env: Mapping[str, str]) -> Result:
    """Run with stdout a pipe whose reader has already gone, as `| head -1` leaves it."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        proc = await start_cli(*args, env=env, stdout=writer)
    finally:
        os.close(writer)
    return await finish(proc)


@pytest.mark.parametrize("argv", [["list"], ["list", "--limit", "3"], ["get", "{rid}"]])
async def test_closed_stdout_ends_quietly_with_0(
    env: dict[str, str], fake: FakeVobiz, argv: list[str]
) -> None:
    """A reader that stops reading (`list | head -1`) ends the command with 0, stderr empty."""
    args = [arg.format(rid=fake.recording_ids[0]) for arg in argv]

    result = await run_into_closed_pipe(*args, env=env)

    assert result.code == 0, result.err
    assert result.err == ""


async def test_head_reads_the_first_line(env: dict[str, str], fake: FakeVobiz) -> None:
    """`list | head -1` through a shell: one line out, nothing on stderr, both exit 0."""
    script = f"set -o pipefail; {sys.executable} -m vobiz_async list | head -1"
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    result = await finish(proc)

    assert result.code == 0, result.err
    assert result.err == ""
    assert result.out.count("\n") == 1
    assert fake.recording_ids[0] in result.out


async def test_download_keeps_its_status_when_stdout_closes(
    env: dict[str, str], fake: FakeVobiz, tmp_path: Path
) -> None:
    """A download whose summary meets a closed stdout still exits 1 for a failed item."""
    fake.media_fault(fake.recording_ids[0], "status", status=403, times=99, retry_after=0)

    result = await run_into_closed_pipe("download", "--out", str(tmp_path / "a"), env=env)

    assert result.code == 1, result.err
    assert "Traceback" not in result.err
    assert "BrokenPipe" not in result.err


# -- 4: an unwritable destination ------------------------------------------------------------


def _blocker(tmp_path: Path) -> Path:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    return blocker


@pytest.mark.parametrize("where", ["is-a-file", "below-a-file"])
async def test_unwritable_out_is_one_line_and_exit_1(
    cli: Cli, fake: FakeVobiz, tmp_path: Path, where: str
) -> None:
    """`--out` that cannot be written: one line naming it, exit 1, no request sent."""
    blocker = _blocker(tmp_path)
    out = blocker if where == "is-a-file" else blocker / "archive"

    result = await cli("download", "--out", str(out))

    assert result.code == 1, result.output
    assert result.err.splitlines() == [result.err.strip()]
    assert result.err.startswith(f"error: cannot write to {out}: ")
    assert "Traceback" not in result.output
    assert fake.stats.requests == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
async def test_read_only_out_is_one_line_and_exit_1(
    cli: Cli, fake: FakeVobiz, tmp_path: Path
) -> None:
    """A folder without write permission: one line, exit 1, no request sent."""
    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o500)
    try:
        result = await cli("download", "--out", str(out))
    finally:
        out.chmod(0o700)

    assert result.code == 1, result.output
    assert result.err.startswith(f"error: cannot write to {out}: Permission denied")
    assert len(result.err.splitlines()) == 1
    assert fake.stats.requests == []


async def test_read_only_file_system_is_one_line_and_exit_1(
    env: dict[str, str], fake: FakeVobiz, tmp_path: Path
) -> None:
    """`--out` on a read-only file system (a private mount namespace): one line, exit 1."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    mount = tmp_path / "ro"
    mount.mkdir()
    out = mount / "archive"
    script = (
        f"mount -t tmpfs tmpfs {mount} && mkdir {out} && mount -o remount,ro {mount} && "
        f"exec {sys.executable} -m vobiz_async download --out {out}"
    )
    proc = await asyncio.create_subprocess_exec(
        "unshare",
        "-m",
        "sh",
        "-c",
        script,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    result = await finish(proc)
    if "mount:" in result.err or "unshare:" in result.err:
        pytest.skip(f"no private read-only mount here: {result.err.strip()}")

    assert result.code == 1, result.output
    assert result.err == f"error: cannot write to {out}: Read-only file system\n"
    assert fake.stats.requests == []


async def test_destination_check_leaves_no_probe(cli: Cli, fake: FakeVobiz, tmp_path: Path) -> None:
    """The write check removes its probe: the archive holds recordings and the manifest only."""
    out = tmp_path / "archive"

    result = await cli("download", "--out", str(out))

    assert result.code == 0, result.output
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert len(list(out.iterdir())) == len(fake.recording_ids) + 1


# -- 5 and 6: arguments checked by the parser ------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["fake-server", "--count", "-1"], "--count: expected a whole number >= 0, got -1"),
        (["fake-server", "--port", "99999"], "expected a whole number from 0 to 65535, got 99999"),
        (["fake-server", "--port", "http"], "expected a whole number from 0 to 65535, got 'http'"),
        (["fake-server", "--base-url", "https://api.vobiz.ai/api/v1/"], "--base-url does not"),
        (["fake-server", "--auth-id", "a/b"], "--auth-id is not usable"),
        (["download", "--out", "x", "--concurrency", "abc"], "expected a whole number >= 1"),
        (["download", "--out", "x", "--shard-size", "0"], "--shard-size: expected a whole"),
        (["list", "--limit", "ten"], "--limit: expected a whole number >= 1, got 'ten'"),
        (["demo", "--count", "1.5"], "--count: expected a whole number >= 1, got '1.5'"),
    ],
    ids=[
        "negative-count",
        "port-too-big",
        "port-word",
        "fake-base-url",
        "fake-auth-id",
        "concurrency-word",
        "zero-shard-size",
        "limit-word",
        "demo-fraction",
    ],
)
async def test_bad_argument_is_one_clear_line(
    base_env: dict[str, str], argv: list[str], expected: str
) -> None:
    """A bad argument exits 2 with a usage line and one error naming what is expected."""
    result = await finish(await start_cli(*argv, env=base_env))

    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert "_positive" not in result.err
    assert expected in result.err.splitlines()[-1], result.err


async def read_settings(proc: asyncio.subprocess.Process) -> tuple[dict[str, str], str]:
    """The `export VOBIZ_...=...` lines `fake-server` prints, and all it printed by then."""
    assert proc.stdout is not None
    settings: dict[str, str] = {}
    printed = ""
    while "VOBIZ_AUTH_TOKEN" not in settings:
        line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
        assert line, "fake-server ended early"
        printed += line
        if line.startswith("export VOBIZ_"):
            name, value = line.split()[1].split("=", 1)
            settings[name] = value
    return settings, printed


async def test_fake_server_uses_the_given_token(base_env: dict[str, str]) -> None:
    """`fake-server --auth-id/--auth-token` serves those credentials and never prints the token."""
    token = "my-own-token-7hQ2"
    proc = await start_cli(
        "fake-server", "--count", "3", "--auth-id", "MA_MINE", "--auth-token", token, env=base_env
    )
    try:
        settings, printed = await read_settings(proc)
        env = {**base_env, **settings, "VOBIZ_AUTH_TOKEN": token}
        good = await finish(await start_cli("list", "--json", env=env))
        wrong = await finish(await start_cli("list", env={**env, "VOBIZ_AUTH_TOKEN": "other"}))
    finally:
        proc.send_signal(signal.SIGINT)
        stopped = await finish(proc)

    assert settings["VOBIZ_AUTH_ID"] == "MA_MINE"
    assert token not in printed + stopped.output
    assert good.code == 0, good.err
    assert len(good.out.splitlines()) == 3
    assert wrong.code == 3, wrong.output


# -- 11: configuration errors in the CLI's words ---------------------------------------------


@pytest.mark.parametrize(
    ("drop", "argv", "expected"),
    [
        (("VOBIZ_AUTH_ID", "VOBIZ_AUTH_TOKEN"), [], "no Vobiz account id and auth token: "),
        (("VOBIZ_AUTH_TOKEN",), [], "no Vobiz auth token: "),
        (("VOBIZ_AUTH_ID",), [], "no Vobiz account id: "),
        ((), ["--auth-id", "a/b"], "--auth-id (VOBIZ_AUTH_ID) is not a valid"),
        ((), ["--base-url", "ftp://127.0.0.1/"], "--base-url (VOBIZ_BASE_URL) must be"),
    ],
    ids=["nothing", "no-token", "no-id", "bad-id", "bad-base-url"],
)
async def test_configuration_errors_name_flags_and_variables(
    env: dict[str, str], drop: tuple[str, ...], argv: list[str], expected: str
) -> None:
    """A configuration error names the CLI's flags and variables, never `auth_id`."""
    env = {k: v for k, v in env.items() if k not in drop}

    result = await finish(await start_cli("list", *argv, env=env))

    assert result.code == 3, result.output
    assert result.err.startswith("error: ConfigurationError: ")
    assert expected in result.err
    assert len(result.err.splitlines()) == 1
    for library_name in ("auth_id", "auth_token", "base_url"):
        assert library_name not in result.err
    if drop:
        assert "pass --auth-id and --auth-token, or set VOBIZ_AUTH_ID and " in result.err


# -- 8: a base URL that is not the API root ---------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/", "/v1/"])
async def test_base_url_without_api_v1_says_so(
    env: dict[str, str], fake: FakeVobiz, path: str
) -> None:
    """A base URL missing `/api/v1/` is named in the error, not only "authentication"."""
    root = fake.base_url.split("/api/v1/")[0]

    result = await finish(await start_cli("list", "--base-url", root + path, env=env))

    assert result.code == 3, result.output
    assert len(result.err.splitlines()) == 1
    assert f"the base URL's path '{path}' does not end in /api/v1/" in result.err
    assert "Traceback" not in result.output


async def test_wrong_token_under_the_right_root_has_no_path_hint(env: dict[str, str]) -> None:
    """Under the real API root a 401 is only about the credentials."""
    result = await finish(await start_cli("list", "--auth-token", "wrong", env=env))

    assert result.code == 3, result.output
    assert "AuthenticationError" in result.err
    assert "/api/v1/" not in result.err


# -- 9: credentials for an API host outside vobiz.ai -------------------------------------------

#: A host that never resolves (RFC 2606); no test sends a request to it.
FOREIGN = "https://api.example.invalid/api/v1/"


async def test_foreign_api_host_is_warned_about(base_env: dict[str, str], tmp_path: Path) -> None:
    """`--base-url` off vobiz.ai: one warning naming the host (here before any request)."""
    blocker = _blocker(tmp_path)
    env = {**base_env, "VOBIZ_AUTH_ID": "MA_X", "VOBIZ_AUTH_TOKEN": "not-sent"}

    result = await finish(
        await start_cli("download", "--out", str(blocker), "--base-url", FOREIGN, env=env)
    )

    assert result.code == 1, result.output
    warning, error = result.err.splitlines()
    assert warning == (
        "WARNING vobiz_async: the API host api.example.invalid is not under vobiz.ai; "
        "credentials will be sent to it"
    )
    assert error.startswith("error: cannot write to ")


@pytest.mark.parametrize("base_url", ["https://api.vobiz.ai/api/v1/", "http://127.0.0.1:9/api/v1/"])
def test_vobiz_and_loopback_hosts_are_not_warned_about(
    base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The default API host and a loopback one (the fake) log nothing."""
    with caplog.at_level(logging.WARNING, logger="vobiz_async"):
        AsyncSession("MA_X", "t", base_url=base_url)

    assert caplog.records == []


def test_foreign_api_host_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    """Two sessions for the same foreign origin log one warning."""
    url = "https://once.example.invalid:8443/api/v1/"
    with caplog.at_level(logging.WARNING, logger="vobiz_async"):
        AsyncSession("MA_X", "t", base_url=url)
        AsyncSession("MA_X", "t", base_url=url)

    assert [r.getMessage() for r in caplog.records] == [
        "the API host once.example.invalid is not under vobiz.ai; credentials will be sent to it"
    ]


# -- 7: the demo says what it verified, and where the files are ------------------------------


async def test_demo_rerun_claims_only_what_it_verified(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """A second demo into the same folder downloads 0 and says 0 were verified this run."""
    out = tmp_path / "demo"
    first = await finish(await start_cli("demo", "--count", "20", "--out", str(out), env=base_env))
    second = await finish(await start_cli("demo", "--count", "20", "--out", str(out), env=base_env))

    assert first.code == 0, first.output
    assert "verified this run: 20 of the 20 files downloaded match the served bytes" in first.out
    assert second.code == 0, second.output
    assert "downloaded 0, skipped 20, failed 0" in second.out
    assert "verified this run: 0 of the 0 files downloaded match" in second.out
    assert "verified the archive: 20 files re-hashed" in second.out
    assert f"the files are kept in {out}" in second.out


async def test_demo_without_out_removes_its_folder_and_says_so(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """`demo` without `--out` works in a temporary folder, then removes it and says so."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()

    result = await finish(
        await start_cli("demo", "--count", "5", env={**base_env, "TMPDIR": str(scratch)})
    )

    assert result.code == 0, result.output
    [folder] = [line.split()[-1] for line in result.out.splitlines() if line.startswith("demo:")]
    assert folder.startswith(str(scratch))
    assert f"removed the temporary folder {folder} (pass --out DIR to keep" in result.out
    assert not any(scratch.iterdir())


# -- 10: honest progress and summary -----------------------------------------------------------


def _human(count: float) -> str:
    """The CLI's byte formatting, restated: a test of the rate must not call the code under test."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def summary_line(result: Result) -> str:
    return next(line for line in result.out.splitlines() if line.startswith("downloaded "))


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


async def wait_for_bytes(part: Path, proc: asyncio.subprocess.Process, at_least: int) -> None:
    """Return once `part` holds `at_least` bytes."""
    for _ in range(600):
        if await asyncio.to_thread(size_of, part) >= at_least:
            return
        assert proc.returncode is None, "the download ended before it could be interrupted"
        await asyncio.sleep(0.05)
    raise AssertionError(f"{part.name} never reached {at_least} bytes")


async def test_resumed_run_counts_only_the_bytes_it_transferred(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """After Ctrl-C (one `interrupted` line) the re-run's summary counts the bytes it moved,
    not the resumed `.part` file's, and names the files' size apart."""
    out = tmp_path / "archive"
    async with FakeVobiz(recordings=2, seed=3) as fake:
        big = fake.add_recording(size=240_000).recording_id  # about 3 s at the "slow" rate
        fake.media_fault(big, "slow")
        env = {
            **base_env,
            "VOBIZ_AUTH_ID": fake.auth_id,
            "VOBIZ_AUTH_TOKEN": fake.auth_token,
            "VOBIZ_BASE_URL": fake.base_url,
        }
        proc = await start_cli("download", "--out", str(out), env=env)
        await wait_for_bytes(out / f"{big}.part", proc, at_least=120_000)
        proc.send_signal(signal.SIGINT)
        interrupted = await finish(proc)
        kept = (out / f"{big}.part").stat().st_size

        sent_before = fake.stats.media_bytes_sent
        rerun = await finish(await start_cli("download", "--out", str(out), env=env))
        sent = fake.stats.media_bytes_sent - sent_before

    assert interrupted.code == 130, interrupted.output
    assert [line for line in interrupted.err.splitlines() if "interrupted" in line] == [
        interrupted.err.strip()
    ]
    assert interrupted.err.startswith("interrupted; partial downloads are kept")
    assert kept >= 120_000
    assert rerun.code == 0, rerun.output
    line = summary_line(rerun)
    assert line.startswith("downloaded 1, skipped 2, failed 0; ")
    assert f"; {_human(sent)} transferred in " in line
    assert line.endswith(f", {_human(fake.size(big))} in the files downloaded")
    assert sent < fake.size(big)


async def test_every_item_failed_does_not_fill_the_bar(
    env: dict[str, str], fake: FakeVobiz, tmp_path: Path
) -> None:
    """With every transfer failing, the bar on a terminal ends at 0/N with N failed in red."""
    from test_cli import run_on_tty

    for rid in fake.recording_ids:
        fake.media_fault(rid, "status", status=403, times=99, retry_after=0)
    count = len(fake.recording_ids)

    result, screen = await run_on_tty(
        "download", "--out", str(tmp_path / "a"), env=env, attach="stderr"
    )

    assert result.code == 1, screen.decode(errors="replace")
    assert f"0/{count}".encode() in screen
    assert f"{count} failed".encode() in screen
    assert f"{count}/{count}".encode() not in screen


# -- 12: repairing an archive ------------------------------------------------------------------


def corrupt(path: Path) -> None:
    """Flip one byte in the middle of `path`, keeping its size."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def archived(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.iterdir() if p.suffix in (".mp3", ".wav")}


def mtimes(folder: Path) -> dict[str, int]:
    return {rid: p.stat().st_mtime_ns for rid, p in archived(folder).items()}


async def test_repair_refetches_exactly_what_verify_found(
    cli: Cli, fake: FakeVobiz, tmp_path: Path
) -> None:
    """Plain `download` skips a same-size corrupted file; `verify` says how to repair, and
    `download --repair` re-fetches exactly it and a deleted one, touching nothing else."""
    out = tmp_path / "archive"
    assert (await cli("download", "--out", str(out))).code == 0
    changed, gone = fake.recording_ids[3], fake.recording_ids[7]
    files = await asyncio.to_thread(archived, out)
    await asyncio.to_thread(corrupt, files[changed])
    skipped = await cli("download", "--out", str(out))
    await asyncio.to_thread(files[gone].unlink)
    before = await asyncio.to_thread(mtimes, out)

    check = await cli("verify", str(out))
    fake.stats.reset()
    repair = await cli("download", "--out", str(out), "--repair")
    media = fake.stats.media_requests
    again = await cli("verify", str(out))

    assert skipped.code == 0, skipped.output
    assert f"downloaded 0, skipped {len(fake.recording_ids)}, failed 0; " in skipped.out
    assert check.code == 1
    assert f"to re-fetch them: vobiz-recordings download --out {out} --repair" in check.out
    assert repair.code == 0, repair.output
    repaired = [line.split()[1] for line in repair.out.splitlines() if line.startswith("repair")]
    assert sorted(repaired) == sorted([f"{changed}:", f"{gone}:"])
    assert "downloaded 2, skipped 0, failed 0; " in repair.out
    assert media == 2
    assert again.code == 0, again.output
    after = await asyncio.to_thread(mtimes, out)
    assert {rid: m for rid, m in after.items() if rid != changed and rid != gone} == {
        rid: m for rid, m in before.items() if rid != changed
    }
    for rid, path in (await asyncio.to_thread(archived, out)).items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == fake.sha256(rid)


async def test_repair_of_a_sound_archive_fetches_nothing(
    cli: Cli, fake: FakeVobiz, tmp_path: Path
) -> None:
    """`download --repair` on an archive that verifies: says so, exit 0, no media request."""
    out = tmp_path / "archive"
    assert (await cli("download", "--out", str(out))).code == 0
    fake.stats.reset()

    result = await cli("download", "--out", str(out), "--repair")

    assert result.code == 0, result.output
    assert (
        f"repair: all {len(fake.recording_ids)} files in vobiz-manifest.jsonl verified"
        in result.out
    )
    assert fake.stats.media_requests == 0


@pytest.mark.parametrize(
    "extra",
    [[], ["--ids", "x"], ["--overwrite"], ["--no-manifest"]],
    ids=["no-manifest-yet", "ids", "overwrite", "no-manifest-flag"],
)
async def test_repair_usage_errors(cli: Cli, tmp_path: Path, extra: list[str]) -> None:
    """`--repair` without a manifest, or with options it overrides: exit 2, one line."""
    result = await cli("download", "--out", str(tmp_path / "a"), "--repair", *extra)

    assert result.code == 2, result.output
    assert len(result.err.splitlines()) == 1
    assert "--repair" in result.err
    assert "Traceback" not in result.output


# -- the listing's unusable objects reach the report ------------------------------------------


async def test_download_reports_an_unusable_listed_object(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """A listed object without a usable recording_url fails by id in the CLI's summary too."""
    async with FakeVobiz(recordings=3, seed=0) as fake:
        broken = fake.add_recording(size=20_000, extra_fields={"recording_url": None}).recording_id
        env = {
            **base_env,
            "VOBIZ_AUTH_ID": fake.auth_id,
            "VOBIZ_AUTH_TOKEN": fake.auth_token,
            "VOBIZ_BASE_URL": fake.base_url,
        }
        result = await finish(await start_cli("download", "--out", str(tmp_path / "a"), env=env))

    assert result.code == 1, result.output
    assert "downloaded 3, skipped 0, failed 1; " in result.out
    assert f"failed {broken}: " in result.out
    assert "Traceback" not in result.output


def has_a_file_below(folder: Path) -> bool:
    return any(path.is_file() for path in folder.rglob("*"))


async def test_interrupted_demo_removes_its_folder_and_says_so(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """Ctrl-C during `demo` without `--out`: exit 130, one `interrupted` line that does not
    promise kept `.part` files, and the temporary folder removed."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**base_env, "TMPDIR": str(scratch)}
    proc = await start_cli("demo", "--count", "300", "--concurrency", "1", env=env)
    for _ in range(600):
        if await asyncio.to_thread(has_a_file_below, scratch):
            break
        assert proc.returncode is None, "the demo ended before it could be interrupted"
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    result = await finish(proc)

    assert result.code == 130, result.output
    assert [line for line in result.err.splitlines() if "interrupted" in line] == ["interrupted"]
    assert ".part" not in result.err
    assert "removed the temporary folder" in result.out
    assert not any(scratch.iterdir())
