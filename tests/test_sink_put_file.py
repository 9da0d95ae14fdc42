"""`Sink.put_file`: a small file (sidecar, transcript) lands whole under its key, in a
folder (temporary file, then rename) and in object storage (one PUT with its sha256)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from test_s3_sink import _admin, _aws_env, _bucket, _proxy, _sink  # the fake AWS environment

from vobiz_async.errors import DiskError
from vobiz_async.sinks import DirectorySink, S3Sink

__all__ = ["_admin", "_aws_env", "_bucket", "_proxy", "_sink"]

DATA = b'{"recording_id": "rec1"}'


async def test_folder_put_file_writes_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path, fsync=True)
    stored = await sink.put_file("2026/05/03/rec1.json", DATA, content_type="application/json")
    target = tmp_path / "2026" / "05" / "03" / "rec1.json"
    assert target.read_bytes() == DATA
    assert stored.key == "2026/05/03/rec1.json"
    assert stored.location == str(target)
    assert (stored.size, stored.sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    await sink.put_file("2026/05/03/rec1.json", b"{}", content_type="application/json")
    assert target.read_bytes() == b"{}"
    assert sorted(os.listdir(target.parent)) == ["rec1.json"]


@pytest.mark.parametrize("key", ["../escape.json", "/abs.json", "a//b.json", "a/./b.json", ""])
async def test_folder_put_file_refuses_keys_outside_the_root(tmp_path: Path, key: str) -> None:
    sink = DirectorySink(tmp_path / "root")
    with pytest.raises(ValueError, match="not a key inside"):
        await sink.put_file(key, DATA, content_type="application/json")
    assert not (tmp_path / "escape.json").exists()


async def test_folder_put_file_failure_is_a_disk_error_without_leftovers(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_bytes(b"a file where a folder should be")
    sink = DirectorySink(tmp_path)
    with pytest.raises(DiskError):
        await sink.put_file("blocked/rec1.json", DATA, content_type="application/json")
    assert sorted(os.listdir(tmp_path)) == ["blocked"]


async def test_s3_put_file_stores_type_and_sha256(sink: S3Sink, admin: Any, bucket: str) -> None:
    stored = await sink.put_file("rec1.json", DATA, content_type="application/json")
    head = admin.head_object(Bucket=bucket, Key="vobiz/rec1.json")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"]["sha256"] == hashlib.sha256(DATA).hexdigest() == stored.sha256
    assert admin.get_object(Bucket=bucket, Key="vobiz/rec1.json")["Body"].read() == DATA
    assert stored.location == f"s3://{bucket}/vobiz/rec1.json"
