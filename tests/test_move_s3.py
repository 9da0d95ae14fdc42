"""`move_many` into object storage (moto on 127.0.0.1): at each DELETE the object holds the
served bytes and its `sha256` stamp, a multipart one included, and the index row is
committed; an object changed after archiving is fetched again before its DELETE."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from test_download_s3 import _endpoint, _fake  # the same fake, endpoint and counts
from test_move import committed_sha256
from test_s3_sink import _admin, _aws_env, _bucket  # the fake AWS environment

from vobiz_async import AsyncSession, DownloadStatus
from vobiz_async.sinks import S3Sink
from vobiz_async.testing import FakeVobiz

__all__ = ["_admin", "_aws_env", "_bucket", "_endpoint", "_fake"]  # fixtures, imported for use here

MiB = 1024 * 1024
PART = 5 * MiB


class ObjectProofAtDelete:
    """The fake's delete hook: the object's bytes and stamp, and the committed index row."""

    def __init__(self, fake: FakeVobiz, admin: Any, bucket: str, index: Path) -> None:
        self.fake, self.admin, self.bucket, self.index = fake, admin, bucket, index
        self.seen: list[str] = []
        self.problems: list[str] = []

    def __call__(self, rid: str) -> None:
        self.seen.append(rid)
        expected = self.fake.sha256(rid)
        key = f"calls/{rid}.mp3"
        try:
            got = self.admin.get_object(Bucket=self.bucket, Key=key)
        except Exception as err:
            self.problems.append(f"{rid}: no object at DELETE ({err})")
            return
        if hashlib.sha256(got["Body"].read()).hexdigest() != expected:
            self.problems.append(f"{rid}: object bytes differ at DELETE")
        if got["Metadata"].get("sha256") != expected:
            self.problems.append(f"{rid}: object not stamped at DELETE")
        if committed_sha256(self.index, rid) != expected:
            self.problems.append(f"{rid}: no committed index row at DELETE")


async def test_every_delete_comes_after_the_object_is_proven(
    fake: FakeVobiz, session: AsyncSession, bucket: str, admin: Any, tmp_path: Path
) -> None:
    """Three small objects and one multipart one (> the part size): each proven at its
    DELETE, none left at the fake."""
    rids = [fake.add_recording(size=20_000 + i).recording_id for i in range(3)]
    rids.append(fake.add_recording(size=PART + 300_000).recording_id)
    index = tmp_path / "index"
    hook = fake.delete_hook = ObjectProofAtDelete(fake, admin, bucket, index)
    sink = S3Sink(bucket, prefix="calls/", part_size=PART)

    report = await session.recordings.move_many(session.recordings.list(), sink, manifest=index)

    assert hook.problems == []
    assert sorted(hook.seen) == sorted(rids)
    assert fake.recording_ids == []
    assert report.counts["deleted"] == 4
    big = admin.head_object(Bucket=bucket, Key=f"calls/{rids[-1]}.mp3")
    assert big["ContentLength"] > PART  # above the largest single PUT: a multipart upload


async def test_an_object_changed_after_archiving_is_fetched_again_before_its_delete(
    fake: FakeVobiz, session: AsyncSession, bucket: str, admin: Any, tmp_path: Path
) -> None:
    """Overwritten with other bytes of the same size and no stamp: re-fetched, then
    deleted; the others are proven from their stamps without a media request."""
    rids = [fake.add_recording(size=20_000 + i).recording_id for i in range(3)]
    index = tmp_path / "index"
    dest = f"s3://{bucket}/calls/"
    await session.recordings.download_many(session.recordings.list(), dest, manifest=index)
    changed = f"calls/{rids[0]}.mp3"
    admin.put_object(Bucket=bucket, Key=changed, Body=b"\0" * fake.size(rids[0]))
    fake.stats.reset()
    hook = fake.delete_hook = ObjectProofAtDelete(fake, admin, bucket, index)

    report = await session.recordings.move_many(session.recordings.list(), dest, manifest=index)

    assert hook.problems == []
    assert sorted(hook.seen) == sorted(rids)
    media = [r for r in fake.stats.requests if r.operation == "media"]
    assert len(media) == 1
    assert rids[0] in media[0].path
    by_id = {r.recording_id: r for r in report.results}
    assert by_id[rids[0]].status is DownloadStatus.DOWNLOADED
    assert report.counts["deleted"] == 3
