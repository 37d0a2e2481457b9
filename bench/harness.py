"""
The preforktwist benchmark: one command starts, loads, measures and stops
every server, then writes RESULTS.md and the charts (C{python bench/run.py}).

Here are its options, the plan of servers (C{--only} applied), the wrk runs
in rounds of alternating order, then the long-lived burst, the replacement
cost and its floor, the master's memory and the timelines, each with a
progress line, and at the end results.json and the report.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.burst import burst, burstServers
from bench.common import BENCH
from bench.floor import PRELOADS, forkFloor
from bench.formats import fmtShare
from bench.load import measure
from bench.machine import loadavg, machine
from bench.master import masterMemory
from bench.processes import CODE, stopEverything
from bench.replacement import replacedServers, replacementCost
from bench.report import reportOnly, writeReport
from bench.results import Results
from bench.servers import BASELINES, Server, allServers
from bench.timelines import scenarios, timeline


def addPlanOptions(parser: argparse.ArgumentParser) -> None:
    """
    The options of the wrk runs: how many, how long, which servers.
    """
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s runs")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (8; 3)")
    parser.add_argument(
        "--timeline-duration", type=int, help="seconds per timeline (16; 6)"
    )
    parser.add_argument(
        "--only", help="regex: run only servers whose key matches (plus the baselines)"
    )
    parser.add_argument("--no-timelines", action="store_true")
    parser.add_argument(
        "--accept-variants",
        action="store_true",
        help="also run preforktwist's other accept paths (plain epoll, "
        "exclusive without reorder, other reorder intervals) at -w 2 and 8",
    )


def addCaseOptions(parser: argparse.ArgumentParser) -> None:
    """
    The options of the cases beside the wrk runs.
    """
    parser.add_argument(
        "--burst-clients",
        type=int,
        default=300,
        help="long-lived burst: clients (default 300; 0 skips the burst)",
    )
    parser.add_argument(
        "--burst-window",
        type=float,
        default=1.0,
        help="long-lived burst: seconds over which they connect (1.0)",
    )
    parser.add_argument(
        "--replacements",
        type=int,
        help="replacement cost: replacements measured (20; 5 with --quick; 0 skips)",
    )
    parser.add_argument(
        "--no-master-memory",
        dest="master_memory",
        action="store_false",
        help="skip the master's memory in a default install (which makes a "
        "virtualenv in bench/out/venv-default the first time)",
    )


def addOutputOptions(parser: argparse.ArgumentParser) -> None:
    """
    The options of what code runs and where the results go.
    """
    parser.add_argument(
        "--snapshot",
        metavar="REV",
        help="run preforktwist/ as of this git revision (exported to a "
        "temporary directory) instead of the working tree",
    )
    parser.add_argument(
        "--out",
        help="where RESULTS.md and the charts go (default bench/, or "
        "bench/out/quick/ with --quick)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite RESULTS.md and the charts from the last run's "
        "results.json (of the full run, or of the quick one with --quick)",
    )


def parseOptions() -> argparse.Namespace:
    """
    The command line, with the defaults that depend on C{--quick}.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    addPlanOptions(parser)
    addCaseOptions(parser)
    addOutputOptions(parser)
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 8)
    args.timeline_duration = args.timeline_duration or (6 if args.quick else 16)
    if args.replacements is None:
        args.replacements = 5 if args.quick else 20
    return args


@dataclass
class Plan:
    """
    The servers of each case: the wrk runs, the burst, the replacements.
    """

    servers: list[Server]
    bursters: list[Server]
    replaced: list[Server]

    @classmethod
    def fromOptions(cls, args: argparse.Namespace) -> Plan:
        """
        The plan the options ask for; C{--only} keeps the servers whose key
        matches (and the single-process baselines) and the master's memory
        only if it matches "master".
        """
        plan = cls(
            allServers(args.accept_variants),
            burstServers(args.accept_variants) if args.burst_clients else [],
            replacedServers() if args.replacements else [],
        )
        if args.only:
            plan.servers = [
                s
                for s in plan.servers
                if re.search(args.only, s.key) or s.key in BASELINES
            ]
            plan.bursters = [s for s in plan.bursters if re.search(args.only, s.key)]
            plan.replaced = [s for s in plan.replaced if re.search(args.only, s.key)]
            args.master_memory = args.master_memory and bool(
                re.search(args.only, "master")
            )
        return plan

    def order(self) -> list[tuple[Server, str]]:
        """
        One round of wrk runs: each server under each of its loads.
        """
        return [(s, mode) for s in self.servers for mode in s.modes]


def failedLine(result: dict[str, Any]) -> str:
    """
    The first line of why a case failed, for its progress line.
    """
    failed: str = result["failed"]
    return "FAILED: " + failed.splitlines()[0][:120]


def runLine(result: dict[str, Any]) -> str:
    """
    What one wrk run measured, for its progress line.
    """
    if "failed" in result:
        what = failedLine(result)
    else:
        what = (
            f"{result['rps']:8,.0f} req/s  "
            f"p99 {result['p99_ms'] or 0:7.1f} ms  "
            f"errors {result['errors']}  "
            f"CPU/1k {result['cpu_per_1000'] or 0:.3f} s  "
            f"other load {result['other_cores']:.2f} cores"
        )
    bad = result.get("share", {}).get("worker_errors")
    if bad:
        what += f"  ! {bad} error lines in the server log"
    return what


def wrkRounds(
    plan: Plan, args: argparse.Namespace, rawdir: str, runs: list[dict[str, Any]]
) -> None:
    """
    The wrk runs, round after round, in alternating order, each followed by
    its progress line with the time left.
    """
    started = time.monotonic()
    order = plan.order()
    total = len(order) * args.rounds
    perRun = args.duration + 3.0
    done = 0
    for rnd in range(args.rounds):
        for server, mode in order if rnd % 2 == 0 else list(reversed(order)):
            done += 1
            t0 = time.monotonic()
            result = measure(server, mode, args.duration, rawdir, f"-round{rnd + 1}")
            result["round"] = rnd
            runs.append(result)
            perRun = 0.7 * perRun + 0.3 * (time.monotonic() - t0)
            elapsed = time.monotonic() - started
            left = (total - done) * perRun
            print(
                f"[{done:3d}/{total}] round {rnd + 1}/{args.rounds} "
                f"{server.label:<52} {mode:<9} {runLine(result)}  "
                f"({elapsed / 60:.1f} min, ~{left / 60:.1f} min left)",
                flush=True,
            )


def burstRounds(
    plan: Plan, args: argparse.Namespace, rawdir: str, bursts: list[dict[str, Any]]
) -> None:
    """
    The long-lived burst, as many rounds as the wrk runs, alternating.
    """
    for rnd in range(args.rounds if plan.bursters else 0):
        for server in plan.bursters if rnd % 2 == 0 else list(reversed(plan.bursters)):
            b = burst(server, args.burst_clients, args.burst_window, rawdir)
            b["round"] = rnd
            bursts.append(b)
            if "failed" in b:
                what = failedLine(b)
            else:
                what = (
                    f"held {b['held']} open, per worker {b['counts']}, "
                    f"busiest/idlest {fmtShare(b.get('max_over_min', 0))}, "
                    f"errors {b['errors']}, connected in {b['connect_s']:.2f} s"
                )
            print(
                f"[burst] round {rnd + 1}/{args.rounds} {server.label}: {what}",
                flush=True,
            )


def replacementCases(
    plan: Plan, args: argparse.Namespace, rawdir: str, out: list[dict[str, Any]]
) -> None:
    """
    The CPU of one replacement for each server, then its floors.
    """
    for server in plan.replaced:
        r = replacementCost(server, args.replacements, rawdir)
        out.append(r)
        if "failed" in r:
            what = failedLine(r)
        else:
            what = (
                f"{r['cpu_ms_each']:.1f} ms CPU each (x{args.replacements}), "
                f"wall {r['wall_ms_median']:.0f} ms"
            )
        print(f"[replacement] {server.label}: {what}", flush=True)
    if not plan.replaced:
        return
    for preload in PRELOADS:
        r = forkFloor(preload)
        out.append(r)
        what = r.get("failed") or (
            f"{r['cpu_ms_each']:.2f} ms CPU per fork "
            f"(parent {r['parent_ms_each']:.2f}, child "
            f"{r['child_ms_each']:.2f}), "
            f"template {r['template_rss_mib']:.0f} MiB"
        )
        print(f"[floor] {r['server']}: {what}", flush=True)


def masterCases(masters: list[dict[str, Any]]) -> None:
    """
    The master's memory, in each install, with and without --status.
    """
    masters += masterMemory()
    for r in masters:
        what = r.get("failed") or (
            f"RSS {r['rss_start_mib']:.1f} MiB at start, "
            f"{r['rss_mib']:.1f} MiB after 2,000 connections"
        )
        print(f"[master] {r['install']}, status {r['status']}: {what}", flush=True)


def timelineCases(
    args: argparse.Namespace, rawdir: str, timelines: list[dict[str, Any]]
) -> None:
    """
    The steady, recycle-storm and rolling-reload timelines.
    """
    for name, title, server, hupAt in scenarios(args.timeline_duration):
        t = timeline(server, args.timeline_duration, hupAt, rawdir, name)
        t["title"] = title
        timelines.append(t)
        if "failed" in t:
            what = failedLine(t)
        else:
            what = (
                f"{sum(t['ok']):,} ok, {sum(t['errors'])} errors, "
                f"min {min(t['ok'][1:-1] or t['ok'])}/s, "
                f"{t['workers_started']} workers started"
            )
        print(f"[timeline] {title}: {what}", flush=True)


def measureAll(
    plan: Plan, args: argparse.Namespace, rawdir: str, results: Results
) -> None:
    """
    Every case the options ask for, in order, into C{results}.
    """
    wrkRounds(plan, args, rawdir, results.runs)
    burstRounds(plan, args, rawdir, results.bursts)
    replacementCases(plan, args, rawdir, results.replacements)
    if args.master_memory:
        masterCases(results.masters)
    if not args.no_timelines:
        timelineCases(args, rawdir, results.timelines)


def stopOnSignals() -> None:
    """
    SIGTERM or SIGINT to the harness stops whatever it started, then it.
    """

    def terminate(signum: int, frame: object) -> None:
        stopEverything()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)


def run(args: argparse.Namespace, outdir: str, rawdir: str) -> None:
    """
    Measure everything the options ask for, then write results.json and
    the report.
    """
    plan = Plan.fromOptions(args)
    stopOnSignals()
    snapshotDir = CODE.useSnapshot(args.snapshot) if args.snapshot else None
    results = Results(args=args, info=machine())
    results.info["invocation"] = shlex.join(["python", "bench/run.py", *sys.argv[1:]])
    results.info["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    started = time.monotonic()
    try:
        measureAll(plan, args, rawdir, results)
    finally:
        stopEverything()
        if snapshotDir is not None:
            shutil.rmtree(snapshotDir, ignore_errors=True)
    results.info["loadavg_end"] = loadavg()
    results.info["elapsed_s"] = f"{time.monotonic() - started:.0f}"
    results.save(os.path.join(rawdir, "results.json"))
    writeReport(results, plan.servers, outdir, rawdir)


def main() -> None:
    args = parseOptions()
    outdir = args.out or (os.path.join(BENCH, "out", "quick") if args.quick else BENCH)
    os.makedirs(outdir, exist_ok=True)
    rawdir = os.path.join(BENCH, "out", "quick" if args.quick else "full")
    os.makedirs(rawdir, exist_ok=True)
    if args.report_only:
        reportOnly(rawdir, outdir)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk)")
    run(args, outdir, rawdir)
