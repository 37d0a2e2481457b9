"""
The pool's invariants, stated once: what holds after each of its steps,
whatever happened to its workers.  The pool checks them after each step
and logs any that is broken; the tests check that none ever is.

 1. Nothing is started, and nothing accepts anew, while the pool stops:
    every worker is stopping or retiring.
 2. A step that adds a worker to those booting or accepting (it starts
    one, or activates a standby) ends with at most C{size + surplus} of
    them, C{size} the larger of the sizes before and after the step (the
    pool may hear of a shrink while it starts a worker).  A shrink alone
    may leave more booting: they are not killed, and none is added until
    the count is back within the bound.
 3. At most C{size} workers accept, outside a replacement: the workers
    whose replacement is wanted early (a reload, their memory or age) are
    the only ones beyond it.
 4. A replacement accepts before the worker it replaces stops accepting:
    a step in which the pool retires a worker to replace it leaves at
    least C{size} accepting (the smaller of the sizes before and after the
    step).
 5. A ready standby does not wait while a place is free: if fewer than
    C{size} workers serve, fewer than C{size + surplus} boot or accept and
    no failure holds starts back, no standby of the current generation is
    ready and idle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from preforktwist.master.events import RestartCause
from preforktwist.master.pool.roster import WorkerState

if TYPE_CHECKING:
    from preforktwist.master.pool.core import Pool

#: Why the pool retires a worker whose replacement it started first.
_REPLACED = frozenset({RestartCause.RELOAD, RestartCause.MEMORY, RestartCause.AGE})


@dataclass(frozen=True)
class Snapshot:
    """
    What the invariants compare a step's outcome with: the pool after the
    step before.
    """

    size: int = 0
    busy: frozenset[int] = frozenset()
    accepting: frozenset[int] = frozenset()

    @classmethod
    def of(cls, pool: Pool) -> Snapshot:
        roster = pool.roster
        return cls(
            pool.size,
            frozenset(w.number for w in roster.busy()),
            frozenset(w.number for w in roster.inState(WorkerState.ACCEPTING)),
        )


def _stopping(pool: Pool, before: Snapshot) -> str | None:
    if not pool.stopping:
        return None
    allowed = (WorkerState.STOPPING, WorkerState.RETIRING)
    wrong = [w for w in pool.workers.values() if w.state not in allowed]
    if not wrong:
        return None
    listed = ", ".join(f"{w.describe()} is {w.state.value}" for w in wrong)
    return f"the pool stops, yet {listed}"


def _bound(pool: Pool, before: Snapshot) -> str | None:
    busy = pool.roster.busy()
    added = [w for w in busy if w.number not in before.busy]
    bound = max(pool.size, before.size) + pool.config.surplus
    if added and len(busy) > bound:
        return (
            f"{len(busy)} booting or accepting once {added[0].describe()} "
            f"joined them, more than {bound}"
        )
    return None


def _accepting(pool: Pool, before: Snapshot) -> str | None:
    serving = pool.roster.serving()
    accepting = [w for w in serving if w.state is WorkerState.ACCEPTING]
    if len(accepting) > pool.size:
        return f"{len(accepting)} accepting and not being replaced, size {pool.size}"
    return None


def _replacedLast(pool: Pool, before: Snapshot) -> str | None:
    roster = pool.roster
    retired = [
        w
        for w in roster.inState(WorkerState.RETIRING)
        if w.number in before.accepting and roster.record(w).retiredFor in _REPLACED
    ]
    accepting = len(roster.inState(WorkerState.ACCEPTING))
    size = min(pool.size, before.size)
    if retired and accepting < size:
        return (
            f"{retired[0].describe()} was retired for its replacement with "
            f"{accepting} accepting, size {size}"
        )
    return None


def _standbyTakesOver(pool: Pool, before: Snapshot) -> str | None:
    roster = pool.roster
    held = pool.stopping or pool.gaveUp or pool.backoff.holding or pool.failures
    if held or len(roster.serving()) >= pool.size:
        return None
    if len(roster.busy()) >= pool.size + pool.config.surplus:
        return None
    idle = [
        w
        for w in roster.inState(WorkerState.STANDBY)
        if roster.record(w).generation == pool.generation
    ]
    if idle:
        return f"{idle[0].describe()} is ready and idle while a place is free"
    return None


#: Each invariant: what it finds broken, or C{None}.
INVARIANTS: tuple[Callable[[Pool, Snapshot], str | None], ...] = (
    _stopping,
    _bound,
    _accepting,
    _replacedLast,
    _standbyTakesOver,
)


class Invariants:
    """
    Checks the invariants after each step, against the step before.
    """

    def __init__(self) -> None:
        self._before = Snapshot()

    def check(self, pool: Pool) -> list[str]:
        """
        @return: what is broken, in words; empty if nothing is.
        """
        broken = [what for rule in INVARIANTS if (what := rule(pool, self._before))]
        self._before = Snapshot.of(pool)
        return broken
