"""
Saturation: every accepting worker at its C{--max-concurrent} cap.

Then no worker takes new connections: they wait in the listening sockets'
queue until a connection closes somewhere, and once the queue is full the
kernel drops new handshakes.  From outside, a saturated pool looks like a
hung server, so the master says so: in the status (C{saturated} and the
queue depth, in C{/status.json} and C{/metrics}) and in its log, one line
when it begins, one a minute while it lasts, one when it ends.

Read from what the master already knows: each worker's cap (it says so
when ready) and its open count (reported at least once a second), so the
flag lags the workers by up to their report interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime

from preforktwist.common.logs import NamedLogger
from preforktwist.master.listeners import Listener, listenQueue
from preforktwist.master.periodic import PeriodicService
from preforktwist.master.pool import Pool, WorkerState


def workerCap(worker: Any) -> int:
    """
    The cap on open connections a worker settled on; 0 for none or unknown.
    """
    return getattr(worker, "maxConcurrent", None) or 0


def atCap(worker: Any) -> bool:
    """
    Whether a worker holds as many connections as its cap allows, as it
    last reported.
    """
    cap = workerCap(worker)
    return bool(cap) and getattr(worker, "open", 0) >= cap


def isSaturated(pool: Pool) -> bool:
    """
    Whether the pool has workers accepting and every one is at its cap.
    A pool with none accepting (booting, all crashed) is not saturated:
    that is another trouble, with its own log lines.
    """
    accepting = pool.inState(WorkerState.ACCEPTING)
    return bool(accepting) and all(atCap(w) for w in accepting)


def queued(listeners: Sequence[Listener]) -> int | None:
    """
    Connections waiting in the listening sockets' queues, in all; C{None}
    if the kernel says for none of them (UNIX sockets).
    """
    depths = [listenQueue(listener.socket) for listener in listeners]
    known = [depth[0] for depth in depths if depth is not None]
    return sum(known) if known else None


class SaturationWatch(PeriodicService):
    """
    Logs saturation as it begins, every C{repeat} seconds while it lasts,
    and as it ends.  A pool that flaps in and out of saturation logs at most
    one beginning per C{repeat} seconds: the next line counts the others.

    @ivar since: when the current saturation began (clock seconds), or
        C{None}.
    """

    log = NamedLogger("preforktwist.pool.Pool")

    def __init__(
        self,
        pool: Pool,
        listeners: Sequence[Listener],
        clock: IReactorTime,
        interval: float = 1.0,
        repeat: float = 60.0,
    ) -> None:
        super().__init__(interval, self.check, clock)
        self.pool = pool
        self.listeners = listeners
        self.repeat = repeat
        self.since: float | None = None
        self._lastLine: float | None = None
        self._logged = False
        self._unlogged = 0

    def _mayLog(self, now: float) -> bool:
        return self._lastLine is None or now - self._lastLine >= self.repeat

    def check(self) -> None:
        now = self.clock.seconds()
        saturated = self.pool.running and isSaturated(self.pool)
        if saturated and self.since is None:
            self.since = now
            if self._mayLog(now):
                self._begins(now)
            else:
                self._unlogged += 1
        elif saturated and self._mayLog(now):
            assert self.since is not None
            self._lastLine = now
            self.log.warn(
                "still saturated after {seconds:.0f}s: {queued} connections "
                "waiting in the listen queue",
                seconds=now - self.since,
                queued=self._queued(),
            )
            self._logged = True
        elif not saturated and self.since is not None:
            if self._logged:
                self.log.info(
                    "no longer saturated, after {seconds:.1f}s",
                    seconds=now - self.since,
                )
            self.since = None
            self._logged = False

    def _queued(self) -> str:
        depth = queued(self.listeners)
        return "an unknown number of" if depth is None else str(depth)

    def _begins(self, now: float) -> None:
        caps = sorted({workerCap(w) for w in self.pool.inState(WorkerState.ACCEPTING)})
        again = (
            f" (saturated {self._unlogged} more times since the last line)"
            if self._unlogged
            else ""
        )
        self._unlogged = 0
        self._lastLine = now
        self._logged = True
        self.log.warn(
            "saturated: every accepting worker holds its --max-concurrent cap "
            "({caps} connections); {queued} connections wait in the listen queue "
            "and new clients wait until connections close{again}. Idle clients? "
            "Set --first-byte-timeout. Otherwise raise the hard open-file limit "
            "(ulimit -Hn, systemd LimitNOFILE=) or add workers.",
            caps="/".join(str(c) for c in caps),
            queued=self._queued(),
            again=again,
        )
