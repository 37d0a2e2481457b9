"""
The new master's side of a hot upgrade: it says who it is once it runs,
says when every pool it serves has all its wanted workers accepting, and
takes over the sockets, the status and control endpoints and systemd's
attention when the old master hands them over, or when the old master is
gone before it could.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import IPreforkReactor
from preforktwist.common.streams import adoptStream
from preforktwist.master.events import PoolEvent, PoolReady
from preforktwist.master.pool import Pool
from preforktwist.master.upgrade.channel import ControlChannel, Hello, Ready, TakeOver
from preforktwist.master.upgrade.handoff import Handoff


class Inheritor(Protocol):
    """
    What the new master's side needs of one pre-forked service.
    """

    @property
    def pool(self) -> Pool: ...

    def takeOver(self) -> None: ...


class _NewEnd(ControlChannel):
    """
    The new master's end of the channel.
    """

    def __init__(self, successor: Successor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.successor = successor

    @TakeOver.responder
    def takeOver(self) -> dict[str, Any]:
        self.successor.takeOver()
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.successor.predecessorGone()


class Successor:
    """
    This master, started by another for a hot upgrade.

    @ivar tookOver: the old master has handed everything over (or is
        gone).
    """

    log = NamedLogger("preforktwist.upgrade")

    def __init__(self, reactor: IPreforkReactor, handoff: Handoff) -> None:
        self.reactor = reactor
        self.handoff = handoff
        self.tookOver = False
        self._services: list[Inheritor] = []
        self._ready: list[Inheritor] = []
        self._channel: _NewEnd | None = None
        self._saidReady = False
        self._connected = False

    def attach(self, service: Inheritor) -> None:
        """
        C{service} starts: once the first does (after twistd has
        daemonized), the old master hears this process's pid.
        """
        if not self._connected:
            self._connected = True
            self._channel = adoptStream(
                self.reactor, self.handoff.channel, _NewEnd(self)
            )
            self._call(Hello, pid=os.getpid())
        self._services.append(service)
        service.pool.observers.append(lambda event: self._poolEvent(service, event))
        if self.tookOver:
            service.takeOver()

    def _poolEvent(self, service: Inheritor, event: PoolEvent) -> None:
        if not isinstance(event, PoolReady) or service in self._ready:
            return
        self._ready.append(service)
        if self._saidReady or len(self._ready) < len(self._services):
            return
        self._saidReady = True
        self.log.info(
            "every worker accepts: telling the old master (pid {pid})",
            pid=self.handoff.predecessor,
        )
        self._call(Ready)

    def _call(self, command: Any, **arguments: Any) -> None:
        channel = self._channel
        if channel is None or channel.transport is None:
            return
        channel.callRemote(command, **arguments).addErrback(
            self._callFailed, command.__name__
        )

    def _callFailed(self, failure: Failure, command: str) -> None:
        if not failure.check(ConnectionDone, ConnectionLost):
            self.log.failure(
                "the old master did not take {command}", failure, command=command
            )

    def takeOver(self) -> None:
        if self.tookOver:
            return
        self.tookOver = True
        self.log.info(
            "the old master (pid {pid}) handed over: this master serves alone now",
            pid=self.handoff.predecessor,
        )
        for service in list(self._services):
            service.takeOver()

    def predecessorGone(self) -> None:
        self._channel = None
        if not self.tookOver:
            self.log.warn(
                "the old master (pid {pid}) is gone before it handed over: taking over",
                pid=self.handoff.predecessor,
            )
            self.takeOver()
