"""
Balance between sibling workers, whoever the kernel wakes.

The kernel knows nothing of the connections each worker already holds: a
burst of connections that arrive together goes to the first worker awake,
which takes a whole batch before its siblings are scheduled, and
long-lived connections stay where they landed.  So each worker publishes
its open count on the master's L{LoadBoard}, and a worker holding clearly
more than its least busy sibling takes only what keeps it within that
margin, then leaves the sockets to its siblings for L{BALANCE_WAIT}
seconds.  It waits only for a sibling that will accept.  A sibling's
count moves only between turns of its reactor, and a turn can be long (a
burst's handshakes, a machine with more work than cores): so a sibling
whose count stands still is waited for while the kernel says it runs or
waits for a core, up to a bound, and not after a wait it slept through
(blocked in the application, or idle in C{epoll_wait}, never woken for
what is queued).  Nor does a worker whose connections close as they come
(a connection-rate load) weigh anything: counts that change by the
microsecond say nothing of load, and waiting would only cost accepts.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

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

#: Seconds a worker waits at most for a sibling whose count does not move
#: though the kernel says it runs or waits for a core: one busy through a
#: long turn of its reactor (a burst's handshakes, a machine with more
#: work than cores) accepts at that turn's end, but one stuck in
#: CPU-bound application code does not.
BALANCE_PATIENCE = 0.5

#: A sibling that sleeps at the end of a wait, having spent less than this
#: part of it running or waiting for a core, is blocked in the application
#: or idle in C{epoll_wait} without having been woken for what is queued
#: (with exclusive wake-ups the kernel wakes a sibling only when a
#: connection arrives), and will not accept it: it is not waited for
#: again.  One that ran through most of the wait and sleeps only now
#: (briefly blocked in a busy turn) is.
RUNNABLE_SHARE = 0.5

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


class Scheduled(NamedTuple):
    """
    What the kernel says of a process: whether it is running or waiting
    for a core now, and the seconds it has spent so.  The seconds lag by up
    to a scheduler tick while it runs, and are exact while it sleeps.
    """

    runnable: bool
    runnableTime: float


def _readProc(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 1024)
    except OSError:
        return None
    finally:
        os.close(fd)


def scheduled(pid: int) -> Scheduled | None:
    """
    What Linux's C{/proc/PID/stat} (the state) and C{/proc/PID/schedstat}
    (time on a core, time waiting for one) say of the process C{pid};
    L{None} if either cannot be read (no such process, no such file).
    """
    stat = _readProc(f"/proc/{pid}/stat")
    times = _readProc(f"/proc/{pid}/schedstat")
    if stat is None or times is None:
        return None
    try:
        # The state follows the command, which may hold spaces and parens.
        state = stat[stat.rindex(b")") + 2 :].split()[0]
        onCore, waiting = times.split()[:2]
        return Scheduled(state == b"R", (int(onCore) + int(waiting)) / 1e9)
    except (IndexError, ValueError):
        return None


class _Watch:
    """
    A sibling this worker steps back for, while its count stays what it
    was: how long this worker has waited for it, and how much of the
    current wait it spent runnable.

    @ivar sibling: its slot and count on the board.
    @ivar pid: its process id (0: not known).
    @ivar waited: seconds of whole waits spent on it so far.
    @ivar givenUp: it is taken as not accepting, and not waited for again
        until its count moves.
    """

    def __init__(self, sibling: tuple[int, int], pid: int) -> None:
        self.sibling = sibling
        self.pid = pid
        self.waited = 0.0
        self.givenUp = False
        #: When the current wait began, and the sibling's state then.
        self.start: tuple[float, Scheduled | None] | None = None


class Balance:
    """
    One worker's place on the load board, and what it may accept in view
    of its siblings' counts.

    @ivar board: the master's load board, once L{share} was called.
    @ivar slot: this worker's slot on it.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        scheduler: Callable[[int], Scheduled | None] = scheduled,
    ) -> None:
        """
        @param clock: the time in seconds (C{time.monotonic}).
        @param scheduler: what the kernel says of a process, by its pid
            (L{scheduled}).
        """
        self.board: LoadBoard | None = None
        self.slot = 0
        self._clock = clock
        self._scheduler = scheduler
        #: The sibling this worker steps back for, while its count stays
        #: and this worker has no room.
        self._watch: _Watch | None = None
        #: When the last few connections closed.
        self._closedAt: deque[float] = deque(maxlen=CHURN_CLOSES)

    def share(self, board: LoadBoard, slot: int, pid: int) -> None:
        """
        Publish this worker's count in C{slot} of C{board} from now on, and
        C{pid} as the slot's owner.
        """
        self.board = board
        self.slot = slot
        board.claim(slot, pid)

    def publish(self, open: int | None) -> None:
        """
        Tell the siblings how many connections this worker holds; L{None}:
        it takes none (held, closing, draining at a stop).
        """
        if self.board is not None:
            self.board.publish(self.slot, ABSENT if open is None else open)

    def closed(self) -> None:
        """
        One of this worker's connections closed.
        """
        self._closedAt.append(self._clock())

    def churning(self) -> bool:
        """
        Whether connections come and go here (a connection-rate load):
        where they land now says nothing of the load a moment later.
        """
        closedAt = self._closedAt
        return (
            len(closedAt) == CHURN_CLOSES
            and self._clock() - closedAt[0] < BALANCE_QUIET
        )

    def room(self, open: int) -> int | None:
        """
        How many connections a worker holding C{open} may accept before it
        holds clearly more than its least busy sibling: L{None} for no
        limit (no board, no sibling accepting, or churning), 0 to leave the
        next connections to the siblings for a moment.  A sibling given up
        for (see L{waitOver}) is not waited for: this worker goes on
        without waiting, a few connections per turn of its reactor, so that
        the sibling still gets its share once it moves.
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
            self._watch = None
            return room
        watch = self._watch
        if watch is None or watch.sibling != least:
            watch = self._watch = _Watch(least, board.owner(least[0]))
        if watch.givenUp:
            return BALANCE_SLACK
        watch.start = (self._clock(), self._scheduled(watch.pid))
        return 0

    def waitOver(self) -> None:
        """
        This worker left the sockets to its siblings for a whole
        L{BALANCE_WAIT} (not cut short by one of its own connections
        closing), and the sibling it waited for had its chance.  If that
        sibling's count has not moved, it is given up for when it is
        asleep and slept through most of the wait (L{RUNNABLE_SHARE}), or
        when this worker has waited L{BALANCE_PATIENCE} for it though it
        ran: the kernel knows a sibling that is busy, or waits for a core,
        from one that will not accept.
        """
        watch, board = self._watch, self.board
        if watch is None or board is None or watch.start is None:
            return
        (began, then), watch.start = watch.start, None
        slot, count = watch.sibling
        if board.value(slot) != count:
            return
        now = self._clock()
        watch.waited += now - began
        watch.givenUp = watch.waited >= BALANCE_PATIENCE or _slept(
            then, self._scheduled(watch.pid), now - began
        )

    def _scheduled(self, pid: int) -> Scheduled | None:
        return self._scheduler(pid) if pid > 0 else None


def _slept(then: Scheduled | None, now: Scheduled | None, seconds: float) -> bool:
    """
    Whether a process seen as C{then}, and C{seconds} later as C{now},
    slept through most of that time and sleeps still; not if either view
    is missing.
    """
    if then is None or now is None or now.runnable:
        return False
    return now.runnableTime - then.runnableTime < RUNNABLE_SHARE * seconds
