"""
systemd's notification protocol (C{Type=notify}), for the master.

When systemd starts the server with C{NOTIFY_SOCKET} set, the master tells
it C{READY=1} once the pool first has all its workers accepting,
C{RELOADING=1} and then C{READY=1} around a rolling reload, C{STOPPING=1}
when it stops, C{STATUS=} lines with the pool's state as it changes, and
its C{MAINPID} (which differs from the pid systemd started when twistd
daemonizes).  The protocol is one datagram per message on a UNIX socket,
which needs no library.

With C{WatchdogSec=}, systemd sets C{WATCHDOG_USEC} (and C{WATCHDOG_PID},
the process it watches): the master then sends C{WATCHDOG=1} at half that
interval, from its reactor, so that a master whose reactor is stuck stops
sending and systemd restarts it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from preforktwist.master.events import (
    PoolEvent,
    PoolReady,
    PoolStopping,
    ReloadFailed,
    ReloadFinished,
    ReloadStarted,
    WorkersChanged,
)
from preforktwist.master.pool import Pool

log = Logger(namespace="preforktwist.notify")


class SystemdNotifier:
    """
    Sends the pool's events to systemd.
    """

    def __init__(self, address: str, pool: Pool) -> None:
        # An address starting with "@" is in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.pool = pool
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self._lastStatus = ""

    @classmethod
    def fromEnvironment(
        cls, pool: Pool, environ: Mapping[str, str] = os.environ
    ) -> SystemdNotifier | None:
        address = environ.get("NOTIFY_SOCKET")
        return cls(address, pool) if address else None

    def send(self, *fields: str) -> None:
        try:
            self.socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            log.warn(
                "cannot notify systemd at {address}: {e}", address=self.address, e=e
            )

    def status(self) -> str:
        pool = self.pool
        state = "reloading, " if pool.reloading else ""
        return f"STATUS={state}{pool.summary()} (want {pool.size})"

    def __call__(self, event: PoolEvent) -> None:
        """
        Called by the pool with each of its events.
        """
        status = self.status()
        match event:
            case PoolReady():
                self.send("READY=1", f"MAINPID={os.getpid()}", status)
            case ReloadStarted():
                usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", status)
            case ReloadFinished() | ReloadFailed():
                self.send("READY=1", status)
            case PoolStopping():
                self.send("STOPPING=1", "STATUS=stopping")
            case WorkersChanged():
                if status != self._lastStatus:
                    self.send(status)
            case _:
                return  # systemd has no word for the others
        self._lastStatus = status

    def close(self) -> None:
        self.socket.close()


def watchdogInterval(environ: Mapping[str, str], pid: int) -> float | None:
    """
    Seconds between two C{WATCHDOG=1}: half of C{WATCHDOG_USEC}, if systemd
    set it for process C{pid} (C{WATCHDOG_PID}, when set, names the process
    it watches), as C{sd_watchdog_enabled} reads them; C{None} if it did
    not.
    """
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    watched = environ.get("WATCHDOG_PID")
    if watched and watched != str(pid):
        return None
    try:
        interval = int(usec) / 1e6 / 2
    except ValueError:
        interval = 0.0
    if interval <= 0:
        log.warn("ignoring WATCHDOG_USEC={usec}: not a positive integer", usec=usec)
        return None
    return interval


class SystemdService(Service):
    """
    The notifier as a service: listening to the pool from before it starts
    (so that systemd hears every event) until every worker has exited, and
    keeping systemd's watchdog fed meanwhile.  Outside systemd (no
    C{NOTIFY_SOCKET}) it does nothing.

    Across a hot upgrade, systemd (C{NotifyAccess=main}) only hears its
    main process: the new master says nothing (and feeds no watchdog) until
    the old one has told systemd its pid (C{MAINPID=}) and handed over; the
    old one says nothing after that.

    @ivar muted: the pool's events are not sent (yet, or any more).
    """

    def __init__(
        self,
        pool: Pool,
        environ: Mapping[str, str] = os.environ,
        clock: IReactorTime | None = None,
        muted: bool = False,
    ) -> None:
        """
        @param clock: what the watchdog's pings are timed by; the pool's
            (the master's reactor) by default.
        @param muted: a new master, silent until it L{takeOver}s.
        """
        self.pool = pool
        self.environ = environ
        self.clock = pool.clock if clock is None else clock
        self.notifier: SystemdNotifier | None = None
        self._watchdog: LoopingCall | None = None
        self.muted = muted
        self._everReady = False

    def startService(self) -> None:
        Service.startService(self)
        self.notifier = SystemdNotifier.fromEnvironment(self.pool, self.environ)
        if self.notifier is not None:
            self.pool.observers.append(self._event)
            if not self.muted:
                self._startWatchdog(self.notifier, os.getpid())

    def _event(self, event: PoolEvent) -> None:
        if isinstance(event, PoolReady):
            self._everReady = True
        if self.notifier is not None and not self.muted:
            self.notifier(event)

    def _startWatchdog(self, notifier: SystemdNotifier, pid: int) -> None:
        interval = watchdogInterval(self.environ, pid)
        if interval is None:
            return
        log.info("systemd watchdog: WATCHDOG=1 every {interval:g}s", interval=interval)
        self._watchdog = LoopingCall(notifier.send, "WATCHDOG=1")
        self._watchdog.clock = self.clock
        self._watchdog.start(interval, now=True)

    def _stopWatchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.running:
            watchdog.stop()

    def handOver(self, successor: int) -> None:
        """
        The new master C{successor} is ready: systemd follows it from now
        on, and hears nothing more from this one.
        """
        if self.notifier is not None and not self.muted:
            self.notifier.send(
                f"MAINPID={successor}",
                "READY=1",
                f"STATUS=upgraded: the new master (pid {successor}) serves",
            )
        self.muted = True
        self._stopWatchdog()

    def takeOver(self) -> None:
        """
        The old master handed over: this master is systemd's main process,
        says where it is, and feeds the watchdog that watched the old one
        (C{WATCHDOG_PID} names it).
        """
        if not self.muted:
            return
        self.muted = False
        notifier = self.notifier
        if notifier is None:
            return
        if self._everReady:
            notifier.send("READY=1", f"MAINPID={os.getpid()}", notifier.status())
        watched = self.environ.get("WATCHDOG_PID", "")
        self._startWatchdog(
            notifier, int(watched) if watched.isdigit() else os.getpid()
        )

    def stopService(self) -> None:
        Service.stopService(self)
        self._stopWatchdog()
        notifier, self.notifier = self.notifier, None
        if notifier is not None:
            self.pool.observers.remove(self._event)
            notifier.close()
