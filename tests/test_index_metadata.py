"""Metadata that survives Vobiz (issue 25 §1), in a folder: every field of the archived
recording in the index and its `recordings` view, an index of the previous version migrated
in place, `index export` as CSV filtered by the selection flags, metadata sidecars written
before a recording is reported, the hive layout, and `verify --metadata sidecar`."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from test_cli import env_for, run_cli

from vobiz_async import AsyncSession, DownloadStatus, ProgressEvent, ProgressKind, Recording
from vobiz_async.manifest import APPLICATION_ID, MANIFEST_NAME, VIEW_COLUMNS, Manifest
from vobiz_async.protocol import archive_folder, archive_key, sidecar_document, sidecar_key
from vobiz_async.redact import redact_urls
from vobiz_async.testing import FakeVobiz

#: The `recordings` view's columns, exactly (README, "Finding a call in the archive").
COLUMNS = [
    "recording_id",
    "path",
    "size",
    "sha256",
    "container",
    "downloaded_at",
    "call_uuid",
    "recording_type",
    "recording_format",
    "add_time",
    "recording_duration_ms",
    "recording_start_ms",
    "recording_end_ms",
    "from_number",
    "to_number",
    "conference_name",
    "rounded_recording_duration",
    "recording_storage_rate",
    "monthly_recording_storage_amount",
    "deleted_at",
]

#: The index's table as the version before `deleted_at` and the recording's fields wrote it
#: (vobiz_async/manifest.py at f6f2dfc).
OLD_SCHEMA = """
CREATE TABLE entries (
    recording_id TEXT PRIMARY KEY NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    container TEXT,
    add_time TEXT,
    downloaded_at TEXT NOT NULL
)
"""

CALLER = "+91 98765 43210"
#: A call at ten past midnight in India: 18:40 the day before in UTC.
NEAR_MIDNIGHT = "2026-05-03 00:10:00.79276+05:30"


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=0, seed=0) as fake:
        yield fake


def _add_calls(fake: FakeVobiz) -> dict[str, str]:
    """Four calls: from CALLER on 2 and 3 May (IST) and on 20 May, one from another number."""
    calls = {
        "early": ("2026-05-02 23:50:00+05:30", CALLER),
        "midnight": (NEAR_MIDNIGHT, "919876543210"),
        "other": ("2026-05-04 10:00:00+05:30", "+91 11111 22222"),
        "late": ("2026-05-20 10:00:00+05:30", CALLER),
    }
    return {
        name: fake.add_recording(
            add_time=when, extra_fields={"from_number": number, "to_number": "+9180"}
        ).recording_id
        for name, (when, number) in calls.items()
    }


async def _listed(session: AsyncSession) -> dict[str, Recording]:
    return {r.recording_id: r async for r in session.recordings.list()}


# -- pure decisions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("add_time", "layout", "folder"),
    [
        (NEAR_MIDNIGHT, "flat", ""),
        (NEAR_MIDNIGHT, "date", "2026/05/03/"),
        (NEAR_MIDNIGHT, "hive", "year=2026/month=05/day=03/"),
        ("2026-12-31 23:59:59-08:00", "hive", "year=2026/month=12/day=31/"),
        (None, "hive", ""),
    ],
)
def test_archive_folder(add_time: str | None, layout: str, folder: str) -> None:
    """The date and hive folders take the date of add_time in its own offset."""
    moment = None if add_time is None else datetime.fromisoformat(add_time)
    assert archive_folder(moment, layout) == folder
    assert archive_key("r1", extension="mp3", add_time=moment, layout=layout) == f"{folder}r1.mp3"


@pytest.mark.parametrize(
    ("key", "sidecar"),
    [
        ("r1.mp3", "r1.json"),
        ("year=2026/month=05/day=03/r1.wav", "year=2026/month=05/day=03/r1.json"),
        ("r.1.bin", "r.1.json"),
    ],
)
def test_sidecar_key(key: str, sidecar: str) -> None:
    assert sidecar_key(key) == sidecar


def test_sidecar_document_drops_a_signed_urls_query() -> None:
    """The sidecar is the wire object, but a signed URL's query (a credential) is left out."""
    wire = Recording(
        recording_id="r1",
        recording_url="https://user:pw@media.example/r1.mp3?X-Amz-Signature=secret",
        from_number=CALLER,
    ).to_dict()
    document = json.loads(sidecar_document(wire))
    assert document == {**wire, "recording_url": "https://media.example/r1.mp3"}
    assert "secret" not in sidecar_document(wire).decode()


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="layout"):
        archive_folder(datetime.fromisoformat(NEAR_MIDNIGHT), "monthly")


# -- the index ------------------------------------------------------------------------


def test_index_of_the_previous_version_is_migrated_in_place(tmp_path: Path) -> None:
    """An index written before `deleted_at` and the recording's fields keeps every entry
    and value; the new columns read NULL; the view exists; new entries keep the fields."""
    path = tmp_path / "index.sqlite"
    db = sqlite3.connect(path)
    db.execute(OLD_SCHEMA)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute("PRAGMA user_version=1")
    db.execute(
        "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("old", "old.mp3", 3, "ab" * 32, "mp3", "2026-05-07 09:45:35.79276+05:30", "2026-05-07"),
    )
    db.commit()
    db.close()

    with Manifest(path) as manifest:
        entry = manifest.get("old")
        assert entry is not None
        assert (entry.path, entry.size, entry.sha256, entry.container, entry.downloaded_at) == (
            "old.mp3",
            3,
            "ab" * 32,
            "mp3",
            "2026-05-07",
        )
        assert entry.add_time == "2026-05-07 09:45:35.79276+05:30"
        assert entry.deleted_at is None
        assert entry.from_number is None
        assert entry.recording_duration_ms is None
        recording = Recording(
            recording_id="new",
            recording_url="https://media.example/new.mp3",
            from_number=CALLER,
            recording_duration_ms=None,
        )
        manifest.record(
            "new", "new.mp3", size=1, sha256="cd" * 32, container="mp3", add_time=None,
            recording=recording,
        )  # fmt: skip

    db = sqlite3.connect(path)
    rows = db.execute("SELECT recording_id, from_number, add_time FROM recordings").fetchall()
    db.close()
    assert rows == [
        ("old", None, "2026-05-07T09:45:35.79276+05:30"),
        ("new", CALLER, None),
    ]


async def test_recordings_view_has_every_field(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """The `recordings` view, read with plain `sqlite3`, has exactly the documented columns
    and every field of each archived recording as listed, add_time ISO 8601 with offset."""
    ids = _add_calls(fake)
    index = tmp_path / "out" / MANIFEST_NAME
    report = await session.recordings.download_many(
        session.recordings.list(), tmp_path / "out", manifest=index
    )
    assert report.ok
    listed = await _listed(session)

    db = sqlite3.connect(index)
    cursor = db.execute("SELECT * FROM recordings ORDER BY add_time")
    rows = [dict(zip([d[0] for d in cursor.description], row, strict=True)) for row in cursor]
    db.close()
    assert list(VIEW_COLUMNS) == COLUMNS
    assert list(rows[0]) == COLUMNS
    midnight = next(row for row in rows if row["recording_id"] == ids["midnight"])
    recording = listed[ids["midnight"]]
    assert midnight["add_time"] == "2026-05-03T00:10:00.792760+05:30"
    assert midnight["from_number"] == "919876543210"
    assert midnight["to_number"] == "+9180"
    assert midnight["call_uuid"] == recording.call_uuid
    assert midnight["recording_type"] == recording.recording_type
    assert midnight["recording_format"] == recording.recording_format
    assert midnight["recording_duration_ms"] == float(recording.recording_duration_ms or 0)
    assert midnight["rounded_recording_duration"] == recording.rounded_recording_duration
    assert midnight["recording_storage_rate"] == str(recording.recording_storage_rate)
    assert midnight["monthly_recording_storage_amount"] == str(
        recording.monthly_recording_storage_amount
    )
    assert midnight["path"] == f"{ids['midnight']}.mp3"
    assert midnight["sha256"] == fake.sha256(ids["midnight"])


def test_an_entry_written_again_without_its_recording_keeps_the_fields(tmp_path: Path) -> None:
    """An id archived again from its id alone (no listing) keeps the fields the index
    holds; the file's own values are the new ones."""
    recording = Recording(
        recording_id="r1", recording_url="https://media.example/r1.mp3", from_number=CALLER
    )
    with Manifest(tmp_path / "index") as manifest:
        manifest.record(
            "r1", "r1.mp3", size=1, sha256="ab" * 32, container="mp3",
            add_time=NEAR_MIDNIGHT, recording=recording,
        )  # fmt: skip
        manifest.record("r1", "r1.wav", size=2, sha256="cd" * 32, container="wav", add_time=None)
        entry = manifest.get("r1")
    assert entry is not None
    assert (entry.path, entry.size, entry.from_number, entry.add_time) == (
        "r1.wav",
        2,
        CALLER,
        NEAR_MIDNIGHT,
    )


# -- index export --------------------------------------------------------------------


def _env(fake: FakeVobiz) -> dict[str, str]:
    return env_for({k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")}, fake)


async def test_export_csv_filtered_by_the_selection(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """`index export --format csv --from-number --after --before`: a header row with the
    view's columns, then exactly the calls from that number in that week."""
    ids = _add_calls(fake)
    out = tmp_path / "out"
    await session.recordings.download_many(
        session.recordings.list(), out, manifest=out / MANIFEST_NAME
    )

    result = await run_cli(
        "index",
        "export",
        str(out),
        "--format",
        "csv",
        "--from-number",
        "919876543210",
        "--after",
        "2026-05-03T00:00:00+05:30",
        "--before",
        "2026-05-10T00:00:00+05:30",
        env=_env(fake),
    )

    assert result.code == 0, result.err
    reader = csv.DictReader(io.StringIO(result.out, newline=""))
    rows = list(reader)
    assert reader.fieldnames == COLUMNS
    assert [row["recording_id"] for row in rows] == [ids["midnight"]]
    assert rows[0]["add_time"] == "2026-05-03T00:10:00.792760+05:30"
    assert rows[0]["deleted_at"] == ""  # NULL is an empty field

    result = await run_cli(
        "index", "export", str(out), "--format", "csv", "--from-number", CALLER, env=_env(fake)
    )
    rows = list(csv.DictReader(io.StringIO(result.out, newline="")))
    assert result.code == 0, result.err
    assert sorted(row["recording_id"] for row in rows) == sorted(
        [ids["early"], ids["midnight"], ids["late"]]
    )


async def test_export_jsonl_has_every_field(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """JSON Lines (the default): one object a recording, the view's keys in order."""
    ids = _add_calls(fake)
    out = tmp_path / "out"
    await session.recordings.download_many(
        session.recordings.list(), out, manifest=out / MANIFEST_NAME
    )
    result = await run_cli("index", "export", str(out), "--after", "2026-05-20", env=_env(fake))
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [list(row) for row in rows] == [COLUMNS]
    assert rows[0]["recording_id"] == ids["late"]
    assert rows[0]["from_number"] == CALLER


# -- sidecars and the hive layout ------------------------------------------------------


def _sidecar(recording: Recording) -> dict[str, object]:
    wire = recording.to_dict()
    return {**wire, "recording_url": redact_urls(wire["recording_url"])}


async def test_sidecars_are_stored_before_the_recording_is_reported(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """With `metadata="sidecar"` and the hive layout, `<key without extension>.json` holds
    the wire object when the recording's DOWNLOADED event arrives, dated in add_time's own
    offset; a sidecar removed later is written again by a run that skips its recording."""
    ids = _add_calls(fake)
    out = tmp_path / "out"
    seen: dict[str, bool] = {}

    def on_progress(event: ProgressEvent) -> None:
        result = event.result
        if event.kind is ProgressKind.FINISHED and result is not None:
            assert result.path is not None
            seen[result.recording_id] = Path(result.path).with_suffix(".json").is_file()

    report = await session.recordings.download_many(
        session.recordings.list(),
        out,
        layout="hive",
        metadata="sidecar",
        on_progress=on_progress,
        manifest=out / MANIFEST_NAME,
    )

    assert report.ok
    assert seen == dict.fromkeys(ids.values(), True)
    listed = await _listed(session)
    folder = out / "year=2026" / "month=05" / "day=03"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{ids['midnight']}.mp3", f"{ids['midnight']}.json"]
    )
    sidecar = json.loads((folder / f"{ids['midnight']}.json").read_text())
    assert sidecar == _sidecar(listed[ids["midnight"]])
    with Manifest(out / MANIFEST_NAME) as manifest:
        entry = manifest.get(ids["midnight"])
    assert entry is not None
    assert entry.path == f"year=2026/month=05/day=03/{ids['midnight']}.mp3"

    (folder / f"{ids['midnight']}.json").unlink()
    again = await session.recordings.download_many(
        [ids["midnight"], ids["early"]],  # ids alone: the missing sidecar's recording is fetched
        out,
        layout="hive",
        metadata="sidecar",
        manifest=out / MANIFEST_NAME,
    )
    assert {r.status for r in again.results} == {DownloadStatus.SKIPPED}
    rewritten = json.loads((folder / f"{ids['midnight']}.json").read_text())
    assert rewritten.pop("api_id")  # fetched by id: the retrieve answer carries its api_id
    assert rewritten == sidecar


async def test_a_sidecar_that_cannot_be_stored_fails_the_recording(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """A sidecar the folder refuses (a folder in its place) fails its recording instead of
    reporting it downloaded; the recording is not indexed, so a later run finishes it."""
    rid = fake.add_recording().recording_id
    out = tmp_path / "out"
    (out / f"{rid}.json").mkdir(parents=True)
    report = await session.recordings.download_many(
        [rid], out, metadata="sidecar", manifest=out / MANIFEST_NAME
    )
    assert report.results[0].status is DownloadStatus.FAILED
    with Manifest(out / MANIFEST_NAME) as manifest:
        assert manifest.get(rid) is None


async def test_a_skipped_id_gone_from_vobiz_stays_skipped_without_its_sidecar(
    fake: FakeVobiz, session: AsyncSession, tmp_path: Path
) -> None:
    """An archived id whose sidecar is missing and whose recording Vobiz no longer returns is
    still reported skipped (it is archived); only its sidecar stays missing."""
    rid = fake.add_recording().recording_id
    out = tmp_path / "out"
    await session.recordings.download_many([rid], out, manifest=out / MANIFEST_NAME)
    fake.remove_recording(rid)
    report = await session.recordings.download_many(
        [rid], out, metadata="sidecar", manifest=out / MANIFEST_NAME
    )
    assert report.results[0].status is DownloadStatus.SKIPPED
    assert not (out / f"{rid}.json").exists()


async def test_cli_download_hive_sidecars_and_verify(fake: FakeVobiz, tmp_path: Path) -> None:
    """`download --layout hive --metadata sidecar`, then `verify --metadata sidecar` passes,
    and names a recording whose sidecar went missing (exit 1); so does plain `verify`, the
    archive keeping sidecars, with the command that writes it again, which then does."""
    ids = _add_calls(fake)
    env = _env(fake)
    out = tmp_path / "out"
    result = await run_cli(
        "download", "--out", str(out), "--layout", "hive", "--metadata", "sidecar", env=env
    )
    assert result.code == 0, result.err
    sidecar = out / "year=2026" / "month=05" / "day=03" / f"{ids['midnight']}.json"
    assert sidecar.is_file()

    result = await run_cli("verify", str(out), "--metadata", "sidecar", env=env)
    assert result.code == 0, result.out + result.err

    sidecar.unlink()
    result = await run_cli("verify", str(out), "--metadata", "sidecar", "--json", env=env)
    assert result.code == 1, result.out + result.err
    assert json.loads(result.out)["problems"] == [
        {
            "kind": "missing sidecar",
            "id": ids["midnight"],
            "path": f"year=2026/month=05/day=03/{ids['midnight']}.json",
        }
    ]
    result = await run_cli("verify", str(out), env=env)
    assert result.code == 1, result.out + result.err
    assert f"missing sidecar: year=2026/month=05/day=03/{ids['midnight']}.json" in result.out
    assert "--repair" not in result.out
    fix = f"vobiz-recordings download --out {out} --metadata sidecar"
    assert fix in result.out
    result = await run_cli(
        "download", "--out", str(out), "--layout", "hive", "--metadata", "sidecar", env=env
    )
    assert result.code == 0, result.err
    assert sidecar.is_file()
    result = await run_cli("verify", str(out), env=env)
    assert result.code == 0, result.out + result.err
