"""`move_many` on the Ray engine (a one-node `ray.cluster_utils.Cluster` on 127.0.0.1, the
fixtures of `test_scaleout`): the shards archive, the driver alone deletes, each DELETE after
the proof (issue 24 §3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_move import ProofAtDelete
from test_scaleout import JOB_TIMEOUT, _cluster, _fake, ray

from vobiz_async import AsyncSession
from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.scaleout import RayEngine, ScaleOutReport
from vobiz_async.testing import FakeVobiz

__all__ = ["_cluster", "_fake", "ray"]  # fixtures (and Ray, skipped when absent) reused


async def test_move_on_ray_deletes_each_recording_after_its_proof(
    cluster: object, fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """Four shards on Ray; then every recording deleted, each proven at its DELETE."""
    out = tmp_path / "out"
    hook = fake.delete_hook = ProofAtDelete(fake, out)
    rids = list(fake.recording_ids)
    engine = RayEngine(shard_size=8, concurrency_per_shard=4)

    job = session.recordings.move_many(
        session.recordings.list(limit=100), out, engine=engine, concurrency=8
    )
    report = await asyncio.wait_for(job, JOB_TIMEOUT)

    assert isinstance(report, ScaleOutReport)
    assert report.shards == 4
    assert hook.problems == []
    assert sorted(hook.seen) == sorted(rids)
    assert fake.recording_ids == []
    assert report.counts["deleted"] == len(rids)
    with Manifest(out / MANIFEST_NAME) as index:
        assert index.released_count() == len(rids)
