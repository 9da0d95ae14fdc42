"""`serve --metadata sidecar` (issue 25 §1): each recording a callback announces is archived
with its metadata sidecar beside it, and indexed with every field of the recording.

`serve` runs in this test's event loop against FakeVobiz, both on 127.0.0.1, with the
signing and settling helpers of `test_receiver_batch.py`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_receiver_batch import (
    CALLBACKS,
    PUBLIC_URL,
    TOKEN,
    fire_and_settle,
    serve_config,
    serve_in_loop,
)

from vobiz_async import AsyncSession
from vobiz_async.manifest import MANIFEST_NAME, Manifest
from vobiz_async.protocol import sidecar_key
from vobiz_async.testing import FakeVobiz


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=CALLBACKS, seed=25, auth_token=TOKEN) as fake:
        yield fake


@contextlib.asynccontextmanager
async def serving(fake: FakeVobiz, dest: Path, spool: Path) -> AsyncIterator[str]:
    """`serve --metadata sidecar` in this loop on 127.0.0.1; yields where callbacks go."""
    config = serve_config(fake, dest, spool, metadata="sidecar")
    async with serve_in_loop(config) as url:
        yield url


async def test_serve_stores_each_recordings_sidecar(fake: FakeVobiz, tmp_path: Path) -> None:
    """Every recording a callback names lands with `<id>.json`, its wire object as the API
    returns it, and an index entry carrying its numbers."""
    out = tmp_path / "archive"
    async with serving(fake, out, tmp_path / "spool.jsonl") as url:
        counters = await fire_and_settle(url, fake.recording_ids)
    assert (counters["archived"], counters["failed"]) == (CALLBACKS, 0)

    async with AsyncSession(**fake.session_kwargs()) as session:
        with Manifest(out / MANIFEST_NAME) as manifest:
            for rid in fake.recording_ids:
                entry = manifest.get(rid)
                assert entry is not None
                recording = await session.recordings.get(rid)
                wire = recording.to_dict()
                sidecar = json.loads((out / sidecar_key(entry.path)).read_text())
                assert {k: v for k, v in sidecar.items() if k != "api_id"} == {
                    k: v for k, v in wire.items() if k != "api_id"
                }
                assert (entry.from_number, entry.to_number, entry.call_uuid) == (
                    recording.from_number,
                    recording.to_number,
                    recording.call_uuid,
                )


def test_serve_and_download_take_the_flags() -> None:
    """`--metadata sidecar` on `serve`, `download` and `verify`; `--layout hive` on
    `download`; `index export --format csv` with the selection flags."""
    from vobiz_async.cli.parser import build_parser

    parser = build_parser()
    serve_args = ["serve", "--public-url", PUBLIC_URL, "--out", "o", "--metadata", "sidecar"]
    assert parser.parse_args(serve_args).metadata == "sidecar"
    download = parser.parse_args(
        ["download", "--out", "o", "--layout", "hive", "--metadata", "sidecar"]
    )
    assert (download.layout, download.metadata) == ("hive", "sidecar")
    assert parser.parse_args(["verify", "o", "--metadata", "sidecar"]).metadata == "sidecar"
    export = parser.parse_args(["index", "export", "o", "--format", "csv", "--to-number", "1"])
    assert (export.format, export.to_number) == ("csv", "1")
