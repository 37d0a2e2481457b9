"""
The worker's side of the shared listening sockets: adopted ports that never
accept a connection the worker is not allowed to take.

Twisted's C{tcp.Port.doRead} accepts up to C{numberAccepts} connections per
wake-up (100 at first, adapting to the traffic).  Stopping the port from
inside C{buildProtocol} does not end a batch already running, and refusing
a connection there closes it: the client loses it.  So the clamp happens
before the batch starts: C{numberAccepts} is set to what the worker's
L{AcceptBudget} has room for, and a port with no room stops reading, which
leaves the next connection in the kernel's queue for a sibling worker.
After the batch, Twisted's own adaptation of the batch size is kept,
except after a clamped batch, which says nothing of how much was queued.

The UNIX port also undoes two behaviours of Twisted's C{unix.Port} that are
right for a socket a process owns and wrong for a shared, adopted one: it
neither re-C{listen}s nor C{chmod}s on start, and never unlinks the path or
C{shutdown}s the socket on stop.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IProtocolFactory, IReactorFDSet
from twisted.logger import Logger

from preforktwist.common.adopted import AdoptedUNIXPort
from preforktwist.common.private import portFromDescriptor, reservedDescriptor
from preforktwist.protocol.config import ACCEPT_WAKEUPS, DEFAULT_ACCEPT_REORDER
from preforktwist.worker.balance import BALANCE_WAIT
from preforktwist.worker.budget import AcceptBudget
from preforktwist.worker.transports import serverTransport
from preforktwist.worker.wakeups import ExclusiveReading, exclusiveWakeups

_log = Logger(namespace="preforktwist.accepting")

#: Seconds a worker out of file descriptors leaves the queue to others.
EMFILE_PAUSE = 0.25


class _NoticeEMFILE:
    """
    Stands in for Twisted's reserved file descriptor during a port's accept
    loop.

    When C{accept} fails with EMFILE, Twisted's accept loop frees a
    descriptor it kept in reserve, then accepts every queued connection and
    closes it at once: those clients lose their connections, which a
    sibling worker with descriptors to spare could have served.  With no
    reserve available, the loop just stops; this notes that it happened,
    and the port pauses instead.
    """

    def __init__(self) -> None:
        self.hit = False

    def reserve(self) -> None:
        pass

    def available(self) -> bool:
        self.hit = True
        return False


class _BudgetedPort(ExclusiveReading):
    """
    The clamp on C{doRead}, shared by the TCP and UNIX ports, and the
    pauses it leads to: no room, a wait for the siblings, no descriptors.
    """

    budget: AcceptBudget
    sessionno: int
    numberAccepts: int
    connected: Any
    #: Twisted's adaptive batch, as it would be without the clamp.
    _batch: int = 100
    #: The end of a wait for the siblings (L{BALANCE_WAIT}), while it runs.
    _balanceWait: Any = None
    _emfileLogged = False

    def stopReading(self) -> None:
        super().stopReading()  # type: ignore[misc]

    def doRead(self) -> None:
        budget = self.budget
        room = budget.room()
        if room == 0:
            # Level-triggered polling would call us again at once: stop
            # reading rather than spin accepting range(0).
            self.stopReading()
            return
        balance = budget.balanceRoom()
        if balance == 0:
            self._leaveToSiblings()
            return
        batch = self._batch
        clamp = min(
            limit
            for limit in (batch, budget.batch or batch, balance, room)
            if limit is not None
        )
        self.numberAccepts = clamp
        before = self.sessionno
        emfile = _NoticeEMFILE()
        with reservedDescriptor(emfile):
            super().doRead()  # type: ignore[misc]
        adapted = self.numberAccepts
        # A clamped batch taken whole says nothing of what was queued.
        self._batch = batch if clamp < batch and adapted == clamp + 20 else adapted
        accepted = self.sessionno - before
        budget.recordAccepted(accepted)
        self.reorder(accepted)
        if emfile.hit:
            self._outOfDescriptors()

    def _leaveToSiblings(self) -> None:
        """
        This worker holds clearly more than a sibling that is accepting:
        stop waiting on the socket for L{BALANCE_WAIT} seconds, so that the
        kernel wakes the siblings for what comes meanwhile.
        """
        self.stopReading()
        if self._balanceWait is None:
            self._balanceWait = self.reactor.callLater(BALANCE_WAIT, self._waitOver)

    def _waitOver(self) -> None:
        self._balanceWait = None
        self.budget.balanceWaitOver()
        self._resume()

    def _outOfDescriptors(self) -> None:
        """
        EMFILE: leave the queued connections to the other workers for a
        moment rather than spin on a socket we cannot accept from.
        """
        self.stopReading()
        if not self._emfileLogged:
            self._emfileLogged = True
            _log.error(
                "out of file descriptors (EMFILE) with {open} connections open: "
                "leaving queued connections to the other workers; raise "
                "'ulimit -n' or lower --max-concurrent",
                open=self.budget.open,
            )
        self.reactor.callLater(EMFILE_PAUSE, self._resume)

    def cancelBalanceWait(self) -> None:
        wait, self._balanceWait = self._balanceWait, None
        if wait is not None and wait.active():
            wait.cancel()

    def endBalanceWait(self) -> None:
        """
        End a wait for the siblings early, if one runs: a connection closed
        here, so this worker has room again.
        """
        if self._balanceWait is not None:
            self.cancelBalanceWait()
            self._resume()

    def _resume(self) -> None:
        if self.connected and self.budget.room() != 0:
            self.startReading()

    def drainQueue(self) -> bool:
        """
        Accept what the kernel has queued, until it has nothing more or the
        budget has no more room.

        @return: whether the queue is empty.
        """
        while self.budget.room() != 0 and self.connected:
            before = self.sessionno
            self.doRead()
            if self.sessionno == before:
                return True
        return False


class BudgetedTCPPort(_BudgetedPort, tcp.Port):
    pass


class BudgetedUNIXPort(_BudgetedPort, AdoptedUNIXPort):
    pass


BudgetedPort = BudgetedTCPPort | BudgetedUNIXPort


def adoptListener(
    reactor: IReactorFDSet,
    fd: int,
    family: int,
    factory: IProtocolFactory,
    budget: AcceptBudget,
    wakeup: str = ACCEPT_WAKEUPS[0],
    reorder: int = DEFAULT_ACCEPT_REORDER,
) -> BudgetedPort:
    """
    Start accepting on an inherited, listening, non-blocking socket, within
    C{budget}.  The port works on a duplicate of C{fd}; the caller may close
    C{fd} afterwards.

    @param wakeup: one of L{ACCEPT_WAKEUPS} (C{--accept-wakeup}).
    @param reorder: re-add an exclusive registration after this many
        accepts; 0 never (C{--accept-reorder}).
    """
    unixFamily = family == socket.AF_UNIX
    portClass = BudgetedUNIXPort if unixFamily else BudgetedTCPPort
    port: Any = portFromDescriptor(portClass, reactor, fd, family, factory)
    port.transport = serverTransport(unixFamily, budget.firstByteTimeout > 0)
    port.budget = budget
    port.exclusive = exclusiveWakeups(reactor, wakeup)
    port.reorderEvery = reorder
    budget.ports.append(port)
    port.startListening()
    if budget.room() == 0:
        port.stopReading()
    return port  # type: ignore[no-any-return]
