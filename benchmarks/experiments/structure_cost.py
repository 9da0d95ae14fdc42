"""What listing costs per recording on the CPU: JSON decoding, structuring, timestamps.

The pipelined listing benchmark hides the listing's latency but not its CPU, which comes
out of the same event loop as the downloads. This times the pieces on one 100-recording
page in the benchmark fake API's wire shape:

    benchmarks/work/venv/bin/python benchmarks/experiments/structure_cost.py
"""

from __future__ import annotations

import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "servers"))

from fake_api import page_link, recording_object

from vobiz_async.converter import structure
from vobiz_async.models import Page
from vobiz_async.protocol import parse_timestamp

PAGE = 100
AUTH_ID = "MA_BENCH0000000000000"


def page_body() -> str:
    objects = [
        recording_object(
            index,
            {"recording_id": f"rec-{index:05d}", "container": "mp3", "name": f"{index}.mp3"},
            AUTH_ID,
            "http://127.0.0.1:8080/media",
        )
        for index in range(PAGE)
    ]
    meta = {
        "limit": PAGE,
        "offset": 0,
        "total_count": 20_000,
        "next": page_link(AUTH_ID, PAGE, PAGE),
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
