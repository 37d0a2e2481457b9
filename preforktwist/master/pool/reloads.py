"""
Rolling reloads as the pool counts them: generations of workers, and when
the starter reads the code anew.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from preforktwist.common.logs import NamedLogger
from preforktwist.master.events import (
    PoolEvent,
    ReloadFailed,
    ReloadFinished,
    ReloadStarted,
    RestartCause,
)
from preforktwist.master.pool.config import PoolConfig
from preforktwist.master.pool.roster import Roster, WorkerState


class Reloads:
    """
    A rolling reload replaces every worker by a fresh one, new first: at
    most C{surplus} old workers are marked for replacement at a time, and
    each retires only once its replacement accepts.  A boot failure stops
    the reload; the old workers keep serving.

    Reloads never stack.  One asked for while one is under way restarts
    it: a new generation, so that every worker started before the request
    is replaced too, each importing the user's code anew.  The starter is
    renewed (a new fork server, which reads the framework's code anew) at
    most once per C{renewInterval}: a request sooner than that runs on the
    starter as it is, and exactly one renewal, with a last pass over the
    workers, follows when the interval is over.  So a storm of SIGHUPs
    starts one fork server as it begins and one after it, however many
    signals come.

    @ivar generation: the generation of the workers started from now on.
    @ivar reloading: a reload is under way.
    """

    log = NamedLogger("preforktwist.pool.Pool")

    def __init__(
        self,
        roster: Roster,
        config: PoolConfig,
        clock: IReactorTime,
        renew: Callable[[], None],
        emit: Callable[[PoolEvent], None],
        wake: Callable[[], None],
    ) -> None:
        """
        @param renew: makes the starter read the code anew.
        @param emit: tells the pool's observers.
        @param wake: called when a renewal put off is due.
        """
        self.roster = roster
        self.config = config
        self.clock = clock
        self._renew = renew
        self._emit = emit
        self._wake = wake
        self.generation = 0
        self.reloading = False
        self._asked = False
        self._renewalDue = False
        self._lastRenewal: float | None = None
        #: The one renewal (and pass) due once the interval is over.
        self._pending: IDelayedCall | None = None

    def ask(self) -> None:
        """A reload is asked for."""
        self._asked = True

    def begin(self) -> None:
        """
        Begin a new generation if a reload was asked for or a renewal put
        off is due, renewing the starter first if the interval allows (or
        putting the renewal off until it does).
        """
        if not (self._asked or self._renewalDue):
            return
        now = self.clock.seconds()
        last, interval = self._lastRenewal, self.config.renewInterval
        if self._renewalDue or last is None or now - last >= interval:
            self._renewNow()
        elif self._pending is None:
            self._pending = self.clock.callLater(
                last + interval - now, self._renewalCame
            )
        self._asked = self._renewalDue = False
        self.generation += 1
        again = self.reloading
        self.reloading = True
        if not again:
            self._emit(ReloadStarted(at=now, generation=self.generation))
        self.log.info(
            "reload: replacing {n} workers, {batch} at a time{again}",
            n=len(self.roster.busy()),
            batch=self.config.surplus,
            again=" (a reload was under way: it starts over)" if again else "",
        )

    def advance(self) -> None:
        """
        Mark the next old workers for replacement, at most C{surplus} at a
        time; once none is left, the reload is over.
        """
        if not self.reloading:
            return
        roster = self.roster
        old = [
            w
            for w in roster.serving()
            if w.state is WorkerState.ACCEPTING
            and roster.record(w).generation < self.generation
        ]
        inFlight = len(roster.doomed(RestartCause.RELOAD))
        for worker in old[: max(0, self.config.surplus - inFlight)]:
            roster.record(worker).doom = RestartCause.RELOAD
        if not old and not inFlight:
            self.reloading = False
            self.log.info(
                "reload finished: every worker is new ({summary})",
                summary=roster.summary(),
            )
            self._emit(
                ReloadFinished(at=self.clock.seconds(), generation=self.generation)
            )

    def abort(self, reason: str) -> None:
        """
        A new worker failed to boot, for C{reason}: the old ones keep
        serving.
        """
        if not self.reloading:
            return
        self.reloading = False
        for worker in self.roster.doomed(RestartCause.RELOAD):
            self.roster.record(worker).doom = None
        self.log.error(
            "reload stopped: a new worker failed to boot; the old workers "
            "keep serving ({summary})",
            summary=self.roster.summary(),
        )
        self._emit(
            ReloadFailed(
                at=self.clock.seconds(), generation=self.generation, reason=reason
            )
        )

    def _renewNow(self) -> None:
        self._cancelPending()
        self._lastRenewal = self.clock.seconds()
        self._renew()

    def _renewalCame(self) -> None:
        self._pending = None
        self._renewalDue = True
        self._wake()

    def _cancelPending(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def stop(self) -> None:
        """The pool stops: no reload is under way, none is due."""
        self.reloading = self._asked = self._renewalDue = False
        self._cancelPending()
