"""
How many more connections one worker may accept: its allowance over its
life (C{-m}), its cap on connections open at once (C{-c}), a standby's
hold, and what its siblings' counts leave it (L{Balance}).  The ports ask
before each accept loop (L{AcceptBudget.room}) and report what they
accepted; the transports report each close.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from preforktwist.protocol.loadboard import LoadBoard
from preforktwist.worker.balance import Balance
from preforktwist.worker.retiring import OpenConnections

if TYPE_CHECKING:
    from preforktwist.worker.ports import BudgetedPort


class AcceptBudget:
    """
    How many more connections one worker may accept, shared by all of its
    listening ports, and the life of those ports: paused at the cap,
    drained and closed at the end.

    @ivar accepted: connections accepted so far.
    @ivar open: connections accepted and not yet closed.
    @ivar connections: their transports.
    @ivar closing: no more connections will be accepted, ever.
    @ivar draining: stopping: accepting what is queued, then closing.
    @ivar held: a standby's budget: no room at all until L{release}.
    """

    def __init__(
        self,
        allowance: int = 0,
        maxConcurrent: int = 0,
        onExhausted: Callable[[], None] = lambda: None,
        onIdle: Callable[[], None] = lambda: None,
        onAccepted: Callable[[], None] = lambda: None,
    ) -> None:
        """
        @param allowance: connections this worker may accept in all; 0 for
            no limit.
        @param maxConcurrent: connections it may hold open at once; 0 for no cap.
        @param onExhausted: called once, when the allowance is used up.
        @param onIdle: called whenever the last open connection closes.
        @param onAccepted: called after each batch of accepted connections.
        """
        self.allowance = allowance
        self.maxConcurrent = maxConcurrent
        #: The most connections one wake-up may accept; 0 leaves Twisted's
        #: own adaptive batch.  Small batches spread a burst over the
        #: workers instead of letting the first awake take it all.
        self.batch = 0
        self.accepted = 0
        self.open = 0
        self.connections = OpenConnections()
        self.closing = False
        self.draining = False
        self.held = False
        self._onExhausted = onExhausted
        self._onIdle = onIdle
        self._onAccepted = onAccepted
        self._whenClosed: list[Deferred[None]] = []
        self.ports: list[BudgetedPort] = []
        #: Seconds an accepted connection may stay silent; 0 for ever.
        self.firstByteTimeout = 0.0
        #: Connections aborted for staying silent that long.
        self.firstByteTimeouts = 0
        self.balance = Balance()

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
        if self.allowance and not self.draining:
            # The server is stopping: what was queued before the stop is
            # served, even past the allowance, since no replacement will
            # come to serve it.
            limits.append(self.allowance - self.accepted)
        if self.maxConcurrent:
            limits.append(self.maxConcurrent - self.open)
        return max(0, min(limits)) if limits else None

    def exhausted(self) -> bool:
        return bool(self.allowance) and self.accepted >= self.allowance

    # Sharing the load with the siblings.

    def shareLoad(self, board: LoadBoard, slot: int) -> None:
        """
        Publish this worker's open count in C{slot} of C{board} from now on,
        and weigh it against the siblings' before accepting.
        """
        self.balance.share(board, slot, os.getpid())
        self._publish()

    def _publish(self) -> None:
        accepting = not (self.closing or self.held or self.draining)
        self.balance.publish(self.open if accepting else None)

    def balanceRoom(self) -> int | None:
        """
        What the siblings' counts leave this worker (L{Balance.room}); at a
        stop, what is queued is served by whoever has room.
        """
        if self.draining:
            return None
        return self.balance.room(self.open)

    def balanceWaitOver(self) -> None:
        self.balance.waitOver()

    # What the ports and transports report.

    def recordAccepted(self, count: int) -> None:
        if not count:
            return
        self.accepted += count
        self.open += count
        self._publish()
        self._onAccepted()
        if self.room() == 0:
            for port in self.ports:
                port.stopReading()
        if self.exhausted() and not self.draining:
            self.closing = True
            self._onExhausted()

    def recordClosed(self) -> None:
        self.open -= 1
        self.balance.closed()
        self._publish()
        for port in self.ports:
            # Leaving the queue to the siblings is for connections that
            # stay: one closing here says this worker has room again.
            port.endBalanceWait()
        if self.draining:
            # Room again, at the cap: go on with the drain.
            self._drainPorts()
        elif (
            self.maxConcurrent
            and self.maxConcurrent - self.open == 1
            and self.room() == 1
        ):
            # The cap had paused the ports; there is room again.  (The
            # cheap test first: this runs at every close.)
            for port in self.ports:
                port.startReading()
        if self.open == 0:
            self._onIdle()

    def release(self) -> None:
        """
        Start accepting: the standby worker takes its place in the pool.
        """
        if not self.held:
            return
        self.held = False
        self._publish()
        if self.room() != 0:
            for port in self.ports:
                port.startReading()

    # The end.

    def close(self, drain: bool = False) -> Deferred[None]:
        """
        Accept nothing more and close this worker's copies of the listening
        sockets.  The sockets themselves stay open in the master and the
        other workers, and so does everything queued on them.

        @param drain: first accept what is already queued: used when the
            whole server stops, so that connections that completed their
            handshake before the stop are served rather than reset.  A
            worker at its concurrency cap keeps a socket open, paused,
            until a connection closes and it can take the next one, and
            closes it once its queue is empty.  The drain may take a worker
            past its allowance: no replacement comes during a stop.
        @return: fires once this worker's copies are all closed.
        """
        d: Deferred[None] = Deferred()
        self._whenClosed.append(d)
        if drain and not self.closing and not self.draining:
            # A standby held for a hand-over takes its share of the queue
            # too: the worker it was to replace may have used its allowance
            # a moment before the stop reached it, leaving what is queued
            # to whoever still has a socket open.
            self.held = False
            self.draining = True
            self._publish()
            self._drainPorts()
        elif not self.draining:
            self._closePorts(list(self.ports))
        return d

    def _drainPorts(self) -> None:
        for port in list(self.ports):
            if self.room() == 0:
                break
            if port.drainQueue():
                self._closePorts([port])
        # No drain can go on: no connection will close to make room.
        stuck = self.room() == 0 and self.open == 0
        if stuck or not self.ports:
            self._closePorts(list(self.ports))

    def _closePorts(self, ports: list[BudgetedPort]) -> None:
        for port in ports:
            self.ports.remove(port)
            port.cancelBalanceWait()
            port.stopListening()  # type: ignore[no-untyped-call]
        if not self.ports:
            self.closing = True
            self.draining = False
            self._publish()
            waiting, self._whenClosed = self._whenClosed, []
            for d in waiting:
                d.callback(None)
