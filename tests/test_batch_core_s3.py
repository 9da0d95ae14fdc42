"""The batch core into object storage (moto on 127.0.0.1): objects the index does not know
are indexed from their metadata or bytes without a media request, and an object whose
size disagrees with its index entry is fetched again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_download_s3 import _endpoint, _fake, media_gets  # the same fake, endpoint and counts
from test_s3_sink import _admin, _aws_env, _bucket  # the fake AWS environment

from vobiz_async import AsyncSession, DownloadStatus
from vobiz_async.manifest import Manifest
from vobiz_async.testing import FakeVobiz

__all__ = ["_admin", "_aws_env", "_bucket", "_endpoint", "_fake"]  # fixtures, imported for use here


async def test_objects_stored_without_an_index_are_indexed_without_a_media_request(
    fake: FakeVobiz, session: AsyncSession, bucket: str, admin: Any, tmp_path: Path
) -> None:
    """Archived with no index, one object's metadata stripped: a run with an index records
    every object with its true sha256 (from metadata, or the bytes read back) and fetches
    nothing; then an object of another size than its entry is fetched again."""
    rids = [fake.add_recording(size=30_000 + i).recording_id for i in range(4)]
    dest = f"s3://{bucket}/calls/"
    first = await session.recordings.download_many(session.recordings.list(), dest)
    assert first.counts[DownloadStatus.DOWNLOADED] == 4
    stripped = f"calls/{rids[0]}.mp3"
    admin.copy_object(  # the same bytes, without the sha256 metadata
        Bucket=bucket,
        Key=stripped,
        CopySource={"Bucket": bucket, "Key": stripped},
        Metadata={},
        MetadataDirective="REPLACE",
    )
    assert "sha256" not in admin.head_object(Bucket=bucket, Key=stripped)["Metadata"]
    before = media_gets(fake)

    again = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=tmp_path / "index"
    )

    assert {r.status for r in again.results} == {DownloadStatus.SKIPPED}
    assert media_gets(fake) == before
    with Manifest(tmp_path / "index") as index:
        assert {e.recording_id: (e.path, e.sha256) for e in index} == {
            rid: (f"{rid}.mp3", fake.sha256(rid)) for rid in rids
        }

    admin.put_object(Bucket=bucket, Key=f"calls/{rids[1]}.mp3", Body=b"ID3 overwritten")
    third = await session.recordings.download_many(
        session.recordings.list(), dest, manifest=tmp_path / "index"
    )
    assert {r.recording_id for r in third.downloaded} == {rids[1]}
    assert media_gets(fake) == before + 1
    body = admin.get_object(Bucket=bucket, Key=f"calls/{rids[1]}.mp3")["Body"].read()
    assert len(body) == fake.size(rids[1])
