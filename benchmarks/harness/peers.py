"""The peers: how to invoke each one on the same URLs, headers and concurrency."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.data import Dataset
from harness.services import AUTH_ID, AUTH_TOKEN, PEERS

HEADERS = (f"X-Auth-ID: {AUTH_ID}", f"X-Auth-Token: {AUTH_TOKEN}")
LIBRARY = "vobiz_async"
CLI = "vobiz-recordings CLI"
RAY = "vobiz_async on Ray (local)"
PROCESS = "vobiz_async (process engine)"
CURL = "curl"
SEQUENTIAL_PAGING = "sequential paging (aiohttp)"
PAGER = "vobiz_async pager"
LIST_THEN_DOWNLOAD = "list-then-download (vobiz_async)"
PIPELINED = "pipelined (vobiz_async)"
MANIFEST = frozenset({"manifest.jsonl"})
RAY_MANIFEST = frozenset({"manifest.jsonl", "manifest.jsonl.shards"})
#: The CLI's index, and its shard journal when the process engine ran (its default for
#: large jobs on 2+ CPUs).
CLI_MANIFEST = frozenset({"vobiz-manifest.jsonl", "vobiz-manifest.jsonl.shards"})


@dataclass(frozen=True)
class Job:
    """Everything one measured run needs: what to fetch, from where, into where, how wide."""

    dataset: Dataset
    media_base: str
    api_base: str
    out_dir: Path
    scratch: Path
    concurrency: int

    def urls(self) -> list[tuple[str, str]]:
        prefix = self.media_base + self.dataset.url_path
        return [(f"{prefix}/{rec.name}", rec.name) for rec in self.dataset.recordings]


@dataclass(frozen=True)
class Peer:
    name: str
    slug: str
    command: Callable[[Job], list[str]]
    requires: str
    python: bool = False
    downloads: bool = True
    allowed_extra: frozenset[str] = field(default_factory=frozenset)

    def missing(self) -> str | None:
        """Why this peer cannot run here, or None when it can."""
        if self.python:
            found = importlib.util.find_spec(self.requires) is not None
        else:
            found = shutil.which(self.requires) is not None
        return None if found else f"{self.requires} not installed"


def python_peer(script: str, job: Job, *extra: str) -> list[str]:
    jobs_file = job.scratch / "jobs.json"
    jobs_file.write_text(json.dumps([{"url": u, "name": n} for u, n in job.urls()]))
    return [
        sys.executable,
        str(PEERS / script),
        *("--jobs", str(jobs_file), "--api", job.api_base, "--out", str(job.out_dir)),
        *("--concurrency", str(job.concurrency), "--auth-id", AUTH_ID, "--auth-token", AUTH_TOKEN),
        *extra,
    ]


def curl_command(job: Job) -> list[str]:
    config = job.scratch / "curl.cfg"
    config.write_text(
        "".join(f'url = "{url}"\noutput = "{job.out_dir / name}"\n' for url, name in job.urls())
    )
    headers = [arg for header in HEADERS for arg in ("-H", header)]
    return [
        "curl",
        *("--parallel", "--parallel-immediate", "--parallel-max", str(job.concurrency)),
        *("--fail", "-s", *headers, "-K", str(config)),
    ]


def aria2_command(job: Job) -> list[str]:
    listing = job.scratch / "aria2.txt"
    listing.write_text("".join(f"{url}\n  out={name}\n" for url, name in job.urls()))
    return [
        "aria2c",
        *("-j", str(job.concurrency), "-x", "1", "-s", "1", "-d", str(job.out_dir)),
        *("-i", str(listing), *(f"--header={header}" for header in HEADERS)),
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--file-allocation=none",
        "--console-log-level=warn",
        "--summary-interval=0",
    ]


def wget_command(job: Job) -> list[str]:
    listing = job.scratch / "wget.txt"
    listing.write_text("".join(f"{url}\n" for url, _ in job.urls()))
    headers = [f"--header={header}" for header in HEADERS]
    return ["wget", "-q", "-nd", "-P", str(job.out_dir), *headers, "-i", str(listing)]


def cli_command(job: Job) -> list[str]:
    """The shipped command line: list through the fake API, download in one process."""
    return [
        sys.executable,
        *("-m", "vobiz_async", "download", "--out", str(job.out_dir)),
        *("--concurrency", str(job.concurrency)),
        *("--auth-id", AUTH_ID, "--auth-token", AUTH_TOKEN, "--base-url", job.api_base),
    ]


def script(name: str, *flags: str) -> Callable[[Job], list[str]]:
    return lambda job: python_peer(name, job, *flags)


def process_peer() -> Peer:
    """The library peer on `ProcessEngine()`: one worker process per CPU (at most 8)."""
    return Peer(
        PROCESS,
        "vobiz_async-process",
        script("peer_vobiz_async.py", "--engine", "process"),
        LIBRARY,
        python=True,
        allowed_extra=RAY_MANIFEST,
    )


def requests_label() -> tuple[str, tuple[str, ...]]:
    if importlib.util.find_spec("vobiz") is not None:
        return "vobiz-python + requests (sequential)", ()
    return "requests (sequential, vobiz-python unavailable)", ("--plain",)


def download_peers() -> list[Peer]:
    """The download benchmark's peers, in the order the tables list them."""
    requests_name, requests_flags = requests_label()
    return [
        Peer(
            LIBRARY,
            "vobiz_async",
            script("peer_vobiz_async.py"),
            LIBRARY,
            python=True,
            allowed_extra=MANIFEST,
        ),
        Peer(CLI, "cli", cli_command, LIBRARY, python=True, allowed_extra=CLI_MANIFEST),
        process_peer(),
        Peer(
            RAY,
            "ray",
            script("peer_vobiz_async.py", "--engine", "ray"),
            "ray",
            python=True,
            allowed_extra=RAY_MANIFEST,
        ),
        Peer(CURL, "curl", curl_command, "curl"),
        Peer("aria2c", "aria2c", aria2_command, "aria2c"),
        Peer("wget (sequential)", "wget", wget_command, "wget"),
        Peer("httpx", "httpx", script("peer_httpx.py"), "httpx", python=True),
        Peer(
            "aiohttp (naive)",
            "aiohttp-naive",
            script("peer_aiohttp_naive.py"),
            "aiohttp",
            python=True,
        ),
        Peer(
            requests_name,
            "requests",
            script("peer_requests.py", *requests_flags),
            "requests",
            python=True,
        ),
    ]


def listing_peers() -> list[Peer]:
    """The listing benchmark's modes: enumeration alone, then list-and-download two ways."""
    listing = "peer_listing.py"
    return [
        Peer(
            SEQUENTIAL_PAGING,
            "sequential",
            script(listing, "--mode", "sequential"),
            "aiohttp",
            python=True,
            downloads=False,
        ),
        Peer(
            PAGER,
            "pager",
            script(listing, "--mode", "pager"),
            LIBRARY,
            python=True,
            downloads=False,
        ),
        Peer(
            LIST_THEN_DOWNLOAD,
            "list-then-download",
            script(listing, "--mode", "list-then-download"),
            LIBRARY,
            python=True,
            allowed_extra=MANIFEST,
        ),
        Peer(
            PIPELINED,
            "pipelined",
            script(listing, "--mode", "pipelined"),
            LIBRARY,
            python=True,
            allowed_extra=MANIFEST,
        ),
    ]
