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

Every worker waits on the same listening sockets.  Registered plainly in
epoll, each connection wakes every idle worker (the thundering herd: CPU per
connection grows with the pool).  On Linux's epoll reactor the ports
register their own descriptor with C{EPOLLIN | EPOLLEXCLUSIVE} instead, so
the kernel wakes one waiting worker.  The flag is accepted only when a
descriptor is added (C{EPOLL_CTL_MOD} gives C{EINVAL}), which suits a
listening port: it only ever reads, so pausing is a delete and resuming an
add.  It must be the reactor's own epoll: an inner epoll holding the socket
exclusively, itself polled by the reactor's, wakes every worker again.
Exclusive wake-ups favour the worker that has waited longest in the
socket's wait queue; re-adding the registration every C{--accept-reorder}
accepts (16 by default) sends the worker to the back of that queue, as
nginx does.  Any other reactor (poll, select, non-Linux), or
C{--accept-wakeup plain}, gets Twisted's plain registration.

Whoever the kernel wakes, it knows nothing of the connections each worker
already holds: a burst of connections that arrive together goes to the
first worker awake, which takes a whole batch before its siblings are
scheduled, and long-lived connections stay where they landed.  So each
worker publishes its open count on the master's L{LoadBoard}, and a worker
holding clearly more than its least busy sibling (L{AcceptBudget.
balanceRoom}) takes only what keeps it within that margin, then leaves the
sockets to its siblings for L{BALANCE_WAIT} seconds: with its registration
gone, the kernel wakes a sibling for the next connections.  It waits only
for a sibling that is making progress: one whose count has not moved
through several waits is stuck or was never woken, and the queue is not
left to it.  Nor does a worker whose connections close as they come (a
connection-rate load) weigh anything: counts that change by the
microsecond say nothing of load, and waiting would only cost accepts.
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IReactorFDSet
from twisted.logger import Logger
from twisted.python.failure import Failure

from preforktwist.protocol.config import ACCEPT_WAKEUPS, DEFAULT_ACCEPT_REORDER
from preforktwist.protocol.loadboard import ABSENT, LoadBoard

_log = Logger(namespace="preforktwist.accepting")

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # no epoll: not Linux
    EPollReactor = None  # type: ignore[assignment,misc]


_EPOLLEXCLUSIVE: int | None = getattr(select, "EPOLLEXCLUSIVE", None)


def exclusiveWakeups(reactor: object, wakeup: str = ACCEPT_WAKEUPS[0]) -> bool:
    """
    Whether ports adopted into C{reactor} register exclusively: when asked
    to, and only in Twisted's own epoll reactor, whose registrations we
    know how to make.
    """
    return (
        wakeup == "exclusive"
        and _EPOLLEXCLUSIVE is not None
        and EPollReactor is not None
        and isinstance(reactor, EPollReactor)
    )


#: Connections a worker may hold beyond its least busy sibling's count
#: before it leaves new ones to its siblings: this many, or a quarter of
#: that sibling's count if more.  Large counts (long-lived connections) are
#: so compared by ratio, the busiest holding at most about 1.25 times what
#: the idlest holds; small ones, which short connections make jump about
#: under a connection-rate load, do not make workers wait for nothing.
BALANCE_SLACK = 8

#: Seconds a worker ahead of its siblings leaves the sockets to them,
#: unless one of its own connections closes sooner.
BALANCE_WAIT = 0.005

#: Whole waits after which a sibling whose count has not moved is taken
#: for one that does not accept (stuck in the application, or never woken
#: for what is queued): on a busy machine a runnable sibling may wait that
#: long for a core, so one wait is not enough to tell.
BALANCE_PATIENCE = 4

#: A worker in which L{CHURN_CLOSES} connections closed within this many
#: seconds does not weigh its siblings' counts: balance is for connections
#: that stay.  (One close is not enough: wrk, for one, opens and closes a
#: test connection just before its burst.)
BALANCE_QUIET = 0.1
CHURN_CLOSES = 8


def balanceMargin(least: int) -> int:
    """
    The most connections a worker may hold while its least busy sibling
    holds C{least}.
    """
    return least + max(BALANCE_SLACK, least // 4)


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
        self.closing = False
        #: Stopping: accepting what is queued, then closing.
        self.draining = False
        self._whenClosed: list[Deferred[None]] = []
        #: A standby worker's budget: no room at all until L{release}.
        self.held = False
        self._onExhausted = onExhausted
        self._onIdle = onIdle
        self._onAccepted = onAccepted
        self.ports: list[BudgetedTCPPort | BudgetedUNIXPort] = []
        #: Seconds an accepted connection may stay silent; 0 for ever.
        self.firstByteTimeout = 0.0
        #: Connections aborted for staying silent that long.
        self.firstByteTimeouts = 0
        #: The master's load board and this worker's slot on it, if it
        #: keeps one (L{shareLoad}).
        self.board: LoadBoard | None = None
        self.slot = 0
        #: The least busy sibling (slot, count) this worker waits for; the
        #: one it last waited for a whole L{BALANCE_WAIT}, and how many
        #: whole waits in a row that sibling has not moved.
        self._waitingFor: tuple[int, int] | None = None
        self._waitedFor: tuple[int, int] | None = None
        self._stillWaits = 0
        #: When the last few connections closed (C{time.monotonic()}).
        self._closedAt: deque[float] = deque(maxlen=CHURN_CLOSES)

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
        self.board = board
        self.slot = slot
        self._publish()

    def _publish(self) -> None:
        """
        Tell the siblings how many connections this worker holds, or that
        it takes none (held, closing, or draining at a stop, when balance
        no longer matters).
        """
        if self.board is not None:
            accepting = not (self.closing or self.held or self.draining)
            self.board.publish(self.slot, self.open if accepting else ABSENT)

    def balanceRoom(self) -> int | None:
        """
        How many connections this worker may accept before it holds clearly
        more than its least busy sibling: L{None} for no limit (no board, no
        sibling accepting, or connections closing here as they come, see
        L{BALANCE_QUIET}), 0 to leave the next connections to the siblings
        for a moment.  If the least busy one has not moved during
        L{BALANCE_PATIENCE} whole waits, it is not accepting (stuck in the
        application, or never woken for what is queued): this worker goes
        on without waiting, a few connections per turn of its reactor, so
        that sibling still gets its share once it moves.
        """
        board = self.board
        if board is None or self.draining:
            # At a stop, what is queued is served by whoever has room.
            return None
        closedAt = self._closedAt
        if (
            len(closedAt) == CHURN_CLOSES
            and time.monotonic() - closedAt[0] < BALANCE_QUIET
        ):
            # Connections come and go here (a connection-rate load): where
            # they land now says nothing of the load a moment later, and
            # the kernel's wake-ups already spread them; waiting would only
            # cost accepts.
            return None
        if self.open < BALANCE_SLACK:
            # Within the margin whatever the siblings hold: no need to read
            # the board (the common case under short connections).
            return BALANCE_SLACK - self.open
        least = board.leastBusy(self.slot)
        if least is None:
            return None
        room = balanceMargin(least[1]) - self.open
        if room > 0:
            return room
        if least == self._waitedFor and self._stillWaits >= BALANCE_PATIENCE:
            return BALANCE_SLACK
        self._waitingFor = least
        return 0

    def balanceWaitOver(self) -> None:
        """
        This worker left the sockets to its siblings for a whole
        L{BALANCE_WAIT} (not cut short by one of its own connections
        closing): the sibling it waited for has had its chance.
        """
        if self._waitingFor == self._waitedFor:
            self._stillWaits += 1
        else:
            self._waitedFor = self._waitingFor
            self._stillWaits = 1

    def recordAccepted(self, count: int) -> None:
        if not count:
            return
        self.accepted += count
        self.open += count
        self._publish()
        self._onAccepted()
        if self.room() == 0:
            self._pauseAll()
        if self.exhausted() and not self.draining:
            self.closing = True
            self._onExhausted()

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

    def recordClosed(self) -> None:
        self.open -= 1
        self._closedAt.append(time.monotonic())
        self._publish()
        for port in self.ports:
            if port._balanceWait is not None:
                # Leaving the queue to the siblings is for connections that
                # stay: one closing here says this worker has room again.
                port._endBalanceWait()
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

    def _pauseAll(self) -> None:
        for port in self.ports:
            port.stopReading()  # type: ignore[no-untyped-call]

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

    def _closePorts(self, ports: list[BudgetedTCPPort | BudgetedUNIXPort]) -> None:
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


class _CountsClose:
    """
    A server transport that tells its port's budget when it closes: a
    counter at the transport costs nothing per byte, unlike wrapping every
    protocol.

    It also keeps the first-byte timeout (C{--first-byte-timeout}): a
    connection whose client sends nothing within it is aborted.  It is
    timed here, below TLS and the PROXY header, so that the first byte is
    whatever the client sends first (a handshake, a header), and it costs
    nothing once that byte came: until then the instance's own
    C{_dataReceived} (through which Twisted's TCP and UNIX C{doRead} pass
    every read) shadows the class's, and the first read removes it.
    """

    server: Any
    reactor: Any
    _silence: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        timeout = self.server.budget.firstByteTimeout
        if timeout:
            self._silence = self.reactor.callLater(timeout, self._silent)
            self._dataReceived = self._firstData

    def _firstData(self, data: bytes | None) -> Any:
        del self._dataReceived
        self._stopSilenceTimer()
        return self._dataReceived(data)

    def _stopSilenceTimer(self) -> None:
        silence, self._silence = self._silence, None
        if silence is not None and silence.active():
            silence.cancel()

    def _silent(self) -> None:
        self._silence = None
        self.__dict__.pop("_dataReceived", None)
        self.server.budget.firstByteTimeouts += 1
        self.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure) -> None:
        if self._silence is not None:
            # Closed before its first byte, within the timeout.
            self._stopSilenceTimer()
            self.__dict__.pop("_dataReceived", None)
        try:
            super().connectionLost(reason)  # type: ignore[misc]
        finally:
            budget: AcceptBudget = self.server.budget
            budget.recordClosed()


class _SendsAtOnce:
    """
    A server transport that sends what it is given at once when nothing is
    waiting to be sent before it.

    Twisted's C{write} only buffers and registers the descriptor for
    writing; the bytes leave on the reactor's next turn, when epoll reports
    the socket writable, which it nearly always already is.  For a
    response that fits the socket's buffer that is two C{epoll_ctl} calls
    and one more dispatch per response.  Here the write is tried first:
    whatever the kernel does not take (or everything, on any error, which
    the reactor's own write path will meet again and report as usual) is
    buffered the Twisted way, so the order of bytes, producers and
    C{connectionLost} never run from inside C{write} all stay as they are.

    A connection closed with nothing left to send does not register for
    writing to hear, a turn of the reactor later, that its socket is
    writable: in the worker's reactor (L{preforktwist.worker.dispatch}) it
    asks to be dispatched as writable at the end of the current turn,
    which closes it then (C{loseConnection} still never closes from inside
    the protocol's call, as Twisted promises).  One epoll registration for
    writing, its removal and one event less per connection closed by the
    server.  Anything written after C{loseConnection}, or a producer still
    registered, is left to Twisted's own path, which waits for both.

    Once C{startTLS} has run (C{TLS} set: a STARTTLS protocol on a plain
    listener), writes and the close go through Twisted's path, which hands
    them to the TLS layer; that layer sends and closes through
    C{FileDescriptor}'s own methods, past these.
    """

    TLS: bool = False
    connected: int
    disconnecting: int
    _writeDisconnected: bool
    _writeDisconnecting: bool
    dataBuffer: bytes
    offset: int
    _tempDataLen: int
    producer: Any
    socket: socket.socket
    reactor: Any

    def write(self, data: bytes) -> None:
        if (
            type(data) is bytes
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self.dataBuffer
            and not self._tempDataLen
        ):
            try:
                sent = self.socket.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)  # type: ignore[misc]

    def loseConnection(self) -> None:
        dispatchSoon = getattr(self.reactor, "dispatchWritableSoon", None)
        if (
            dispatchSoon is None
            or self.TLS
            or not self.connected
            or self.disconnecting
            or self._writeDisconnected
            or self._writeDisconnecting
            or self._hasBuffered()
            or self.producer is not None
        ):
            super().loseConnection()  # type: ignore[misc]
            return
        # Twisted's loseConnection, without registering for writing.
        self.stopReading()  # type: ignore[attr-defined]
        self.disconnecting = 1
        dispatchSoon(self)

    def _hasBuffered(self) -> bool:
        return bool(len(self.dataBuffer) - self.offset or self._tempDataLen)

    def doWrite(self) -> Any:
        if self.disconnecting and not self._hasBuffered() and self.producer is None:
            self.stopWriting()  # type: ignore[attr-defined]
            return self._postLoseConnection()  # type: ignore[attr-defined]
        why = super().doWrite()  # type: ignore[misc]
        if not why and self.connected and self._hasBuffered():
            # Dispatched as writable without a registration (above), and
            # the kernel did not take it all: wait for it the Twisted way.
            # (A no-op when registered already, as after a poll.)
            self.startWriting()  # type: ignore[attr-defined]
        return why


class CountedTCPServer(_CountsClose, _SendsAtOnce, tcp.Server):
    pass


class CountedUNIXServer(_CountsClose, _SendsAtOnce, unix.Server):
    pass


class _NoticeEMFILE:
    """
    Stands in for Twisted's reserved file descriptor, in the workers.

    When C{accept} fails with EMFILE, Twisted's accept loop frees a
    descriptor it kept in reserve, then accepts every queued connection and
    closes it at once: those clients lose their connections, which a
    sibling worker with descriptors to spare could have served.  With no
    reserve available, the loop just stops; this notes that it happened,
    and the port pauses instead (L{_BudgetedPortMixin.doRead}).
    """

    def __init__(self) -> None:
        self.hit = False

    def reserve(self) -> None:
        pass

    def available(self) -> bool:
        self.hit = True
        return False


_emfile = _NoticeEMFILE()

#: Seconds a worker out of file descriptors leaves the queue to others.
EMFILE_PAUSE = 0.25


class _BudgetedPortMixin:
    """
    The clamp on C{doRead}, shared by the TCP and UNIX ports.
    """

    budget: AcceptBudget
    sessionno: int
    reactor: Any
    fileno: Callable[[], int]
    _batch: int = 100
    #: Register exclusively (decided when the port is adopted).
    _exclusive: bool = False
    #: Re-add the exclusive registration after this many accepts; 0 never.
    _reorderEvery: int = DEFAULT_ACCEPT_REORDER
    #: Accepts since the registration was last added.
    _sinceAdded: int = 0
    #: What L{AcceptBudget.balanceRoom} allows during one C{doRead}.
    _balanceRoom: int | None = None
    #: The end of a wait for the siblings (L{BALANCE_WAIT}), while it runs.
    _balanceWait: Any = None

    def startReading(self) -> None:
        if not self._exclusive:
            super().startReading()  # type: ignore[misc]
            return
        reactor = self.reactor
        assert _EPOLLEXCLUSIVE is not None
        if self.fileno() in reactor._reads:
            return
        try:
            # Twisted's own bookkeeping, with our flags.  A port never
            # writes, so this is always EPOLL_CTL_ADD, never a modify.
            reactor._add(
                self,
                reactor._reads,
                reactor._writes,
                reactor._selectables,
                select.EPOLLIN | _EPOLLEXCLUSIVE,
                select.EPOLLOUT,
            )
        except OSError as e:
            # A kernel older than 4.5 says EINVAL: wait the plain way.
            _log.info(
                "exclusive wake-ups refused ({error}); using plain epoll", error=e
            )
            self._exclusive = False
            super().startReading()  # type: ignore[misc]
            return
        self._sinceAdded = 0

    def _reorder(self, accepted: int) -> None:
        """
        After every C{_reorderEvery} accepts, delete and re-add the
        registration: the kernel wakes exclusive waiters in queue order, so
        this hands the next connections to the siblings.
        """
        self._sinceAdded += accepted
        if (
            self._reorderEvery
            and self._sinceAdded >= self._reorderEvery
            and self.fileno() in self.reactor._reads
        ):
            self.reactor.removeReader(self)
            self.startReading()

    @property
    def numberAccepts(self) -> int:
        budget = self.budget
        room = budget.room()
        batch = min(self._batch, budget.batch) if budget.batch else self._batch
        if self._balanceRoom is not None:
            batch = min(batch, self._balanceRoom)
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
        balance = self.budget.balanceRoom()
        if balance == 0:
            self._leaveToSiblings()
            return
        self._balanceRoom = balance
        before = self.sessionno
        _emfile.hit = False
        try:
            super().doRead()  # type: ignore[misc]
        finally:
            self._balanceRoom = None
        accepted = self.sessionno - before
        self.budget.recordAccepted(accepted)
        if self._exclusive and accepted:
            self._reorder(accepted)
        if _emfile.hit:
            self._outOfDescriptors()

    def _leaveToSiblings(self) -> None:
        """
        This worker holds clearly more than a sibling that is accepting:
        stop waiting on the socket for L{BALANCE_WAIT} seconds, so that the
        kernel wakes the siblings for what comes meanwhile.
        """
        self.stopReading()  # type: ignore[attr-defined]
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
        self.stopReading()  # type: ignore[attr-defined]
        if not getattr(self, "_emfileLogged", False):
            self._emfileLogged = True
            _log.error(
                "out of file descriptors (EMFILE) with {open} connections open: "
                "leaving queued connections to the other workers; raise "
                "'ulimit -n' or lower --max-concurrent",
                open=self.budget.open,
            )
        reactor: Any = getattr(self, "reactor", None)
        if reactor is not None:
            reactor.callLater(EMFILE_PAUSE, self._resume)

    def cancelBalanceWait(self) -> None:
        wait, self._balanceWait = self._balanceWait, None
        if wait is not None and wait.active():
            wait.cancel()

    def _endBalanceWait(self) -> None:
        self.cancelBalanceWait()
        self._resume()

    def _resume(self) -> None:
        if getattr(self, "connected", False) and self.budget.room() != 0:
            self.startReading()

    def drainQueue(self) -> bool:
        """
        Accept what the kernel has queued, until it has nothing more or the
        budget has no more room.

        @return: whether the queue is empty.
        """
        while self.budget.room() != 0 and getattr(self, "connected", False):
            before = self.sessionno
            self.doRead()
            if self.sessionno == before:
                return True
        return False


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
        self.fileno = skt.fileno
        self.numberAccepts = 100
        self.startReading()

    def connectionLost(self, reason: Failure) -> None:
        # Skip unix.Port's unlink of the path: the master owns the file.
        tcp.Port.connectionLost(self, reason)


def adoptListener(
    reactor: IReactorFDSet,
    fd: int,
    family: int,
    factory: IProtocolFactory,
    budget: AcceptBudget,
    wakeup: str = ACCEPT_WAKEUPS[0],
    reorder: int = DEFAULT_ACCEPT_REORDER,
) -> BudgetedTCPPort | BudgetedUNIXPort:
    """
    Start accepting on an inherited, listening, non-blocking socket, within
    C{budget}.  The port works on a duplicate of C{fd}; the caller may close
    C{fd} afterwards.

    @param wakeup: one of L{ACCEPT_WAKEUPS} (C{--accept-wakeup}).
    @param reorder: re-add an exclusive registration after this many
        accepts; 0 never (C{--accept-reorder}).
    """
    # Twisted's accept loop reaches its reserved descriptor through this
    # module attribute; in a worker, ours notices EMFILE instead.
    tcp._reservedFD = _emfile  # type: ignore[assignment]
    port: Any
    if family == socket.AF_UNIX:
        port = BudgetedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    else:
        port = BudgetedTCPPort._fromListeningDescriptor(reactor, fd, family, factory)
    port.budget = budget
    port._exclusive = exclusiveWakeups(reactor, wakeup)
    port._reorderEvery = reorder
    budget.ports.append(port)
    port.startListening()
    if budget.room() == 0:
        port.stopReading()
    return port  # type: ignore[no-any-return]
