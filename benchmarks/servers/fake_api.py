"""A fake Vobiz Recording API on 127.0.0.1 listing a generated dataset.

Run by the harness in its own process (so its CPU is not the client's). Prints the bound port
on its first stdout line, then serves until terminated. Paths tolerate any prefix before
`Account/` so the client may be given `http://host:port/api/v1/` or a bare host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from typing import Any

from aiohttp import web
from loopback import serve_until_terminated

MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", required=True, help="dataset index.json")
    parser.add_argument("--media-url", required=True, help="URL prefix of the files on nginx")
    parser.add_argument("--auth-id", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per response")
    return parser.parse_args()


def recording_object(index: int, item: dict[str, Any], auth_id: str, media_url: str) -> dict:
    """A recording in the wire shape of VOBIZ_API.md, deterministic for its position."""
    rng = random.Random(index)
    duration_ms = rng.randint(2_000, 600_000)
    start_ms = 1_778_000_000_000 + index * 1_000
    rid = item["recording_id"]
    return {
        "add_time": f"2026-05-07 09:{index // 60 % 60:02d}:{index % 60:02d}.79276+05:30",
        "call_uuid": str(rng.getrandbits(64)),
        "conference_name": None,
        "from_number": "+918000000001",
        "monthly_recording_storage_amount": 0,
        "recording_duration_ms": f"{duration_ms}.00000",
        "recording_end_ms": f"{start_ms + duration_ms}.00000",
        "recording_format": item["container"],
        "recording_id": rid,
        "recording_start_ms": f"{start_ms}.00000",
        "recording_storage_duration": 1,
        "recording_storage_rate": 0.0004,
        "recording_type": "call",
        "recording_url": f"{media_url}/{item['name']}",
        "resource_uri": f"/v1/Account/{auth_id}/Recording/{rid}/",
        "rounded_recording_duration": -(-duration_ms // 60_000) * 60,
        "to_number": "918000000002",
    }


def page_link(auth_id: str, limit: int, offset: int) -> str:
    return f"/v1/Account/{auth_id}/Recording/?limit={limit}&offset={offset}"


def bounded_int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError as err:
        raise web.HTTPBadRequest(text='{"error": "invalid limit or offset"}') from err
    return min(high, max(low, number))


class FakeApi:
    def __init__(self, args: argparse.Namespace) -> None:
        with open(args.index) as f:
            items = json.load(f)
        self.args = args
        self.objects = [
            recording_object(i, item, args.auth_id, args.media_url) for i, item in enumerate(items)
        ]
        self.by_id = {obj["recording_id"]: obj for obj in self.objects}

    async def respond(self, request: web.Request, body: dict, status: int = 200) -> web.Response:
        if self.args.latency:
            await asyncio.sleep(self.args.latency)
        body = {"api_id": request.headers.get("X-Request-ID", "bench-api-id"), **body}
        return web.json_response(body, status=status)

    def authorised(self, request: web.Request) -> bool:
        return (
            request.match_info["auth_id"] == self.args.auth_id
            and request.headers.get("X-Auth-ID") == self.args.auth_id
            and request.headers.get("X-Auth-Token") == self.args.auth_token
        )

    async def list_recordings(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return await self.respond(request, {"error": "Authentication failed"}, 401)
        total = len(self.objects)
        limit = bounded_int(request.query.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = bounded_int(request.query.get("offset"), 0, 0, total)
        auth_id = self.args.auth_id
        meta = {
            "limit": limit,
            "next": page_link(auth_id, limit, offset + limit) if offset + limit < total else None,
            "offset": offset,
            "previous": page_link(auth_id, limit, max(0, offset - limit)) if offset else None,
            "total_count": total,
        }
        objects = self.objects[offset : offset + limit]
        return await self.respond(request, {"meta": meta, "objects": objects})

    async def get_recording(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return await self.respond(request, {"error": "Authentication failed"}, 401)
        obj = self.by_id.get(request.match_info["recording_id"])
        if obj is None:
            return await self.respond(request, {"error": "Recording not found"}, 404)
        return await self.respond(request, obj)


def make_app(args: argparse.Namespace) -> web.Application:
    api = FakeApi(args)
    app = web.Application()
    app.router.add_get(r"/{prefix:.*}Account/{auth_id}/Recording/", api.list_recordings)
    app.router.add_get(
        r"/{prefix:.*}Account/{auth_id}/Recording/{recording_id}/", api.get_recording
    )
    return app


if __name__ == "__main__":
    asyncio.run(serve_until_terminated(make_app(parse_args())))
