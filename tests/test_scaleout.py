"""`RayEngine`: shards as Ray tasks on a two-node `ray.cluster_utils.Cluster` on 127.0.0.1.

The fake serves from this test's event loop; the Ray workers are real processes on two Ray
nodes of this machine, writing into one shared folder. Ray advertises the machine's
non-loopback address unless told otherwise: the two test-only settings below (read when Ray
is imported) keep every Ray process on 127.0.0.1 and its usage reporting off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import attrs
import pytest
from _procs import default_sigint
from aiohttp.abc import AbstractResolver, ResolveResult

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from vobiz_async import (  # noqa: E402
    APITimeoutError,
    AsyncSession,
    ConfigurationError,
    DownloadStatus,
    Recording,
    UnsafeURLError,
    batch,
)
from vobiz_async.manifest import MANIFEST_NAME, Manifest, verify_manifest  # noqa: E402
from vobiz_async.scaleout import (  # noqa: E402
    SHARDS_SUFFIX,
    RayEngine,
    ScaleOutReport,
    plan_shards,
    split_concurrency,
)
from vobiz_async.testing import FakeVobiz  # noqa: E402

#: The token the fake accepts in these tests: distinctive, so a grep cannot miss it.
TOKEN = "tok-Zq8xK3vT-never-in-ray"
AWS_SECRET = "aws-secret-never-in-ray-Xy81"
JOB_TIMEOUT = 120.0


def media_gets(fake: FakeVobiz) -> Counter[str]:
    """Media GETs per recording id, as the fake counted them."""
    counts: Counter[str] = Counter()
    for record in fake.stats.requests:
        if record.operation == "media" and record.method == "GET":
            name = unquote(record.path.split("?", 1)[0].rsplit("/", 1)[1])
            counts[name.rpartition(".")[0]] += 1
    return counts


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_all_verified(fake: FakeVobiz, out: Path, report: ScaleOutReport) -> None:
    """Every recording is on disk with the fake's bytes and in the index, which verifies."""
    assert report.ok, [(r.recording_id, str(r.error)) for r in report.failed]
    by_id = {r.recording_id: r for r in report.results}
    assert sorted(by_id) == sorted(fake.recording_ids)
    for rid in fake.recording_ids:
        path = by_id[rid].path
        assert path is not None
        assert sha256(path) == fake.sha256(rid), rid
    with Manifest(out / "index") as index:
        assert sorted(e.recording_id for e in index) == sorted(fake.recording_ids)
        assert verify_manifest(out, index) == []


# -- pure parts -------------------------------------------------------------------------


def _recording(rid: str, minutes: int) -> Recording:
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return Recording(recording_id=rid, add_time=moment, recording_url=f"https://x/{rid}.mp3")


def test_shards_are_cut_oldest_first_and_keep_their_keys_when_recordings_arrive() -> None:
    """A newer recording joins the last shard; the earlier shards keep their keys."""
    listing = [_recording(f"r{n}", minutes=n) for n in range(7)][::-1]  # newest first
    before = plan_shards(listing, 3)
    after = plan_shards([_recording("r7", minutes=7), *listing], 3)
    assert [[i.recording_id for i in items] for _, items in before] == [  # type: ignore[union-attr]
        ["r0", "r1", "r2"],
        ["r3", "r4", "r5"],
        ["r6"],
    ]
    assert [key for key, _ in after[:2]] == [key for key, _ in before[:2]]
    assert after[2][0] != before[2][0]


@pytest.mark.parametrize(
    ("total", "per_shard", "shards", "cpus", "expected"),
    [
        (16, 16, 10, 2, (2, 8)),  # the total is split over the shards that run at once
        (64, 16, 10, 8, (8, 8)),  # spread over every CPU rather than fill fewer shards
        (1000, 16, 3, 8, (3, 16)),  # fewer shards than CPUs
        (1, 16, 5, 4, (1, 1)),
        (5, 2, 10, 4, (4, 1)),
    ],
)
def test_concurrency_is_split_over_the_shards_that_run_at_once(
    total: int, per_shard: int, shards: int, cpus: int, expected: tuple[int, int]
) -> None:
    """Shards at once times transfers per shard never exceeds the job's concurrency."""
    slots, each = split_concurrency(total, per_shard, shards, cpus)
    assert (slots, each) == expected
    assert slots * each <= max(total, slots)


def test_retrying_forever_is_refused() -> None:
    """Ray's max_retries=-1 (retry forever) is a ValueError, not an endless loop."""
    with pytest.raises(ValueError, match="forever"):
        RayEngine(max_retries=-1)


async def test_sinks_other_than_s3_are_refused_on_ray(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A Sink object other than S3Sink would be pickled to every worker: refused before
    listing or starting Ray."""
    from vobiz_async.sinks import DirectorySink

    with pytest.raises(ConfigurationError, match="not supported on Ray"):
        await session.recordings.download_many(["x"], DirectorySink(tmp_path), engine=RayEngine())
    assert fake.stats.api_requests == 0


def test_importing_the_library_and_cli_does_not_import_ray() -> None:
    """Ray is imported only when an engine runs."""
    code = (
        "import sys, vobiz_async, vobiz_async.cli, vobiz_async.scaleout; "
        "sys.exit('ray' in sys.modules)"
    )
    done = subprocess.run(  # noqa: S603 - our interpreter
        [sys.executable, "-c", code], check=False, preexec_fn=default_sigint
    )
    assert done.returncode == 0


# -- on a two-node cluster --------------------------------------------------------------


#: Even with its dashboard off, a Ray head runs a usage-stats process that asks the cloud
#: metadata address (169.254.169.254, metadata.google.internal) which cloud it is on, and
#: sends a "usage stats disabled" report to usage-stats.ray.io for clusters not started by
#: `ray.init`. Both go through `requests`, which honours these proxy settings: the processes
#: Ray starts with them reach only a closed loopback port instead (seen with strace).
LOOPBACK_ONLY = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost",
    "NO_PROXY": "127.0.0.1,localhost",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    # The nodes' own AWS environment, for the object-storage test (moto takes any keys);
    # never the instance metadata service.
    "AWS_ACCESS_KEY_ID": "AKIDRAYNODES",
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """The environment Ray's processes are started with: nothing leaves 127.0.0.1."""
    saved = {name: os.environ.get(name) for name in LOOPBACK_ONLY}
    os.environ.update(LOOPBACK_ONLY)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(name="cluster", scope="module")
def _cluster() -> Iterator[Cluster]:
    with loopback_only():
        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(name="node")
def _node(cluster: Cluster) -> Iterator[Any]:
    """A second node with one CPU, removed after the test if it is still there."""
    with loopback_only():
        node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield node
    if node in cluster.worker_nodes:
        cluster.remove_node(node)


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=32, seed=3, media_latency=0.05, auth_token=TOKEN) as fake:
        yield fake


async def archive(
    session: AsyncSession, out: Path, engine: RayEngine, **options: Any
) -> ScaleOutReport:
    job = session.recordings.download_many(
        session.recordings.list(limit=100), out, manifest=out / "index", engine=engine, **options
    )
    report = await asyncio.wait_for(job, JOB_TIMEOUT)
    assert isinstance(report, ScaleOutReport)
    return report


async def test_shards_run_on_both_nodes_and_each_recording_is_fetched_once(
    node: Any, fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """4 shards over 2 nodes: two node ids, one media GET per recording, all verified."""
    engine = RayEngine(shard_size=8, concurrency_per_shard=4)
    report = await archive(session, tmp_path, engine, concurrency=8)
    assert_all_verified(fake, tmp_path, report)
    assert len({share.node_id for share in report.workers}) == 2
    assert sum(share.recordings for share in report.workers) == 32
    assert all(share.pid != os.getpid() for share in report.workers)
    assert media_gets(fake) == Counter(dict.fromkeys(fake.recording_ids, 1))
    assert fake.stats.media_in_flight_max <= 8  # the job's concurrency, across both nodes


async def test_a_rerun_issues_no_media_gets(
    node: Any, fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """The same job again skips every finished shard: no media request at all."""
    engine = RayEngine(shard_size=8, concurrency_per_shard=4)
    await archive(session, tmp_path, engine, concurrency=8)
    fake.stats.reset()
    again = await archive(session, tmp_path, engine, concurrency=8)
    assert fake.stats.media_requests == 0
    assert (again.shards, again.shards_skipped) == (4, 4)
    assert_all_verified(fake, tmp_path, again)


async def test_without_the_shard_journal_a_rerun_skips_stored_files_by_the_index(
    node: Any, fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """With the journal gone the shards run again, find every file, and fetch none."""
    engine = RayEngine(shard_size=8, concurrency_per_shard=4)
    await archive(session, tmp_path, engine, concurrency=8)
    await asyncio.to_thread(Path(str(tmp_path / "index") + SHARDS_SUFFIX).unlink)
    fake.stats.reset()
    again = await archive(session, tmp_path, engine, concurrency=8)
    assert fake.stats.media_requests == 0
    assert again.shards_skipped == 0
    assert {r.status for r in again.results} == {DownloadStatus.SKIPPED}
    assert_all_verified(fake, tmp_path, again)


async def test_a_job_above_the_kept_results_counts_every_recording_and_indexes_them(
    node: Any,
    fake: FakeVobiz,
    session: AsyncSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Like the local engine, the report keeps the first results only, counts them all."""
    monkeypatch.setattr(batch, "RESULTS_KEPT", 5)  # the batch core keeps the results
    engine = RayEngine(shard_size=8, concurrency_per_shard=4)
    report = await archive(session, tmp_path, engine, concurrency=8)
    assert report.truncated
    assert len(report.results) == 5
    assert report.counts[DownloadStatus.DOWNLOADED] == 32
    assert report.total_bytes == sum(fake.size(rid) for rid in fake.recording_ids)
    with Manifest(tmp_path / "index") as index:
        assert len(index) == 32


async def test_losing_a_node_completes_the_job_and_refetches_only_what_was_in_flight(
    cluster: Cluster, node: Any, tmp_path: Path
) -> None:
    """A node killed mid-shard: its shard is retried elsewhere, the job completes, the
    index covers every recording, and only recordings in flight there are fetched twice."""
    per_shard = 2
    async with (
        FakeVobiz(recordings=32, seed=4, media_latency=0.25, auth_token=TOKEN) as fake,
        AsyncSession(**fake.session_kwargs()) as session,
    ):
        engine = RayEngine(shard_size=8, concurrency_per_shard=per_shard)
        job = asyncio.create_task(archive(session, tmp_path, engine, concurrency=2 * per_shard))
        for _ in range(800):  # both shards in flight: one on each node
            if fake.stats.media_in_flight >= 2 * per_shard or job.done():
                break
            await asyncio.sleep(0.025)
        assert not job.done()
        await asyncio.to_thread(cluster.remove_node, node, allow_graceful=False)
        report = await job
        assert_all_verified(fake, tmp_path, report)
        gets = media_gets(fake)
        assert set(gets) == set(fake.recording_ids)
        twice = [rid for rid, count in gets.items() if count > 1]
        assert len(twice) <= per_shard, gets
        assert max(gets.values()) <= 2
        assert sum(share.recordings for share in report.workers) == 32


class _Poison(str):
    """An id that kills the worker process that unpickles it: a shard that always crashes."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (17,))


async def test_a_shard_that_always_crashes_is_retried_a_bounded_number_of_times_and_reported(
    node: Any, fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """The crashing shard fails after its retries; every other shard completes."""
    good = fake.recording_ids[:6]
    engine = RayEngine(shard_size=3, concurrency_per_shard=2, max_retries=1)
    job = session.recordings.download_many(
        [*good, _Poison("poison")], tmp_path, manifest=tmp_path / "index", engine=engine
    )
    report = await asyncio.wait_for(job, JOB_TIMEOUT)
    assert isinstance(report, ScaleOutReport)
    assert [(f.index, f.size) for f in report.failed_shards] == [(2, 1)]
    assert "poison" in [r.recording_id for r in report.failed]
    assert sorted(r.recording_id for r in report.downloaded) == sorted(good)
    journal = sqlite3.connect(str(tmp_path / "index") + SHARDS_SUFFIX)
    try:
        assert journal.execute("SELECT count(*) FROM shards").fetchone()[0] == 2
    finally:
        journal.close()


async def test_the_token_leaves_no_trace_in_ray(
    node: Any, fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """After a job: not in any file under the session's logs/, the task records, the job
    table, or the key-value store (where pickled functions live)."""
    engine = RayEngine(shard_size=8, concurrency_per_shard=4)
    report = await archive(session, tmp_path, engine, concurrency=8)
    assert report.ok
    secret = TOKEN.encode()
    session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
    logs = [p for p in (session_dir / "logs").rglob("*") if p.is_file()]
    assert logs  # the grep below looks at something
    assert [p for p in logs if secret in p.read_bytes()] == []
    state = ray._private.state.state
    events = state._get_all_task_events()
    assert any(b"vobiz-shard-" in e.SerializeToString() for e in events)
    assert [e for e in events if secret in e.SerializeToString()] == []
    assert TOKEN not in repr(state.job_table())
    from ray.experimental import internal_kv

    for namespace in (None, "fun", "session", "cluster", "job", "runtime_env", "dashboard"):
        for key in internal_kv._internal_kv_list(b"", namespace=namespace):
            value = internal_kv._internal_kv_get(key, namespace=namespace) or b""
            assert secret not in key + value, (namespace, key)


def unspecified_host(fake: FakeVobiz, rids: list[str]) -> list[Recording]:
    """The recordings with their media URL on 0.0.0.0, the unspecified address: Linux
    connects it to this machine's loopback (the fake), but the private-address check
    refuses it unless the session has `allow_private_media`."""
    listed = [Recording.from_dict(fake.recordings[rid].wire()) for rid in rids]
    return [
        attrs.evolve(r, recording_url=r.recording_url.replace("//127.0.0.1:", "//0.0.0.0:"))
        for r in listed
    ]


async def test_the_sessions_settings_arrive_at_the_workers(
    node: Any, fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """`allow_private_media=True` reaches the workers (media on 0.0.0.0 is fetched, where a
    session without it is refused), and so does a read timeout shorter than the fake's
    media latency (every transfer then times out, none is refused as unsafe)."""
    rids = fake.recording_ids[:8]
    refused = await session.recordings.download_many(unspecified_host(fake, rids[:1]), tmp_path)
    assert isinstance(refused.results[0].error, UnsafeURLError)  # locally, without the flag

    engine = RayEngine(shard_size=4, concurrency_per_shard=2)
    allowed = AsyncSession(**fake.session_kwargs(), allow_private_media=True)
    async with allowed:
        job = allowed.recordings.download_many(
            unspecified_host(fake, rids), tmp_path / "ok", engine=engine, concurrency=4
        )
        report = await asyncio.wait_for(job, JOB_TIMEOUT)
    assert report.ok, [(r.recording_id, str(r.error)) for r in report.failed]
    assert len({w.node_id for w in report.workers}) == 2  # type: ignore[attr-defined]
    assert report.counts[DownloadStatus.DOWNLOADED] == 8

    impatient = AsyncSession(
        **fake.session_kwargs(), allow_private_media=True, read_timeout=0.01, connect_timeout=2
    )
    async with impatient:
        job = impatient.recordings.download_many(
            unspecified_host(fake, rids),
            tmp_path / "slow",
            engine=engine,
            concurrency=4,
            max_attempts=1,
        )
        slow = await asyncio.wait_for(job, JOB_TIMEOUT)
    assert slow.counts[DownloadStatus.FAILED] == 8
    assert all(isinstance(r.error, APITimeoutError) for r in slow.failed), [
        str(r.error) for r in slow.failed
    ]


class _Resolver(AbstractResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError("not used")

    async def close(self) -> None:
        return None


async def test_a_custom_resolver_is_refused_on_ray_before_anything_starts(
    cluster: Cluster, fake: FakeVobiz, tmp_path: Path
) -> None:
    """A resolver object cannot travel to the workers: one line, no request, no task."""
    async with AsyncSession(**fake.session_kwargs(), resolver=_Resolver()) as session:
        job = session.recordings.download_many(
            session.recordings.list(), tmp_path, engine=RayEngine()
        )
        with pytest.raises(ConfigurationError, match="resolver") as caught:
            await job
    assert "\n" not in str(caught.value)
    assert fake.stats.api_requests == 0


# -- the command line -------------------------------------------------------------------


async def run_cli(*args: str, fake: FakeVobiz) -> tuple[int, str, str]:
    """`vobiz-recordings ARGS` in a child process, credentials in its environment."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")},
        **LOOPBACK_ONLY,
        "VOBIZ_AUTH_ID": fake.auth_id,
        "VOBIZ_AUTH_TOKEN": fake.auth_token,
        "VOBIZ_BASE_URL": fake.base_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    out, err = await asyncio.wait_for(proc.communicate(), JOB_TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_on_a_local_ray_reports_its_workers_in_the_json_summary(
    fake: FakeVobiz, tmp_path: Path
) -> None:
    """`download --engine ray --json` into a folder not made yet: a local Ray of its own;
    the last line of stdout is the summary, whose workers add up to every recording, all
    archived and verified."""
    archive = tmp_path / "archive"
    code, out, err = await run_cli(
        "download", "--out", str(archive), "--engine", "ray", "--shard-size", "8",
        "--concurrency", "4", "--json", fake=fake,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["downloaded"], summary["failed"]) == (32, 0)
    assert sum(w["recordings"] for w in summary["workers"]) == 32
    assert all(int(w["node_id"], 16) and w["pid"] > 0 for w in summary["workers"])
    assert summary["failed_shards"] == []
    assert media_gets(fake) == Counter(dict.fromkeys(fake.recording_ids, 1))
    with Manifest(archive / MANIFEST_NAME) as index:
        assert len(index) == 32
        assert verify_manifest(archive, index) == []
    assert TOKEN not in out + err


async def test_cli_refuses_the_token_on_the_command_line_with_ray(
    fake: FakeVobiz, tmp_path: Path
) -> None:
    """Ray stores the driver's command line: `--auth-token` with `--engine ray` is a usage
    error that names the environment variable, before anything starts."""
    code, out, err = await run_cli(
        "--auth-token", TOKEN, "download", "--out", str(tmp_path), "--engine", "ray", fake=fake
    )
    assert code == 2
    assert "VOBIZ_AUTH_TOKEN" in err
    assert TOKEN not in out + err
    assert fake.stats.api_requests == 0


async def test_cli_without_ray_installed_says_how_to_install_it(
    fake: FakeVobiz, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Ray importable: one line naming the extra, exit 3, no traceback."""
    shadow = tmp_path / "shadow"
    (shadow / "ray").mkdir(parents=True)
    (shadow / "ray" / "__init__.py").write_text("raise ImportError('not installed')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    code, _, err = await run_cli(
        "download", "--out", str(tmp_path / "archive"), "--engine", "ray", fake=fake
    )
    assert code == 3, err
    assert "pip install 'vobiz-async[ray]'" in err
    assert "Traceback" not in err


# -- into object storage ------------------------------------------------------------------


async def test_shards_archive_into_s3_from_both_nodes(
    node: Any, fake: FakeVobiz, session: AsyncSession, tmp_path: Path, moto_url: str
) -> None:
    """An S3Sink destination on two nodes: each worker builds its own sink from the nodes'
    AWS environment (no secret travels), every recording lands once, verified, and the
    driver indexes every object; a re-run fetches nothing."""
    import boto3

    from vobiz_async.sinks import S3Sink

    admin = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    )
    admin.create_bucket(Bucket="ray-archive")
    sink = S3Sink("ray-archive", prefix="calls/", endpoint_url=moto_url, region="us-east-1")
    engine = RayEngine(shard_size=8, concurrency_per_shard=4)
    job = session.recordings.download_many(
        session.recordings.list(limit=100),
        sink,
        manifest=tmp_path / "index",
        engine=engine,
        concurrency=8,
    )
    report = await asyncio.wait_for(job, JOB_TIMEOUT)

    assert report.ok, [(r.recording_id, str(r.error)) for r in report.failed]
    assert len({w.node_id for w in report.workers}) == 2
    listed = [o["Key"] for o in admin.list_objects_v2(Bucket="ray-archive")["Contents"]]
    by_id = {key.removeprefix("calls/").rsplit(".", 1)[0]: key for key in listed}
    assert sorted(by_id) == sorted(fake.recording_ids)
    assert len(listed) == len(fake.recording_ids)
    for rid, key in by_id.items():
        body = admin.get_object(Bucket="ray-archive", Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == fake.sha256(rid)
    gets = Counter(unquote(r.path) for r in fake.stats.requests if r.operation == "media")
    assert len(gets) == len(fake.recording_ids)
    assert set(gets.values()) == {1}
    with Manifest(tmp_path / "index") as index:
        assert sorted(e.recording_id for e in index) == sorted(fake.recording_ids)
    media_before = sum(gets.values())

    secret = AWS_SECRET.encode()
    session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
    logs = [p for p in (session_dir / "logs").rglob("*") if p.is_file()]
    assert [p for p in logs if secret in p.read_bytes()] == []
    events = ray._private.state.state._get_all_task_events()
    assert [e for e in events if secret in e.SerializeToString()] == []

    again = await asyncio.wait_for(
        session.recordings.download_many(
            session.recordings.list(limit=100), sink, manifest=tmp_path / "index", engine=engine
        ),
        JOB_TIMEOUT,
    )

    assert again.ok
    after = sum(1 for r in fake.stats.requests if r.operation == "media")
    assert after == media_before
