"""
systemd's notification protocol (C{Type=notify}), for the master.

When systemd starts the server with C{NOTIFY_SOCKET} set, the master tells
it C{READY=1} once the pool first has all its workers accepting,
C{RELOADING=1} and then C{READY=1} around a rolling reload, C{STOPPING=1}
when it stops, C{STATUS=} lines with the pool's state as it changes, and
its C{MAINPID} (which differs from the pid systemd started when twistd
daemonizes).  The protocol is one datagram per message on a UNIX socket,
which needs no library.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.application.service import Service
from twisted.logger import Logger

from preforktwist.master.events import PoolEvent
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
            case PoolEvent.READY:
                self.send("READY=1", f"MAINPID={os.getpid()}", status)
            case PoolEvent.RELOADING:
                usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", status)
            case PoolEvent.RELOADED:
                self.send("READY=1", status)
            case PoolEvent.STOPPING:
                self.send("STOPPING=1", "STATUS=stopping")
            case PoolEvent.CHANGED if status != self._lastStatus:
                self.send(status)
        self._lastStatus = status

    def close(self) -> None:
        self.socket.close()


class SystemdService(Service):
    """
    The notifier as a service: listening to the pool from before it starts
    (so that systemd hears every event) until every worker has exited.
    Outside systemd (no C{NOTIFY_SOCKET}) it does nothing.

    Across a hot upgrade, systemd (C{NotifyAccess=main}) only hears its
    main process: the new master says nothing until the old one has told
    systemd its pid (C{MAINPID=}) and handed over; the old one says nothing
    after that.

    @ivar muted: the pool's events are not sent (yet, or any more).
    """

    def __init__(
        self,
        pool: Pool,
        environ: Mapping[str, str] = os.environ,
        muted: bool = False,
    ) -> None:
        """
        @param muted: a new master, silent until it L{takeOver}s.
        """
        self.pool = pool
        self.environ = environ
        self.notifier: SystemdNotifier | None = None
        self.muted = muted
        self._everReady = False

    def startService(self) -> None:
        Service.startService(self)
        self.notifier = SystemdNotifier.fromEnvironment(self.pool, self.environ)
        if self.notifier is not None:
            self.pool.observers.append(self._event)

    def _event(self, event: PoolEvent) -> None:
        if event is PoolEvent.READY:
            self._everReady = True
        if self.notifier is not None and not self.muted:
            self.notifier(event)

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

    def takeOver(self) -> None:
        """
        The old master handed over: this master is systemd's main process,
        and says where it is.
        """
        if not self.muted:
            return
        self.muted = False
        if self.notifier is not None and self._everReady:
            self.notifier.send(
                "READY=1", f"MAINPID={os.getpid()}", self.notifier.status()
            )

    def stopService(self) -> None:
        Service.stopService(self)
        notifier, self.notifier = self.notifier, None
        if notifier is not None:
            self.pool.observers.remove(self._event)
            notifier.close()
