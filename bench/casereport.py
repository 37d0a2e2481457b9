"""
RESULTS.md's sections for the cases beside the wrk runs: the timelines,
the long-lived burst, the CPU of one replacement and its floor, and the
master's memory.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.formats import fmtShare, shortPaths
from bench.results import Records, Results
from bench.summary import med


def timelineRow(t: dict[str, Any]) -> str:
    if "failed" in t:
        why = t["failed"][:200].replace("\n", " ")
        return f"| {t['title']} | `{t['command']}` | failed: {why} | | | | | |"
    body = t["ok"][1:-1] or t["ok"]
    return (
        f"| {t['title']} | `{shortPaths(t['command'])}` | {sum(t['ok']):,} | "
        f"{sum(t['errors'])} {t['error_kinds'] or ''} | {min(body):,} | "
        f"{statistics.median(body):,.0f} | {t['workers_started']} | "
        f"{t['cpu_s']:.1f} |"
    )


def timelineSection(timelines: Records) -> list[str]:
    """
    The recycle storm and the rolling reload, beside the steady run.
    """
    if not timelines:
        return []
    lines = [
        "## Timelines: recycle storm and rolling reload",
        "",
        "Connections completed per second by `bench/timeline.py` (asyncio, "
        "50 concurrent connection loops, `Connection: close`, 5 s timeout "
        "per exchange). This Python client is itself CPU-bound at a few "
        "thousand connections/s, so the level is the client's; what "
        "matters is whether the line dips or errors appear.",
        "",
        "| scenario | server command | ok | errors | min/s | median/s "
        "| workers started | server CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(timelineRow(t) for t in timelines),
        "",
    ]
    for t in timelines:
        if "failed" not in t:
            hup = f" (SIGHUP at {t['hup_at']:.1f} s)" if "hup_at" in t else ""
            lines.append(
                f"- {t['title']}{hup}: per second {t['ok']}; errors {t['errors']}"
            )
    return [*lines, ""]


def burstRow(key: str, bursts: Records) -> str:
    mine = [b for b in bursts if b["server"] == key and "failed" not in b]
    ratios = [b["max_over_min"] for b in mine if "max_over_min" in b]
    m = med(ratios)
    return (
        f"| {key} | "
        + (f"{fmtShare(m)} ({fmtShare(max(ratios))})" if m else "n/a")
        + " | "
        + "; ".join(str(b["counts"]) for b in mine)
        + f" | {sum(b['errors'] for b in mine)} |"
    )


def burstSection(bursts: Records) -> list[str]:
    """
    Open connections per worker after the long-lived burst.
    """
    if not bursts:
        return []
    clients = bursts[0].get("clients")
    keys = list(dict.fromkeys(b["server"] for b in bursts))
    return [
        "## Long-lived burst: open connections per worker",
        "",
        f"{clients} keep-alive clients connect evenly over the burst window, "
        "each sends one request, reads its answer and stays open; then "
        "the connections each worker holds are counted (kernel socket "
        "table). Busiest / idlest per round; target <= 1.5.",
        "",
        "| server | busiest / idlest, median (worst) | counts per round | errors |",
        "| --- | --- | --- | --- |",
        *(burstRow(key, bursts) for key in keys),
        "",
    ]


def replacementRow(r: dict[str, Any]) -> str:
    if "failed" in r:
        return f"| {r['server']} | failed: {r['failed'][:80]} | | |"
    return (
        f"| {r['server']} | {r['cpu_ms_each']:.1f} ms "
        f"(x{r['replacements']}) | {r['wall_ms_median']:.0f} ms | "
        f"{r['idle_cpu_ms_per_s']:.1f} ms/s |"
    )


def floorRow(r: dict[str, Any]) -> str:
    if "failed" in r:
        return f"| {r['server']} | failed: {r['failed'][:80]} | | | | |"
    return (
        f"| {r['server']} | {r['cpu_ms_each']:.2f} ms (x{r['forks']}) | "
        f"{r['parent_ms_each']:.2f} ms | {r['child_ms_each']:.2f} ms | "
        f"{r['child_faults_each']:.0f} | {r['template_rss_mib']:.1f} MiB |"
    )


def floorSection(floors: Records) -> list[str]:
    """
    Forking the fork server's template, the child exiting at once.
    """
    if not floors:
        return []
    return [
        "The floor under those (`python bench/forkfloor.py`): a process "
        "that imports what the fork server imports forks children that "
        "exit at once. Parent: the copy of the page tables; child: "
        "Python's after-fork work, its copy-on-write faults and the "
        "teardown of the address space. No replacement can cost less.",
        "",
        "| template | CPU per fork | parent | child | child's faults | template RSS |",
        "| --- | --- | --- | --- | --- | --- |",
        *(floorRow(r) for r in floors),
        "",
    ]


def replacementSection(replacements: Records) -> list[str]:
    """
    The CPU of one replacement, then its floor.
    """
    if not replacements:
        return []
    return [
        "## CPU of one replacement",
        "",
        "SIGTERM to one accepting worker until its replacement is "
        "accepting and it is reaped, repeated; CPU of every process of "
        "the server (clock ticks, reaped children included) less the "
        "idle server's. Target <= 5 ms.",
        "",
        "| server | CPU per replacement | wall, median | idle CPU |",
        "| --- | --- | --- | --- |",
        *(replacementRow(r) for r in replacements if not r.get("floor")),
        "",
        *floorSection([r for r in replacements if r.get("floor")]),
    ]


def masterRow(r: dict[str, Any]) -> str:
    if "failed" in r:
        return f"| {r['install']} | {r['status']} | failed: {r['failed'][:80]} | | |"
    return (
        f"| {r['install']} | {'yes' if r['status'] else 'no'} | "
        f"{r['rss_start_mib']:.1f} MiB | {r['rss_mib']:.1f} MiB | "
        f"{r['pss_mib']:.1f} MiB |"
    )


def masterSection(masters: Records) -> list[str]:
    """
    The master's memory in a default install and in the bench's own.
    """
    if not masters:
        return []
    return [
        "## The master's memory",
        "",
        "preforktwist -w 2, idle, then after 2,000 connections (served "
        "by the workers), from a virtualenv with a default install "
        "(`pip install .`: core dependencies only) and from the bench's "
        "own, which has every extra: with pyOpenSSL importable, "
        "Twisted's tcp module imports it and cryptography. Target <= 40 MiB.",
        "",
        "| install | --status | RSS at start | RSS after load | PSS after load |",
        "| --- | --- | ---: | ---: | ---: |",
        *(masterRow(r) for r in masters),
        "",
    ]


def extraReport(results: Results) -> list[str]:
    """
    RESULTS.md's sections for the long-lived burst, the replacement cost
    and the master's memory.
    """
    return [
        *burstSection(results.bursts),
        *replacementSection(results.replacements),
        *masterSection(results.masters),
    ]
