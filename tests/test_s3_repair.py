"""An S3 object overwritten after archiving (issue 22, item 6): a re-run with the index
fetches it again, and `download --repair` repairs it, as for folders. The command line in a
subprocess, FakeVobiz for media and moto on 127.0.0.1 for S3."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import run_cli, summary
from test_download_s3 import _endpoint, cli_env, media_gets
from test_s3_sink import _admin, _aws_env, _bucket, keys  # fixtures (moto_url: conftest)

from vobiz_async.testing import FakeVobiz

__all__ = ["_admin", "_aws_env", "_bucket", "_endpoint"]  # fixtures, imported for use here


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=0) as fake:
        for _ in range(4):
            fake.add_recording(size=30_000)
        yield fake


@pytest.fixture(name="archived")
async def _archived(fake: FakeVobiz, bucket: str, tmp_path: Path) -> tuple[str, str]:
    """Every recording archived into the bucket with an index: (destination, index path)."""
    dest, index = f"s3://{bucket}/calls/", str(tmp_path / "index.sqlite")
    done = await run_cli("download", "--out", dest, "--index", index, env=cli_env(fake))
    assert done.code == 0, done.output
    return dest, index


def key_of(rid: str) -> str:
    return f"calls/{rid}.mp3"


def overwrite(admin: Any, bucket: str, rid: str, fake: FakeVobiz, *, keep_metadata: bool) -> None:
    """Other bytes of the same length under the recording's key, with or without the
    archived object's metadata (its sha256 then lies)."""
    body = bytearray(fake.body(rid))
    body[-1] ^= 0xFF
    metadata = admin.head_object(Bucket=bucket, Key=key_of(rid))["Metadata"]
    admin.put_object(
        Bucket=bucket, Key=key_of(rid), Body=bytes(body), Metadata=metadata if keep_metadata else {}
    )


def assert_intact(admin: Any, bucket: str, fake: FakeVobiz) -> None:
    for rid in fake.recording_ids:
        body = admin.get_object(Bucket=bucket, Key=key_of(rid))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == fake.sha256(rid), rid


async def test_rerun_fetches_an_overwritten_object_again(
    fake: FakeVobiz, bucket: str, admin: Any, archived: tuple[str, str]
) -> None:
    """A re-run with the index fetches the object whose bytes no longer match it (same size,
    no sha256 metadata), and only that one."""
    dest, index = archived
    victim = fake.recording_ids[1]
    overwrite(admin, bucket, victim, fake, keep_metadata=False)
    before = media_gets(fake)

    again = await run_cli("download", "--out", dest, "--index", index, env=cli_env(fake))

    assert again.code == 0, again.output
    assert summary(again).startswith("downloaded 1, skipped 3, failed 0"), again.out
    assert media_gets(fake) == before + 1
    assert_intact(admin, bucket, fake)
    verified = await run_cli("verify", dest, "--manifest", index, env=cli_env(fake))
    assert verified.code == 0, verified.output


async def test_repair_refetches_changed_and_missing_objects(
    fake: FakeVobiz, bucket: str, admin: Any, archived: tuple[str, str]
) -> None:
    """`download --repair` with the index re-fetches an object whose bytes changed (its
    sha256 metadata kept, so only a re-hash sees it) and one deleted, nothing else."""
    dest, index = archived
    changed, deleted = fake.recording_ids[0], fake.recording_ids[2]
    overwrite(admin, bucket, changed, fake, keep_metadata=True)
    admin.delete_object(Bucket=bucket, Key=key_of(deleted))
    before = media_gets(fake)

    repaired = await run_cli(
        "download", "--out", dest, "--index", index, "--repair", env=cli_env(fake)
    )

    assert repaired.code == 0, repaired.output
    assert f"repairing {changed}:" in repaired.out
    assert f"repairing {deleted}:" in repaired.out
    assert summary(repaired).startswith("downloaded 2, skipped 0, failed 0"), repaired.out
    assert media_gets(fake) == before + 2
    assert_intact(admin, bucket, fake)
    verified = await run_cli("verify", dest, "--manifest", index, env=cli_env(fake))
    assert verified.code == 0, verified.output


async def test_repair_without_an_index_uses_the_metadata(
    fake: FakeVobiz, bucket: str, admin: Any, archived: tuple[str, str]
) -> None:
    """Without `--index`, `--repair` re-fetches the objects whose bytes disagree with their
    own sha256 metadata; a file in the prefix that is not a recording is left alone."""
    dest, _ = archived
    changed = fake.recording_ids[3]
    overwrite(admin, bucket, changed, fake, keep_metadata=True)
    admin.put_object(Bucket=bucket, Key="calls/notes.txt", Body=b"not a recording")
    before = media_gets(fake)

    repaired = await run_cli("download", "--out", dest, "--repair", env=cli_env(fake))

    assert repaired.code == 0, repaired.output
    assert summary(repaired).startswith("downloaded 1, skipped 0, failed 0"), repaired.out
    assert media_gets(fake) == before + 1
    assert_intact(admin, bucket, fake)
    assert "calls/notes.txt" in keys(admin, bucket)


async def test_repair_of_an_intact_archive_fetches_nothing(
    fake: FakeVobiz, archived: tuple[str, str]
) -> None:
    """`--repair` over an intact bucket says so, exits 0 and fetches nothing."""
    dest, index = archived
    before = media_gets(fake)

    repaired = await run_cli(
        "download", "--out", dest, "--index", index, "--repair", env=cli_env(fake)
    )

    assert repaired.code == 0, repaired.output
    assert "nothing to fetch" in repaired.out
    assert media_gets(fake) == before
