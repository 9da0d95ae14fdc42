"""The CLI says exactly what it did (issue 26): conflicting flags, `--ids-file`, exit codes,
`--help`, one wording ("index"), `verify`, `--json` on failure, `serve --public-url`, the
recording types, the table's zone and `get` on a terminal. The real entry point in a
subprocess against FakeVobiz on 127.0.0.1, unless a test says otherwise."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _waiting import eventually
from test_cli import Result, env_for, run_cli, run_on_tty, saved

from vobiz_async.cli import main
from vobiz_async.manifest import MANIFEST_NAME
from vobiz_async.testing import FakeVobiz

Cli = Callable[..., Awaitable[Result]]


@pytest.fixture(name="base_env")
def _base_env() -> dict[str, str]:
    """This process's environment without any VOBIZ_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=6, seed=3) as fake:
        yield fake


@pytest.fixture(name="env")
def _env(base_env: dict[str, str], fake: FakeVobiz) -> dict[str, str]:
    return env_for(base_env, fake)


@pytest.fixture(name="cli")
def _cli(env: dict[str, str]) -> Cli:
    async def cli(*args: str, stdin: bytes | None = None) -> Result:
        return await run_cli(*args, env=env, stdin=stdin)

    return cli


@pytest.fixture(name="out")
def _out(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture(name="busy_port")
def _busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 this test holds open."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_index_name_is_the_manifests() -> None:
    """The parser's copy of the index file name (kept to spare `--help` an import) holds."""
    from vobiz_async.cli.parser import INDEX_NAME

    assert INDEX_NAME == MANIFEST_NAME


# -- conflicting flags ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["download", "--out", "{out}", "--ids", "a", "--recording-type", "call"], "--ids"),
        (["download", "--out", "{out}", "--ids", "a", "--call-uuid", "u"], "--call-uuid"),
        (["download", "--out", "{out}", "--ids-file", "-", "--call-uuid", "u"], "--ids-file"),
        (["download", "--out", "{out}", "--no-index", "--index", "{out}/i"], "--no-index"),
        (["download", "--out", "{out}", "--no-manifest", "--index", "{out}/i"], "--no-index"),
        (["download", "--out", "{out}", "--ray-address", "auto"], "--engine ray"),
        (["download", "--out", "{out}", "--shard-size", "10"], "--shard-size"),
        (["download", "--out", "{out}", "--s3-region", "eu-west-1"], "--s3-region"),
        (["verify", "{out}", "--s3-endpoint-url", "http://127.0.0.1:9"], "--s3-endpoint-url"),
    ],
    ids=[
        "ids-type",
        "ids-call",
        "ids-file-call",
        "no-index-index",
        "no-manifest-index",
        "ray-address",
        "shard-size",
        "s3-folder",
        "verify-s3-folder",
    ],
)
async def test_conflicting_flags_are_one_line_and_exit_2(
    cli: Cli, fake: FakeVobiz, out: Path, argv: list[str], named: str
) -> None:
    """Options that contradict each other: exit 2, one line naming them, no request made."""
    result = await cli(*(arg.replace("{out}", str(out)) for arg in argv))

    assert result.code == 2, result.output
    assert len(result.err.splitlines()) == 1, result.err
    assert named in result.err
    assert not any(r.operation in ("list", "media") for r in fake.stats.requests)
    assert not saved(out)


# -- --ids-file ----------------------------------------------------------------------------


async def test_ids_file_takes_a_bom_blank_lines_and_comments(
    cli: Cli, fake: FakeVobiz, out: Path, tmp_path: Path
) -> None:
    """A BOM, blank lines and `#` comments (whole-line or trailing) are not ids."""
    first, second = fake.recording_ids[:2]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"\ufeff# wanted today\n{first}\n\n   \n{second}  # the second\n", "utf-8")

    result = await cli("download", "--out", str(out), "--ids-file", str(ids))

    assert result.code == 0, result.output
    assert sorted(saved(out)) == sorted([first, second])


async def test_ids_file_bad_line_names_its_number(cli: Cli, out: Path, tmp_path: Path) -> None:
    """A line that cannot be an id: exit 2, one line naming the file and the line number."""
    ids = tmp_path / "ids.txt"
    ids.write_text("# header\ngood-id\n../etc/passwd\n", "utf-8")

    result = await cli("download", "--out", str(out), "--ids-file", str(ids))

    assert result.code == 2, result.output
    assert len(result.err.splitlines()) == 1, result.err
    assert f"{ids} line 3" in result.err


# -- exit codes and --help -----------------------------------------------------------------


async def test_a_connection_that_cannot_be_made_says_so(cli: Cli, busy_port: int) -> None:
    """Nothing answering at the base URL: exit 1, one line saying the connection failed."""
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/api/v1/"

        result = await cli("list", "--base-url", url)

    assert result.code == 1, result.output
    assert len(result.err.splitlines()) == 1, result.err
    assert result.err.startswith("error: cannot connect to Vobiz: ")


COMMANDS = [
    ["list"],
    ["get"],
    ["delete"],
    ["download"],
    ["verify"],
    ["index"],
    ["index", "export"],
    ["demo"],
    ["serve"],
    ["fake-server"],
    [],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "top" for c in COMMANDS])
def test_help_ends_with_exit_codes_and_two_examples(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command's `--help` ends with the exit codes and two examples."""
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])

    assert done.value.code == 0
    text = capsys.readouterr().out
    tail = text.rstrip("\n").splitlines()
    assert tail[-3] == "examples:"
    assert all(line.startswith("  vobiz-recordings ") for line in tail[-2:])
    codes = text[text.index("exit codes:") :]
    for code in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {code}" in codes


def test_help_says_index_and_hides_the_old_names(capsys: pytest.CaptureFixture[str]) -> None:
    """`--no-index` and `verify --index` are shown; `--no-manifest`, `--manifest` are not."""
    for command in (["download"], ["verify"], ["demo"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        assert "manifest" not in text.replace(MANIFEST_NAME, ""), text
    with pytest.raises(SystemExit):
        main(["download", "--help"])
    assert "--no-index" in capsys.readouterr().out


async def test_old_flag_names_still_work(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """`--no-manifest` and `verify --manifest`, the old names, are hidden aliases."""
    plain = await cli("download", "--out", str(out / "a"), "--no-manifest")
    assert plain.code == 0, plain.output
    assert not (out / "a" / MANIFEST_NAME).exists()

    indexed = await cli("download", "--out", str(out / "b"), "--index", str(out / "b.db"))
    assert indexed.code == 0, indexed.output
    checked = await cli("verify", str(out / "b"), "--manifest", str(out / "b.db"))
    assert checked.code == 0, checked.output


# -- errors name what they concern ---------------------------------------------------------


async def test_get_missing_names_the_id(cli: Cli) -> None:
    """`get MISSING`: exit 1, one line with the id in it."""
    result = await cli("get", "no-such-recording-42")

    assert result.code == 1, result.output
    assert len(result.err.splitlines()) == 1, result.err
    assert "'no-such-recording-42'" in result.err


async def test_busy_port_is_named(base_env: dict[str, str], busy_port: int) -> None:
    """`fake-server --port P` with P taken: exit 1, "port P is in use", no traceback."""
    result = await run_cli("fake-server", "--port", str(busy_port), env=base_env)

    assert result.code == 1, result.output
    assert len(result.err.splitlines()) == 1, result.err
    assert f"port {busy_port} is in use" in result.err


async def test_serve_busy_port_is_named(cli: Cli, out: Path, busy_port: int) -> None:
    """`serve --listen 127.0.0.1:P` with P taken: exit 1, "port P is in use"."""
    result = await cli(
        "serve",
        "--listen",
        f"127.0.0.1:{busy_port}",
        "--public-url",
        "https://hooks.example.test/vobiz",
        "--out",
        str(out),
    )

    assert result.code == 1, result.output
    assert f"port {busy_port} is in use" in result.err
    assert "Traceback" not in result.output


# -- verify --------------------------------------------------------------------------------


async def test_verify_without_an_index_names_the_command_that_builds_one(
    cli: Cli, tmp_path: Path
) -> None:
    """A folder without an index: exit 2, and the line says `download --out DIR` builds one."""
    result = await cli("verify", str(tmp_path))

    assert result.code == 2, result.output
    assert f"vobiz-recordings download --out {tmp_path}" in result.err


async def test_verify_names_files_the_index_does_not_know(
    cli: Cli, fake: FakeVobiz, out: Path
) -> None:
    """An audio file in the folder but not in the index is reported, and fails the check."""
    assert (await cli("download", "--out", str(out))).code == 0
    (out / "stray.mp3").write_bytes(b"ID3 nobody indexed me")

    result = await cli("verify", str(out))

    assert result.code == 1, result.output
    assert "not in index: stray.mp3" in result.out
    assert "1 file(s) the index does not know" in result.out


async def test_verify_json_is_one_object(cli: Cli, fake: FakeVobiz, out: Path) -> None:
    """`verify --json`: one object, `checked` and `problems` (each with `kind` and `id`)."""
    assert (await cli("download", "--out", str(out))).code == 0
    victim = saved(out)[fake.recording_ids[0]]
    victim.unlink()

    result = await cli("verify", str(out), "--json")

    assert result.code == 1, result.output
    (line,) = result.out.splitlines()
    report = json.loads(line)
    assert report["checked"] == len(fake.recording_ids)
    assert report["problems"] == [
        {"kind": "missing", "id": fake.recording_ids[0], "path": victim.name}
    ]


# -- --json, also on failure ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["download", "--out", "{out}", "--json", "--auth-token", "wrong-token-9"], 3),
        (["list", "--json", "--auth-token", "wrong-token-9"], 3),
        (["get", "missing-id", "--json"], 1),
        (["verify", "{out}", "--json"], 2),
        (["list", "--json", "--limit", "0"], 2),
        (["download", "--out", "{out}", "--json", "--ids", "a", "--call-uuid", "u"], 2),
        (["delete", "--json", "--yes", "missing-id"], 1),
    ],
    ids=[
        "download-auth",
        "list-auth",
        "get-missing",
        "verify-no-index",
        "argparse",
        "conflict",
        "delete-missing",
    ],
)
async def test_json_failure_is_one_object_on_stdout(
    cli: Cli, out: Path, argv: list[str], code: int
) -> None:
    """With `--json`, a failure ends stdout with one object holding `error` and `exit_code`
    (the token never in it)."""
    result = await cli(*(arg.replace("{out}", str(out)) for arg in argv))

    assert result.code == code, result.output
    last = json.loads(result.out.splitlines()[-1])
    if "exit_code" in last:
        assert last["exit_code"] == code
        assert last["error"]
    else:  # delete's own summary: the failure listed by id
        assert last["failed"][0]["id"] == "missing-id"
    assert "wrong-token-9" not in result.output


async def test_delete_json_summary(cli: Cli, fake: FakeVobiz) -> None:
    """`delete --json`: one object naming what was deleted and what failed."""
    rid = fake.recording_ids[0]

    result = await cli("delete", "--yes", "--json", rid)

    assert result.code == 0, result.output
    assert json.loads(result.out) == {"deleted": [rid], "failed": []}


# -- serve, recording types ----------------------------------------------------------------


async def test_serve_refuses_an_http_public_url(cli: Cli, out: Path) -> None:
    """An `http://` `--public-url`: exit 2 naming `--allow-http-public-url`; with the flag,
    serve goes on (here to the credential check, refused: exit 3)."""
    argv = ["serve", "--public-url", "http://hooks.example.test/vobiz", "--out", str(out)]

    refused = await cli(*argv)
    allowed = await cli(*argv, "--allow-http-public-url", "--auth-token", "wrong-token-9")

    assert refused.code == 2, refused.output
    assert "--allow-http-public-url" in refused.err
    assert allowed.code == 3, allowed.output


@pytest.mark.parametrize(
    "argv", [["list", "--recording-type", "bogus"], ["download", "--recording-type", "cal"]]
)
async def test_an_undocumented_recording_type_warns_once(
    cli: Cli, out: Path, argv: list[str]
) -> None:
    """A recording type outside call, conference, trunk: one warning naming them."""
    result = await cli(*argv, *(["--out", str(out)] if argv[0] == "download" else []))

    assert result.code == 0, result.output
    warnings = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.err
    assert "call, conference, trunk" in warnings[0]


# -- on a terminal -------------------------------------------------------------------------


async def test_list_table_shows_add_time_in_utc(base_env: dict[str, str]) -> None:
    """The table's ADDED column is in UTC (the API answers in +05:30), or local with --local."""
    async with FakeVobiz(recordings=0, seed=0) as fake:
        fake.add_recording("r1", add_time="2026-03-01 04:00:00+05:30")
        env = env_for(base_env, fake, TZ="America/New_York")

        result, screen = await run_on_tty("list", env=env, attach="stdout")
        _, local = await run_on_tty("list", "--local", env=env, attach="stdout")

    assert result.code == 0, result.err
    header, row = screen.decode().splitlines()
    assert "ADDED (UTC)" in header
    assert "2026-02-28 22:30:00" in row
    assert "2026-02-28 17:30:00" in local.decode()


async def test_get_on_a_terminal_shows_every_field(env: dict[str, str], fake: FakeVobiz) -> None:
    """`get ID` on a terminal: one line per field of the recording, none left out."""
    rid = fake.recording_ids[0]

    result, screen = await run_on_tty("get", rid, env=env, attach="stdout")

    assert result.code == 0, result.err
    shown = {line.split()[0] for line in screen.decode().splitlines()}
    assert {"recording_id", "add_time", "call_uuid", "recording_storage_rate", "api_id"} <= shown


# -- the fake server -----------------------------------------------------------------------


async def test_fake_logs_a_client_that_goes_away_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that resets its connection mid-body: one warning line, no traceback."""
    async with FakeVobiz(recordings=0, seed=0) as fake:
        rid = fake.add_recording(size=64 * 1024 * 1024).recording_id
        url = urlsplit(fake.recording_url(rid))
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        credentials = f"X-Auth-ID: {fake.auth_id}\r\nX-Auth-Token: {fake.auth_token}\r\n"
        writer.write(f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n{credentials}\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()  # with SO_LINGER 0: a reset, as a killed process leaves

        assert await eventually(lambda: fake.stats.media_in_flight == 0)

    assert not [r for r in caplog.records if r.exc_info], caplog.text
    gone = [r.getMessage() for r in caplog.records if "went away" in r.getMessage()]
    assert gone == [f"client 127.0.0.1 went away during GET {url.path}"]
