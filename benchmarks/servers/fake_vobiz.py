"""The embedded fake, `vobiz_async.testing.FakeVobiz`, listing a generated dataset.

The benchmarks' only fake API: the harness runs it for every profile, in a process of its
own (its CPU is not the client's). Each recording of the dataset's `index.json` is added with
its size, container and a `recording_url` on the media server (nginx), in the index's order;
`--latency` is added to every API response (a page of 100 across an ocean). Prints the API
port on its first stdout line, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from urllib.parse import urlsplit

from vobiz_async.testing import FakeVobiz


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, required=True, help="dataset index.json")
    parser.add_argument("--media-url", required=True, help="URL prefix of the files")
    parser.add_argument("--auth-id", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per API response")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    fake = FakeVobiz(
        0,
        auth_id=args.auth_id,
        auth_token=args.auth_token,
        latency=args.latency,
        record_requests=False,
    )
    # add_recording puts each new one first: add in reverse to list in the index's order.
    for item in reversed(json.loads(args.index.read_text())):
        fake.add_recording(
            item["recording_id"],
            size=item["size"],
            container=item["container"],
            recording_url=f"{args.media_url}/{item['name']}",
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(urlsplit(fake.base_url).port, flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
