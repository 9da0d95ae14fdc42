"""The JSON Lines manifest: appends, reloads, crash tolerance, and re-hashing with verify."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from pathlib import Path

import attrs
import pytest

from vobiz_async.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestEntry,
    VerifyProblem,
    verify_manifest,
)


def entry(recording_id: str, *, path: str | None = None, body: bytes = b"abc") -> ManifestEntry:
    return ManifestEntry(
        recording_id=recording_id,
        path=path or f"{recording_id}.mp3",
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        container="mp3",
        add_time="2026-05-07 09:45:35.79276+05:30",
        downloaded_at="2026-05-07T10:00:00+00:00",
    )


def line(value: ManifestEntry) -> bytes:
    return json.dumps(attrs.asdict(value)).encode() + b"\n"


@pytest.fixture(name="path")
def _path(tmp_path: Path) -> Path:
    return tmp_path / MANIFEST_NAME


@pytest.fixture(name="archive")
def _archive(tmp_path: Path) -> tuple[Path, Manifest]:
    """A folder with three saved files and a manifest that lists them."""
    root = tmp_path / "archive"
    root.mkdir()
    manifest = Manifest(root / MANIFEST_NAME)
    for name, body in (("a", b"alpha" * 100), ("b", b"bravo" * 100), ("c", b"charlie")):
        (root / f"{name}.mp3").write_bytes(body)
        manifest.add(entry(name, body=body))
    manifest.close()
    return root, Manifest(root / MANIFEST_NAME)


# -- Manifest ---------------------------------------------------------------------------


def test_missing_file_is_an_empty_manifest(path: Path) -> None:
    """Opening a manifest that does not exist yet gives no entries and creates nothing."""
    with Manifest(path) as manifest:
        assert len(manifest) == 0
        assert list(manifest) == []
        assert manifest.get("a") is None

    assert not path.exists()


def test_add_then_reload(path: Path) -> None:
    """Entries appended by one instance are read back, in order, by the next."""
    first, second = entry("a"), entry("b", body=b"other")
    with Manifest(path) as manifest:
        manifest.add(first)
        manifest.add(second)

    with Manifest(path) as reloaded:
        assert list(reloaded) == [first, second]
        assert reloaded.get("b") == second


def test_entry_is_on_disk_before_close(path: Path) -> None:
    """`add` writes a whole line at once, so a crash after it keeps the entry."""
    manifest = Manifest(path)
    manifest.add(entry("a"))

    data = path.read_bytes()
    assert data.endswith(b"\n")
    assert json.loads(data) == attrs.asdict(entry("a"))
    assert Manifest(path).get("a") == entry("a")
    manifest.close()


def test_add_creates_the_folder(tmp_path: Path) -> None:
    """The manifest's parent folder is created on the first append."""
    path = tmp_path / "new" / "dir" / MANIFEST_NAME
    with Manifest(path) as manifest:
        manifest.add(entry("a"))

    assert Manifest(path).get("a") == entry("a")


def test_last_entry_wins(path: Path) -> None:
    """A recording listed twice is known by its latest line, and counted once."""
    old, new = entry("a", body=b"old"), entry("a", body=b"new bytes")
    with Manifest(path) as manifest:
        manifest.add(old)
        manifest.add(entry("b"))
        manifest.add(new)
        assert manifest.get("a") == new

    with Manifest(path) as reloaded:
        assert reloaded.get("a") == new
        assert len(reloaded) == 2


def test_add_without_remembering(path: Path) -> None:
    """`remember=False` writes the line but keeps the entry out of memory until a reload."""
    with Manifest(path) as manifest:
        manifest.add(entry("a"))
        manifest.add(entry("b"), remember=False)
        assert manifest.get("b") is None
        assert [e.recording_id for e in manifest] == ["a"]

    with Manifest(path) as reloaded:
        assert reloaded.get("b") == entry("b")
        assert len(reloaded) == 2


def test_add_without_remembering_forgets_the_older_entry(path: Path) -> None:
    """`remember=False` for a known id drops the older entry, which the file now overrides."""
    old, new = entry("a", body=b"old"), entry("a", body=b"new bytes")
    path.write_bytes(line(old))

    with Manifest(path) as manifest:
        manifest.add(new, remember=False)
        assert manifest.get("a") is None

    assert Manifest(path).get("a") == new


def test_record_stamps_the_time(path: Path) -> None:
    """`record` builds the entry itself with a timezone-aware download time."""
    with Manifest(path) as manifest:
        made = manifest.record(
            "a", "a.wav", size=3, sha256="00" * 32, container="wav", add_time=None
        )

    assert datetime.fromisoformat(made.downloaded_at).utcoffset() is not None
    assert Manifest(path).get("a") == made


def test_torn_last_line_is_skipped(path: Path) -> None:
    """A line cut short by a crash is ignored; the lines before it survive."""
    path.write_bytes(line(entry("a")) + line(entry("b")) + line(entry("c"))[:25])

    with Manifest(path) as manifest:
        assert [e.recording_id for e in manifest] == ["a", "b"]


def test_torn_last_line_is_sealed_before_the_next_append(path: Path) -> None:
    """The first append after a torn line starts a new line, so it reads back."""
    torn = line(entry("c"))[:25]
    path.write_bytes(line(entry("a")) + torn)

    with Manifest(path) as manifest:
        manifest.add(entry("d"))

    with Manifest(path) as reloaded:
        assert [e.recording_id for e in reloaded] == ["a", "d"]
    assert path.read_bytes().split(b"\n")[1] == torn


def test_complete_line_without_newline_is_kept_and_sealed(path: Path) -> None:
    """A last line missing only its newline still counts, and the next append follows it."""
    path.write_bytes(line(entry("a")) + line(entry("b")).rstrip(b"\n"))

    with Manifest(path) as manifest:
        assert manifest.get("b") == entry("b")
        manifest.add(entry("c"))

    with Manifest(path) as reloaded:
        assert [e.recording_id for e in reloaded] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b"null",
        b'{"recording_id": "x"}',
        json.dumps({**attrs.asdict(entry("x")), "surprise": 1}).encode(),
    ],
    ids=["syntax", "bytes", "list", "null", "missing-fields", "extra-field"],
)
def test_unreadable_middle_line_is_skipped(
    path: Path, bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A line that is not an entry is skipped with a warning; its neighbours load."""
    path.write_bytes(line(entry("a")) + bad + b"\n" + line(entry("b")))

    with caplog.at_level(logging.WARNING, logger="vobiz_async"):
        manifest = Manifest(path)

    assert [e.recording_id for e in manifest] == ["a", "b"]
    assert "unreadable line 2" in caplog.text


def test_blank_lines_are_ignored(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Empty lines are not entries and not worth a warning."""
    path.write_bytes(b"\n" + line(entry("a")) + b"  \n\n" + line(entry("b")))

    with caplog.at_level(logging.WARNING, logger="vobiz_async"):
        manifest = Manifest(path)

    assert len(manifest) == 2
    assert caplog.text == ""


def test_reopens_after_close(path: Path) -> None:
    """A closed manifest can still be appended to; it reopens its file."""
    manifest = Manifest(path)
    manifest.add(entry("a"))
    manifest.close()
    manifest.add(entry("b"))
    manifest.close()

    assert len(Manifest(path)) == 2


# -- verify_manifest ----------------------------------------------------------------------


def test_verify_clean_archive(archive: tuple[Path, Manifest]) -> None:
    """Files whose size and sha256 match their entries are no problem."""
    root, manifest = archive

    assert verify_manifest(root, manifest) == []


def test_verify_reports_missing_file(archive: tuple[Path, Manifest]) -> None:
    """A listed file that is gone is reported as missing."""
    root, manifest = archive
    (root / "b.mp3").unlink()

    assert verify_manifest(root, manifest) == [VerifyProblem("b", "b.mp3", "missing")]


def test_verify_reports_size_difference(archive: tuple[Path, Manifest]) -> None:
    """A listed file with another length is reported without hashing it."""
    root, manifest = archive
    with (root / "a.mp3").open("ab") as f:
        f.write(b"x")

    assert verify_manifest(root, manifest) == [VerifyProblem("a", "a.mp3", "size differs")]


def test_verify_reports_changed_bytes(archive: tuple[Path, Manifest]) -> None:
    """A listed file of the right length but other bytes is reported as a sha256 mismatch."""
    root, manifest = archive
    data = bytearray((root / "c.mp3").read_bytes())
    data[3] ^= 0x01
    (root / "c.mp3").write_bytes(bytes(data))

    assert verify_manifest(root, manifest) == [VerifyProblem("c", "c.mp3", "sha256 differs")]


def test_verify_reports_a_directory_as_missing(archive: tuple[Path, Manifest]) -> None:
    """A directory where a file should be is not a file: missing."""
    root, manifest = archive
    (root / "a.mp3").unlink()
    (root / "a.mp3").mkdir()

    assert verify_manifest(root, manifest) == [VerifyProblem("a", "a.mp3", "missing")]


def test_verify_resolves_paths_under_root(tmp_path: Path) -> None:
    """Entry paths are relative to the folder given, subfolders included."""
    root = tmp_path / "root"
    (root / "2026" / "05").mkdir(parents=True)
    (root / "2026" / "05" / "a.wav").write_bytes(b"abc")
    with Manifest(root / MANIFEST_NAME) as manifest:
        manifest.add(entry("a", path="2026/05/a.wav"))

        assert verify_manifest(root, manifest) == []
        assert verify_manifest(tmp_path, manifest) == [
            VerifyProblem("a", "2026/05/a.wav", "missing")
        ]
