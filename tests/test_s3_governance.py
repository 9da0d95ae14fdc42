"""Object storage the way regulated teams keep it (issue 25 §2): storage class, encryption,
Object Lock retention and legal hold on every object, one version per recording, a bucket
that refuses a setting refused before any transfer, the crash gap before the sha256 stamp
closed by the next run, and `verify s3://` comparing the settings and counting the objects.

moto on 127.0.0.1 (its KMS on the same endpoint); the proxy of `test_s3_sink.py` in front of
it where S3 must answer in ways moto does not (an unknown KMS key, KMS access denied).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_cli import run_cli
from test_s3_sink import (  # the fake AWS environment and helpers (moto_url: conftest)
    PART,
    S3Proxy,
    _admin,
    _aws_env,
    body_of,
    incomplete_uploads,
    recording,
    s3_error,
    sha,
    store,
)

from vobiz_async import AsyncSession, DownloadStatus
from vobiz_async.errors import ConfigurationError, ObjectStoreError, StoragePermissionError
from vobiz_async.sinks import S3Sink, audit_objects
from vobiz_async.sinks.s3 import retain_until
from vobiz_async.testing import FakeVobiz

__all__ = ["_admin", "_aws_env"]  # fixtures, imported for use here

boto3 = pytest.importorskip("boto3")

DAYS = 30
GOVERNED = {
    "storage_class": "GLACIER_IR",
    "sse": "aws:kms",
    "object_lock_mode": "GOVERNANCE",
    "object_lock_retain_days": DAYS,
    "object_lock_legal_hold": True,
}


@pytest.fixture(autouse=True)
def _endpoint(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)


@pytest.fixture(name="locked")
def _locked(admin: Any) -> str:
    """A bucket created with Object Lock (and so versioning)."""
    name = f"locked-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture(name="plain")
def _plain(admin: Any) -> str:
    """A bucket without Object Lock or versioning."""
    name = f"plain-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=name)
    return name


@pytest.fixture(name="kms_key")
def _kms_key(moto_url: str) -> str:
    """A KMS key id in moto's KMS."""
    kms = boto3.client(
        "kms",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    )
    key_id: str = kms.create_key()["KeyMetadata"]["KeyId"]
    return key_id


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=0) as fake:
        yield fake


def versions(admin: Any, bucket: str, prefix: str = "") -> dict[str, int]:
    """Versions (and delete markers) per key."""
    answer = admin.list_object_versions(Bucket=bucket, Prefix=prefix)
    counts: dict[str, int] = {}
    for entry in [*answer.get("Versions", []), *answer.get("DeleteMarkers", [])]:
        counts[entry["Key"]] = counts.get(entry["Key"], 0) + 1
    return counts


def assert_governed(head: dict[str, Any], kms_key: str, before: datetime, after: datetime) -> None:
    assert head.get("StorageClass") == "GLACIER_IR"
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(kms_key)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    until = head["ObjectLockRetainUntilDate"]
    # From the upload, never from add_time (2026-11-01, which would end in the past).
    lowest = retain_until(before, DAYS) - timedelta(seconds=1)
    assert lowest <= until <= retain_until(after, DAYS) + timedelta(seconds=1)
    assert head["ObjectLockLegalHoldStatus"] == "ON"


async def test_every_setting_lands_on_every_object(locked: str, admin: Any, kms_key: str) -> None:
    """A single PUT, a multipart upload (stamped by a copy) and a `put_file` in an Object
    Lock bucket: each final object has the storage class, SSE-KMS key, GOVERNANCE retention
    counted from the upload and the legal hold; each key is one version; the audit with the
    same settings finds nothing and counts the three objects."""
    sink = S3Sink(locked, prefix="gov/", part_size=PART, sse_kms_key_id=kms_key, **GOVERNED)
    before = datetime.now(UTC)
    await sink.prepare()
    small, big = body_of(300_000), body_of(2 * PART + 10)
    await store(sink, recording("small", day=1), small)
    await store(sink, recording("big", day=1), big)
    await sink.put_file("big.json", b"{}", content_type="application/json")
    await sink.close()
    after = datetime.now(UTC)

    for key, data in (("gov/small.mp3", small), ("gov/big.mp3", big), ("gov/big.json", b"{}")):
        head = admin.head_object(Bucket=locked, Key=key)
        assert_governed(head, kms_key, before, after)
        assert head["Metadata"]["sha256"] == sha(data)
    assert versions(admin, locked, "gov/") == {
        "gov/small.mp3": 1,
        "gov/big.mp3": 1,
        "gov/big.json": 1,
    }
    audit = await audit_objects(sink)
    assert (audit.checked, audit.problems) == (3, [])


async def test_a_versioned_bucket_keeps_one_version_per_recording(plain: str, admin: Any) -> None:
    """Without any setting too, a multipart recording in a versioned bucket ends as one
    version: the unstamped one the copy replaced is deleted by its id."""
    admin.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    sink = S3Sink(plain, part_size=PART)
    await sink.prepare()
    data = body_of(PART + 99)
    await store(sink, recording("big"), data)
    await sink.close()

    assert versions(admin, plain) == {"big.mp3": 1}
    assert admin.head_object(Bucket=plain, Key="big.mp3")["Metadata"]["sha256"] == sha(data)


async def test_object_lock_on_a_bucket_without_it_is_refused_at_prepare(plain: str) -> None:
    """Retention asked of a bucket without Object Lock: one destination-wide line at
    prepare (not a permission error: exit 1, not 3)."""
    sink = S3Sink(plain, object_lock_mode="COMPLIANCE", object_lock_retain_days=7)

    with pytest.raises(ObjectStoreError) as caught:
        await sink.prepare()

    assert not isinstance(caught.value, StoragePermissionError)
    assert caught.value.destination_wide
    assert plain in str(caught.value)
    assert "Object Lock" in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


@pytest.fixture(name="proxy")
async def _proxy(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Proxy]:
    proxy = S3Proxy(moto_url)
    await proxy.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    await proxy.stop()


def _probe(request: Any) -> bool:
    return ".vobiz-settings-check-" in request.path


@pytest.mark.parametrize(
    ("operation", "answer"),
    [
        ("POST", (400, "KMS.NotFoundException")),  # an unknown key, at CreateMultipartUpload
        ("PUT", (403, "AccessDenied")),  # no kms:Decrypt, at UploadPart
    ],
)
async def test_a_kms_refusal_is_one_line_at_prepare(
    plain: str, admin: Any, proxy: S3Proxy, operation: str, answer: tuple[int, str]
) -> None:
    """An SSE-KMS key the bucket cannot use is found by the probe upload at prepare: one
    destination-wide line naming the code (exit 1 in the CLI), and no upload left over."""
    proxy.fault = lambda r: s3_error(*answer) if _probe(r) and r.method == operation else None
    sink = S3Sink(plain, sse="aws:kms", sse_kms_key_id="no-such-key")

    with pytest.raises(ObjectStoreError, match=answer[1]) as caught:
        await sink.prepare()

    assert not isinstance(caught.value, StoragePermissionError)
    assert caught.value.destination_wide
    assert len(str(caught.value).splitlines()) == 1
    assert incomplete_uploads(admin, plain) == []


async def test_the_probe_leaves_nothing_and_runs_once(
    plain: str, admin: Any, proxy: S3Proxy
) -> None:
    """The settings probe is an aborted one-byte multipart upload, once per sink."""
    sink = S3Sink(plain, storage_class="STANDARD_IA", sse="AES256")
    await sink.prepare()
    await sink.prepare()
    await sink.close()

    probes = [s for s in proxy.seen if ".vobiz-settings-check-" in s.path]
    assert [s.method for s in probes] == ["POST", "PUT", "DELETE"]
    assert probes[0].headers["x-amz-storage-class"] == "STANDARD_IA"
    assert admin.list_objects_v2(Bucket=plain).get("KeyCount") == 0
    assert incomplete_uploads(admin, plain) == []


async def test_a_failed_stamp_in_a_versioned_bucket_leaves_no_version(
    plain: str, admin: Any, proxy: S3Proxy
) -> None:
    """A completed upload that cannot be stamped is deleted by its version, not hidden
    behind a delete marker."""
    admin.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    proxy.fault = lambda r: (
        s3_error(500, "InternalError") if "x-amz-copy-source" in r.headers else None
    )
    sink = S3Sink(plain, part_size=PART, max_attempts=1)
    await sink.prepare()

    with pytest.raises(ObjectStoreError, match="sha256"):
        await store(sink, recording("big"), body_of(PART + 1))
    await sink.close()

    assert versions(admin, plain) == {}


# ------------------------------------------------------------------ the crash gap


async def _without_stamp(*_: Any) -> None:
    """`S3Sink._stamp_completed` as a crash right after CompleteMultipartUpload leaves it."""


@pytest.mark.parametrize("indexed", [False, True])
async def test_an_unstamped_object_is_stamped_by_the_next_run(
    fake: FakeVobiz,
    session: AsyncSession,
    locked: str,
    admin: Any,
    kms_key: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    indexed: bool,
) -> None:
    """A run that stopped between completing a multipart upload and its sha256 stamp left
    an object without `sha256`: the next run (with or without an index) re-hashes it, stamps
    it with every setting, keeps it as one version and skips the recording."""
    rid = fake.add_recording(size=PART + 1000).recording_id
    key = f"calls/{rid}.mp3"
    settings = {**GOVERNED, "sse_kms_key_id": kms_key}
    index = str(tmp_path / "index.db") if indexed else None
    with monkeypatch.context() as patch:
        patch.setattr(S3Sink, "_stamp_completed", _without_stamp)
        first = await session.recordings.download_many(
            [rid], S3Sink(locked, "calls/", part_size=PART, **settings), manifest=index
        )
    assert first.ok
    assert "sha256" not in admin.head_object(Bucket=locked, Key=key)["Metadata"]
    before = datetime.now(UTC)

    sink = S3Sink(locked, "calls/", part_size=PART, **settings)
    again = await session.recordings.download_many([rid], sink, manifest=index)

    assert [r.status for r in again.results] == [DownloadStatus.SKIPPED]
    assert again.results[0].sha256 == fake.sha256(rid)
    head = admin.head_object(Bucket=locked, Key=key)
    assert head["Metadata"]["sha256"] == fake.sha256(rid)
    assert head["Metadata"]["recording-id"] == rid
    assert_governed(head, kms_key, before, datetime.now(UTC))
    assert versions(admin, locked) == {key: 1}
    assert (await audit_objects(sink)).problems == []


async def test_an_object_not_ours_is_never_rewritten(plain: str, admin: Any) -> None:
    """An object without our `recording-id` metadata is re-hashed, not stamped."""
    admin.put_object(Bucket=plain, Key="x.mp3", Body=b"ID3 by hand")
    sink = S3Sink(plain)
    await sink.prepare()
    stored = await sink.digest("x.mp3")
    await sink.close()

    assert stored.sha256 == sha(b"ID3 by hand")
    assert admin.head_object(Bucket=plain, Key="x.mp3")["Metadata"] == {}


# ------------------------------------------------------------------ verify's settings


async def test_the_audit_reports_each_setting_that_differs(plain: str) -> None:
    """Objects stored without settings, audited with them: one problem per setting."""
    writer = S3Sink(plain, part_size=PART)
    await writer.prepare()
    await store(writer, recording("a"), body_of(1000))
    await writer.close()
    reader = S3Sink(plain, sse_kms_key_id="k1", **GOVERNED)

    audit = await audit_objects(reader)

    assert audit.checked == 1
    assert sorted((p.kind, p.expected) for p in audit.problems) == [
        ("encryption", "aws:kms k1"),
        ("legal-hold", "ON"),
        ("retention", f"GOVERNANCE for {DAYS} days"),
        ("storage-class", "GLACIER_IR"),
    ]


@pytest.mark.parametrize(
    "settings",
    [
        {"storage_class": "glacier"},
        {"sse": "aws:kms:dsse"},
        {"sse_kms_key_id": "k"},
        {"sse": "AES256", "sse_kms_key_id": "k"},
        {"object_lock_mode": "GOVERNANCE"},
        {"object_lock_retain_days": 3},
        {"object_lock_mode": "LEGAL", "object_lock_retain_days": 3},
        {"object_lock_mode": "GOVERNANCE", "object_lock_retain_days": 0},
    ],
)
def test_contradicting_settings_are_refused(settings: dict[str, Any]) -> None:
    """Settings S3 would refuse, or that need each other, fail at construction."""
    with pytest.raises(ConfigurationError):
        S3Sink("bucket", **settings)


# ------------------------------------------------------------------ the CLI


def cli_env(fake: FakeVobiz, moto_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")},
        "AWS_ENDPOINT_URL": moto_url,
        "VOBIZ_AUTH_ID": fake.auth_id,
        "VOBIZ_AUTH_TOKEN": fake.auth_token,
        "VOBIZ_BASE_URL": fake.base_url,
    }


def media_requests(fake: FakeVobiz) -> int:
    return sum(1 for r in fake.stats.requests if r.operation in ("media", "storage"))


async def test_cli_archives_with_every_flag_and_verify_accepts_it(
    fake: FakeVobiz, locked: str, admin: Any, kms_key: str, moto_url: str
) -> None:
    """`download` with the governance flags, then `verify` with the same: exit 0, every
    object governed, the objects counted; `verify` expecting COMPLIANCE names each one."""
    for size in (20_000, PART + 10):
        fake.add_recording(size=size)
    env = cli_env(fake, moto_url)
    dest = f"s3://{locked}/calls/"
    flags = [
        *("--s3-storage-class", "GLACIER_IR", "--s3-sse", "aws:kms"),
        *("--s3-sse-kms-key-id", kms_key, "--s3-object-lock-mode", "GOVERNANCE"),
        *("--s3-retain-days", str(DAYS), "--s3-legal-hold"),
    ]
    before = datetime.now(UTC)

    done = await run_cli("download", "--out", dest, *flags, env=env)

    assert done.code == 0, done.output
    stored = [o["Key"] for o in admin.list_objects_v2(Bucket=locked)["Contents"]]
    assert len(stored) == 2
    for key in stored:
        assert_governed(
            admin.head_object(Bucket=locked, Key=key), kms_key, before, datetime.now(UTC)
        )
    assert set(versions(admin, locked).values()) == {1}
    ok = await run_cli("verify", dest, *flags, "--json", env=env)
    assert ok.code == 0, ok.output
    assert json.loads(ok.out) == {"checked": 2, "problems": []}
    flags[flags.index("GOVERNANCE")] = "COMPLIANCE"
    bad = await run_cli("verify", dest, *flags, env=env)
    assert bad.code == 1
    assert bad.out.count("retention: s3://") == 2, bad.out
    bad_json = json.loads((await run_cli("verify", dest, *flags, "--json", env=env)).out)
    assert bad_json["checked"] == 2
    assert {p["kind"] for p in bad_json["problems"]} == {"retention"}
    assert all(p["detail"].startswith("GOVERNANCE until ") for p in bad_json["problems"])


async def test_cli_lock_flags_on_a_bucket_without_object_lock(
    fake: FakeVobiz, plain: str, moto_url: str
) -> None:
    """Lock flags into a bucket without Object Lock: one line, exit 1, no media fetched."""
    for _ in range(2):
        fake.add_recording(size=1_000)
    flags = ("--s3-object-lock-mode", "GOVERNANCE", "--s3-retain-days", "7")

    done = await run_cli(
        "download", "--out", f"s3://{plain}/x/", *flags, env=cli_env(fake, moto_url)
    )

    assert done.code == 1, done.output
    assert len(done.err.strip().splitlines()) == 1, done.err
    assert "Object Lock" in done.err
    assert plain in done.err
    assert media_requests(fake) == 0


async def test_cli_verify_counts_objects_without_an_index(
    fake: FakeVobiz, plain: str, moto_url: str
) -> None:
    """`verify s3://... --json` without `--index` gives the number of objects it checked."""
    for _ in range(3):
        fake.add_recording(size=1_000)
    env = cli_env(fake, moto_url)
    assert (await run_cli("download", "--out", f"s3://{plain}/", env=env)).code == 0

    done = await run_cli("verify", f"s3://{plain}/", "--json", env=env)
    text = await run_cli("verify", f"s3://{plain}/", env=env)

    assert done.code == 0, done.output
    assert json.loads(done.out) == {"checked": 3, "problems": []}
    assert "verified 3 object(s) in " in text.out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["download", "--out", "archive-folder", "--s3-storage-class", "GLACIER_IR"], "s3://"),
        (["verify", "archive-folder", "--s3-legal-hold"], "s3://"),
        (["download", "--out", "s3://b/", "--s3-sse-kms-key-id", "k"], "--s3-sse aws:kms"),
        (
            ["download", "--out", "s3://b/", "--s3-sse", "AES256", "--s3-sse-kms-key-id", "k"],
            "--s3-sse aws:kms",
        ),
        (["download", "--out", "s3://b/", "--s3-retain-days", "5"], "--s3-object-lock-mode"),
        (
            ["download", "--out", "s3://b/", "--s3-object-lock-mode", "COMPLIANCE"],
            "--s3-retain-days",
        ),
        (["verify", "s3://b/", "--s3-retain-days", "5"], "--s3-object-lock-mode"),
    ],
)
async def test_cli_refuses_incomplete_governance_flags(argv: list[str], says: str) -> None:
    """A governance flag without what it needs, or with a folder: one line, exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}

    done = await run_cli(*argv, env={**env, "VOBIZ_AUTH_ID": "x", "VOBIZ_AUTH_TOKEN": "y"})

    assert done.code == 2, done.output
    assert len(done.err.strip().splitlines()) == 1, done.err
    assert says in done.err


def test_ray_workers_build_their_sink_with_the_same_settings() -> None:
    """`RayEngine` sends workers an `S3Sink`'s settings, not the sink: the governance ones
    travel too, so a worker's objects are governed like the driver's."""
    import pickle

    from vobiz_async.scaleout import _S3Target

    sink = S3Sink("bucket", "p/", sse_kms_key_id="k", **GOVERNED)

    travelled = pickle.loads(pickle.dumps(_S3Target.of(sink)))  # noqa: S301 - our own bytes
    rebuilt = travelled.sink("date")

    assert rebuilt.settings() == sink.settings()
    assert rebuilt.settings()["object_lock_retain_days"] == DAYS


async def test_cli_repair_does_not_refetch_for_a_setting(
    fake: FakeVobiz, plain: str, moto_url: str
) -> None:
    """`download --repair` with a governance flag the archive was not made with re-fetches
    nothing: fetching a recording again would not change what the bucket kept."""
    for _ in range(2):
        fake.add_recording(size=1_000)
    env = cli_env(fake, moto_url)
    dest = f"s3://{plain}/"
    assert (await run_cli("download", "--out", dest, env=env)).code == 0
    before = media_requests(fake)

    done = await run_cli(
        "download", "--out", dest, "--repair", "--s3-storage-class", "STANDARD_IA", env=env
    )

    assert done.code == 0, done.output
    assert "nothing to fetch" in done.out
    assert media_requests(fake) == before


@pytest.mark.parametrize(
    ("flag", "value"), [("--s3-storage-class", "glacier ir"), ("--s3-retain-days", "0")]
)
async def test_cli_refuses_bad_governance_values(flag: str, value: str) -> None:
    """A value S3 would refuse is argparse's usage error (exit 2), naming the flag."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}
    argv = ["download", "--out", "s3://b/", flag, value]
    if flag == "--s3-retain-days":
        argv += ["--s3-object-lock-mode", "GOVERNANCE"]

    done = await run_cli(*argv, env={**env, "VOBIZ_AUTH_ID": "x", "VOBIZ_AUTH_TOKEN": "y"})

    assert done.code == 2, done.output
    assert flag in done.err.strip().splitlines()[-1]


async def test_a_foreign_multipart_object_costs_no_read_back(
    plain: str, admin: Any, proxy: S3Proxy
) -> None:
    """A multipart object someone else uploaded (no metadata of ours) at a recording's key:
    a lookup without an index HEADs it but neither reads it back nor rewrites it."""
    upload = admin.create_multipart_upload(Bucket=plain, Key="rec1.mp3")
    part = admin.upload_part(
        Bucket=plain, Key="rec1.mp3", UploadId=upload["UploadId"], PartNumber=1, Body=b"ID3 x"
    )
    admin.complete_multipart_upload(
        Bucket=plain,
        Key="rec1.mp3",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    sink = S3Sink(plain)
    await sink.prepare()

    stored = await sink.lookup("rec1", recording("rec1"))
    await sink.close()

    assert stored is not None
    assert (stored.size, stored.sha256) == (5, None)
    assert [s.method for s in proxy.seen if s.path.endswith("/rec1.mp3")] == ["HEAD"]
    assert admin.head_object(Bucket=plain, Key="rec1.mp3")["Metadata"] == {}
