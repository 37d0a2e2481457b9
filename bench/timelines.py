"""
The timelines: connections completed per second by C{bench/timeline.py}
while preforktwist serves steadily, recycles a worker every 50
connections, or reloads on SIGHUP mid-run.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from typing import Any

from bench.common import BENCH, CLK_TCK, PYTHON, readText
from bench.measurement import cpuTicks
from bench.processes import LIVE, launch
from bench.serverlogs import workersStarted
from bench.servers import Server, preforktwist


def clientCommand(port: int, duration: int) -> list[str]:
    """
    The per-second client: 50 loops of connect, request, read to EOF.
    """
    return [
        PYTHON,
        os.path.join(BENCH, "timeline.py"),
        "--port",
        str(port),
        "--duration",
        str(duration),
        "--concurrency",
        "50",
    ]


def reloadAt(pid: int, hupAt: float, result: dict[str, Any]) -> None:
    """
    SIGHUP to the master C{hupAt} seconds into the client's run.
    """
    time.sleep(hupAt + 0.3)  # the client's interpreter takes ~0.3 s to start
    result["hup_wall"] = time.time()
    os.kill(pid, signal.SIGHUP)


def record(result: dict[str, Any], out: bytes, ticks: int) -> None:
    """
    The client's per-second counts and the server's CPU, into C{result}.
    """
    data = json.loads(out)
    result.update(data)
    result["cpu_s"] = ticks / CLK_TCK
    if "hup_wall" in result:
        result["hup_at"] = result["hup_wall"] - data["start"]


def timeline(
    server: Server, duration: int, hupAt: float | None, outdir: str, name: str
) -> dict[str, Any]:
    """
    One timeline: C{server} loaded by the per-second client for
    C{duration} seconds, with a SIGHUP C{hupAt} seconds in if given.
    """
    result: dict[str, Any] = {"name": name, "server": server.key}
    running = launch(server, f"bench-timeline-{server.key}-")
    client: subprocess.Popen[bytes] | None = None
    try:
        running.waitReady()
        time.sleep(0.3)
        before = cpuTicks(running.pid)
        command = clientCommand(running.port, duration)
        result["client_command"] = shlex.join(command)
        client = subprocess.Popen(
            command, stdout=subprocess.PIPE, start_new_session=True
        )
        LIVE[client.pid] = client
        if hupAt is not None:
            reloadAt(running.pid, hupAt, result)
        out, _ = client.communicate(timeout=duration + 40)
        LIVE.pop(client.pid, None)
        record(result, out, cpuTicks(running.pid) - before)
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
        result["failed"] = str(e)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait(5)
            LIVE.pop(client.pid, None)
        running.stop()
    result["command"] = running.command()
    result["workers_started"] = workersStarted(readText(running.log))
    running.keepLog(outdir, f"timeline-{name}.log")
    running.remove()
    return result


def scenarios(duration: int) -> list[tuple[str, str, Server, float | None]]:
    """
    (name, title, server, when to send SIGHUP) of each timeline.
    """
    return [
        (
            "steady",
            "steady: preforktwist -w 2 -m 0",
            preforktwist(2, 0),
            None,
        ),
        (
            "recycle-storm",
            "recycle storm: preforktwist -w 2 -m 50",
            preforktwist(2, 50),
            None,
        ),
        (
            "rolling-reload",
            "rolling reload: preforktwist -w 2, SIGHUP mid-run",
            preforktwist(2, 0),
            duration / 2,
        ),
    ]
