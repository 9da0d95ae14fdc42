"""`vobiz-recordings index export`: the index as JSON Lines on stdout."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from _procs import default_sigint

from vobiz_async.cli import main
from vobiz_async.manifest import MANIFEST_NAME, Manifest, ManifestEntry


def entry(recording_id: str, body: bytes = b"abc") -> ManifestEntry:
    return ManifestEntry(
        recording_id=recording_id,
        path=f"2026/05/07/{recording_id}.mp3",
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        container="mp3",
        add_time="2026-05-07 09:45:35.79276+05:30",
        downloaded_at="2026-05-07T10:00:00+00:00",
    )


@pytest.fixture(name="archive")
def _archive(tmp_path: Path) -> Path:
    """A folder whose index holds three entries, one of them written twice."""
    with Manifest(tmp_path / MANIFEST_NAME) as manifest:
        manifest.add(entry("a"))
        manifest.add(entry("b"))
        manifest.add(entry("c", body=b"charlie"))
        manifest.add(entry("a", body=b"rewritten"))
    return tmp_path


def exported(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_export_prints_one_object_per_entry(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`index export DIR` prints every entry once, latest values, with the keys of the
    `recordings` view (add_time in ISO 8601)."""
    code = main(["index", "export", str(archive)])

    out = capsys.readouterr().out
    assert code == 0
    assert exported(out) == [
        entry("a", body=b"rewritten").row(),
        entry("b").row(),
        entry("c", body=b"charlie").row(),
    ]
    assert exported(out)[0]["add_time"] == "2026-05-07T09:45:35.79276+05:30"
    assert all(line.startswith('{"recording_id":') for line in out.splitlines())


def test_export_with_index_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--index PATH` reads an index of any name, importing a JSON Lines one on the way."""
    path = tmp_path / "elsewhere.idx"
    path.write_text(json.dumps(attrs.asdict(entry("x"))) + "\n")

    code = main(["index", "export", "--index", str(path)])

    assert code == 0
    assert exported(capsys.readouterr().out) == [entry("x").row()]


def test_export_of_an_empty_index_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty index file (as SQLite leaves one) exports as no lines at all."""
    (tmp_path / MANIFEST_NAME).touch()

    assert main(["index", "export", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["index", "export"],
        ["index", "export", "{tmp}", "--index", "{tmp}/x"],
        ["index", "export", "{tmp}"],
        ["index", "export", "--index", "{tmp}/missing.db"],
        ["index"],
    ],
    ids=["neither", "both", "no-index-in-dir", "missing-file", "no-subcommand"],
)
def test_export_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A missing or ambiguous index is a usage error: exit 2, one line, no traceback."""
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = int(exit_.code or 0)

    err = capsys.readouterr().err
    assert code == 2
    assert err
    assert "Traceback" not in err


def test_export_of_a_foreign_database_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is a SQLite database but not an index: exit 1 with one line."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE t (x)")
    other.close()

    code = main(["index", "export", "--index", str(path)])

    err = capsys.readouterr().err
    assert code == 1
    assert "not a vobiz_async index" in err
    assert len(err.strip().splitlines()) == 1


def test_export_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`index export DIR | head -1`: the reader leaving early is no error (exit 0, nothing
    on stderr)."""
    with Manifest(tmp_path / MANIFEST_NAME) as manifest:
        for i in range(3000):  # well over a pipe's buffer
            manifest.add(entry(f"r{i}"))

    with subprocess.Popen(  # noqa: S603 - this interpreter, the library's own CLI
        [sys.executable, "-m", "vobiz_async", "index", "export", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        first = child.stdout.readline()
        child.stdout.close()
        err = child.stderr.read()
        code = child.wait(timeout=60)

    assert json.loads(first)["recording_id"] == "r0"
    assert (code, err) == (0, b"")
