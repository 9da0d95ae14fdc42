"""Destinations are what they look like (issue 22, item 6): `s3://` in any case is object
storage; any other URL-like destination is refused with one line (exit 2 from the command
line, `ConfigurationError` from the library) and creates nothing; a folder whose name merely
contains a colon is still a folder. Moto on 127.0.0.1 for the one S3 run."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _procs import default_sigint
from test_cli import Result, finish
from test_s3_sink import _admin, _aws_env, _bucket, keys  # fixtures (moto_url: conftest)

from vobiz_async import ConfigurationError
from vobiz_async.sinks import DirectorySink, S3Sink, s3_destination, sink_for
from vobiz_async.testing import FakeVobiz

__all__ = ["_admin", "_aws_env", "_bucket"]  # fixtures, imported for use here

LOOKALIKES = [
    "S3:/bucket/p",
    "s3:/bucket/p",
    "s3:bucket/p",
    "gs://bucket/p/",
    "https://bucket.s3.amazonaws.com/p/",
    "file:///tmp/archive",
    "archive:2026",
]
#: Each command that takes a destination, with the destination's place marked.
COMMANDS = [
    ("download", "--out", "{}"),
    ("verify", "{}"),
    (
        "serve",
        "--public-url",
        "https://hooks.example/vobiz",
        "--listen",
        "127.0.0.1:0",
        "--out",
        "{}",
    ),
    ("demo", "--count", "1", "--out", "{}"),
]


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=3, seed=5) as fake:
        yield fake


async def run_in(cwd: Path, *args: str, env: dict[str, str]) -> Result:
    """`python -m vobiz_async ARGS...` run in `cwd`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    return await finish(proc)


def cli_env(fake: FakeVobiz) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")},
        "VOBIZ_AUTH_ID": fake.auth_id,
        "VOBIZ_AUTH_TOKEN": fake.auth_token,
        "VOBIZ_BASE_URL": fake.base_url,
    }


@pytest.mark.parametrize(
    ("dest", "expected"),
    [
        ("s3://bucket/p/", "s3://bucket/p/"),
        ("S3://Bucket/p/", "s3://Bucket/p/"),
        ("s3://MyBucket", "s3://MyBucket"),
        ("./a:b", None),
        ("a:b", None),  # one letter: a drive, so a folder
        ("C:/archive", None),
        ("C:\\archive", None),
        ("/data/a:b", None),
        ("dir/s3://x", None),
        ("archive", None),
    ],
)
def test_s3_destination(dest: str, expected: str | None) -> None:
    """`s3://` in any case names object storage (scheme lower-cased, bucket as given);
    paths, colons later in them and drive letters are folders."""
    assert s3_destination(dest) == expected


@pytest.mark.parametrize("dest", LOOKALIKES)
def test_lookalike_refused_by_sink_for(
    dest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sink_for` refuses a URL-like destination it cannot write to, naming it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="s3://bucket/prefix/"):
        sink_for(dest)
    assert os.listdir(tmp_path) == []


def test_userinfo_and_query_never_shown() -> None:
    """The refusal never repeats a URL's credentials or signed query."""
    with pytest.raises(ConfigurationError) as caught:
        sink_for("https://user:hunter2@bucket.s3.amazonaws.com/p/?X-Amz-Signature=deadbeef")
    assert "hunter2" not in str(caught.value)
    assert "deadbeef" not in str(caught.value)
    assert "https://bucket.s3.amazonaws.com/p/" in str(caught.value)


def test_sink_for_kinds() -> None:
    """`S3://` is an S3Sink with the bucket as given; a colon inside a path is a folder."""
    sink = sink_for("S3://Bucket-1/calls/")
    assert isinstance(sink, S3Sink)
    assert (sink.bucket, sink.prefix) == ("Bucket-1", "calls/")
    assert isinstance(sink_for("./a:b"), DirectorySink)
    assert isinstance(sink_for(Path("gs://bucket")), DirectorySink)  # a Path is a folder


@pytest.mark.parametrize("dest", LOOKALIKES)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
async def test_lookalike_destination_exits_2_creating_nothing(
    dest: str, command: tuple[str, ...], fake: FakeVobiz, tmp_path: Path
) -> None:
    """Every command taking a destination refuses a lookalike: exit 2, one line, nothing
    created in the working folder, no request to Vobiz."""
    before = sorted(os.listdir(tmp_path))
    args = [part.format(dest) for part in command]

    result = await run_in(tmp_path, *args, env=cli_env(fake))

    assert result.code == 2, result.output
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "s3://bucket/prefix/" in lines[0]
    assert sorted(os.listdir(tmp_path)) == before
    assert fake.stats.api_requests == 0


async def test_uppercase_s3_scheme_archives_into_the_bucket(
    fake: FakeVobiz, bucket: str, admin: Any, moto_url: str, tmp_path: Path
) -> None:
    """`download --out S3://bucket/p/` archives into the bucket, not a local folder."""
    env = {**cli_env(fake), "AWS_ENDPOINT_URL": moto_url}

    result = await run_in(tmp_path, "download", "--out", f"S3://{bucket}/p/", env=env)

    assert result.code == 0, result.output
    stored = sorted(key.rpartition(".")[0] for key in keys(admin, bucket))
    assert stored == sorted(f"p/{rid}" for rid in fake.recording_ids)
    assert os.listdir(tmp_path) == []
