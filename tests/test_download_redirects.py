"""Redirects and trust: which hops are followed, which URLs are refused (UnsafeURLError), and
which hosts receive the Vobiz credentials, against FakeVobiz (and `Scripted`) on 127.0.0.1.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from _download_helpers import (
    Scripted,
    add,
    assert_verified,
    media,
    recording,
    tree,
)

from vobiz_async import (
    AsyncSession,
    AuthenticationError,
    DownloadStatus,
    UnsafeURLError,
)
from vobiz_async.testing import FakeVobiz

# --------------------------------------------------------------------------- redirects


async def test_untrusted_recording_url_gets_no_credentials(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A recording_url on a host that is not trusted never receives credentials."""
    (target,) = add(fake)
    url = fake.recording_url(target).replace("127.0.0.1", "localhost")
    rid = fake.add_recording(recording_url=url).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    to_localhost = [r for r in fake.stats.requests if r.host.startswith("localhost")]
    assert to_localhost
    assert not any(r.credentials for r in to_localhost)
    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, AuthenticationError)
    assert tree(dest) == set()


async def test_foreign_redirect_drops_credentials(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """A redirect to the foreign storage host is followed without credentials."""
    (rid,) = add(fake, redirect_foreign=True)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert fake.stats.foreign_requests == 1
    assert fake.stats.foreign_credentials_seen == 0
    sent = {(r.operation, r.credentials) for r in media(fake)}
    assert sent == {("media", True), ("storage", False)}


async def test_multi_hop_redirect_followed(
    fake: FakeVobiz, session: AsyncSession, dest: Path
) -> None:
    """Same-host hops and then a foreign hop are followed; credentials stay home."""
    (rid,) = add(fake, extra_hops=3, redirect_foreign=True)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert len(media(fake)) == 5
    assert fake.stats.foreign_credentials_seen == 0


async def test_ten_redirects_followed(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """Exactly ten redirects are still followed."""
    (rid,) = add(fake, extra_hops=10)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert_verified(fake, result)
    assert len(media(fake)) == 11


async def test_eleven_redirects_fail(fake: FakeVobiz, session: AsyncSession, dest: Path) -> None:
    """More than ten redirects fail the item with UnsafeURLError and write nothing."""
    (rid,) = add(fake, extra_hops=11)

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert len(media(fake)) == 11
    assert tree(dest) == set()


async def test_redirect_loop_fails(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A redirect loop stops after ten hops with UnsafeURLError."""
    rid = fake.add_recording(recording_url=scripted.url("/loop")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert scripted.hits["loop"] == 11
    assert tree(dest) == set()


async def test_redirect_to_file_url_refused(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """A redirect to a `file:` URL fails the item with UnsafeURLError."""
    rid = fake.add_recording(
        recording_url=scripted.url("/redirect?to=file:///etc/passwd")
    ).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert tree(dest) == set()


async def test_https_to_http_downgrade_refused(
    fake: FakeVobiz, tls_context: ssl.SSLContext, dest: Path
) -> None:
    """An https URL that redirects to http is refused before the http URL is fetched."""
    (target,) = add(fake)
    server = Scripted()
    await server.start(tls=tls_context)
    try:
        url = server.tls_url(f"/redirect?to={fake.recording_url(target)}")
        rid = fake.add_recording(recording_url=url).recording_id
        connector = aiohttp.TCPConnector(ssl=False)  # the certificate is self-signed
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            AsyncSession(**fake.session_kwargs(), http_session=http) as session,
        ):
            result = await session.recordings.download(recording(fake, rid), dest)
    finally:
        await server.close()

    assert server.hits["redirect"] == 1
    assert result.status is DownloadStatus.FAILED
    assert isinstance(result.error, UnsafeURLError)
    assert media(fake) == []
    assert tree(dest) == set()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.mp3"])
async def test_non_http_url_refused(
    fake: FakeVobiz, session: AsyncSession, dest: Path, url: str
) -> None:
    """A `file:` or `ftp:` recording_url fails with UnsafeURLError; nothing fetched or written."""
    (good,) = add(fake)
    bad = fake.add_recording(recording_url=url).recording_id

    report = await session.recordings.download_many(
        [recording(fake, bad), recording(fake, good)], dest
    )

    failed, ok = report.results
    assert failed.status is DownloadStatus.FAILED
    assert isinstance(failed.error, UnsafeURLError)
    assert_verified(fake, ok)
    assert [r.path for r in media(fake)] == [f"/media/{good}.mp3"]
    assert tree(dest) == {f"{good}.mp3"}


@pytest.mark.parametrize("url", ["http://[::1", "http:///no-host.mp3"])
async def test_malformed_url_fails_only_its_item(
    fake: FakeVobiz, session: AsyncSession, dest: Path, url: str
) -> None:
    """A recording URL that does not parse fails that item; the rest of the batch lands."""
    bad = fake.add_recording(recording_url=url).recording_id
    (good,) = add(fake)

    report = await session.recordings.download_many(
        [recording(fake, bad), recording(fake, good)], dest
    )

    assert [r.status for r in report.results] == [
        DownloadStatus.FAILED,
        DownloadStatus.DOWNLOADED,
    ]
    assert isinstance(report.results[0].error, UnsafeURLError)


# --------------------------------------------------------------------------- trusted hosts


async def test_no_credentials_to_another_port_on_the_api_host(
    fake: FakeVobiz, session: AsyncSession, scripted: Scripted, dest: Path
) -> None:
    """Same host as the API but another port is another origin: it gets no credentials."""
    rid = fake.add_recording(recording_url=scripted.url("/plain.mp3")).recording_id

    result = await session.recordings.download(recording(fake, rid), dest)

    assert result.status is DownloadStatus.DOWNLOADED, repr(result.error)
    assert scripted.credentials_seen == 0


@pytest.mark.parametrize(
    ("session_trusts", "option", "credentialed"),
    [("127.0.0.1", "example.invalid", 0), ("example.invalid", "127.0.0.1", 1)],
    ids=["option-distrusts-the-media-host", "option-trusts-the-media-host"],
)
async def test_trusted_hosts_option_reaches_the_downloader(
    fake: FakeVobiz,
    tls_context: ssl.SSLContext,
    dest: Path,
    session_trusts: str,
    option: str,
    credentialed: int,
) -> None:
    """download_many(trusted_hosts=...) replaces the session's domains for media requests."""
    # An https media host, so the domain list alone decides whether credentials go there.
    server = Scripted()
    await server.start(tls=tls_context)
    try:
        rid = fake.add_recording(recording_url=server.tls_url("/plain.mp3")).recording_id
        connector = aiohttp.TCPConnector(ssl=False)  # the certificate is self-signed
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            AsyncSession(
                **fake.session_kwargs(), http_session=http, trusted_hosts=[session_trusts]
            ) as session,
        ):
            report = await session.recordings.download_many(
                [recording(fake, rid)], dest, trusted_hosts=[option]
            )
    finally:
        await server.close()

    assert report.ok, report.failed
    assert server.credentials_seen == credentialed
