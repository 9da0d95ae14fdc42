"""`vobiz-recordings move`: the command line around `move_many` (issue 24 §3): its dry run,
the delete cap, refused credentials on DELETE, and kill -9 mid-move then a re-run."""

from __future__ import annotations

import json
import os
import signal
from decimal import Decimal
from pathlib import Path

import pytest
from test_cli import Result, finish, run_cli, sha256, start_cli
from test_cli_dryrun import _env, _fake  # ten recordings, and the CLI's environment for them
from test_move import ProofAtDelete

from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.testing import FakeVobiz

__all__ = ["_env", "_fake"]  # fixtures, imported for use here


def operations(fake: FakeVobiz, *names: str) -> int:
    return sum(1 for r in fake.stats.requests if r.operation in names)


async def test_dry_run_says_what_would_be_deleted_and_changes_nothing(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """would_delete and releasable_amount under the cap; no media, no DELETE, no folder."""
    out = tmp_path / "out"
    fake.stats.reset()
    newest = fake.recording_ids[:4]  # the listing is newest first
    amount = sum(Decimal(str(fake.recordings[r].monthly_recording_storage_amount)) for r in newest)

    result = await run_cli(
        "move", "--out", str(out), "--dry-run", "--max-delete", "4", "--json", env=env
    )

    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["would_download"] == 10
    assert plan["would_delete"] == 4
    assert Decimal(plan["releasable_amount"]) == amount
    assert operations(fake, "media", "storage", "delete") == 0
    assert len(fake.recording_ids) == 10
    assert not out.exists()


async def test_max_delete_stops_deletes_with_one_line_and_exit_1(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """Two DELETEs, everything archived, one line about the cap, the JSON counts them."""
    out = tmp_path / "out"

    result = await run_cli("move", "--out", str(out), "--max-delete", "2", "--json", env=env)

    assert result.code == 1, result.err
    summary = json.loads(result.out)
    assert summary["downloaded"] == 10
    assert summary["deleted"] == 2
    assert summary["delete_failures"] == []
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "cap of 2" in lines[0]
    assert len(fake.recording_ids) == 8


async def test_refused_credentials_on_delete_say_one_line_and_exit_3(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """401 on DELETE: archiving completes, nothing is deleted, one line, exit 3."""
    fake.api_fault("delete", 401, times=100)
    out = tmp_path / "out"

    result = await run_cli("move", "--out", str(out), "--concurrency", "1", env=env)

    assert result.code == 3, result.err
    assert "downloaded 10" in result.out
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "credentials" in lines[0]
    assert operations(fake, "delete") == 1
    assert len(fake.recording_ids) == 10


async def stop_at_the_third_delete(
    fake: FakeVobiz, env: dict[str, str], out: Path, signum: int
) -> tuple[Result, ProofAtDelete]:
    """`move` into `out`, sent `signum` inside the fake's third DELETE (after the proof of
    every DELETE is taken); its result, and the proof, hooked up for the re-run."""
    proof = ProofAtDelete(fake, out)
    proc = await start_cli("move", "--out", str(out), "--concurrency", "1", env=env)

    def stop_at_the_third(rid: str) -> None:
        proof(rid)
        if len(proof.seen) == 3:
            os.kill(proc.pid, signum)

    fake.delete_hook = stop_at_the_third
    first = await finish(proc)
    fake.delete_hook = proof
    return first, proof


def archived(out: Path) -> dict[str, str]:
    """Each archived recording's sha256, by id."""
    return {p.stem: sha256(p) for p in out.iterdir() if p.suffix in (".mp3", ".wav")}


async def finish_the_job(
    fake: FakeVobiz, env: dict[str, str], out: Path, served: dict[str, str], proof: ProofAtDelete
) -> None:
    """The same command again: every recording deleted at Vobiz, each proven first, every
    file whole, every deletion stamped in the index."""
    again = await run_cli("move", "--out", str(out), env=env)

    assert again.code == 0, again.err
    assert proof.problems == []
    assert fake.recording_ids == []
    assert archived(out) == served
    with Manifest(out / MANIFEST_NAME) as index:
        assert {e.recording_id: e.sha256 for e in index} == served
        assert index.released_count() == 10
        assert index.unsettled_deletions() == []


async def test_kill_9_mid_move_then_the_same_command_finishes(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """Killed at its third DELETE: nothing was deleted that the archive and index do not
    hold; the same command again deletes the rest, every recording is archived whole, and
    the DELETE the kill cut short (it went through) is stamped: the re-run asked Vobiz."""
    out = tmp_path / "out"
    served = {rid: fake.sha256(rid) for rid in fake.recording_ids}
    first, proof = await stop_at_the_third_delete(fake, env, out, signal.SIGKILL)
    assert first.code == -signal.SIGKILL
    assert 0 < len(fake.recording_ids) < 10

    await finish_the_job(fake, env, out, served, proof)


async def test_ctrl_c_mid_move_then_the_same_command_finishes(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """Ctrl-C at its third DELETE: exit 130 with no traceback, nothing deleted that the
    archive and index do not hold, and every DELETE that answered is stamped; the same
    command again deletes the rest."""
    out = tmp_path / "out"
    served = {rid: fake.sha256(rid) for rid in fake.recording_ids}
    first, proof = await stop_at_the_third_delete(fake, env, out, signal.SIGINT)
    assert first.code == 130, first.err
    assert "Traceback" not in first.err
    assert proof.problems == []
    gone = set(served) - set(fake.recording_ids)
    assert 0 < len(gone) < 10
    with Manifest(out / MANIFEST_NAME) as index:
        stamped = {e.recording_id for e in index if e.deleted_at is not None}
    assert stamped <= gone
    assert len(gone - stamped) <= 1  # only the DELETE the interrupt cut short may be unstamped

    await finish_the_job(fake, env, out, served, proof)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--no-index"], "--no-index"),
        (["--out", "s3://bucket/calls/"], "--index"),
        (["--ids", "a", "--min-age", "7d"], "cannot be used together"),
    ],
)
async def test_what_move_cannot_prove_against_is_refused(
    env: dict[str, str], tmp_path: Path, args: list[str], says: str
) -> None:
    """Without an index there is nothing to prove against: exit 2, one line, nothing made."""
    out = tmp_path / "out"
    if "--out" not in args:
        args = ["--out", str(out), *args]

    result = await run_cli("move", *args, env=env)

    assert result.code == 2, result.err
    assert says in result.err
    assert not out.exists()


async def test_move_takes_every_download_option(env: dict[str, str]) -> None:
    """The parser adds download's options with download's own functions, and --max-delete."""
    download = await run_cli("download", "--help", env=env)
    move = await run_cli("move", "--help", env=env)
    flags = {word.strip("[],") for word in download.out.split() if word.startswith("--")}
    shown = {word.strip("[],") for word in move.out.split() if word.startswith("--")}
    assert flags <= shown
    assert "--max-delete" in shown


async def test_dry_run_of_given_ids_would_delete_only_those(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """With --ids the plan is of those recordings, not of the whole listing."""
    out = tmp_path / "out"
    chosen = fake.recording_ids[3:5]

    result = await run_cli(
        "move", "--out", str(out), "--dry-run", "--json", "--ids", *chosen, env=env
    )

    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["delete_ids"] == chosen
    assert plan["would_download"] == 2
    assert operations(fake, "media", "storage", "delete") == 0
    assert not out.exists()


async def test_dry_run_into_object_storage_skips_what_the_index_holds(
    fake: FakeVobiz, env: dict[str, str], tmp_path: Path
) -> None:
    """For s3:// the index says what is archived (no request to the bucket); the index
    file is left byte for byte as it was."""
    index = tmp_path / "calls.index"
    with Manifest(index) as manifest:
        for rid in fake.recording_ids[:3]:
            manifest.record(
                rid, f"{rid}.mp3", size=1, sha256="a" * 64, container=None, add_time=None
            )
    before = index.read_bytes()

    result = await run_cli(
        "move", "--out", "s3://bucket/calls/", "--index", str(index), "--dry-run", "--json", env=env
    )

    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert (plan["would_skip"], plan["would_download"], plan["would_delete"]) == (3, 7, 10)
    assert index.read_bytes() == before
