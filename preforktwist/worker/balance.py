"""
Balance between sibling workers, whoever the kernel wakes.

The kernel knows nothing of the connections each worker already holds: a
burst of connections that arrive together goes to the first worker awake,
which takes a whole batch before its siblings are scheduled, and
long-lived connections stay where they landed.  So each worker publishes
its open count on the master's L{LoadBoard}, and a worker holding clearly
more than its least busy sibling takes only what keeps it within that
margin, then leaves the sockets to its siblings for L{BALANCE_WAIT}
seconds.  It waits only for a sibling that is making progress: one whose
count has not moved through several waits is stuck or was never woken,
and the queue is not left to it.  Nor does a worker whose connections
close as they come (a connection-rate load) weigh anything: counts that
change by the microsecond say nothing of load, and waiting would only
cost accepts.
"""

from __future__ import annotations

import time
from collections import deque

from preforktwist.protocol.loadboard import ABSENT, LoadBoard

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


class Balance:
    """
    One worker's place on the load board, and what it may accept in view
    of its siblings' counts.

    @ivar board: the master's load board, once L{share} was called.
    @ivar slot: this worker's slot on it.
    """

    def __init__(self) -> None:
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

    def share(self, board: LoadBoard, slot: int) -> None:
        """
        Publish this worker's count in C{slot} of C{board} from now on.
        """
        self.board = board
        self.slot = slot

    def publish(self, open: int | None) -> None:
        """
        Tell the siblings how many connections this worker holds; C{None}:
        it takes none (held, closing, draining at a stop).
        """
        if self.board is not None:
            self.board.publish(self.slot, ABSENT if open is None else open)

    def closed(self) -> None:
        """
        One of this worker's connections closed.
        """
        self._closedAt.append(time.monotonic())

    def churning(self) -> bool:
        """
        Whether connections come and go here (a connection-rate load):
        where they land now says nothing of the load a moment later.
        """
        closedAt = self._closedAt
        return (
            len(closedAt) == CHURN_CLOSES
            and time.monotonic() - closedAt[0] < BALANCE_QUIET
        )

    def room(self, open: int) -> int | None:
        """
        How many connections a worker holding C{open} may accept before it
        holds clearly more than its least busy sibling: C{None} for no
        limit (no board, no sibling accepting, or churning), 0 to leave the
        next connections to the siblings for a moment.  If the least busy
        one has not moved during L{BALANCE_PATIENCE} whole waits, it is not
        accepting: this worker goes on without waiting, a few connections
        per turn of its reactor, so that sibling still gets its share once
        it moves.
        """
        board = self.board
        if board is None or self.churning():
            return None
        if open < BALANCE_SLACK:
            # Within the margin whatever the siblings hold: no need to read
            # the board (the common case under short connections).
            return BALANCE_SLACK - open
        least = board.leastBusy(self.slot)
        if least is None:
            return None
        room = balanceMargin(least[1]) - open
        if room > 0:
            return room
        if least == self._waitedFor and self._stillWaits >= BALANCE_PATIENCE:
            return BALANCE_SLACK
        self._waitingFor = least
        return 0

    def waitOver(self) -> None:
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
