"""
Idle-connection floods: how many idle sockets a server holds while
well-behaved clients are still answered promptly.

    python bench/idle.py                       # this checkout, ~1-2 minutes
    python bench/idle.py --code /tmp/old       # preforktwist from another tree
    python bench/idle.py --max 44000 --probes 200 --deadline 1.0

Two servers in one run, each serving C{preforktwist.examples.HelloHTTP} on
127.0.0.1 with the same open-file limit (the bench's hard limit, which it
also gives them as their soft one): a C{-w 2} preforktwist pool with its
default options, and one plain Twisted process (C{bench/single.py}).  For
each, idle connections (connect, then never send) are opened in steps;
after each step, C{--probes} HTTP requests are sent at once, each given
C{--deadline} seconds from its connect to its full answer.  A step passes
when every probe is answered in time; the ramp stops at the first step that
fails.  The figure is the largest step passed, beside the first failed and
what its probes got.

The idle sockets are held by helper processes (this script with
C{--holder}), each with its own source address (127.0.0.2, .3, ...: one
address has about 28,000 ephemeral ports) and its own open-file limit; they
close with a reset, so no TIME_WAIT piles up between the servers.  Nothing
here is timed as a speed: a probe's deadline is the definition of "answered
promptly".  Not run in CI.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PYTHON = sys.executable
TWISTD = os.path.join(os.path.dirname(PYTHON), "twistd")
HOST = "127.0.0.1"
PROTOCOL = "preforktwist.examples.HelloHTTP"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
#: Idle sockets one holder keeps (below its open-file limit, below the
#: ephemeral ports of its one source address).
PER_HOLDER = 15000
#: Linux's IP_BIND_ADDRESS_NO_PORT: pick the port at connect(), by the
#: whole 4-tuple, not at bind().
IP_BIND_ADDRESS_NO_PORT = 24


def raiseOwnLimit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# The holder: a helper process keeping idle sockets open.


def holder(source: str, port: int) -> None:
    """
    Read commands on stdin, answer one JSON line each on stdout:
    C{open N WAIT} starts N more connections and waits up to WAIT seconds
    for the pending ones; C{close} resets them all.  Each answer counts the
    sockets C{alive} (connected, not closed by the server), C{pending}
    (handshake not answered: the server's queue is full), C{dropped}
    (closed by the server) and C{failed} (refused, reset).
    """
    raiseOwnLimit()
    ep = select.epoll()
    pending: dict[int, socket.socket] = {}
    alive: dict[int, socket.socket] = {}
    counts = {"dropped": 0, "failed": 0}
    linger = struct.pack("ii", 1, 0)

    def forget(fd: int, into: dict[int, socket.socket], outcome: str) -> None:
        s = into.pop(fd)
        ep.unregister(fd)
        s.close()
        counts[outcome] += 1

    def pump(timeout: float) -> None:
        for fd, _events in ep.poll(timeout, 4096):
            if fd in pending:
                s = pending[fd]
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    forget(fd, pending, "failed")
                    continue
                del pending[fd]
                alive[fd] = s
                ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
            elif fd in alive:
                forget(fd, alive, "dropped")

    for line in sys.stdin:
        words = line.split()
        if words[0] == "open":
            n, wait = int(words[1]), float(words[2])
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((source, 0))
                s.setblocking(False)
                code = s.connect_ex((HOST, port))
                if code not in (0, errno.EINPROGRESS):
                    s.close()
                    counts["failed"] += 1
                    continue
                pending[s.fileno()] = s
                ep.register(s.fileno(), select.EPOLLOUT)
                if len(pending) % 500 == 0:
                    pump(0)
            deadline = time.monotonic() + wait
            while pending and time.monotonic() < deadline:
                pump(0.05)
            pump(0)
        elif words[0] == "close":
            for fd in list(pending):
                forget(fd, pending, "failed")
            for fd in list(alive):
                ep.unregister(fd)
                alive.pop(fd).close()
        report = {"alive": len(alive), "pending": len(pending), **counts}
        print(json.dumps(report), flush=True)


class Holders:
    """
    The helper processes, opened as needed, PER_HOLDER sockets each.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.procs: list[subprocess.Popen[str]] = []
        self.opened: list[int] = []
        self.last: list[dict[str, int]] = []

    def _ask(self, i: int, command: str) -> dict[str, int]:
        proc = self.procs[i]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        answer: dict[str, int] = json.loads(proc.stdout.readline())
        return answer

    def openTo(self, total: int, wait: float) -> dict[str, int]:
        """
        Open idle connections until C{total} were started in all.
        """
        while sum(self.opened) < total:
            i = next((k for k, n in enumerate(self.opened) if n < PER_HOLDER), None)
            if i is None:
                self.procs.append(
                    subprocess.Popen(
                        [
                            PYTHON,
                            __file__,
                            "--holder",
                            f"127.0.0.{len(self.procs) + 2}",
                            str(self.port),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
                self.opened.append(0)
                self.last.append({})
                i = len(self.procs) - 1
            n = min(PER_HOLDER - self.opened[i], total - sum(self.opened))
            self.opened[i] += n
            self.last[i] = self._ask(i, f"open {n} 0")
        # Then let every holder wait for its pending handshakes.
        self.last = [self._ask(i, f"open 0 {wait}") for i in range(len(self.procs))]
        return self.totals()

    def totals(self) -> dict[str, int]:
        keys = ("alive", "pending", "dropped", "failed")
        return {k: sum(r.get(k, 0) for r in self.last) for k in keys}

    def close(self) -> None:
        for i, proc in enumerate(self.procs):
            try:
                self._ask(i, "close")
            except (OSError, ValueError):
                pass
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(30)
        self.procs, self.opened, self.last = [], [], []


# Probes: well-behaved clients.


def probe(port: int, count: int, deadline: float) -> list[float | None]:
    """
    C{count} HTTP requests at once; for each, the seconds from its connect
    to its whole answer, or L{None} if it was not answered within
    C{deadline} (or failed).
    """
    sel = select.epoll()
    state: dict[int, dict[str, Any]] = {}
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        started = time.monotonic()
        code = s.connect_ex((HOST, port))
        if code not in (0, errno.EINPROGRESS):
            s.close()
            continue
        state[s.fileno()] = {"sock": s, "at": started, "sent": False, "got": b""}
        sel.register(s.fileno(), select.EPOLLOUT)
    results: list[float | None] = []
    end = time.monotonic() + deadline
    while state and time.monotonic() < end:
        for fd, _events in sel.poll(max(0.0, end - time.monotonic())):
            st = state.get(fd)
            if st is None:
                continue
            s = st["sock"]
            done: float | bool | None = False
            if not st["sent"]:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    done = None
                else:
                    s.send(REQUEST)
                    st["sent"] = True
                    sel.modify(fd, select.EPOLLIN)
            else:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    chunk, done = b"", None
                if chunk:
                    st["got"] += chunk
                elif done is False:
                    ok = st["got"].startswith(b"HTTP/1.1 200") and st["got"].endswith(
                        b"hello"
                    )
                    done = time.monotonic() - st["at"] if ok else None
            if done is not False:
                elapsed = done if isinstance(done, float) else None
                if elapsed is not None and elapsed > deadline:
                    elapsed = None
                results.append(elapsed)
                sel.unregister(fd)
                s.close()
                del state[fd]
    for st in state.values():
        results.append(None)
        st["sock"].close()
    sel.close()
    return results


# Servers.


def freePort() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    command: list[str]
    ready: str
    env: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)

    def start(self, workdir: str) -> None:
        self.logPath = os.path.join(workdir, f"{self.name}.log")
        out = open(self.logPath, "wb")
        self.proc = subprocess.Popen(
            self.command,
            cwd=workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not re.search(self.ready, self.text()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start:\n{self.text()}")
            time.sleep(0.05)

    def text(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        # Anything left in its session (a worker) goes too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def servers(code: str, workers: int) -> list[Server]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([code, ROOT])
    pool, single = freePort(), freePort()
    return [
        Server(
            "single",
            [
                PYTHON,
                os.path.join(BENCH, "single.py"),
                "--port",
                str(single),
                "--protocol",
                PROTOCOL,
            ],
            r"listening on",
            env,
            single,
        ),
        Server(
            f"pool -w {workers}",
            [
                TWISTD,
                "-n",
                "--pidfile=",
                "--logfile=-",
                "preforked",
                "-w",
                str(workers),
                "-l",
                f"tcp:{pool}:interface={HOST}",
                "-p",
                PROTOCOL,
            ],
            rf"\({workers} accepting\)",
            env,
            pool,
        ),
    ]


def steps(maximum: int) -> list[int]:
    small = [250, 500, 1000, 1500, 2000, 2500, 3000, 4000]
    return [n for n in small if n <= maximum] + list(range(5000, maximum + 1, 1000))


def ramp(server: Server, args: argparse.Namespace) -> None:
    holders = Holders(server.port)
    try:
        for target in steps(args.max):
            idle = holders.openTo(target, args.settle)
            times = probe(server.port, args.probes, args.deadline)
            answered = [t for t in times if t is not None]
            step = {
                "idle_opened": target,
                **idle,
                "answered": len(answered),
                "slowest": max(answered) if answered else None,
            }
            server.steps.append(step)
            print(
                f"  {server.name:10} idle {target:6d} (alive {idle['alive']}, pending "
                f"{idle['pending']}, dropped {idle['dropped']}): "
                f"{len(answered)}/{args.probes} answered within {args.deadline:g}s",
                flush=True,
            )
            if len(answered) < args.probes:
                break
    finally:
        holders.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--code", default=ROOT, help="the tree preforktwist runs from")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max", type=int, default=44000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--deadline", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--holder", nargs=2, metavar=("SOURCE", "PORT"))
    args = parser.parse_args()
    if args.holder:
        holder(args.holder[0], int(args.holder[1]))
        return
    limit = raiseOwnLimit()
    code = os.path.abspath(args.code)
    print(f"open-file limit {limit} (soft = hard) for every process; code {code}")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as workdir:
        for server in servers(code, args.workers):
            server.start(workdir)
            try:
                ramp(server, args)
            finally:
                server.stop()
            if server.name.startswith("pool"):
                text = server.text()
                limits = re.findall(r"\[worker 1 pid \d+\] (open-file limit.*)", text)
                print(f"  worker 1 said: {limits[0] if limits else 'nothing'}")
                saturated = re.findall(r"#warn\] (saturated: .{60})", text)
                print(
                    f"  master said: {saturated[0] + '...' if saturated else 'nothing'}"
                )
            passed = [
                s["idle_opened"] for s in server.steps if s["answered"] == args.probes
            ]
            failed = [s for s in server.steps if s["answered"] < args.probes]
            summary = (
                f"{server.name}: held {max(passed, default=0)} idle with "
                f"{args.probes}/{args.probes} answered within {args.deadline:g}s"
            )
            if failed:
                summary += (
                    f"; at {failed[0]['idle_opened']} idle: "
                    f"{failed[0]['answered']}/{args.probes}"
                )
            else:
                summary += " (the ramp's maximum)"
            print(summary, flush=True)
    print(f"took {time.monotonic() - began:.0f}s")


if __name__ == "__main__":
    main()
