"""Results: medians and ratios, the JSON files, RESULTS.md tables and the throughput chart."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.peers import (
    CLI,
    CURL,
    LIBRARY,
    LIST_THEN_DOWNLOAD,
    PAGER,
    PIPELINED,
    SEQUENTIAL_PAGING,
)

START, END = "<!-- results:start -->", "<!-- results:end -->"
MEDIAN_FIELDS = (
    "wall_s",
    "transfer_s",
    "list_s",
    "download_s",
    "files_per_s",
    "mb_per_s",
    "cpu_s",
    "peak_rss_mb",
)
RSS_TARGET_MB = 64
UNITS = {"files_per_s": "files/s", "mb_per_s": "MB/s"}
WORKLOAD_ORDER = ("small", "large", "mix", "listing", "smoke", "smoke-listing")
RIVALS = ("aria2c", "wget (sequential)", "httpx", "aiohttp (naive)")
RESULTS_TEMPLATE = f"""# Benchmark results

Produced by `benchmarks/run` (see [README.md](README.md)). Everything between the `results`
markers is regenerated from the newest `results/*.json` for each workload, storage and
concurrency; the rest of this file is hand-written and kept.

{START}
{END}

## Tuning experiments

One entry per experiment: what changed, the numbers before and after (name the results file),
and whether it was kept. Losing experiments stay here too.
"""

Group = tuple[str, str, int]  # workload, storage, concurrency


def group_key(run: dict[str, Any]) -> Group:
    return run["workload"], run["storage"], run["concurrency"]


def measured(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for run in runs if "concurrency" in run]


def summarize(runs: list[dict[str, Any]], peer_order: list[str]) -> list[dict[str, Any]]:
    """Median of each figure over the successful runs of each peer in each group."""
    by_peer: dict[tuple[Group, str], list[dict[str, Any]]] = defaultdict(list)
    for run in measured(runs):
        by_peer[group_key(run), run["peer"]].append(run)
    rows = []
    for (group, peer), peer_runs in by_peer.items():
        ok = [run for run in peer_runs if run["status"] == "ok"]
        row: dict[str, Any] = dict(zip(("workload", "storage", "concurrency"), group, strict=True))
        row.update(peer=peer, ok_runs=len(ok), runs=len(peer_runs))
        for name in MEDIAN_FIELDS:
            values = [run[name] for run in ok if run.get(name) is not None]
            row[name] = statistics.median(values) if values else None
        rows.append(row)
    add_curl_ratios(rows, rows)
    return sorted(rows, key=lambda row: (group_key(row), peer_order.index(row["peer"])))


def add_curl_ratios(rows: list[dict[str, Any]], baseline_rows: list[dict[str, Any]]) -> None:
    """files/s and MB/s of each row divided by curl's in the same group (and repetition)."""
    curl = {
        (group_key(row), row.get("rep")): row
        for row in baseline_rows
        if row["peer"] == CURL and row.get("files_per_s")
    }
    for row in rows:
        base = curl.get((group_key(row), row.get("rep")))
        usable = base is not None and row.get("status", "ok") == "ok"
        for name in ("files_per_s", "mb_per_s"):
            ratio = row[name] / base[name] if usable and base and row.get(name) else None
            row[f"{name}_vs_curl"] = ratio


def add_run_ratios(runs: list[dict[str, Any]]) -> None:
    measured_runs = measured(runs)
    add_curl_ratios(measured_runs, [run for run in measured_runs if run["status"] == "ok"])


def write_results(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


def latest_groups(results_dir: Path) -> dict[Group, dict[str, Any]]:
    """For each (workload, storage, concurrency), the newest results file that has it;
    a run of every peer wins over a newer run of a few (`--peer`)."""
    payloads = [
        {**json.loads(path.read_text()), "file": path.name}
        for path in sorted(results_dir.glob("*.json"))
    ]
    # The wan profile's files have tables of their own (harness/wan.py).
    payloads = [payload for payload in payloads if "profile" not in payload]
    latest: dict[Group, dict[str, Any]] = {}
    for payload in sorted(payloads, key=lambda p: (not p.get("peer_filter"), p["file"])):
        for group in {group_key(row) for row in payload["medians"]}:
            latest[group] = payload
    return latest


# --- RESULTS.md ---------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; columns whose cells are all numbers are right-aligned."""

    def numeric(cell: str) -> bool:
        return cell.replace(",", "").replace(".", "").replace("+", "").isdigit() or cell == "-"

    align = [
        "---:" if rows and all(numeric(row[i]) for row in rows) else "---"
        for i in range(len(header))
    ]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def median_table(rows: list[dict[str, Any]]) -> list[str]:
    header = ["peer", "files/s", "MB/s", "x curl files/s", "x curl MB/s", "CPU s"]
    header += ["peak RSS MB", "wall s", "in-process s", "ok runs"]
    body = [
        [
            f"**{row['peer']}**" if row["peer"] in (LIBRARY, CLI) else row["peer"],
            fmt(row["files_per_s"]),
            fmt(row["mb_per_s"]),
            fmt(row["files_per_s_vs_curl"], 2),
            fmt(row["mb_per_s_vs_curl"], 2),
            fmt(row["cpu_s"], 2),
            fmt(row["peak_rss_mb"]),
            fmt(row["wall_s"], 2),
            fmt(row["transfer_s"], 2),
            f"{row['ok_runs']}/{row['runs']}",
        ]
        for row in rows
    ]
    return table(header, body)


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    header = ["rep", "order", "peer", "status", "wall s", "in-process s", "files/s", "MB/s"]
    header += ["x curl files/s", "x curl MB/s", "CPU s (user+sys)", "peak RSS MB", "note"]
    body = [
        [
            str(run["rep"]),
            str(run["order"]),
            run["peer"],
            run["status"],
            fmt(run["wall_s"], 2),
            fmt(run.get("transfer_s"), 2),
            fmt(run.get("files_per_s")),
            fmt(run.get("mb_per_s")),
            fmt(run.get("files_per_s_vs_curl"), 2),
            fmt(run.get("mb_per_s_vs_curl"), 2),
            f"{fmt(run['user_s'], 2)}+{fmt(run['sys_s'], 2)}",
            fmt(run["peak_rss_mb"]),
            (run.get("note") or "").replace("|", "/").replace("\n", " ")[:120],
        ]
        for run in sorted(runs, key=lambda r: (r["rep"], r["order"]))
    ]
    return table(header, body)


def listing_summary(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The issue's listing targets, from in-process times (interpreter start-up excluded)."""
    by_peer = {row["peer"]: row for row in rows}

    def figure(peer: str, name: str) -> float | None:
        return by_peer.get(peer, {}).get(name)

    sequential, pager = figure(SEQUENTIAL_PAGING, "transfer_s"), figure(PAGER, "transfer_s")
    download_alone = figure(LIST_THEN_DOWNLOAD, "download_s")
    pipelined = figure(PIPELINED, "transfer_s")
    speedup = sequential / pager if sequential and pager else None
    slower = max(pager, download_alone) if pager and download_alone else None
    return {
        "sequential_s": sequential,
        "pager_s": pager,
        "download_alone_s": download_alone,
        "pipelined_s": pipelined,
        "enumeration_speedup": speedup,
        "pipelined_vs_slower_alone": pipelined / slower if pipelined and slower else None,
    }


def listing_lines(rows: list[dict[str, Any]]) -> list[str]:
    s = listing_summary(rows)
    return [
        "",
        f"- Enumeration: sequential {fmt(s['sequential_s'], 2)} s, pager "
        f"{fmt(s['pager_s'], 2)} s: **{fmt(s['enumeration_speedup'], 2)}x** (target >= 4x).",
        f"- End to end: pipelined {fmt(s['pipelined_s'], 2)} s vs the slower of listing alone "
        f"and downloading alone ({fmt(s['download_alone_s'], 2)} s download): "
        f"**{fmt(s['pipelined_vs_slower_alone'], 2)}x** (target <= 1.10x).",
        "- Times above are measured inside each process (start-up excluded); tables use wall time.",
    ]


def group_section(group: Group, payload: dict[str, Any]) -> list[str]:
    workload, storage, concurrency = group
    rows = [row for row in payload["medians"] if group_key(row) == group]
    runs = [run for run in measured(payload["runs"]) if group_key(run) == group]
    unavailable = [run for run in payload["runs"] if run["status"] == "unavailable"]
    settings = payload["settings"]
    lines = [
        f"### {workload} · {storage} · concurrency {concurrency}",
        "",
        f"{payload['workloads'][workload]}. {settings['reps']} repetition(s), API latency "
        f"{settings['latency_ms'][workload]:g} ms, server {payload['machine']['server']}; "
        f"`results/{payload['file']}`.",
        "",
        *median_table(rows),
    ]
    if "listing" in workload:
        lines += listing_lines(rows)
    lines += [f"- unavailable: {run['peer']}: {run['note']}" for run in unavailable]
    lines += ["", "<details><summary>Every run</summary>", "", *runs_table(runs), "", "</details>"]
    return [*lines, ""]


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**missed**")


def target_rows(latest: dict[Group, dict[str, Any]]) -> list[list[str]]:
    """The issue's targets for downloads at tmpfs, concurrency 16, from the newest medians:
    for the library in one process (`download_many`) and for the CLI."""
    rows = []
    for workload, name, need in (("small", "files_per_s", 0.6), ("large", "mb_per_s", 0.9)):
        payload = latest.get((workload, "tmpfs", 16), {"medians": []})
        medians = {
            row["peer"]: row
            for row in payload["medians"]
            if group_key(row) == (workload, "tmpfs", 16) and row[name]
        }
        unit = UNITS[name]
        best = max((medians[p][name] for p in RIVALS if p in medians), default=None)
        for peer in (LIBRARY, CLI):
            ours = medians.get(peer, {})
            ratio = ours.get(f"{name}_vs_curl")
            rows.append(
                [
                    f"{workload}: {unit} >= {need}x curl's ({peer})",
                    fmt(ratio, 2),
                    verdict(None if ratio is None else ratio >= need),
                ]
            )
            ahead = ours[name] > best if ours and best else None
            rows.append(
                [f"{workload}: {unit} above the best rival's ({peer})", fmt(best), verdict(ahead)]
            )
    rows += listing_target_rows(latest)
    for label, peers in (
        ("library (list-then-download excluded)", (LIBRARY, PAGER, PIPELINED)),
        ("CLI, all its processes summed", (CLI,)),
    ):
        rss = [
            run["peak_rss_mb"]
            for payload in latest.values()
            for run in measured(payload["runs"])
            if run["peer"] in peers
        ]
        worst = max(rss, default=None)
        rows.append(
            [
                f"{label}: peak RSS <= {RSS_TARGET_MB} MB (worst run)",
                fmt(worst),
                verdict(None if worst is None else worst <= RSS_TARGET_MB),
            ]
        )
    return rows


def listing_target_rows(latest: dict[Group, dict[str, Any]]) -> list[list[str]]:
    group = ("listing", "tmpfs", 16)
    payload = latest.get(group, {"medians": []})
    summary = listing_summary([row for row in payload["medians"] if group_key(row) == group])
    speedup, overhead = summary["enumeration_speedup"], summary["pipelined_vs_slower_alone"]
    return [
        [
            "listing: pager >= 4x faster than sequential paging",
            fmt(speedup, 2),
            verdict(None if speedup is None else speedup >= 4),
        ],
        [
            "listing: pipelined <= 1.10x the slower of listing and downloading alone",
            fmt(overhead, 2),
            verdict(None if overhead is None else overhead <= 1.10),
        ],
    ]


def render(results_dir: Path) -> str:
    latest = latest_groups(results_dir)
    lines = ["## Targets (issue 5: tmpfs, concurrency 16)", ""]
    lines += table(["target", "library (or best rival)", "verdict"], target_rows(latest))
    lines += ["", f"Rivals: {', '.join(RIVALS)}. Listing figures are in-process times."]
    lines += ["", "![throughput](results/throughput.png)", "", "## Latest runs", ""]
    lines += sweep_sections(latest)
    for group in sorted(latest, key=display_order):
        lines += group_section(group, latest[group])
    return "\n".join(lines)


def display_order(group: Group) -> tuple[int, bool, str, int]:
    workload, storage, concurrency = group
    rank = WORKLOAD_ORDER.index(workload) if workload in WORKLOAD_ORDER else len(WORKLOAD_ORDER)
    return rank, storage != "tmpfs", storage, concurrency


def sweep_sections(latest: dict[Group, dict[str, Any]]) -> list[str]:
    """Median files/s and MB/s by concurrency, for each workload and storage swept."""
    levels: dict[tuple[str, str], list[int]] = defaultdict(list)
    for workload, storage, concurrency in sorted(latest, key=display_order):
        levels[workload, storage].append(concurrency)
    lines = []
    for (workload, storage), swept in levels.items():
        if len(swept) < 2:
            continue
        cells: dict[str, dict[int, str]] = defaultdict(dict)
        for level in swept:
            for row in latest[workload, storage, level]["medians"]:
                if group_key(row) == (workload, storage, level) and row["files_per_s"]:
                    cell = f"{fmt(row['files_per_s'])} / {fmt(row['mb_per_s'])}"
                    cells[row["peer"]][level] = cell
        header = ["peer", *(f"c={level}" for level in swept)]
        body = [[peer, *(by.get(level, "-") for level in swept)] for peer, by in cells.items()]
        lines += [f"### Sweep: {workload} · {storage} (files/s / MB/s)", ""]
        lines += [*table(header, body), ""]
    return lines


def update_results_md(path: Path, results_dir: Path) -> None:
    """Rewrite only the text between the markers; create the file from a template if new."""
    text = path.read_text() if path.exists() else RESULTS_TEMPLATE
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{render(results_dir)}\n{END}{tail}")


# --- chart --------------------------------------------------------------------------------


def chart(results_dir: Path, png: Path) -> bool:
    """Bars of median files/s and MB/s per peer, one column per download workload."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    latest = latest_groups(results_dir)
    downloads = [g for g in sorted(latest, key=display_order) if "listing" not in g[0]]
    groups = [g for g in downloads if g[2] == 16] or downloads
    if not groups:
        return False
    fig, axes = plt.subplots(2, len(groups), figsize=(5 * len(groups), 7), squeeze=False)
    for col, group in enumerate(groups):
        rows = [r for r in latest[group]["medians"] if group_key(r) == group and r["wall_s"]]
        names = [r["peer"].replace(" (", "\n(") for r in rows]
        for row_idx, (name, unit) in enumerate((("files_per_s", "files/s"), ("mb_per_s", "MB/s"))):
            ax = axes[row_idx][col]
            colours = ["tab:orange" if r["peer"] in (LIBRARY, CLI) else "tab:blue" for r in rows]
            ax.barh(names, [r[name] for r in rows], color=colours)
            ax.invert_yaxis()
            ax.set_xlabel(unit)
            ax.set_title(f"{group[0]} · {group[1]} · c={group[2]}: {unit}", fontsize=10)
            ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True
