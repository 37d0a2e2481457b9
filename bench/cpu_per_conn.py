"""
CPU per 1,000 connections, worker processes apart from the rest:

    python bench/cpu_per_conn.py --rounds 5 --duration 5 \\
        --servers single,pt-w2-m0,naive-w2 [--pt-rev REV ...]

C{bench/run.py} sums the CPU of every process of a server; this separates
the processes that accept and serve (the workers; the single process is
its own worker) from the rest (the master, the fork server, the naive
parent), so that the per-connection work of the accept and serve path can
be compared between preforktwist, the naive pre-fork and one plain process
without the master's periodic work in the figure.  The load is wrk's
connection-rate load (C{Connection: close}: one request per connection),
the servers run one after the other in rounds whose order alternates, and
every figure is the median over the rounds.

C{--servers} takes the keys of C{bench/run.py}'s servers: C{single-site}
and C{pt-w2-m0-site} are one plain process and preforktwist -w 2 serving
the same hello from twisted.web's C{Site} (C{bench/webhello.py}).

C{--perf} also counts, with C{perf stat} on the workers during the load,
system calls, C{epoll_wait} and C{epoll_ctl} calls and context switches
per connection (Debian's C{linux-perf}; the kernel's tracepoints must be
readable, as root).  C{--active-workers N} stops (C{SIGSTOP}) all but N of
each pre-fork's workers before the load and lets them go after it: the
same load on fewer active workers, the pool left as it is, to tell what a
larger pool costs by its mere processes from what it costs by spreading
the load over more of them.

C{--pt-rev REV} adds preforktwist as of a git revision (its
C{preforktwist/} exported to a temporary directory, first on the servers'
C{PYTHONPATH}) beside the working tree's, key C{pt-w2-m0@REV}: before and
after in one run.  C{/proc} ticks are 10 ms; a 5 s run at 10,000
connections a second gives 50,000 connections and about 0.2 ms of
resolution per 1,000.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.burst import burst
from bench.common import CLK_TCK, MODES, ROOT
from bench.load import parseWrk, wrkCommand
from bench.measurement import Proc, readCmdline, sessionProcs
from bench.processes import (
    freePort,
    snapshot,
    startServer,
    stopEverything,
    stopServer,
    waitReady,
)
from bench.serverlogs import workerShare
from bench.servers import Server, allServers, naive, preforktwist


def isWorker(server: Server, proc: Proc, master: int) -> bool:
    if server.kind == "single":
        return True
    if server.kind == "preforktwist":
        return "preforktwist worker" in readCmdline(proc.pid)
    return proc.ppid == master  # the naive pre-fork's children


def ticks(server: Server, master: int) -> tuple[int, int, int]:
    """
    CPU ticks so far: (workers, everything else, worker count).
    """
    workers = other = count = 0
    for p in sessionProcs(master):
        if isWorker(server, p, master):
            workers += p.ticks
            count += 1
        else:
            other += p.ticks
    return workers, other, count


#: What C{--perf} counts, and the name each is reported under.
PERF_EVENTS = {
    "raw_syscalls:sys_enter": "syscalls",
    "syscalls:sys_enter_epoll_wait": "epoll_wait",
    "syscalls:sys_enter_epoll_ctl": "epoll_ctl",
    "context-switches": "switches",
}


def workerPids(server: Server, master: int) -> list[int]:
    return [p.pid for p in sessionProcs(master) if isWorker(server, p, master)]


def startPerf(pids: list[int], duration: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *("perf", "stat", "-x,", "-e", ",".join(PERF_EVENTS)),
            *("-p", ",".join(map(str, pids)), "--", "sleep", str(duration + 0.5)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def perfCounts(perf: subprocess.Popen[str], requests: int) -> dict[str, float]:
    """
    C{perf stat -x,}'s counts (value, unit, event, ...) per connection.
    """
    _, err = perf.communicate(timeout=60)
    counts = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in PERF_EVENTS and fields[0][:1].isdigit():
            counts[PERF_EVENTS[fields[2]]] = float(fields[0]) / requests
    return counts


def signalAll(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def measureOnce(
    server: Server, duration: int, mode: str, perf: bool = False, active: int = 0
) -> dict[str, Any]:
    port = freePort()
    tmp = tempfile.mkdtemp(prefix=f"cpc-{server.key}-")
    log = os.path.join(tmp, "server.log")
    proc = startServer(server, port, tmp, log)
    stopped: list[int] = []
    counter = None
    try:
        waitReady(server, proc, port, log)
        time.sleep(0.3)
        if active and server.kind != "single":
            stopped = workerPids(server, proc.pid)[active:]
            signalAll(stopped, signal.SIGSTOP)
        if perf:
            running = set(workerPids(server, proc.pid)) - set(stopped)
            counter = startPerf(sorted(running), duration)
            time.sleep(0.2)
        w0, o0, n0 = ticks(server, proc.pid)
        out = subprocess.run(
            wrkCommand(port, mode, duration),
            capture_output=True,
            text=True,
            timeout=duration + 30,
        )
        w1, o1, n1 = ticks(server, proc.pid)
    finally:
        signalAll(stopped, signal.SIGCONT)
        stopServer(server, proc)
    share = workerShare(server, log) if server.kind != "single" else {}
    parsed = parseWrk(out.stdout)
    requests = parsed["requests"]
    counts = perfCounts(counter, requests) if counter is not None else {}
    return {
        **counts,
        "rate": parsed["rps"],
        "requests": requests,
        "errors": parsed.get("errors", 0),
        "workers_per_1k": (w1 - w0) / CLK_TCK / requests * 1000,
        "other_per_1k": (o1 - o0) / CLK_TCK / requests * 1000,
        "worker_procs": (n0, n1),
        "share": share.get("max_over_min"),
        "counts": share.get("counts"),
    }


def servers(keys: list[str], revisions: list[str]) -> list[Server]:
    """
    The servers named by C{keys} (any of bench/run.py's, preforktwist at
    -w 1, 2, 4 and 8 serving hello or the Site, and the naive pre-fork at
    -w 2, 4 and 8), then each preforktwist one again as of each of
    C{revisions}.  A single worker against the single process compares
    the serve paths alone, each process with a core of its own.
    """
    known = {s.key: s for s in allServers(acceptVariants=True)}
    for workers in (1, 2, 4, 8):
        known.setdefault(f"pt-w{workers}-m0", preforktwist(workers, 0))
        known.setdefault(f"pt-w{workers}-m0-site", preforktwist(workers, 0, "site"))
        known.setdefault(f"naive-w{workers}", naive(workers))
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise SystemExit(
            f"cpu_per_conn: unknown server {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    chosen = [known[k] for k in keys]
    for rev in revisions:
        path, _ = snapshot(rev)
        for key in keys:
            base = known[key]
            if base.kind != "preforktwist":
                continue
            env = dict(base.env or {})
            env["PYTHONPATH"] = os.pathsep.join([path, ROOT])
            chosen.append(
                replace(base, key=f"{key}@{rev}", label=f"{base.label} @{rev}", env=env)
            )
    return chosen


def parseOptions() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--servers", default="single,pt-w2-m0,naive-w2")
    parser.add_argument("--pt-rev", action="append", default=[])
    parser.add_argument("--mode", choices=MODES, default="close")
    parser.add_argument(
        "--perf",
        action="store_true",
        help="count system calls, epoll calls and context switches per "
        "connection in the workers (perf stat)",
    )
    parser.add_argument(
        "--active-workers",
        type=int,
        default=0,
        metavar="N",
        help="SIGSTOP all but N workers of each pre-fork during the load",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        help="also open this many long-lived connections over 1 s per server "
        "and round (bench/run.py's long-lived burst), and report the balance",
    )
    return parser.parse_args()


def measureServer(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """
    One server in one round: the load, and the burst if asked for.
    """
    if args.duration:
        result = measureOnce(
            server, args.duration, args.mode, args.perf, args.active_workers
        )
    else:
        result = {"rate": 0.0, "workers_per_1k": 0.0}
        result.update(other_per_1k=0.0, errors=0, share=None)
    if args.burst and server.kind != "single":
        b = burst(server, args.burst, 1.0, tempfile.gettempdir())
        result["burst"] = b.get("max_over_min")
        result["burst_counts"] = b.get("counts")
        result["burst_errors"] = b.get("errors")
    return result


def roundLine(r: int, server: Server, result: dict[str, Any]) -> str:
    return (
        f"round {r + 1} {server.key:24} {result['rate']:>9,.0f} conn/s  "
        f"workers {result['workers_per_1k'] * 1000:6.1f} ms/1k  "
        f"other {result['other_per_1k'] * 1000:5.1f} ms/1k  "
        f"errors {result['errors']}  share {result.get('share')} "
        f"{result.get('counts')}  burst {result.get('burst')} "
        f"{result.get('burst_counts')}"
        + "".join(
            f"  {name} {result[name]:.3f}/conn"
            for name in PERF_EVENTS.values()
            if name in result
        )
    )


def median(rs: list[dict[str, Any]], key: str) -> float:
    values = [x[key] for x in rs if x.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def printMedians(
    results: dict[str, list[dict[str, Any]]], args: argparse.Namespace
) -> None:
    print(f"\nmedians of {args.rounds} rounds, {args.duration} s each:")
    print(
        f"{'server':24} {'conn/s':>9} {'workers ms/1k':>14} {'other ms/1k':>12} "
        f"{'share max/min':>14} {'burst max/min':>14}"
    )
    for key, rs in results.items():
        print(
            f"{key:24} {median(rs, 'rate'):>9,.0f} "
            f"{median(rs, 'workers_per_1k') * 1000:>14.1f} "
            f"{median(rs, 'other_per_1k') * 1000:>12.1f} "
            f"{median(rs, 'share'):>14.2f} {median(rs, 'burst'):>14.2f}"
            + "".join(
                f"  {name} {median(rs, name):.2f}/conn"
                for name in PERF_EVENTS.values()
                if any(name in r for r in rs)
            )
        )


def main() -> None:
    args = parseOptions()
    chosen = servers(args.servers.split(","), args.pt_rev)
    results: dict[str, list[dict[str, Any]]] = {s.key: [] for s in chosen}
    try:
        for r in range(args.rounds):
            for server in chosen if r % 2 == 0 else chosen[::-1]:
                result = measureServer(server, args)
                results[server.key].append(result)
                print(roundLine(r, server, result), flush=True)
    finally:
        stopEverything()
    printMedians(results, args)


if __name__ == "__main__":
    main()
