"""
The load board: how many connections each accepting worker holds open,
in a small shared memory that every worker reads and writes without a
system call.

Why: the kernel hands a connection to whichever waiting worker it wakes,
and knows nothing of what each already holds.  Connections that arrive
together (a load balancer's pool, WebSocket clients after a deploy, wrk's
fifty) are taken by the first worker awake, which accepts a whole batch
before its siblings are even scheduled; for long-lived connections that
imbalance lasts as long as they do.  Apache keeps its scoreboard in shared
memory for this reason, and Puma's busy workers wait before accepting.
Here each worker publishes its count, and one that holds clearly more than
its least busy sibling leaves the next connections to it (see
L{preforktwist.worker.balance}).

Layout: a memory file (C{memfd_create}) of 32-bit signed integers.  Index
0 holds how many slots are in use (the highest slot given out, plus one),
so that a worker reads only those; slot C{i} is at index C{i + 1} and
holds that worker's open connections, or L{ABSENT} when no accepting
worker owns it.  After the counts, one word per slot holds the pid of the
worker that owns it (0 for none), so that a worker waiting for a sibling
can ask the kernel whether that sibling is running.  The master creates
the file, gives each worker a slot, passes the descriptor after the
listening sockets, and clears the slot of a worker that is gone.  Each
slot has one writer (its worker, or the master once it is gone), and a
torn read cannot happen for an aligned 32-bit word, so no lock is needed:
a stale count only makes one decision a little less fair.
"""

from __future__ import annotations

import mmap
import os

#: The value of a slot that no accepting worker owns.
ABSENT = -1

_WORD = 4


def _words(capacity: int) -> int:
    """
    The words of a board of C{capacity} slots: slots in use, the counts,
    the owners' pids.
    """
    return 1 + 2 * capacity


def available() -> bool:
    """
    Whether this platform can make a load board (Linux's C{memfd_create}).
    """
    return hasattr(os, "memfd_create")


class LoadBoard:
    """
    One process's view of the board.

    @ivar fd: the memory file's descriptor, or C{None} once closed (a worker
        closes it as soon as it has mapped the memory).
    @ivar capacity: how many slots the board has.
    """

    def __init__(self, fd: int, capacity: int) -> None:
        self.fd: int | None = fd
        self.capacity = capacity
        self._map = mmap.mmap(fd, _words(capacity) * _WORD)
        self._words = memoryview(self._map).cast("i")

    @classmethod
    def create(cls, capacity: int) -> LoadBoard:
        """
        A new board, every slot absent (the master's side).  Its
        descriptor is passed to the workers like the listening sockets.
        """
        fd = os.memfd_create("preforktwist-loadboard")
        # The file starts zeroed: every pid 0.
        os.ftruncate(fd, _words(capacity) * _WORD)
        board = cls(fd, capacity)
        board.clearAll()
        return board

    def clearAll(self) -> None:
        """
        Mark every slot absent.
        """
        capacity = self.capacity
        self._words[1 : capacity + 1] = memoryview(
            bytes([0xFF]) * capacity * _WORD
        ).cast("i")

    @classmethod
    def attach(cls, fd: int) -> LoadBoard:
        """
        Map a board passed as C{fd} (the worker's side), then close C{fd}:
        the mapping outlives it.
        """
        capacity = (os.fstat(fd).st_size // _WORD - 1) // 2
        board = cls(fd, capacity)
        os.close(fd)
        board.fd = None
        return board

    # The master's side.

    def allot(self, taken: set[int]) -> int:
        """
        The lowest slot not in C{taken}, marked in use (absent until its
        worker publishes).

        @raise ValueError: when every slot is taken.
        """
        for slot in range(self.capacity):
            if slot not in taken:
                self._words[slot + 1] = ABSENT
                self._words[0] = max(self._words[0], slot + 1)
                return slot
        raise ValueError("every slot of the load board is taken")

    def clear(self, slot: int) -> None:
        """
        The worker owning C{slot} is gone: it counts no more.
        """
        self._words[slot + 1] = ABSENT
        self._words[self.capacity + slot + 1] = 0

    # A worker's side.

    def publish(self, slot: int, value: int) -> None:
        """
        Say how many connections the worker in C{slot} holds open, or
        L{ABSENT} while it does not accept.
        """
        self._words[slot + 1] = value

    def value(self, slot: int) -> int:
        return self._words[slot + 1]

    def claim(self, slot: int, pid: int) -> None:
        """
        Say that the worker with process id C{pid} owns C{slot}.
        """
        self._words[self.capacity + slot + 1] = pid

    def owner(self, slot: int) -> int:
        """
        The pid of the worker that owns C{slot}; 0 if none said so.
        """
        return self._words[self.capacity + slot + 1]

    def leastBusy(self, slot: int) -> tuple[int, int] | None:
        """
        The accepting worker other than the one in C{slot} that holds the
        fewest connections, as (its slot, its count); C{None} if there is
        no other.
        """
        inUse = self._words[0]
        least: tuple[int, int] | None = None
        for other, count in enumerate(self._words[1 : inUse + 1].tolist()):
            if (
                other != slot
                and count != ABSENT
                and (least is None or count < least[1])
            ):
                least = (other, count)
        return least

    def close(self) -> None:
        self._words.release()
        self._map.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
