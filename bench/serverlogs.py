"""
What the servers' own logs say: how many connections each worker took,
how many workers were started, which workers are accepting.
"""

from __future__ import annotations

import re
from typing import Any

from bench.common import readText
from bench.servers import Server

PT_STOPPED = re.compile(
    r"\[worker (\d+) pid (\d+)\] .*stopped accepting after (\d+) connections"
)
NAIVE_SERVED = re.compile(r"child (\d+) pid (\d+) served (\d+) connections")
# No pid when a fork server forks the worker later.
PT_STARTED = re.compile(r"started worker (\d+)\b")
PT_ACCEPTING = re.compile(r"worker (\d+) \(pid (\d+)\) is accepting")


def workersStarted(text: str) -> int:
    """
    How many workers a preforktwist master's log says it started.
    """
    return len(PT_STARTED.findall(text))


def workerShare(server: Server, log: str) -> dict[str, Any]:
    """
    Connections each worker accepted, from the workers' own last words:
    preforktwist's "stopped accepting after N connections" (logged when a
    worker retires or is told to stop), the naive pre-fork's "served N".
    """
    text = readText(log)
    pattern = PT_STOPPED if server.kind == "preforktwist" else NAIVE_SERVED
    counts: dict[str, int] = {}
    for number, pid, n in pattern.findall(text):
        counts[f"{number}/{pid}"] = int(n)
    result: dict[str, Any] = {"counts": sorted(counts.values(), reverse=True)}
    if server.kind == "preforktwist":
        result["workers_started"] = workersStarted(text)
        result["worker_errors"] = len(
            re.findall(r"#(?:error|critical)\]|Traceback|killed by SIG", text)
        )
        result["boot_failures"] = len(re.findall(r"boot failure", text))
    values = result["counts"]
    if values and not server.maxConnections:
        result["max_over_min"] = (
            max(values) / min(values) if min(values) > 0 else float("inf")
        )
    return result


class LogFollower:
    """
    The workers a server's log says are accepting, read as the log grows:
    C{pids} maps each worker's number to its pid.
    """

    def __init__(self, path: str, pattern: re.Pattern[str]) -> None:
        self._file = open(path, "rb")
        self._pattern = pattern
        self._partial = b""
        self.pids: dict[str, int] = {}

    def new(self) -> int:
        """
        Read what the log gained; return how many new matching lines.
        """
        self._partial += self._file.read()
        *lines, self._partial = self._partial.split(b"\n")
        found = 0
        for line in lines:
            match = self._pattern.search(line.decode("utf-8", "replace"))
            if match:
                self.pids[match.group(1)] = int(match.group(2))
                found += 1
        return found

    def close(self) -> None:
        self._file.close()
