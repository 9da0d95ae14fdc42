"""One version per key, also after a stopped run (issue 25 §2).

A multipart recording is stamped with its sha256 by a copy onto itself; in a versioned
bucket the version the copy replaced is then deleted by its id. A run stopped between the
two (simulated here by `S3Sink._drop_version` doing nothing, as a crash right before that
delete leaves it) leaves two versions of the key. The next run that handles the recording
(a download rerun with an index, `move` before its DELETE at Vobiz) deletes the older one
when it holds the same bytes, keeps and reports one with other content, and `verify`
reports the key while it has more than one version.

moto on 127.0.0.1: a versioned bucket, and an Object Lock bucket with GOVERNANCE retention,
legal hold, SSE-KMS and a storage class.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_cli import run_cli
from test_s3_governance import (  # fixtures and helpers (moto_url: conftest)
    DAYS,
    GOVERNED,
    _endpoint,
    _fake,
    _kms_key,
    _locked,
    _plain,
    assert_governed,
    cli_env,
    versions,
)
from test_s3_sink import (
    PART,
    SECRET,
    TOKEN,
    S3Proxy,
    _admin,
    _aws_env,
    _proxy,
    body_of,
    recording,
    s3_error,
    sha,
    store,
)

from vobiz_async import AsyncSession, DownloadStatus
from vobiz_async.sinks import S3Sink, audit_objects
from vobiz_async.testing import FakeVobiz

__all__ = [  # fixtures, imported for use here
    "_admin",
    "_aws_env",
    "_endpoint",
    "_fake",
    "_kms_key",
    "_locked",
    "_plain",
    "_proxy",
]

boto3 = pytest.importorskip("boto3")
assert DAYS  # the retention `GOVERNED` asks for, checked by `assert_governed`


async def _not_called(*_: Any) -> None:
    """`S3Sink._drop_version` as a run stopped right before it leaves it: never called."""


@pytest.fixture(name="crash")
def _crash(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`with crash():` a run whose stamps never delete the version they replaced."""

    @contextlib.contextmanager
    def crashing() -> Iterator[None]:
        with monkeypatch.context() as patch:
            patch.setattr(S3Sink, "_drop_version", _not_called)
            yield

    return crashing


def version_sizes(admin: Any, bucket: str, key: str) -> list[tuple[int, bool]]:
    """(size, is the current one) of each version of `key`, newest first."""
    answer = admin.list_object_versions(Bucket=bucket, Prefix=key)
    return [(v["Size"], v["IsLatest"]) for v in answer.get("Versions", []) if v["Key"] == key]


def extra_versions(problems: list[Any]) -> list[tuple[str, str]]:
    return [(p.key, p.actual) for p in problems if p.kind == "extra-version"]


@pytest.fixture(name="versioned")
def _versioned(plain: str, admin: Any) -> str:
    admin.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    return plain


@pytest.mark.parametrize("governed", [False, True], ids=["versioned", "object-lock"])
async def test_a_rerun_with_an_index_leaves_one_version(
    fake: FakeVobiz,
    session: AsyncSession,
    admin: Any,
    crash: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    governed: bool,
) -> None:
    """A crash after the stamp and before the delete leaves two versions, which `verify`
    (a reader: it changes nothing) reports; a rerun with the index skips the recording and
    deletes the unstamped one, leaving the stamped current version with every setting, and
    `verify` then finds nothing. A single-PUT recording beside it is never touched."""
    if governed:
        bucket = request.getfixturevalue("locked")
        settings = {**GOVERNED, "sse_kms_key_id": request.getfixturevalue("kms_key")}
    else:
        bucket, settings = request.getfixturevalue("versioned"), {}
    big = fake.add_recording(size=PART + 1000).recording_id
    small = fake.add_recording(size=20_000).recording_id
    key = f"calls/{big}.mp3"
    index = str(tmp_path / "index.db")
    before = datetime.now(UTC)  # the stamp (and its retention) comes from the first run
    with crash():
        first = await session.recordings.download_many(
            [big, small], S3Sink(bucket, "calls/", part_size=PART, **settings), manifest=index
        )
    assert first.ok
    assert len(version_sizes(admin, bucket, key)) == 2
    sink = S3Sink(bucket, "calls/", part_size=PART, **settings)
    assert extra_versions((await audit_objects(sink)).problems) == [(f"{big}.mp3", "2 versions")]
    assert len(version_sizes(admin, bucket, key)) == 2  # verify only reports

    again = await session.recordings.download_many([big, small], sink, manifest=index)

    assert [r.status for r in again.results] == [DownloadStatus.SKIPPED] * 2
    assert version_sizes(admin, bucket, key) == [(PART + 1000, True)]
    assert versions(admin, bucket) == {key: 1, f"calls/{small}.mp3": 1}
    head = admin.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["sha256"] == fake.sha256(big)
    got = admin.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert sha(got) == fake.sha256(big)
    if governed:
        assert_governed(head, settings["sse_kms_key_id"], before, datetime.now(UTC))
    assert (await audit_objects(sink)).problems == []


async def test_move_removes_the_leftover_before_it_deletes_at_vobiz(
    fake: FakeVobiz,
    session: AsyncSession,
    locked: str,
    admin: Any,
    kms_key: str,
    crash: Any,
    tmp_path: Path,
) -> None:
    """`move` after the crash: the recording is proven and deleted at Vobiz, and its key is
    one version by the time of that DELETE."""
    settings = {**GOVERNED, "sse_kms_key_id": kms_key}
    rid = fake.add_recording(size=PART + 77).recording_id
    key = f"calls/{rid}.mp3"
    index = str(tmp_path / "index.db")
    with crash():
        first = await session.recordings.download_many(
            [rid], S3Sink(locked, "calls/", part_size=PART, **settings), manifest=index
        )
    assert first.ok
    assert len(version_sizes(admin, locked, key)) == 2
    at_delete: list[int] = []
    fake.delete_hook = lambda _: at_delete.append(len(version_sizes(admin, locked, key)))

    report = await session.recordings.move_many(
        [rid], S3Sink(locked, "calls/", part_size=PART, **settings), manifest=index
    )

    assert report.counts["deleted"] == 1
    assert at_delete == [1]
    assert fake.recording_ids == []
    head = admin.head_object(Bucket=locked, Key=key)
    assert head["Metadata"]["sha256"] == fake.sha256(rid)
    assert head["ObjectLockLegalHoldStatus"] == "ON"


async def test_digest_alone_removes_the_leftover(versioned: str, admin: Any, crash: Any) -> None:
    """The release pass proves an S3 copy through `digest`: that alone settles the key."""
    data = body_of(PART + 5)
    sink = S3Sink(versioned, part_size=PART)
    await sink.prepare()
    with crash():
        await store(sink, recording("big"), data)
    await sink.close()
    assert len(version_sizes(admin, versioned, "big.mp3")) == 2

    await sink.prepare()
    stored = await sink.digest("big.mp3")
    await sink.close()

    assert stored.sha256 == sha(data)
    assert version_sizes(admin, versioned, "big.mp3") == [(PART + 5, True)]


def _other_size(admin: Any, bucket: str, data: bytes) -> None:
    admin.put_object(Bucket=bucket, Key="big.mp3", Body=b"ID3 an older recording")


def _same_size_other_sha256(admin: Any, bucket: str, data: bytes) -> None:
    other = data[:-1] + b"\x00"
    admin.put_object(Bucket=bucket, Key="big.mp3", Body=other, Metadata={"sha256": sha(other)})


def _same_size_unstamped_other_bytes(admin: Any, bucket: str, data: bytes) -> None:
    admin.put_object(
        Bucket=bucket, Key="big.mp3", Body=data[:-1] + b"\x00", Metadata={"recording-id": "big"}
    )


@pytest.mark.parametrize(
    "older",
    [_other_size, _same_size_other_sha256, _same_size_unstamped_other_bytes],
    ids=["other-size", "same-size-other-sha256", "same-size-unstamped-other-bytes"],
)
async def test_an_older_version_with_other_content_is_kept_and_reported(
    versioned: str, admin: Any, crash: Any, caplog: pytest.LogCaptureFixture, older: Any
) -> None:
    """An older version under the key that holds other bytes (another size, another
    sha256, or unstamped bytes that re-hash to another sha256) is never deleted: it is
    named in a warning (without any secret); the stopped run's own leftover still goes."""
    data = body_of(PART + 10)
    older(admin, versioned, data)
    sink = S3Sink(versioned, part_size=PART)
    await sink.prepare()
    with crash():
        await store(sink, recording("big"), data)
    await sink.close()
    foreign = version_sizes(admin, versioned, "big.mp3")[-1]
    assert len(version_sizes(admin, versioned, "big.mp3")) == 3

    await sink.prepare()
    with caplog.at_level(logging.INFO, logger="vobiz_async"):
        stored = await sink.lookup("big", None, key="big.mp3")
    problems = (await audit_objects(sink)).problems
    await sink.close()

    assert stored is not None
    assert stored.sha256 == sha(data)
    assert version_sizes(admin, versioned, "big.mp3") == [(PART + 10, True), foreign]
    kept = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(kept) == 1, kept
    assert f"s3://{versioned}/big.mp3" in kept[0]
    assert "kept" in kept[0]
    assert SECRET not in caplog.text
    assert TOKEN not in caplog.text
    assert extra_versions(problems) == [("big.mp3", "2 versions")]


async def test_a_refused_delete_is_said_once_and_the_recording_is_safe(
    locked: str, admin: Any, crash: Any, caplog: pytest.LogCaptureFixture, proxy: S3Proxy
) -> None:
    """The store refuses to delete the leftovers (AccessDenied, as for a version a bucket's
    default retention locked; moto does not lock it): one warning for the batch, each
    recording still found stamped, both versions kept."""
    proxy.fault = lambda r: (
        s3_error(403, "AccessDenied") if r.method == "DELETE" and "versionId" in r.query else None
    )
    bodies = {rid: body_of(PART + n) for n, rid in enumerate(("a", "b"), start=1)}
    sink = S3Sink(locked, part_size=PART)
    await sink.prepare()
    with crash():
        for rid, data in bodies.items():
            await store(sink, recording(rid), data)
    await sink.close()

    await sink.prepare()
    with caplog.at_level(logging.WARNING, logger="vobiz_async"):
        found = [await sink.lookup(rid, None, key=f"{rid}.mp3") for rid in bodies]
    await sink.close()

    assert [f.sha256 if f else None for f in found] == [sha(d) for d in bodies.values()]
    refused = [r for r in caplog.records if "could not remove version" in r.getMessage()]
    assert len(refused) == 1, caplog.text
    assert "safe" in refused[0].getMessage()
    assert [len(version_sizes(admin, locked, f"{rid}.mp3")) for rid in bodies] == [2, 2]


def _operations(proxy: S3Proxy) -> list[str]:
    named = {
        "versions": "ListObjectVersions",
        "versioning": "GetBucketVersioning",
        "list-type": "ListObjectsV2",
    }
    return [
        next((op for q, op in named.items() if q in s.query), s.method)
        for s in proxy.seen
        if s.method in ("GET", "HEAD", "DELETE")
    ]


@pytest.mark.parametrize("keyed", [True, False], ids=["with-index", "without-index"])
@pytest.mark.parametrize("enabled", [False, True], ids=["unversioned", "versioned"])
async def test_what_a_rerun_costs(
    plain: str, admin: Any, proxy: S3Proxy, enabled: bool, keyed: bool
) -> None:
    """Rerun lookups of two single-PUT and two multipart recordings, all intact.

    By key (an index): each costs its HEAD, and a stamped multipart one in a versioned
    bucket one ListObjectVersions more (its HEAD names a version: no GetBucketVersioning).
    Without a key: each its narrowed listing; an object larger than a part asks the bucket
    once (GetBucketVersioning) and, in a versioned bucket only, costs a HEAD and a
    ListObjectVersions."""
    if enabled:
        admin.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    sizes = {"s1": 1_000, "s2": 2_000, "m1": PART + 1, "m2": PART + 2}
    sink = S3Sink(plain, part_size=PART)
    await sink.prepare()
    for rid, size in sizes.items():
        await store(sink, recording(rid), body_of(size))
    await sink.close()
    await sink.prepare()
    proxy.seen.clear()

    for rid in sizes:
        key = f"{rid}.mp3" if keyed else None
        assert await sink.lookup(rid, recording(rid), key=key) is not None
    await sink.close()

    large = ["HEAD", "ListObjectVersions"] * 2 if enabled else []
    if keyed:
        expected = ["HEAD"] * 2 + (large or ["HEAD"] * 2)
    else:
        expected = ["ListObjectsV2"] * 4 + ["GetBucketVersioning"] + large
    assert sorted(_operations(proxy)) == sorted(expected)


async def test_a_rerun_without_an_index_leaves_one_version(
    fake: FakeVobiz, session: AsyncSession, versioned: str, admin: Any, crash: Any
) -> None:
    """Without an index, the rerun's lookup finds the recording by a listing (no metadata):
    being larger than a part in a versioned bucket, it gets a HEAD, which settles it."""
    rid = fake.add_recording(size=PART + 4321).recording_id
    key = f"calls/{rid}.mp3"
    with crash():
        first = await session.recordings.download_many(
            [rid], S3Sink(versioned, "calls/", part_size=PART)
        )
    assert first.ok
    assert len(version_sizes(admin, versioned, key)) == 2

    again = await session.recordings.download_many(
        [rid], S3Sink(versioned, "calls/", part_size=PART)
    )

    assert [r.status for r in again.results] == [DownloadStatus.SKIPPED]
    assert again.results[0].sha256 == fake.sha256(rid)
    assert version_sizes(admin, versioned, key) == [(PART + 4321, True)]


async def test_cli_verify_reports_the_extra_version_until_a_rerun(
    fake: FakeVobiz, versioned: str, admin: Any, moto_url: str, tmp_path: Path
) -> None:
    """`verify s3://` (exit 1, kind `extra-version`) while the key has two versions; after
    a `download` rerun with the index, exit 0. The crash is simulated with the admin
    client: an unstamped version, then its stamping copy, over the recording's own."""
    rid = fake.add_recording(size=PART + 321).recording_id
    env = cli_env(fake, moto_url)
    dest = f"s3://{versioned}/calls/"
    index = str(tmp_path / "index.db")
    assert (await run_cli("download", "--out", dest, "--index", index, env=env)).code == 0, (
        "download"
    )
    key = f"calls/{rid}.mp3"
    current = admin.get_object(Bucket=versioned, Key=key)
    data = current["Body"].read()
    # (the CLI's part size is 8 MiB: this recording was one PUT; the crash is made by hand)
    stamped = current["Metadata"]
    unstamped = {k: v for k, v in stamped.items() if k != "sha256"}
    admin.put_object(Bucket=versioned, Key=key, Body=data, Metadata=unstamped)
    admin.copy_object(  # and its stamp on top, as `_stamp` writes it
        Bucket=versioned,
        Key=key,
        CopySource={"Bucket": versioned, "Key": key},
        MetadataDirective="REPLACE",
        Metadata={**stamped, "stamped-by-copy": "1"},
    )
    assert len(version_sizes(admin, versioned, key)) == 3

    bad = await run_cli("verify", dest, "--json", env=env)

    assert bad.code == 1, bad.output
    (problem,) = json.loads(bad.out)["problems"]
    assert (problem["kind"], problem["path"]) == ("extra-version", f"s3://{versioned}/{key}")
    assert problem["detail"] == "3 versions, expected 1 version"
    again = await run_cli("download", "--out", dest, "--index", index, env=env)
    assert again.code == 0, again.output
    assert version_sizes(admin, versioned, key) == [(len(data), True)]
    ok = await run_cli("verify", dest, "--json", env=env)
    assert ok.code == 0, ok.output
