"""
The long-lived burst: clients that arrive together and stay, like
WebSocket or database clients, and the connections each worker then holds.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from bench.common import HOST
from bench.measurement import openPerWorker
from bench.processes import launch
from bench.servers import Server, naive, preforktwist

BURST_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def connect(port: int, clients: int, window: float, socks: list[socket.socket]) -> int:
    """
    Open C{clients} connections evenly over C{window} seconds, each sending
    one keep-alive request; add them to C{socks}; return how many failed.
    """
    errors = 0
    t0 = time.monotonic()
    for i in range(clients):
        delay = t0 + i * window / clients - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            s = socket.create_connection((HOST, port), timeout=10)
            s.sendall(BURST_REQUEST)
        except OSError:
            errors += 1
            continue
        socks.append(s)
    return errors


def answered(s: socket.socket) -> bool:
    """
    Read one answer on C{s}: whether it is 200 C{hello}.
    """
    data = b""
    try:
        while not data.endswith(b"hello"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello")


def holdBurst(
    result: dict[str, Any],
    pid: int,
    port: int,
    window: float,
    socks: list[socket.socket],
) -> None:
    """
    The burst against a ready server whose session is C{pid}: connect, read
    every answer, then count the connections each worker holds; recorded
    in C{result}.
    """
    clients = result["clients"]
    t0 = time.monotonic()
    errors = connect(port, clients, window, socks)
    result["connect_s"] = time.monotonic() - t0
    errors += sum(1 for s in socks if not answered(s))
    result["answered_s"] = time.monotonic() - t0
    time.sleep(0.2)
    counts = openPerWorker(pid, pid, port)
    result["errors"] = errors
    result["counts"] = counts
    result["held"] = sum(counts)
    if counts:
        result["max_over_min"] = (
            max(counts) / min(counts) if min(counts) else float("inf")
        )


def burst(server: Server, clients: int, window: float, outdir: str) -> dict[str, Any]:
    """
    Long-lived connections that arrive together: C{clients} connections
    opened evenly over C{window} seconds, each sends one keep-alive request
    and reads its answer, and all stay open while the connections each
    worker holds are counted.
    """
    result: dict[str, Any] = {"server": server.key, "clients": clients}
    running = launch(server, f"bench-burst-{server.key}-")
    socks: list[socket.socket] = []
    try:
        running.waitReady()
        time.sleep(0.3)
        holdBurst(result, running.pid, running.port, window, socks)
    except (RuntimeError, OSError) as e:
        result["failed"] = str(e)
    finally:
        for s in socks:
            s.close()
        running.stop()
    result["command"] = running.command()
    if "failed" in result:
        running.keepLog(outdir, f"burst-{server.key}.log")
    running.remove()
    return result


def burstServers(acceptVariants: bool) -> list[Server]:
    """
    The servers of the burst: preforktwist and the naive pre-fork at -w 2,
    4 and 8 (and, with C{acceptVariants}, the other accept paths).
    """
    servers = [preforktwist(w, 0) for w in (2, 4, 8)]
    if acceptVariants:
        servers += [
            preforktwist(w, 0, accept=a) for a in ("plain", "r0") for w in (2, 4, 8)
        ]
        servers += [naive(w, reuseport=True) for w in (2, 4, 8)]
    return servers + [naive(w) for w in (2, 4, 8)]
