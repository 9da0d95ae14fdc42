"""Metadata sidecars and the hive layout in object storage (moto on 127.0.0.1), issue 25 §1:
`<key without extension>.json` beside each recording, `application/json`, stored before
the recording is reported; a sidecar is never taken for a recording; `verify --metadata
sidecar` names a recording whose sidecar is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_cli import env_for, run_cli
from test_download_s3 import _endpoint, _fake, media_gets  # the same fake, endpoint and counts
from test_s3_sink import _admin, _aws_env, _bucket  # the fake AWS environment

from vobiz_async import AsyncSession, DownloadStatus, ProgressEvent, ProgressKind
from vobiz_async.manifest import Manifest
from vobiz_async.sinks import S3Sink
from vobiz_async.testing import FakeVobiz

__all__ = ["_admin", "_aws_env", "_bucket", "_endpoint", "_fake"]  # fixtures, imported for use here

#: Ten past midnight in India: 18:40 the day before in UTC.
NEAR_MIDNIGHT = "2026-05-03 00:10:00.79276+05:30"
DAY = "year=2026/month=05/day=03/"


def keys(admin: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in admin.list_objects_v2(Bucket=bucket).get("Contents", ()))


async def test_sidecars_and_hive_keys_in_a_bucket(
    fake: FakeVobiz,
    session: AsyncSession,
    bucket: str,
    admin: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hive keys dated in add_time's own offset; each sidecar is `application/json`, holds
    the wire object and exists when its recording's FINISHED event arrives; re-runs (a
    narrowed listing, then whole-folder listings) skip every recording without a media
    request: a sidecar is never mistaken for its recording."""
    midnight = fake.add_recording(add_time=NEAR_MIDNIGHT).recording_id
    other = fake.add_recording(add_time="2026-05-03 09:00:00+05:30", container="wav").recording_id
    dest = f"s3://{bucket}/calls/"
    seen: dict[str, bool] = {}

    def on_progress(event: ProgressEvent) -> None:
        if event.kind is ProgressKind.FINISHED:
            found = admin.list_objects_v2(Bucket=bucket, Prefix=f"calls/{DAY}{event.recording_id}.")
            names = [o["Key"] for o in found.get("Contents", ())]
            seen[event.recording_id] = f"calls/{DAY}{event.recording_id}.json" in names

    report = await session.recordings.download_many(
        session.recordings.list(),
        dest,
        layout="hive",
        metadata="sidecar",
        on_progress=on_progress,
        manifest=tmp_path / "index",
    )

    assert report.ok
    assert seen == {midnight: True, other: True}
    assert keys(admin, bucket) == sorted(
        [
            f"calls/{DAY}{midnight}.mp3",
            f"calls/{DAY}{midnight}.json",
            f"calls/{DAY}{other}.wav",
            f"calls/{DAY}{other}.json",
        ]
    )
    head = admin.head_object(Bucket=bucket, Key=f"calls/{DAY}{midnight}.json")
    assert head["ContentType"] == "application/json"
    body = admin.get_object(Bucket=bucket, Key=f"calls/{DAY}{midnight}.json")["Body"].read()
    listed = {r.recording_id: r async for r in session.recordings.list()}
    assert json.loads(body) == listed[midnight].to_dict()
    with Manifest(tmp_path / "index") as index:
        entry = index.get(midnight)
    assert entry is not None
    assert entry.path == f"{DAY}{midnight}.mp3"

    before = media_gets(fake)
    for list_after in (S3Sink.list_after, 1):  # a narrowed listing, then the folder's listing
        monkeypatch.setattr(S3Sink, "list_after", list_after)
        again = await session.recordings.download_many(
            session.recordings.list(), dest, layout="hive", metadata="sidecar"
        )
        assert {r.status for r in again.results} == {DownloadStatus.SKIPPED}
        assert {r.location for r in again.results} == {
            f"s3://{bucket}/calls/{DAY}{midnight}.mp3",
            f"s3://{bucket}/calls/{DAY}{other}.wav",
        }
    assert media_gets(fake) == before


async def test_verify_names_a_missing_sidecar_in_a_bucket(
    fake: FakeVobiz, session: AsyncSession, bucket: str, admin: Any, tmp_path: Path
) -> None:
    """`verify s3://... --index --metadata sidecar` passes a complete archive and names a
    recording whose sidecar is gone (exit 1), as plain `verify --index` does once another
    recording has one (the archive keeps sidecars); `download` puts it back."""
    rid = fake.add_recording(add_time=NEAR_MIDNIGHT).recording_id
    fake.add_recording(add_time=NEAR_MIDNIGHT)
    dest = f"s3://{bucket}/calls/"
    index = str(tmp_path / "index")
    env = env_for({k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}, fake)
    download = ("download", "--out", dest, "--index", index, "--metadata", "sidecar")
    result = await run_cli(*download, env=env)
    assert result.code == 0, result.err
    verify = ("verify", dest, "--index", index, "--metadata", "sidecar", "--json")
    result = await run_cli(*verify, env=env)
    assert result.code == 0, result.out + result.err

    admin.delete_object(Bucket=bucket, Key=f"calls/{rid}.json")
    result = await run_cli(*verify, env=env)
    assert result.code == 1, result.out + result.err
    missing = [{"kind": "missing sidecar", "id": rid, "path": f"s3://{bucket}/calls/{rid}.json"}]
    assert json.loads(result.out)["problems"] == missing
    plain = await run_cli("verify", dest, "--index", index, "--json", env=env)
    assert plain.code == 1, plain.out + plain.err
    assert json.loads(plain.out)["problems"] == missing

    result = await run_cli(*download, env=env)
    assert result.code == 0, result.err
    assert f"calls/{rid}.json" in keys(admin, bucket)
    result = await run_cli(*verify, env=env)
    assert result.code == 0, result.out + result.err
