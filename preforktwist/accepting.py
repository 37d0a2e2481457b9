"""
The worker's side of the shared listening sockets: adopted ports that never
accept a connection the worker is not allowed to take.

Twisted's C{tcp.Port.doRead} accepts up to C{numberAccepts} connections per
wake-up (100 at first, growing).  Stopping the port from inside
C{buildProtocol} does not end a batch already running, and refusing a
connection there closes it: the client loses it.  So the clamp happens
before the batch starts: C{numberAccepts} is a property that never exceeds
what the worker's L{AcceptBudget} has room for, and a port with no room
stops reading, which leaves the next connection in the kernel's queue for a
sibling worker.

The UNIX port also undoes two behaviours of Twisted's C{unix.Port} that are
right for a socket a process owns and wrong for a shared, adopted one: it
neither re-C{listen}s nor C{chmod}s on start, and never unlinks the path or
C{shutdown}s the socket on stop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.interfaces import IProtocolFactory, IReactorFDSet
from twisted.python.failure import Failure


class AcceptBudget:
    """
    How many more connections one worker may accept, shared by all of its
    listening ports: the allowance over its life (C{-m}) and the cap on
    connections open at once (C{-c}).

    @ivar accepted: connections accepted so far.
    @ivar open: connections accepted and not yet closed.
    @ivar closing: no more connections will be accepted, ever.
    """

    def __init__(
        self,
        allowance: int = 0,
        maxOpen: int = 0,
        onExhausted: Callable[[], None] = lambda: None,
        onIdle: Callable[[], None] = lambda: None,
        onAccepted: Callable[[], None] = lambda: None,
    ) -> None:
        """
        @param allowance: connections this worker may accept in all; 0 for
            no limit.
        @param maxOpen: connections it may hold open at once; 0 for no cap.
        @param onExhausted: called once, when the allowance is used up.
        @param onIdle: called whenever the last open connection closes.
        @param onAccepted: called after each batch of accepted connections.
        """
        self.allowance = allowance
        self.maxOpen = maxOpen
        #: The most connections one wake-up may accept; 0 leaves Twisted's
        #: own adaptive batch.  Small batches spread a burst over the
        #: workers instead of letting the first awake take it all.
        self.batch = 0
        self.accepted = 0
        self.open = 0
        self.closing = False
        #: A standby worker's budget: no room at all until L{release}.
        self.held = False
        self._onExhausted = onExhausted
        self._onIdle = onIdle
        self._onAccepted = onAccepted
        self.ports: list[BudgetedTCPPort | BudgetedUNIXPort] = []

    @property
    def served(self) -> int:
        """
        Connections accepted and closed again.
        """
        return self.accepted - self.open

    def room(self) -> int | None:
        """
        How many connections may be accepted right now; L{None} for no limit.
        """
        if self.closing or self.held:
            return 0
        limits = []
        if self.allowance:
            limits.append(self.allowance - self.accepted)
        if self.maxOpen:
            limits.append(self.maxOpen - self.open)
        return max(0, min(limits)) if limits else None

    def exhausted(self) -> bool:
        return bool(self.allowance) and self.accepted >= self.allowance

    def recordAccepted(self, count: int) -> None:
        if not count:
            return
        self.accepted += count
        self.open += count
        self._onAccepted()
        if self.room() == 0:
            self._pauseAll()
        if self.exhausted():
            self.closing = True
            self._onExhausted()

    def release(self) -> None:
        """
        Start accepting: the standby worker takes its place in the pool.
        """
        if not self.held:
            return
        self.held = False
        if self.room() != 0:
            for port in self.ports:
                port.startReading()  # type: ignore[no-untyped-call]

    def recordClosed(self) -> None:
        self.open -= 1
        if self.maxOpen and self.room() == self.maxOpen - self.open == 1:
            # The cap had paused the ports; there is room again.
            for port in self.ports:
                port.startReading()  # type: ignore[no-untyped-call]
        if self.open == 0:
            self._onIdle()

    def _pauseAll(self) -> None:
        for port in self.ports:
            port.stopReading()  # type: ignore[no-untyped-call]

    def close(self, drain: bool = False) -> None:
        """
        Accept nothing more and close this worker's copies of the listening
        sockets.  The sockets themselves stay open in the master and the
        other workers, and so does everything queued on them.

        @param drain: first accept what is already queued, as far as the
            budget allows: used when the whole server stops, so that
            connections that completed their handshake before the stop are
            served rather than reset.
        """
        if drain and not self.closing:
            for port in self.ports:
                port.drainQueue()
        self.closing = True
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()  # type: ignore[no-untyped-call]


class _CountsClose:
    """
    A server transport that tells its port's budget when it closes: a
    counter at the transport costs nothing per byte, unlike wrapping every
    protocol.
    """

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)  # type: ignore[misc]
        finally:
            budget: AcceptBudget = self.server.budget  # type: ignore[attr-defined]
            budget.recordClosed()


class CountedTCPServer(_CountsClose, tcp.Server):
    pass


class CountedUNIXServer(_CountsClose, unix.Server):
    pass


class _BudgetedPortMixin:
    """
    The clamp on C{doRead}, shared by the TCP and UNIX ports.
    """

    budget: AcceptBudget
    sessionno: int
    _batch: int = 100

    @property
    def numberAccepts(self) -> int:
        budget = self.budget
        room = budget.room()
        batch = min(self._batch, budget.batch) if budget.batch else self._batch
        return batch if room is None else min(batch, room)

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        self._batch = value

    def doRead(self) -> None:
        if self.budget.room() == 0:
            # Level-triggered polling would call us again at once: stop
            # reading rather than spin accepting range(0).
            self.stopReading()  # type: ignore[attr-defined]
            return
        before = self.sessionno
        super().doRead()  # type: ignore[misc]
        self.budget.recordAccepted(self.sessionno - before)

    def drainQueue(self) -> None:
        """
        Accept what the kernel has queued, until it has nothing more or the
        budget has no more room.
        """
        while self.budget.room() != 0 and getattr(self, "connected", False):
            before = self.sessionno
            self.doRead()
            if self.sessionno == before:
                return


class BudgetedTCPPort(_BudgetedPortMixin, tcp.Port):
    transport = CountedTCPServer


class BudgetedUNIXPort(_BudgetedPortMixin, unix.Port):
    transport = CountedUNIXServer

    def startListening(self) -> None:
        skt = self._preexistingSocket
        assert skt is not None, "only adopted sockets are supported"
        self._preexistingSocket = None
        # Never shutdown(2) a socket other processes accept on.
        self._shouldShutdown = False
        assert self.factory is not None
        self.factory.doStart()
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]
        self.numberAccepts = 100
        self.startReading()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:
        # Skip unix.Port's unlink of the path: the master owns the file.
        tcp.Port.connectionLost(self, reason)


def adoptListener(
    reactor: IReactorFDSet,
    fd: int,
    family: int,
    factory: IProtocolFactory,
    budget: AcceptBudget,
) -> BudgetedTCPPort | BudgetedUNIXPort:
    """
    Start accepting on an inherited, listening, non-blocking socket, within
    C{budget}.  The port works on a duplicate of C{fd}; the caller may close
    C{fd} afterwards.
    """
    port: Any
    if family == socket.AF_UNIX:
        port = BudgetedUNIXPort._fromListeningDescriptor(  # type: ignore[no-untyped-call]
            reactor, fd, factory
        )
    else:
        port = BudgetedTCPPort._fromListeningDescriptor(  # type: ignore[no-untyped-call]
            reactor, fd, family, factory
        )
    port.budget = budget
    budget.ports.append(port)
    port.startListening()
    if budget.room() == 0:
        port.stopReading()
    return port  # type: ignore[no-any-return]
