"""What listing costs per recording on the CPU: JSON decoding, structuring, timestamps.

The pipelined listing benchmark hides the listing's latency but not its CPU, which comes
out of the same event loop as the downloads. This times the pieces on one 100-recording
page in the wire shape of the benchmarks' fake API (`FakeVobiz`, no server needed):

    benchmarks/work/venv/bin/python benchmarks/experiments/structure_cost.py

Until the benchmarks' own light fake went (2026-12-01) the page came from that one, which
sent none of the extra fields (`recording_region`, sometimes `recording_channels`).
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable

from vobiz_async.converter import structure
from vobiz_async.models import Page
from vobiz_async.protocol import parse_timestamp
from vobiz_async.testing import FakeVobiz

PAGE = 100
AUTH_ID = "MA_BENCH0000000000000"


def page_body() -> str:
    fake = FakeVobiz(0, auth_id=AUTH_ID)
    for index in reversed(range(PAGE)):  # each added recording goes first
        fake.add_recording(
            f"rec-{index:05d}", recording_url=f"http://127.0.0.1:8080/media/{index}.mp3"
        )
    objects = [rec.wire() for rec in fake.recordings.values()]
    meta = {
        "limit": PAGE,
        "offset": 0,
        "total_count": 20_000,
        "next": f"/v1/Account/{AUTH_ID}/Recording/?limit={PAGE}&offset={PAGE}",
        "previous": None,
    }
    return json.dumps({"api_id": "bench", "meta": meta, "objects": objects})


def per_call_us(call: Callable[[], object], number: int) -> float:
    """The best of five timings, in microseconds per call."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def main() -> None:
    body = page_body()
    data = json.loads(body)
    stamp = data["objects"][0]["add_time"]
    decode = per_call_us(lambda: json.loads(body), 200) / PAGE
    build = per_call_us(lambda: structure(data, Page), 200) / PAGE
    print(f"json.loads:      {decode:6.2f} us per recording")
    print(f"structure(Page): {build:6.2f} us per recording")
    print(f"parse_timestamp: {per_call_us(lambda: parse_timestamp(stamp), 20_000):6.2f} us")


if __name__ == "__main__":
    main()
