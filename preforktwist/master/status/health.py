"""
Health checks for orchestrators, under Kubernetes' own names: C{/readyz}
(send me traffic?) and C{/livez} (am I alive, or should I be restarted?).

Readiness is what a load balancer or a Kubernetes Service acts on: 200 once
the pool has had all its wanted workers accepting, for as long as at least
one of them still accepts and no stop has begun; 503 before that, and from
the very moment a stop begins (C{SIGTERM}), before the workers drain the
queue and long before the listening sockets close, so that traffic moves
elsewhere while this instance finishes what it has.  A crashed worker or a
reload (failed or not) leaves the other workers serving, so it does not
make the instance unready: taking a whole instance out of rotation for
one replacement would turn a small fault into a big one.

Liveness is answered by the master's reactor itself, with nothing else
consulted: if it answers, the reactor turns; if the reactor is stuck, the
probe times out, which is what the orchestrator counts as a failure.  It
stays 200 while the instance drains: killing a draining master would cut
the connections it is finishing.
"""

from __future__ import annotations

from preforktwist.master.events import PoolEvent, PoolReady, PoolStopping
from preforktwist.master.pool import Pool, WorkerState


class Readiness:
    """
    Follows the pool's events to tell whether this instance should get
    traffic.
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.everReady = False
        self.stopping = False
        #: A new master serves this instance's sockets now (a hot upgrade),
        #: and this one only finishes what it has.
        self.handedOver = False
        pool.observers.append(self._event)

    def _event(self, event: PoolEvent) -> None:
        if isinstance(event, PoolReady):
            self.everReady = True
        elif isinstance(event, PoolStopping):
            self.stopping = True

    def check(self) -> tuple[bool, str]:
        """
        @return: whether the instance is ready, and why, in a few words.
        """
        pool = self.pool
        if self.handedOver:
            return True, "handed over to the new master"
        accepting = len(pool.inState(WorkerState.ACCEPTING))
        if self.stopping or (self.everReady and not pool.running):
            return False, "stopping"
        if not self.everReady:
            return False, f"starting: {accepting} of {pool.size} workers accepting"
        if accepting == 0:
            return False, f"no worker accepting (0 of {pool.size})"
        return True, f"{accepting} of {pool.size} workers accepting"


def ready(readiness: Readiness) -> tuple[int, str]:
    """
    C{/readyz}'s answer: 200 or 503, and why.
    """
    isReady, why = readiness.check()
    return (200 if isReady else 503), f"{'ok' if isReady else 'not ready'}: {why}"


def live() -> tuple[int, str]:
    """
    C{/livez}'s answer: that the master's reactor turned to give it.
    """
    return 200, "ok: the master's reactor answered"
