"""
An adaptive pool: more workers while clients wait, fewer when there is
sustained slack (C{--min-workers}, C{--max-workers}).

An event-loop worker is never simply "busy" or "idle", so the signal that
matters is the one that means "clients are waiting": the depth of the
shared socket's accept queue, which grows only when no worker takes
connections fast enough (every worker at its C{--max-concurrent} cap, or
too busy to return to its reactor).  The rules:

 - Up: connections have been waiting in the queue at every sample for
   C{upAfter} seconds (a sustained queue, not one spike): one worker more.
 - Down: for C{downAfter} seconds, nothing waited, the workers' CPU stayed
   below C{idleCPU}, and (with a cap) one worker fewer would still leave
   half the capacity free: one worker fewer, retired gracefully.
 - Never below C{minimum} or above C{maximum}, and never two changes
   within C{cooldown} seconds: with the up and down conditions far apart,
   a steady load at the threshold does not flap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from preforktwist.common.logs import NamedLogger
from preforktwist.master.listeners import Listener, listenQueue
from preforktwist.master.periodic import PeriodicService
from preforktwist.master.pool import Pool, WorkerState
from preforktwist.master.procfs import cpuSeconds
from preforktwist.master.status.saturation import workerCap


@dataclass(frozen=True)
class Sample:
    """
    What the autoscaler looks at, once per interval.

    @ivar queued: connections waiting in the listening sockets' queues.
    @ivar open: connections open in the accepting workers.
    @ivar capacity: connections the accepting workers may hold, in all
        (their C{--max-concurrent} caps); 0 without a cap.
    @ivar accepting: workers accepting.
    @ivar cpu: the accepting workers' mean CPU use, 0 to 1.
    """

    queued: int
    open: int
    capacity: int
    accepting: int
    cpu: float


@dataclass
class Decision:
    time: float
    size: int
    reason: str


class Autoscaler(PeriodicService):
    """
    Resizes the pool by the rules above, looking at a L{Sample} every
    C{interval} seconds while it runs as a service.
    """

    log = NamedLogger("preforktwist.autoscale.Autoscaler")

    def __init__(
        self,
        pool: Pool,
        clock: IReactorTime,
        sample: Callable[[], Sample],
        minimum: int,
        maximum: int,
        interval: float = 0.5,
        upAfter: float = 2.0,
        downAfter: float = 10.0,
        cooldown: float = 5.0,
        idleCPU: float = 0.25,
    ) -> None:
        super().__init__(interval, self.tick, clock)
        self.pool = pool
        self._sample = sample
        self.minimum = minimum
        self.maximum = maximum
        self.upAfter = upAfter
        self.downAfter = downAfter
        self.cooldown = cooldown
        self.idleCPU = idleCPU
        self.decisions: list[Decision] = []
        self._waitingSince: float | None = None
        self._slackSince: float | None = None
        self._lastChange = -cooldown

    def startService(self) -> None:
        # No change within the cooldown of the start: the pool is still
        # booting its first workers.
        self._lastChange = self.clock.seconds()
        super().startService()

    def _slack(self, s: Sample) -> bool:
        if s.queued or s.cpu >= self.idleCPU:
            return False
        if s.capacity and s.accepting > 1:
            perWorker = s.capacity / s.accepting
            return s.open <= perWorker * (s.accepting - 1) / 2
        return True

    def tick(self) -> None:
        if not self.pool.running:
            return
        s = self._sample()
        now = self.clock.seconds()
        if s.queued:
            self._slackSince = None
            if self._waitingSince is None:
                self._waitingSince = now
        elif self._slack(s):
            self._waitingSince = None
            if self._slackSince is None:
                self._slackSince = now
        else:
            self._waitingSince = self._slackSince = None
        if now - self._lastChange < self.cooldown:
            return
        size = self.pool.size
        if (
            self._waitingSince is not None
            and now - self._waitingSince >= self.upAfter
            and size < self.maximum
        ):
            self._change(
                size + 1,
                f"{s.queued} connections waiting for {now - self._waitingSince:.1f}s",
            )
        elif (
            self._slackSince is not None
            and now - self._slackSince >= self.downAfter
            and size > self.minimum
        ):
            self._change(
                size - 1,
                f"slack for {now - self._slackSince:.1f}s: nothing waiting, "
                f"{s.open} open, CPU {s.cpu:.0%}",
            )

    def _change(self, size: int, reason: str) -> None:
        now = self.clock.seconds()
        self.log.info(
            "autoscale: {old} -> {new} workers ({reason})",
            old=self.pool.size,
            new=size,
            reason=reason,
        )
        self.decisions.append(Decision(now, size, reason))
        del self.decisions[:-20]
        self.pool.resize(size)
        self._lastChange = now
        self._waitingSince = self._slackSince = None


class PoolSampler:
    """
    Takes L{Sample}s of a real pool: the queues from the kernel, the open
    counts the workers report, their CPU use from C{/proc}.
    """

    def __init__(
        self, pool: Pool, listeners: Sequence[Listener], clock: IReactorTime
    ) -> None:
        self.pool = pool
        self.listeners = listeners
        self.clock = clock
        self._cpu: dict[int, tuple[float, float]] = {}

    def __call__(self) -> Sample:
        now = self.clock.seconds()
        accepting = self.pool.inState(WorkerState.ACCEPTING)
        queued = 0
        for listener in self.listeners:
            queue = listenQueue(listener.socket)
            queued += queue[0] if queue else 0
        busy = []
        seen: dict[int, tuple[float, float]] = {}
        for worker in accepting:
            used = cpuSeconds(getattr(worker, "pid", None))
            if used is None:
                continue
            seen[worker.number] = (now, used)
            if worker.number in self._cpu:
                then, before = self._cpu[worker.number]
                if now > then:
                    busy.append(min(1.0, (used - before) / (now - then)))
        self._cpu = seen
        capacity = sum(workerCap(w) for w in accepting)
        return Sample(
            queued=queued,
            open=sum(getattr(w, "open", 0) for w in accepting),
            capacity=capacity,
            accepting=len(accepting),
            cpu=sum(busy) / len(busy) if busy else 0.0,
        )
