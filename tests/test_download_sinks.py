"""Disk and sinks: fsync, an unwritable, full or read-only destination and a torn write, with
the directory sink's `open` wrapped where a real file system cannot be made to fail.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _download_helpers import (
    PartFile,
    add,
    assert_no_partial_finals,
    assert_verified,
    recording,
    wrap_part_files,
)

from vobiz_async import (
    AsyncSession,
    DiskError,
    DownloadStatus,
)
from vobiz_async.testing import FakeVobiz

# --------------------------------------------------------------------------- fsync


@pytest.mark.parametrize("fsync", [True, False])
async def test_fsync_option(
    fake: FakeVobiz,
    session: AsyncSession,
    dest: Path,
    monkeypatch: pytest.MonkeyPatch,
    fsync: bool,
) -> None:
    """fsync=True flushes each `.part` before its rename and then its folder; False, nothing."""
    rids = add(fake, 2)
    flushed: list[Path] = []  # what each os.fsync reached, by the name it had at that moment
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        flushed.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)

    report = await session.recordings.download_many(
        [recording(fake, rid) for rid in rids], dest, fsync=fsync
    )

    for result in report.results:
        assert_verified(fake, result)
    under_dest = [p for p in flushed if p.is_relative_to(dest)]
    if not fsync:
        assert under_dest == []
        return
    for rid in rids:
        part = dest / f"{rid}.part"
        assert part in under_dest, f"{rid}: its .part was not flushed before the rename"
        assert dest in under_dest[under_dest.index(part) :], f"{rid}: folder not flushed after"


# --------------------------------------------------------------------------- disk errors


async def test_unwritable_dest_fails_with_disk_error(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """An unwritable dest fails every item with DiskError and a clear message."""
    if os.geteuid() == 0:  # root ignores permission bits: a file as parent gives ENOTDIR
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory")
        dest = blocker / "archive"
        reason = os.strerror(errno.ENOTDIR)
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        dest = locked / "archive"
        reason = os.strerror(errno.EACCES)
    rids = add(fake, 3)

    try:
        report = await session.recordings.download_many(
            [recording(fake, rid) for rid in rids], dest
        )
    finally:
        if not dest.parent.is_file():
            dest.parent.chmod(0o700)

    assert len(report.failed) == 3
    for result in report.failed:
        assert isinstance(result.error, DiskError)
        assert reason in str(result.error)
        assert str(dest) in str(result.error)


class _FullFile(PartFile):
    """A file whose writes fail with ENOSPC once a shared byte budget is spent."""

    def __init__(self, file: Any, budget: list[int]) -> None:
        super().__init__(file)
        self._budget = budget

    def write(self, data: bytes) -> int:
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= len(data)
        return super().write(data)


@pytest.fixture(name="small_disk")
def _small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory with about 1 MB of space: a real tmpfs when we may mount one.

    Otherwise the downloader's `open` is patched so `.part` files fail with ENOSPC after
    1 MB.
    """
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if os.geteuid() == 0 and mount and umount:
        done = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            try:
                yield mount_point
            finally:
                subprocess.run([umount, str(mount_point)], check=True)  # noqa: S603
            return
    budget = [1 << 20]
    wrap_part_files(monkeypatch, lambda file: _FullFile(file, budget))
    yield mount_point


async def test_full_disk_stops_new_transfers(
    fake: FakeVobiz, session: AsyncSession, small_disk: Path
) -> None:
    """On ENOSPC the batch stops starting transfers; the rest fail fast with DiskError."""
    rids = add(fake, 20, size=200_000)
    concurrency = 2

    report = await session.recordings.download_many(
        [recording(fake, rid) for rid in rids], small_disk, concurrency=concurrency
    )

    assert len(report.results) == len(rids)  # one result per input item
    assert 0 < len(report.downloaded) < len(rids)
    assert len(report.failed) == len(rids) - len(report.downloaded)
    assert all(isinstance(r.error, DiskError) for r in report.failed)
    assert any(os.strerror(errno.ENOSPC) in str(r.error) for r in report.failed)
    assert fake.stats.media_requests <= len(report.downloaded) + concurrency
    assert all(r.attempts <= 1 for r in report.failed)  # fast: no retry, no backoff wait
    for result in report.downloaded:
        assert_verified(fake, result)
    assert_no_partial_finals(fake, small_disk)


class _TornWrite(PartFile):
    """A file whose third write lands half its bytes and then fails with ENOSPC."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes == 3:
            super().write(data[: len(data) // 2])
            self.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


async def test_a_torn_write_fails_and_the_next_run_resumes_whole(
    fake: FakeVobiz, session: AsyncSession, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails halfway fails the item with DiskError, leaves a partial that is a
    prefix of the served bytes, and the next run resumes it to the whole recording."""
    (rid,) = add(fake, size=2_000_000)
    wrap_part_files(monkeypatch, _TornWrite)

    torn = await session.recordings.download(recording(fake, rid), dest)

    assert torn.status is DownloadStatus.FAILED
    assert isinstance(torn.error, DiskError)
    part = dest / f"{rid}.part"
    assert part.read_bytes() == fake.body(rid)[: part.stat().st_size]
    monkeypatch.undo()

    again = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, again)


async def test_a_destination_turning_read_only_stops_new_transfers(
    fake: FakeVobiz, session: AsyncSession, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the folder turns read-only mid-batch, the batch stops starting transfers: one
    EROFS error, then every remaining item is `not started`, not one write error each."""
    rids = add(fake, 12, size=20_000)
    opened = [0]

    def read_only_after_three(file: Any) -> PartFile:
        opened[0] += 1
        if opened[0] > 3:
            file.close()
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return PartFile(file)

    wrap_part_files(monkeypatch, read_only_after_three)

    report = await session.recordings.download_many(
        [recording(fake, rid) for rid in rids], dest, concurrency=2
    )

    assert len(report.downloaded) == 3
    errors = [str(r.error) for r in report.failed]
    assert len(errors) == 9
    assert sum(os.strerror(errno.EROFS) in e and "not started" not in e for e in errors) <= 2
    not_started = [e for e in errors if e.startswith("not started: the destination is not")]
    assert len(not_started) >= 7
    assert fake.stats.media_requests <= 3 + 2
