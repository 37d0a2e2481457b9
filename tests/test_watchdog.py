"""
systemd's watchdog: with C{WATCHDOG_USEC} set, the master sends
C{WATCHDOG=1} at half that interval from its reactor, to a notify socket
the test holds (an C{AF_UNIX} datagram socket named by C{NOTIFY_SOCKET}).
In process with a L{Clock}; end to end with a real master, whose pings
stop while its reactor is blocked.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.logger import capturedLogs

from preforktwist.master.systemd import SystemdService, watchdogInterval
from tests.harness import TWISTD, Master
from tests.test_pool import Harness


@pytest.fixture
def notifySocket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        yield address, systemd


def received(systemd: socket.socket) -> list[str]:
    """
    Every message waiting on C{systemd}, one per datagram.
    """
    systemd.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(systemd.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_interval_is_half_of_WATCHDOG_USEC() -> None:
    me = os.getpid()
    assert watchdogInterval({"WATCHDOG_USEC": "3000000"}, me) == 1.5
    assert watchdogInterval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(me)}, me)
    # Meant for another process (the one systemd started, before a fork).
    assert (
        watchdogInterval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, me) is None
    )
    assert watchdogInterval({}, me) is None


def test_a_bad_WATCHDOG_USEC_is_ignored_with_a_warning() -> None:
    with capturedLogs() as events:
        assert watchdogInterval({"WATCHDOG_USEC": "soon"}, 1) is None
        assert watchdogInterval({"WATCHDOG_USEC": "0"}, 1) is None
    warnings = [e for e in events if "WATCHDOG_USEC" in e.get("log_format", "")]
    assert [e["usec"] for e in warnings] == ["soon", "0"]


def test_pings_at_half_the_interval_while_running(
    notifySocket: tuple[str, socket.socket],
) -> None:
    address, systemd = notifySocket
    h = Harness(1)
    environ = {
        "NOTIFY_SOCKET": address,
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    service = SystemdService(h.pool, environ)
    assert service.clock is h.clock  # the pool's: the master's reactor
    service.startService()
    assert received(systemd) == ["WATCHDOG=1"]
    h.clock.advance(0.9)
    assert received(systemd) == []
    h.clock.advance(0.1)
    h.clock.advance(1.0)
    assert received(systemd) == ["WATCHDOG=1", "WATCHDOG=1"]
    service.stopService()
    h.clock.advance(10)
    assert received(systemd) == []
    assert h.clock.getDelayedCalls() == []


def test_no_pings_when_another_process_is_watched(
    notifySocket: tuple[str, socket.socket],
) -> None:
    address, systemd = notifySocket
    h = Harness(1)
    environ = {
        "NOTIFY_SOCKET": address,
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    service = SystemdService(h.pool, environ)
    service.startService()
    h.clock.advance(10)
    service.stopService()
    assert received(systemd) == []


#: A master whose reactor blocks for C{BLOCK} seconds, C{BLOCK_AT} seconds
#: after it starts: what a stuck master looks like from outside.
STUCK_TAC = """
import os, time
from twisted.application.service import Application
from twisted.internet import reactor
from preforktwist import PreforkService

application = Application("stuck")
PreforkService(listen="tcp:0:interface=127.0.0.1", workers=1).setServiceParent(
    application
)
reactor.callWhenRunning(reactor.callLater, {at}, time.sleep, {block})
"""
BLOCK_AT = 0.6
BLOCK = 0.8


def test_pings_come_from_the_masters_reactor(
    tmp_path: Path, notifySocket: tuple[str, socket.socket]
) -> None:
    """
    A real master pings every 0.1 s (C{WATCHDOG_USEC} 0.2 s), and not at
    all while its reactor is blocked.
    """
    address, systemd = notifySocket
    tac = tmp_path / "stuck.tac"
    tac.write_text(STUCK_TAC.format(at=BLOCK_AT, block=BLOCK))
    master = Master(
        [],
        cwd=tmp_path,
        env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"},
        command=[TWISTD, "-ny", str(tac), "--pidfile=", "--logfile=-"],
    )
    try:
        systemd.settimeout(20)
        pings: list[float] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(pings) < 14:
            if systemd.recv(4096) == b"WATCHDOG=1":
                pings.append(time.monotonic())
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
    finally:
        assert master.reap() == []
    gaps = sorted(b - a for a, b in itertools.pairwise(pings))
    assert len(gaps) == 13, pings
    # Steady at 0.1 s, but for one gap the length of the block.
    assert 0.05 < gaps[len(gaps) // 2] < 0.25, gaps
    assert gaps[-1] >= BLOCK * 0.9, gaps
    assert gaps[-2] < BLOCK / 2, gaps
    master.waitForLine(r"systemd watchdog: WATCHDOG=1 every 0\.1s")
