"""
What the harness samples from C{/proc}: a server's processes (its whole
session), their CPU, their memory (PSS and RSS), the machine's busy time,
and the connections each worker holds.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Proc:
    pid: int
    ppid: int
    comm: str
    ticks: int  # utime + stime + cutime + cstime
    session: int


def readProcs() -> Iterator[Proc]:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        close = stat.rfind(")")
        comm = stat[stat.find("(") + 1 : close]
        rest = stat[close + 2 :].split()
        # rest[0] is field 3 (state); field k is rest[k - 3].
        yield Proc(
            pid=int(entry),
            ppid=int(rest[1]),
            comm=comm,
            ticks=sum(int(x) for x in rest[11:15]),
            session=int(rest[3]),
        )


def sessionProcs(session: int) -> list[Proc]:
    """
    Every process of one server.  Each server is started in a session of
    its own (C{start_new_session}), which all its descendants inherit,
    even those that make their own process group, like preforktwist's
    workers, and even once orphaned.
    """
    return [p for p in readProcs() if p.session == session]


def cpuTicks(session: int) -> int:
    """
    CPU of the server so far: utime + stime of each live process, plus
    cutime + cstime, the CPU of the children each has reaped (retired
    workers, forked-per-connection children).  Differences of this sum
    over a window are the CPU spent in it, as long as every child is
    reaped by a process of the same server.
    """
    return sum(p.ticks for p in sessionProcs(session))


def machineBusy() -> int:
    """
    Ticks all CPUs spent not idle since boot, from /proc/stat.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return sum(fields) - fields[3] - fields[4]  # minus idle and iowait


def childrenCPU() -> float:
    """
    CPU seconds of this harness's reaped children: wrk, around a run.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def readKiB(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def readCmdline(pid: int) -> str:
    """
    A process's command line, its arguments separated by spaces.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def role(pid: int, master: int, cmdline: str) -> str:
    """
    What a process is to its server: its master, a fork server, a worker.
    """
    if pid == master:
        return "master"
    if "fork server" in cmdline or "forkserver" in cmdline:
        return "fork server"
    return "worker"


def memory(session: int, master: int) -> dict[str, Any]:
    """
    PSS and RSS of each process of the server, in KiB.
    """
    procs = []
    for p in sessionProcs(session):
        cmdline = readCmdline(p.pid)
        procs.append(
            {
                "pid": p.pid,
                "ppid": p.ppid,
                "comm": p.comm,
                "cmdline": cmdline.strip()[:100],
                "role": role(p.pid, master, cmdline),
                "master": p.pid == master,
                "pss_kib": readKiB(f"/proc/{p.pid}/smaps_rollup", "Pss"),
                "rss_kib": readKiB(f"/proc/{p.pid}/status", "VmRSS"),
            }
        )
    return {
        "processes": len(procs),
        "pss_kib": sum(p["pss_kib"] for p in procs),
        "procs": procs,
    }


def establishedInodes(port: int) -> set[int]:
    """
    Socket inodes of the established TCP connections whose local port is
    C{port}: the server's ends of its clients' connections.
    """
    inodes: set[int] = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], int(fields[9])
                    if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except OSError:
            continue
    return inodes


def socketsHeld(pid: int, inodes: set[int]) -> int:
    """
    How many of the sockets C{inodes} process C{pid} has a descriptor for.

    @raise OSError: if its descriptors cannot be listed (it is gone).
    """
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            held += 1
    return held


def openPerWorker(session: int, master: int, port: int) -> list[int]:
    """
    Connections each worker holds open on C{port}, busiest first, counted
    from the kernel's socket table and each worker's descriptors: the same
    measure for every server, whatever it logs.
    """
    established = establishedInodes(port)
    counts = []
    for p in memory(session, master)["procs"]:
        if p["role"] != "worker":
            continue
        try:
            counts.append(socketsHeld(p["pid"], established))
        except OSError:
            continue
    return sorted(counts, reverse=True)
