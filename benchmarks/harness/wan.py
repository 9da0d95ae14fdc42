"""The wan profile (issue 17): a long network path and a rate-limited media host, on loopback.

The path is emulated on the server side so it costs the clients no CPU (kernel netem is not
available here): nginx with the echo module waits 60 ms before the first byte of every media
response (`echo_sleep`, then `echo_exec` into an internal location serving the file, so ETag
and Range behave as for any static file), and the fake API (`vobiz_async.testing.FakeVobiz`
in its own process) answers each page of 100 after 200 ms, and again at 50 ms.

The rate-limit host is a second nginx location behind `limit_req` (150 requests/s, burst 20,
nodelay) that answers 429 with `Retry-After: 1`; every 429 is written to an access log of its
own, so the harness counts them per run without touching the client.
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bench import shuffled
from harness.data import (
    STORAGE_ROOTS,
    WORK_DIR,
    Dataset,
    Workload,
    ensure_dataset,
    fresh_output_dir,
)
from harness.measure import UNAVAILABLE, measure
from harness.peers import (
    CLI_MANIFEST,
    HEADERS,
    LIBRARY,
    MANIFEST,
    Job,
    Peer,
    process_peer,
    python_peer,
)
from harness.services import (
    AUTH_ID,
    AUTH_TOKEN,
    PEERS,
    fake_api,
    free_port,
    nginx_binary,
    stop,
    wait_for_port,
)

KB = 1000
#: Log-normal sizes around 300 KB (8 kHz call audio); 2,000 of them make about 0.8 GB.
WAN = Workload("wan", 2000, median=300 * KB, sigma=0.8, low=20 * KB, high=10_000 * KB, seed=17)
RATE = Workload("ratelimit", 600, size=50 * KB, seed=17)
SMOKE_WAN = Workload("wan-smoke", 150, median=30 * KB, sigma=0.8, low=5 * KB, high=500 * KB)
SMOKE_RATE = Workload("ratelimit-smoke", 60, size=20 * KB)

MEDIA_DELAY_S = 0.06
PAGE_LATENCIES_MS = (200.0, 50.0)
LEVELS = (64, 256)
RATE_LIMIT = 150
RATE_BURST = 20
RATE_CONCURRENCY = 64
CURL_RETRIES = 10
SMOKE_LEVEL = 32
ECHO_MODULE_DIRS = (
    "/usr/lib/nginx/modules",
    "/usr/share/nginx/modules",
    "/usr/lib64/nginx/modules",
)

CLI_NAME = "vobiz-recordings CLI"
SEQUENTIAL_SCRIPT = "sequential script (curl + jq)"
EXPERT_SCRIPT = "expert script (curl --parallel)"
ARIA2 = "aria2c (expert listing)"
SDK = "vobiz-python (sequential)"
CURL_RETRY = f"curl --parallel --retry {CURL_RETRIES}"
SCRIPTED = (SEQUENTIAL_SCRIPT, EXPERT_SCRIPT, ARIA2, SDK)

NGINX_WAN_CONF = """\
load_module {echo_module};
worker_processes 1;
daemon off;
pid {nginx_dir}/nginx.pid;
error_log {nginx_dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    types {{ audio/mpeg mp3; audio/wav wav; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000;
    access_log off;
    client_body_temp_path {nginx_dir}/client_body;
    proxy_temp_path {nginx_dir}/proxy;
    fastcgi_temp_path {nginx_dir}/fastcgi;
    uwsgi_temp_path {nginx_dir}/uwsgi;
    scgi_temp_path {nginx_dir}/scgi;
    # One bucket for every client (the key must not be empty, or nginx does not count).
    map $host $media_host {{ default media; }}
    limit_req_zone $media_host zone=media:1m rate={rate}r/s;
    map $status $retry_after {{ 429 1; default ""; }}
    map $status $rate_limited {{ 429 1; default 0; }}
    log_format status '$status';
    server {{
        listen 127.0.0.1:{port};
        # A long path: {delay_ms:g} ms before the first byte, then the file as nginx serves it.
        location ~ ^/delay/(?<media>.+)$ {{
            echo_sleep {delay_s};
            echo_exec /files/$media;
        }}
{locations}
    }}
}}
"""
LOCATIONS = """\
        location /files/{storage}/ {{ internal; alias {root}/; }}
        location /limited/{storage}/ {{
            limit_req zone=media burst={burst} nodelay;
            limit_req_status 429;
            add_header Retry-After $retry_after always;
            access_log {log} status if=$rate_limited;
            alias {root}/;
        }}"""


def echo_module() -> Path | None:
    """Debian's libnginx-mod-http-echo, if installed."""
    for directory in ECHO_MODULE_DIRS:
        path = Path(directory) / "ngx_http_echo_module.so"
        if path.exists():
            return path
    return None


def wan_missing() -> str | None:
    """Why the wan profile cannot run here, or None."""
    if nginx_binary() is None:
        return "nginx is not installed"
    if echo_module() is None:
        return "nginx's echo module is not installed (apt-get install libnginx-mod-http-echo)"
    return None


@dataclass(frozen=True)
class WanServer:
    base: str
    rate_log: Path

    def count_429(self) -> int:
        """429s answered so far by the rate-limited location."""
        if not self.rate_log.exists():
            return 0
        with self.rate_log.open("rb") as f:
            return sum(1 for _ in f)


@contextmanager
def wan_nginx() -> Iterator[WanServer]:
    """nginx with the 60 ms first-byte delay under /delay/ and the 429 host under /limited/."""
    binary, module = nginx_binary(), echo_module()
    if binary is None or module is None:
        raise RuntimeError(wan_missing())
    nginx_dir = WORK_DIR / "nginx-wan"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    rate_log = nginx_dir / "rate-limited.log"
    rate_log.unlink(missing_ok=True)
    for root in STORAGE_ROOTS.values():
        root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    locations = "\n".join(
        LOCATIONS.format(storage=storage, root=root, burst=RATE_BURST, log=rate_log)
        for storage, root in STORAGE_ROOTS.items()
    )
    conf = nginx_dir / "nginx.conf"
    conf.write_text(
        NGINX_WAN_CONF.format(
            echo_module=module,
            nginx_dir=nginx_dir,
            port=port,
            rate=RATE_LIMIT,
            delay_s=MEDIA_DELAY_S,
            delay_ms=MEDIA_DELAY_S * 1000,
            locations=locations,
        )
    )
    cmd = [binary, "-p", str(nginx_dir), "-c", str(conf), "-e", str(nginx_dir / "error.log")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield WanServer(f"http://127.0.0.1:{port}", rate_log)
    finally:
        stop(proc)


# --- peers --------------------------------------------------------------------------------


def scripted(mode: str) -> Callable[[Job], list[str]]:
    def command(job: Job) -> list[str]:
        return [
            "bash",
            str(PEERS / "wan_scripts.sh"),
            *(mode, job.api_base, AUTH_ID, AUTH_TOKEN, str(job.out_dir)),
            *(str(job.concurrency), str(job.scratch / "work")),
        ]

    return command


def cli_default_command(job: Job) -> list[str]:
    """The shipped command line with its defaults (its engine: `process` on 2+ CPUs for a job
    of at least `engines.PROCESS_MIN_RECORDINGS` recordings at `PROCESS_MIN_CONCURRENCY` or
    more in flight, else `local`)."""
    return [
        sys.executable,
        *("-m", "vobiz_async", "download", "--out", str(job.out_dir)),
        *("--concurrency", str(job.concurrency)),
        *("--auth-id", AUTH_ID, "--auth-token", AUTH_TOKEN, "--base-url", job.api_base),
        *os.environ.get("VOBIZ_BENCH_CLI_ARGS", "").split(),  # wan_ab.py's variants
    ]


def curl_retry_command(job: Job) -> list[str]:
    config = job.scratch / "curl.cfg"
    config.write_text(
        "".join(f'url = "{url}"\noutput = "{job.out_dir / name}"\n' for url, name in job.urls())
    )
    headers = [arg for header in HEADERS for arg in ("-H", header)]
    return [
        "curl",
        *("--parallel", "--parallel-immediate", "--parallel-max", str(job.concurrency)),
        *("--retry", str(CURL_RETRIES), "--fail", "-s", *headers, "-K", str(config)),
    ]


def library_peer() -> Peer:
    return Peer(
        LIBRARY,
        "vobiz_async",
        lambda job: python_peer("peer_vobiz_async.py", job),
        LIBRARY,
        python=True,
        allowed_extra=MANIFEST,
    )


def cli_peer() -> Peer:
    """The shipped command line with its defaults (`cli_default_command`)."""
    return Peer(
        CLI_NAME, "cli", cli_default_command, LIBRARY, python=True, allowed_extra=CLI_MANIFEST
    )


def wan_peers(smoke: bool) -> list[Peer]:
    """Every peer lists through the fake API itself, downloads and verifies."""
    peers = [
        library_peer(),
        process_peer(),
        cli_peer(),
        Peer(SEQUENTIAL_SCRIPT, "sequential-script", scripted("sequential"), "jq"),
        Peer(EXPERT_SCRIPT, "expert-script", scripted("expert"), "jq"),
        Peer(ARIA2, "aria2c", scripted("aria2"), "aria2c"),
    ]
    if not smoke:
        peers.append(
            Peer(
                SDK,
                "vobiz-python",
                lambda job: python_peer("peer_requests.py", job),
                "vobiz",
                python=True,
            )
        )
    return peers


def rate_peers() -> list[Peer]:
    return [
        library_peer(),
        process_peer(),
        Peer(CURL_RETRY, "curl-retry", curl_retry_command, "curl"),
    ]


#: Peers that ignore the concurrency: run at the first level only.
SEQUENTIAL_PEERS = frozenset({SDK})


# --- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WanSettings:
    reps: int
    seed: int
    timeout: float
    smoke: bool


def wan_job(dataset: Dataset, media_base: str, api_base: str, peer: Peer, level: int) -> Job:
    return Job(
        dataset=dataset,
        media_base=media_base,
        api_base=api_base,
        out_dir=fresh_output_dir(dataset.storage, peer.slug),
        scratch=WORK_DIR / "runs" / peer.slug,
        concurrency=level,
    )


def progress(record: dict[str, Any]) -> None:
    extra = f"  429s {record['http_429']}" if "http_429" in record else ""
    print(
        f"[bench] {record['section']} page {record['page_latency_ms']:g} ms "
        f"c={record['concurrency']} rep {record['rep']}  {record['peer']:<34} "
        f"{record.get('wall_s', 0):7.2f} s {(record.get('mb_per_s') or 0):7.1f} MB/s "
        f"cpu {record.get('cpu_s', 0):6.2f} s rss {record.get('peak_rss_mb', 0):6.1f} MB "
        f"archived {record.get('archived', '-')}{extra}  {record['status']} "
        f"{record.get('note', '')[:160]}",
        flush=True,
    )


def run_section(
    section: str,
    workload: Workload,
    peers: list[Peer],
    latencies_ms: tuple[float, ...],
    levels: tuple[int, ...],
    settings: WanSettings,
    server: WanServer,
    path: str,
) -> list[dict[str, Any]]:
    """Every peer, interleaved in a seeded shuffle per (latency, level, repetition)."""
    missing = {peer.name: reason for peer in peers if (reason := peer.missing())}
    runs: list[dict[str, Any]] = [
        {"section": section, "peer": name, "status": UNAVAILABLE, "note": reason}
        for name, reason in missing.items()
    ]
    for name, reason in missing.items():
        print(f"[bench] {section}: {name} unavailable: {reason}", flush=True)
    dataset = ensure_dataset(workload, "tmpfs")
    media_base = server.base + path
    for latency_ms in latencies_ms:
        fake = fake_api(dataset, media_base, latency_ms / 1000)
        with fake as api_base:
            if not settings.smoke:
                warm = next((p for p in peers if p.name == EXPERT_SCRIPT), None) or peers[0]
                if warm.name not in missing:
                    measure(warm, wan_job(dataset, media_base, api_base, warm, levels[0]), 600)
            for level, rep in itertools.product(levels, range(1, settings.reps + 1)):
                order = shuffled(peers, settings.seed, section, latency_ms, level, rep)
                for position, peer in enumerate(order, start=1):
                    if peer.name in missing:
                        continue
                    if peer.name in SEQUENTIAL_PEERS and (
                        level != levels[0] or latency_ms != latencies_ms[0]
                    ):
                        continue
                    job = wan_job(dataset, media_base, api_base, peer, level)
                    before = server.count_429()
                    record = measure(peer, job, settings.timeout)
                    record.update(
                        section=section,
                        page_latency_ms=latency_ms,
                        concurrency=level,
                        rep=rep,
                        order=position,
                    )
                    if section == "ratelimit":
                        record["http_429"] = server.count_429() - before
                    progress(record)
                    if record["status"] == UNAVAILABLE:
                        missing[peer.name] = record["note"]
                    runs.append(record)
    return runs


def run_wan(settings: WanSettings) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Section 1 (the long path) and section 3 (the 429 host) in one go."""
    if settings.smoke:
        wan, rate, latencies, levels = (
            SMOKE_WAN,
            SMOKE_RATE,
            (PAGE_LATENCIES_MS[0],),
            (SMOKE_LEVEL,),
        )
    else:
        wan, rate, latencies, levels = WAN, RATE, PAGE_LATENCIES_MS, LEVELS
    with wan_nginx() as server:
        print(f"[bench] wan profile: nginx at {server.base}", flush=True)
        runs = run_section(
            "wan", wan, wan_peers(settings.smoke), latencies, levels, settings, server, "/delay"
        )
        runs += run_section(
            "ratelimit",
            rate,
            rate_peers(),
            (0.0,),
            (RATE_CONCURRENCY,),
            settings,
            server,
            "/limited",
        )
    return runs, {"wan": wan.describe(), "ratelimit": rate.describe()}


# --- the report ---------------------------------------------------------------------------

FIELDS = ("wall_s", "mb_per_s", "cpu_s", "peak_rss_mb", "archived", "http_429")


def measured(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for run in runs if "concurrency" in run]


def medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per section, page latency, level and peer: medians over the runs that finished
    correctly (for the rate-limit section, over every run: losing files is the finding)."""
    groups: dict[tuple[str, float, int, str], list[dict[str, Any]]] = defaultdict(list)
    for run in measured(runs):
        key = (run["section"], run["page_latency_ms"], run["concurrency"], run["peer"])
        groups[key].append(run)
    rows = []
    for (section, latency, level, peer), group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        use = group if section == "ratelimit" else ok
        row: dict[str, Any] = {
            "section": section,
            "page_latency_ms": latency,
            "concurrency": level,
            "peer": peer,
            "ok_runs": len(ok),
            "runs": len(group),
        }
        for name in FIELDS:
            values = [r[name] for r in use if r.get(name) is not None]
            row[name] = statistics.median(values) if values else None
        rows.append(row)
    return rows


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(header: list[str], body: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in body),
    ]


def wan_tables(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    wan_rows = [r for r in rows if r["section"] == "wan"]
    for latency in sorted({r["page_latency_ms"] for r in wan_rows}, reverse=True):
        at = [r for r in wan_rows if r["page_latency_ms"] == latency]
        lines += [
            f"#### Long path: media +{MEDIA_DELAY_S * 1000:g} ms, pages of 100 at {latency:g} ms",
            "",
        ]
        body = []
        for level in sorted({r["concurrency"] for r in at}):
            group = [r for r in at if r["concurrency"] == level]
            best = min((r["wall_s"] for r in group if r["wall_s"]), default=None)
            for r in sorted(group, key=lambda r: r["wall_s"] or 1e9):
                ratio = r["wall_s"] / best if r["wall_s"] and best else None
                body.append(
                    [
                        str(level),
                        r["peer"],
                        fmt(r["wall_s"]),
                        fmt(r["mb_per_s"], 1),
                        fmt(ratio),
                        fmt(r["cpu_s"]),
                        fmt(r["peak_rss_mb"], 1),
                        f"{r['ok_runs']}/{r['runs']}",
                    ]
                )
        header = [
            "in flight",
            "peer",
            "wall s",
            "MB/s",
            "x best wall",
            "CPU s",
            "peak RSS MB",
            "ok",
        ]
        lines += [*table(header, body), ""]
        lines += best_concurrency_lines(at)
    rate_rows = [r for r in rows if r["section"] == "ratelimit"]
    if rate_rows:
        ideal = None
        rate_runs = [r for r in measured(runs) if r["section"] == "ratelimit"]
        if rate_runs:
            ideal = rate_runs[0]["files"] / RATE_LIMIT
        lines += [
            f"#### Rate limit: {RATE_LIMIT} requests/s, burst {RATE_BURST}, 429 + Retry-After: 1, "
            f"{RATE_CONCURRENCY} in flight (ideal {fmt(ideal, 1)} s)",
            "",
        ]
        body = [
            [
                r["peer"],
                f"{fmt(r['archived'], 0)} of {rate_runs[0]['files'] if rate_runs else '-'}",
                fmt(r["wall_s"]),
                fmt(r["http_429"], 0),
                fmt(r["cpu_s"]),
                fmt(r["peak_rss_mb"], 1),
                f"{r['ok_runs']}/{r['runs']}",
            ]
            for r in rate_rows
        ]
        header = ["peer", "archived (median)", "wall s", "429s", "CPU s", "peak RSS MB", "complete"]
        lines += [*table(header, body), ""]
    lines += ["<details><summary>Every run</summary>", "", *every_run(runs), "", "</details>", ""]
    return lines


def best_concurrency_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Each peer at its best concurrency: the issue's targets (3x the sequential script,
    1.3x the best scripted peer)."""
    best: dict[str, float] = {}
    for r in rows:
        if r["wall_s"]:
            best[r["peer"]] = min(best.get(r["peer"], r["wall_s"]), r["wall_s"])
    ours = best.get(LIBRARY)
    sequential = best.get(SEQUENTIAL_SCRIPT)
    rivals = [best[p] for p in SCRIPTED if p in best]
    lines = []
    if ours and sequential:
        lines.append(
            f"- Each at its best concurrency: library {fmt(ours)} s, sequential script "
            f"{fmt(sequential)} s: **{fmt(sequential / ours)}x** (target >= 3x)."
        )
    if ours and rivals:
        top = min(rivals)
        name = next(p for p in SCRIPTED if best.get(p) == top)
        lines.append(
            f"- Best scripted peer: {name} {fmt(top)} s: library **{fmt(top / ours)}x** "
            "(target >= 1.3x)."
        )
    return [*lines, ""] if lines else []


def every_run(runs: list[dict[str, Any]]) -> list[str]:
    body = [
        [
            r["section"],
            f"{r['page_latency_ms']:g}",
            str(r["concurrency"]),
            str(r["rep"]),
            r["peer"],
            fmt(r.get("wall_s")),
            fmt(r.get("mb_per_s"), 1),
            fmt(r.get("cpu_s")),
            fmt(r.get("peak_rss_mb"), 1),
            str(r.get("archived", "-")),
            str(r.get("http_429", "-")),
            r["status"],
        ]
        for r in measured(runs)
    ]
    header = [
        "section",
        "page ms",
        "in flight",
        "rep",
        "peer",
        "wall s",
        "MB/s",
        "CPU s",
        "RSS MB",
        "archived",
        "429s",
        "status",
    ]
    return table(header, body)


def render(payload: dict[str, Any]) -> str:
    """Markdown for RESULTS.md: the medians, ratios to the best peer, and every run."""
    lines = [
        f"Command: `benchmarks/run {' '.join(payload['argv'])}`; {payload['reps']} repetition(s), "
        f"medians of interleaved runs; {payload['workloads']['wan']}; rate limit: "
        f"{payload['workloads']['ratelimit']}. Wall time includes interpreter start.",
        "",
        *wan_tables(payload["medians"], payload["runs"]),
    ]
    unavailable = [r for r in payload["runs"] if r["status"] == UNAVAILABLE]
    lines += [f"- unavailable: {r['peer']}: {r['note']}" for r in unavailable]
    return "\n".join(lines) + "\n"


def library_verdict(runs: list[dict[str, Any]]) -> bool:
    """Smoke: the library finished the long-path job correctly every time, and ran the
    rate-limit job (whether it loses recordings there is the issue's finding, not a crash)."""
    ours = [r for r in measured(runs) if r["peer"] == LIBRARY]
    wan_ok = [r["status"] == "ok" for r in ours if r["section"] == "wan"]
    rate_ran = [r["status"] in ("ok", "failed") for r in ours if r["section"] == "ratelimit"]
    return bool(wan_ok) and all(wan_ok) and bool(rate_ran) and all(rate_ran)
