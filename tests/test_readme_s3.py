"""The README's governed-bucket shell block runs as written: the AWS CLI creates the Object
Lock bucket and the KMS key, `vobiz-recordings` archives into it and verifies it, against
moto on 127.0.0.1 (found through `AWS_ENDPOINT_URL`) and the fake Vobiz.

`tests/test_readme.py` runs the README's `python` blocks; this block is shell, so it is run
here, with bash, and skipped where the AWS CLI is not installed."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from _procs import default_sigint

from vobiz_async.testing import FakeVobiz

boto3 = pytest.importorskip("boto3")

README = Path(__file__).resolve().parent.parent / "README.md"
SHELL = re.compile(r"^```sh[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def governed_block() -> str:
    """The README's shell block that creates the Object Lock bucket."""
    blocks = [b for b in SHELL.findall(README.read_text()) if "--object-lock-enabled" in b]
    assert len(blocks) == 1, "the README shows one governed-bucket block"
    return str(blocks[0])


def test_the_block_is_found() -> None:
    """The block is there, and it archives and verifies with the lock options."""
    block = governed_block()

    assert "vobiz-recordings download" in block
    assert "vobiz-recordings verify" in block
    assert block.count("--s3-object-lock-mode") == 2


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
async def test_the_governed_bucket_block_runs_as_written(moto_url: str, tmp_path: Path) -> None:
    """bash runs the block (stopping at the first failing command): every command exits 0,
    and the archived objects carry the retention and the KMS key it asks for."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VOBIZ_"))}
    env.update(
        AWS_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY="readme-secret",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    )
    async with FakeVobiz(recordings=4, seed=0) as fake:
        env.update(
            VOBIZ_BASE_URL=fake.base_url,
            VOBIZ_AUTH_ID=fake.auth_id,
            VOBIZ_AUTH_TOKEN=fake.auth_token,
        )
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            governed_block(),
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=default_sigint,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    output = out.decode(errors="replace")

    assert proc.returncode == 0, output
    assert "readme-secret" not in output
    s3: Any = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="ap-south-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    )
    objects = s3.list_objects_v2(Bucket="acme-call-recordings")["Contents"]
    assert len(objects) == 4
    head = s3.head_object(Bucket="acme-call-recordings", Key=objects[0]["Key"])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["StorageClass"] == "GLACIER_IR"
