"""
The load: wrk's command line for each mode, its output parsed, and one
wrk run against one server with the server's CPU and memory around it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from typing import Any

from bench.common import CLK_TCK, HOST
from bench.measurement import childrenCPU, cpuTicks, machineBusy, memory
from bench.processes import Running, launch
from bench.serverlogs import workerShare
from bench.servers import Server

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrkCommand(port: int, mode: str, duration: int) -> list[str]:
    command = [
        "wrk",
        "-t1",
        "-c50",
        f"-d{duration}s",
        "--latency",
    ]
    if mode == "close":
        command += ["-H", "Connection: close"]
    return [*command, f"http://{HOST}:{port}/"]


def socketErrors(text: str) -> dict[str, int]:
    """
    wrk's socket errors by kind; none when it reports none.
    """
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if m:
        for name, value in zip(errors, m.groups(), strict=False):
            errors[name] = int(value)
    return errors


def parseWrk(text: str) -> dict[str, Any]:
    def number(pattern: str) -> float | None:
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else None

    def latency(percent: str) -> float | None:
        m = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else None

    errors = socketErrors(text)
    non2xx = int(number(r"Non-2xx or 3xx responses: (\d+)") or 0)
    requests = number(r"^\s*(\d+) requests in")
    rps = number(r"^Requests/sec:\s+([\d.]+)")
    if requests is None or rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    return {
        "requests": int(requests),
        "rps": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "socket_errors": errors,
        "non2xx": non2xx,
        "errors": sum(errors.values()) + non2xx,
    }


def loadOnce(
    running: Running, mode: str, duration: int, result: dict[str, Any]
) -> None:
    """
    Run wrk against a ready server; record in C{result} what it served,
    the CPU the server, wrk and everything else used meanwhile, and the
    server's memory at the end.
    """
    pid = running.pid
    before = cpuTicks(pid)
    busyBefore, clientBefore, t0 = machineBusy(), childrenCPU(), time.monotonic()
    command = wrkCommand(running.port, mode, duration)
    result["wrk_command"] = shlex.join(command)
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    after = cpuTicks(pid)
    busy, wall = machineBusy() - busyBefore, time.monotonic() - t0
    mem = memory(pid, pid)
    result.update(parseWrk(out.stdout))
    result["cpu_s"] = (after - before) / CLK_TCK
    result["client_cpu_s"] = childrenCPU() - clientBefore
    # Whatever else ran on the machine meanwhile, in cores.
    result["other_cores"] = max(
        0.0, (busy / CLK_TCK - result["cpu_s"] - result["client_cpu_s"]) / wall
    )
    result["cpu_per_1000"] = (
        result["cpu_s"] / result["requests"] * 1000 if result["requests"] else None
    )
    result.update(mem)


def measure(
    server: Server, mode: str, duration: int, outdir: str, tag: str = ""
) -> dict[str, Any]:
    """
    One run: start C{server}, wait until it is ready, load it with wrk for
    C{duration} seconds in C{mode}, stop it.  Its log is kept in
    C{outdir}/logs/ if it failed or is preforktwist.
    """
    result: dict[str, Any] = {"server": server.key, "mode": mode}
    running = launch(server, f"bench-{server.key}-")
    try:
        running.waitReady()
        time.sleep(0.3)
        loadOnce(running, mode, duration, result)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        result["failed"] = str(e)
    finally:
        running.stop()
    result["command"] = running.command()
    if server.kind in ("preforktwist", "naive"):
        result["share"] = workerShare(server, running.log)
    if "failed" in result or server.kind == "preforktwist":
        running.keepLog(outdir, f"{server.key}-{mode}{tag}.log")
    running.remove()
    return result
