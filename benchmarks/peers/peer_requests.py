"""Peer: what a vobiz-python user writes, sequential: page the list with the SDK, then `GET`
each `recording_url` with the SDK's requests session (which carries the auth headers) and
write `resp.content`. With `--plain`, the same loop over the harness's URL list with plain
requests, for machines without vobiz-python.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peer_common import auth_headers, load_jobs, parse_args, report, unavailable

try:
    import requests
except ImportError as err:
    unavailable(f"requests not installed ({err})")


def sdk_jobs(client: Any, out: Path) -> Iterator[tuple[str, Path]]:
    """Every recording's URL and file name, one page of 100 at a time."""
    offset = 0
    while True:
        page = client.recordings.list(limit=100, offset=offset)
        for rec in page.objects:
            yield rec.recording_url, out / f"{rec.recording_id}.{rec.recording_format}"
        if page.meta.next is None:
            return
        offset += len(page.objects)


def download(session: requests.Session, jobs: Iterator[tuple[str, Path]]) -> None:
    for url, path in jobs:
        resp = session.get(url, timeout=120)
        resp.raise_for_status()
        path.write_bytes(resp.content)


def main() -> None:
    args = parse_args(__doc__, ("--plain", {"action": "store_true"}))
    started = time.perf_counter()
    if args.plain:
        with requests.Session() as session:
            session.headers.update(auth_headers(args))
            download(session, iter(load_jobs(args)))
    else:
        try:
            import vobiz
        except ImportError as err:
            unavailable(f"vobiz-python not installed ({err})")
        with vobiz.RestClient(auth_id=args.auth_id, auth_token=args.auth_token) as client:
            client.base_uri = args.api.rstrip("/") + "/Account"
            download(client.session, sdk_jobs(client, args.out))
    report(transfer_s=time.perf_counter() - started)


if __name__ == "__main__":
    main()
