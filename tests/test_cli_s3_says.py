"""The CLI against object storage says what happened (issue 26): refused S3 credentials exit
3, and `verify` words a missing bucket as `download` does. moto on 127.0.0.1, the proxy of
`test_s3_sink.py` in front of it for the refusals."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from test_cli import run_cli
from test_s3_sink import S3Proxy, _aws_env, s3_error

from vobiz_async.testing import FakeVobiz

__all__ = ["_aws_env"]  # a fixture, imported for use here


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(recordings=2, seed=0) as fake:
        yield fake


@pytest.fixture(name="env")
def _env(fake: FakeVobiz, moto_url: str) -> dict[str, str]:
    """The fake AWS settings (set by `_aws_env`) and the fake Vobiz, moto as the endpoint."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOBIZ_")},
        "AWS_ENDPOINT_URL": moto_url,
        "VOBIZ_AUTH_ID": fake.auth_id,
        "VOBIZ_AUTH_TOKEN": fake.auth_token,
        "VOBIZ_BASE_URL": fake.base_url,
    }


@pytest.fixture(name="proxy")
async def _proxy(moto_url: str) -> AsyncIterator[S3Proxy]:
    proxy = S3Proxy(moto_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_missing_bucket_is_worded_alike(env: dict[str, str]) -> None:
    """`download` and `verify` into a bucket that is not there: the same one line, exit 1."""
    dest = "s3://no-such-bucket-cli/x/"

    download = await run_cli("download", "--out", dest, env=env)
    verify = await run_cli("verify", dest, env=env)

    assert (download.code, verify.code) == (1, 1), download.output + verify.output
    assert download.err == verify.err
    assert len(verify.err.splitlines()) == 1
    assert "no-such-bucket-cli" in verify.err


@pytest.mark.parametrize("command", ["download", "verify"])
async def test_refused_s3_credentials_exit_3(
    env: dict[str, str], proxy: S3Proxy, fake: FakeVobiz, command: str
) -> None:
    """S3 refusing the credentials (SignatureDoesNotMatch): exit 3, one line, no secret."""
    proxy.fault = lambda request: s3_error(403, "SignatureDoesNotMatch")
    dest = "s3://some-bucket/x/"
    argv = ["--out", dest] if command == "download" else [dest]

    result = await run_cli(command, *argv, env={**env, "AWS_ENDPOINT_URL": proxy.url})

    assert result.code == 3, result.output
    assert len(result.err.splitlines()) == 1, result.err
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in result.output
    assert not any(r.operation == "media" for r in fake.stats.requests)
