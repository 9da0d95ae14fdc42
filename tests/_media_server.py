"""Serve one large recording from FakeVobiz in a process of its own (for the memory test).

Usage: ``python tests/_media_server.py SIZE``. Prints one JSON line with the session keyword
arguments and the recording id once the fake listens on 127.0.0.1, then answers every
``sha256`` line on stdin with ``{"sha256": ...}``, computed lazily block by block. Exits at
end of stdin.
"""

from __future__ import annotations

import asyncio
import json
import sys

from vobiz_async.testing import FakeVobiz


async def main(size: int) -> None:
    async with FakeVobiz(recordings=0, seed=0, record_requests=False) as fake:
        rid = fake.add_recording(size=size).recording_id
        print(json.dumps({**fake.session_kwargs(), "recording_id": rid}), flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            if line.strip() == "sha256":
                digest = await asyncio.to_thread(fake.sha256, rid)
                print(json.dumps({"sha256": digest}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
