"""
The thundering herd, measured in real processes: two idle workers share one
listening socket, and each connection should wake one of them, not both.

A worker that wakes for a connection and goes back to sleep makes one
voluntary context switch, whether it accepted the connection or found the
queue already empty, so the workers' voluntary switches per connection
count the wake-ups: about 1 with exclusive registration, about 2 (one per
idle worker) with Twisted's plain one.  The plain case runs too, so the
test shows that what it counts can tell the two apart.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .harness import REPO, waitUntil

WORKER = """
import socket, sys
from twisted.internet import epollreactor
epollreactor.install()
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from preforktwist.worker.budget import AcceptBudget
from preforktwist.worker.ports import adoptListener

class Close(Protocol):
    def connectionMade(self):
        self.transport.loseConnection()

adoptListener(reactor, int(sys.argv[1]), socket.AF_INET,
              Factory.forProtocol(Close), AcceptBudget(), wakeup=sys.argv[2])
print("ready", flush=True)
reactor.run()
"""

CONNECTIONS = 40


def voluntarySwitches(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError(f"no context switches for {pid}")


def wakeupsPerConnection(mode: str) -> float:
    """
    Start two workers in C{mode}, let them settle idle, make
    L{CONNECTIONS} connections one after the other (each waits for the
    server's close, then a pause lets both workers go back to sleep), and
    return the workers' voluntary context switches per connection.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(listener.fileno()), mode],
            pass_fds=[listener.fileno()],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline() == "ready\n"
        address = listener.getsockname()

        def idle() -> bool:
            before = [voluntarySwitches(w.pid) for w in workers]
            time.sleep(0.2)
            return before == [voluntarySwitches(w.pid) for w in workers]

        waitUntil(idle, 20, "both workers idle")
        before = sum(voluntarySwitches(w.pid) for w in workers)
        for _ in range(CONNECTIONS):
            with socket.create_connection(address, timeout=10) as client:
                assert client.recv(1) == b""
            time.sleep(0.02)
        after = sum(voluntarySwitches(w.pid) for w in workers)
        return (after - before) / CONNECTIONS
    finally:
        listener.close()
        for worker in workers:
            worker.kill()
            worker.wait(10)
            assert worker.stdout is not None
            worker.stdout.close()


def test_oneConnectionWakesOneWorker() -> None:
    if not hasattr(select, "EPOLLEXCLUSIVE"):
        pytest.skip("no epoll with EPOLLEXCLUSIVE here")
    exclusive = wakeupsPerConnection("exclusive")
    plain = wakeupsPerConnection("plain")
    print(f"wake-ups per connection: exclusive {exclusive}, plain {plain}")
    assert exclusive <= 1.3, (exclusive, plain)
    assert plain >= 1.7, (exclusive, plain)
