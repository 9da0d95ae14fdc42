"""`download_many` into object storage: the embedded fake for media, moto on 127.0.0.1 for S3.

The sink's own contract (parts, checksums, budget, faults on the S3 side) is tested in
`test_s3_sink.py`; these tests take the public road: `download_many(source, "s3://...")`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_cli import run_cli, summary
from test_s3_sink import (  # the fake AWS environment and helpers (moto_url: conftest)
    SECRET,
    _admin,
    _aws_env,
    _bucket,
    incomplete_uploads,
    keys,
)

from vobiz_async import AsyncSession, BucketNotFoundError, DownloadStatus, Recording
from vobiz_async.sinks import S3Sink
from vobiz_async.testing import FakeVobiz

__all__ = ["_admin", "_aws_env", "_bucket"]  # fixtures, imported for use here

MiB = 1024 * 1024


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=0) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _endpoint(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)


def media_gets(fake: FakeVobiz) -> int:
    return sum(1 for r in fake.stats.requests if r.operation in ("media", "storage"))


async def test_download_many_into_s3(
    fake: FakeVobiz, session: AsyncSession, bucket: str, admin: Any
) -> None:
    """`s3://bucket/prefix/` archives every listed recording, verified, with its sha256 in
    the object's metadata and `location` naming the object; a re-run fetches nothing."""
    rids = [fake.add_recording(size=40_000 + i).recording_id for i in range(6)]
    dest = f"s3://{bucket}/vobiz/"

    report = await session.recordings.download_many(session.recordings.list(), dest)

    assert report.ok, [str(r.error) for r in report.failed]
    assert sorted(r.recording_id for r in report.downloaded) == sorted(rids)
    for result in report.downloaded:
        key = f"vobiz/{result.recording_id}.mp3"
        assert result.location == f"s3://{bucket}/{key}"
        assert result.path is None
        got = admin.get_object(Bucket=bucket, Key=key)
        assert hashlib.sha256(got["Body"].read()).hexdigest() == fake.sha256(result.recording_id)
        assert got["Metadata"]["sha256"] == fake.sha256(result.recording_id)
    before = media_gets(fake)

    again = await session.recordings.download_many(session.recordings.list(), dest)

    assert len(again.skipped) == 6
    assert media_gets(fake) == before
    assert {r.location for r in again.skipped} == {r.location for r in report.downloaded}


async def test_a_dropped_media_connection_resumes_into_the_same_upload(
    fake: FakeVobiz, session: AsyncSession, bucket: str, admin: Any
) -> None:
    """A 12 MB recording whose connection drops halfway completes as one whole object."""
    rid = fake.add_recording(size=12 * MiB).recording_id
    fake.media_fault(rid, "drop")
    sink = S3Sink(bucket, prefix="p/", part_size=5 * MiB)
    rec = Recording.from_dict(fake.recordings[rid].wire())

    result = await session.recordings.download(rec, sink)

    assert result.status is DownloadStatus.DOWNLOADED, result.error
    assert result.attempts == 2
    body = admin.get_object(Bucket=bucket, Key=f"p/{rid}.mp3")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == fake.sha256(rid)
    assert incomplete_uploads(admin, bucket) == []


async def test_a_source_that_fails_for_good_leaves_nothing(
    fake: FakeVobiz, session: AsyncSession, bucket: str, admin: Any
) -> None:
    """Media that breaks off every time: the item fails, and the bucket has neither an
    object nor an incomplete upload."""
    rid = fake.add_recording(size=12 * MiB).recording_id
    fake.media_fault(rid, "drop", times=10)
    sink = S3Sink(bucket, part_size=5 * MiB)
    rec = Recording.from_dict(fake.recordings[rid].wire())

    result = await session.recordings.download(rec, sink, max_attempts=2)

    assert result.status is DownloadStatus.FAILED
    assert keys(admin, bucket) == []
    assert incomplete_uploads(admin, bucket) == []


async def test_a_missing_bucket_fails_the_batch_in_one_line(
    fake: FakeVobiz, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing bucket: no media request, every item failed with the one typed error,
    one error line in the log, no secret anywhere."""
    rids = [fake.add_recording(size=1_000).recording_id for _ in range(5)]

    report = await session.recordings.download_many(rids, "s3://no-such-bucket-here/x/")

    assert len(report.failed) == 5
    errors = {id(r.error) for r in report.failed}
    assert len(errors) == 1
    error = report.failed[0].error
    assert isinstance(error, BucketNotFoundError)
    assert "no-such-bucket-here" in str(error)
    assert media_gets(fake) == 0
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
    assert SECRET not in caplog.text + "".join(str(r.error) for r in report.failed)


async def test_hostile_ids_never_leave_the_prefix(
    fake: FakeVobiz, session: AsyncSession, bucket: str, admin: Any
) -> None:
    """A recording id that would climb out of the prefix fails; nothing is written."""
    hostile = fake.add_recording(recording_id="../../escape", size=1_000)
    rec = Recording.from_dict(hostile.wire())

    report = await session.recordings.download_many([rec], f"s3://{bucket}/vobiz/")

    assert len(report.failed) == 1
    assert keys(admin, bucket) == []


# ------------------------------------------------------------------ the CLI


def cli_env(fake: FakeVobiz) -> dict[str, str]:
    """This process's environment (with the fake AWS settings) pointed at the fake."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")},
        "VOBIZ_AUTH_ID": fake.auth_id,
        "VOBIZ_AUTH_TOKEN": fake.auth_token,
        "VOBIZ_BASE_URL": fake.base_url,
    }


async def test_cli_download_and_verify_s3(
    fake: FakeVobiz, bucket: str, admin: Any, moto_url: str, tmp_path: Any
) -> None:
    """`download --out s3://...` archives into the bucket (date layout, an endpoint given
    on the command line); `verify s3://...` passes, then names an object whose bytes
    changed and exits 1."""
    for _ in range(4):
        fake.add_recording(size=20_000)
    env = cli_env(fake)
    env.pop("AWS_ENDPOINT_URL")
    dest = f"s3://{bucket}/calls/"
    endpoint = ("--s3-endpoint-url", moto_url)

    done = await run_cli("download", "--out", dest, "--layout", "date", *endpoint, env=env)

    assert done.code == 0, done.output
    assert summary(done).startswith("downloaded 4, skipped 0, failed 0")
    stored = keys(admin, bucket)
    assert len(stored) == 4
    assert all(k.startswith("calls/2") and k.count("/") == 4 for k in stored), stored
    assert SECRET not in done.output

    ok = await run_cli("verify", dest, *endpoint, env=env)
    assert ok.code == 0, ok.output
    metadata = admin.head_object(Bucket=bucket, Key=stored[0])["Metadata"]
    admin.put_object(Bucket=bucket, Key=stored[0], Body=b"ID3 tampered", Metadata=metadata)
    bad = await run_cli("verify", dest, *endpoint, env=env)

    assert bad.code == 1
    assert f"changed: s3://{bucket}/{stored[0]}" in bad.out


async def test_cli_missing_bucket_is_one_line(fake: FakeVobiz) -> None:
    """A missing bucket: exit 1, one line on stderr naming it, no listing, no traceback."""
    for _ in range(3):
        fake.add_recording(size=1_000)

    done = await run_cli("download", "--out", "s3://no-such-bucket-here/x/", env=cli_env(fake))

    assert done.code == 1
    assert "no-such-bucket-here" in done.err
    assert len(done.err.strip().splitlines()) == 1, done.err
    assert "Traceback" not in done.output
    assert not any(r.operation == "list" for r in fake.stats.requests)


async def test_one_sink_serves_download_then_download_many(
    fake: FakeVobiz, session: AsyncSession, bucket: str, admin: Any
) -> None:
    """A `Sink` may be reused: `download()` and then `download_many()` into one S3Sink,
    the second skipping what the first stored."""
    first, *rest = [fake.add_recording(size=10_000).recording_id for _ in range(3)]
    sink = S3Sink(bucket, prefix="reuse/")

    one = await session.recordings.download(first, sink)
    many = await session.recordings.download_many([first, *rest], sink)

    assert one.status is DownloadStatus.DOWNLOADED, one.error
    assert [r.status for r in many.results] == [
        DownloadStatus.SKIPPED,
        DownloadStatus.DOWNLOADED,
        DownloadStatus.DOWNLOADED,
    ]
    assert sorted(keys(admin, bucket)) == sorted(f"reuse/{rid}.mp3" for rid in [first, *rest])
