"""
The CPU of one replacement: an idle preforktwist server's accepting
worker is told to retire, again and again, and the CPU of all its
processes over those replacements is counted, less its idle CPU.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from typing import Any

from bench.common import CLK_TCK
from bench.measurement import cpuTicks, sessionProcs
from bench.processes import launch
from bench.serverlogs import PT_ACCEPTING, LogFollower
from bench.servers import Server, preforktwist


def idleRate(pid: int) -> float:
    """
    Ticks per second the idle server whose session is C{pid} uses, over 3 s.
    """
    t0, idle0 = time.monotonic(), cpuTicks(pid)
    time.sleep(3.0)
    return (cpuTicks(pid) - idle0) / (time.monotonic() - t0)


def replaceOne(pid: int, accepting: LogFollower) -> float:
    """
    SIGTERM to one accepting worker of the server whose session is C{pid};
    return the seconds until a new worker is accepting and it is reaped.
    """
    # The harness polls lightly (the new part of the log, one /proc
    # entry while it waits): it shares the two cores with the server, and
    # walking the processes' memory maps cost about 5% of the machine's
    # samples in perf.  Only the server's own processes are candidates: a
    # retired worker's pid may have been reused.
    mine = {p.pid for p in sessionProcs(pid)}
    workers = [worker for worker in accepting.pids.values() if worker in mine]
    if not workers:
        raise RuntimeError("no accepting worker to replace")
    victim = workers[0]
    t = time.monotonic()
    os.kill(victim, signal.SIGTERM)
    deadline = t + 30
    started = 0
    while not (started and not os.path.exists(f"/proc/{victim}")):
        if time.monotonic() > deadline:
            raise RuntimeError("no replacement accepting within 30 s")
        time.sleep(0.002)
        started += accepting.new()
    return time.monotonic() - t


def replaceAll(
    result: dict[str, Any], pid: int, count: int, accepting: LogFollower
) -> None:
    """
    C{count} replacements one after the other, after 1 s of rest and 3 s
    of idle CPU measured; their CPU each and median wall time in C{result}.
    """
    time.sleep(1.0)
    idle = idleRate(pid)
    walls = []
    accepting.new()
    before, start = cpuTicks(pid), time.monotonic()
    for _ in range(count):
        walls.append(replaceOne(pid, accepting))
    elapsed = time.monotonic() - start
    ticks = cpuTicks(pid) - before - idle * elapsed
    result["cpu_ms_each"] = ticks / CLK_TCK / count * 1000
    result["idle_cpu_ms_per_s"] = idle / CLK_TCK * 1000
    result["wall_ms_median"] = statistics.median(walls) * 1000


def replacementCost(server: Server, count: int, outdir: str) -> dict[str, Any]:
    """
    CPU of one replacement, all processes of the server: SIGTERM to one
    accepting worker (it retires and asks for a replacement), until a new
    worker is accepting and the old one is reaped; C{count} times, one
    after the other, less the CPU the idle server uses in as long.  CPU is
    counted in clock ticks (10 ms), hence the repetitions.
    """
    result: dict[str, Any] = {"server": server.key, "replacements": count}
    running = launch(server, f"bench-replace-{server.key}-")
    accepting = LogFollower(running.log, PT_ACCEPTING)
    try:
        running.waitReady()
        replaceAll(result, running.pid, count, accepting)
    except (RuntimeError, OSError) as e:
        result["failed"] = str(e)
    finally:
        accepting.close()
        running.stop()
    result["command"] = running.command()
    running.keepLog(outdir, f"replace-{server.key}.log")
    running.remove()
    return result


def replacedServers() -> list[Server]:
    """
    The servers whose replacements are measured: preforktwist -w 2 -m 0
    serving the hello and the Django app, each with and without --preload.
    """
    return [
        preforktwist(2, 0, workload, accept=a)
        for workload in ("hello", "heavy")
        for a in ("", "preload")
    ]
