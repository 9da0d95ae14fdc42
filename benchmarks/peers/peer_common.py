"""Shared command line and reporting for the Python peers the harness runs and measures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

UNAVAILABLE_EXIT = 3


def parse_args(description: str | None, *extra: tuple[str, dict[str, Any]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jobs", type=Path, help="JSON list of {url, name}")
    parser.add_argument("--api", help="base URL of the fake Vobiz API")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--auth-id", required=True)
    parser.add_argument("--auth-token", required=True)
    for flag, options in extra:
        parser.add_argument(flag, **options)
    return parser.parse_args()


def auth_headers(args: argparse.Namespace) -> dict[str, str]:
    return {"X-Auth-ID": args.auth_id, "X-Auth-Token": args.auth_token}


def load_jobs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(url, output path) pairs, in the order the harness wrote them."""
    jobs = json.loads(args.jobs.read_text())
    return [(job["url"], args.out / job["name"]) for job in jobs]


def report(**figures: Any) -> None:
    """The peer's own figures (e.g. transfer_s, excluding interpreter start-up) as one line."""
    print(json.dumps(figures), flush=True)


def unavailable(reason: str) -> NoReturn:
    report(unavailable=reason)
    sys.exit(UNAVAILABLE_EXIT)
