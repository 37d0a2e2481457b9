"""
Failures in a row, and what they call for: a wait before the next start,
or giving up.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from preforktwist.common.logs import NamedLogger
from preforktwist.master.pool.config import PoolConfig


class Backoff:
    """
    Each failure (a worker that could not be started, died before it was
    ready, or died soon after) holds starts back for C{backoff} seconds,
    doubling with each failure in a row, at most C{maxBackoff}.  If no
    worker has ever become ready after C{maxBootFailures} of them, the pool
    gives up: the user's code cannot serve, and saying so beats a server
    that starts and never answers.

    Failures are recorded as they happen and judged in the pool's step.

    @ivar failures: failures since a worker last became ready.
    @ivar lastFailure: why the latest failure happened, in words.
    @ivar everReady: a worker has become ready once.
    @ivar gaveUp: the pool gave up.
    """

    log = NamedLogger("preforktwist.pool.Pool")

    def __init__(
        self,
        clock: IReactorTime,
        config: PoolConfig,
        giveUp: Callable[[str], None],
        over: Callable[[], None],
    ) -> None:
        """
        @param giveUp: called with the last failure's reason on giving up.
        @param over: called when a wait is over.
        """
        self.clock = clock
        self.config = config
        self._giveUp = giveUp
        self._over = over
        self.failures = 0
        self.lastFailure = ""
        self.everReady = False
        self.gaveUp = False
        #: Failures recorded and not yet judged: why, and whether a worker
        #: failed to boot.
        self._recorded: list[tuple[str, bool]] = []
        self._wait: IDelayedCall | None = None

    @property
    def holding(self) -> bool:
        """Whether starts wait."""
        return self._wait is not None

    def failed(self, reason: str, duringBoot: bool = False) -> None:
        """A failure happened, for C{reason}; to be judged."""
        self._recorded.append((reason, duringBoot))

    def succeeded(self) -> None:
        """A worker became ready: the failures in a row are over."""
        self.everReady = True
        self.failures = 0

    def judge(self, running: bool, bootFailed: Callable[[str], None]) -> None:
        """
        Hold starts back, or give up, for each failure recorded.

        @param running: whether the pool runs; a failure while it stops is
            counted, and calls for nothing.
        @param bootFailed: called first for each failure to boot, with
            its reason.
        """
        recorded, self._recorded = self._recorded, []
        for reason, duringBoot in recorded:
            if duringBoot:
                bootFailed(reason)
            self.failures += 1
            if not running or self.gaveUp:
                continue
            n = self.failures
            if not self.everReady and n >= self.config.maxBootFailures:
                self.gaveUp = True
                self.log.critical(
                    "giving up after {n} boot failures, no worker ever became "
                    "ready; last: {reason}",
                    n=n,
                    reason=self.lastFailure,
                )
                self._giveUp(self.lastFailure)
                continue
            self.log.error(
                "{reason}; next worker in {delay:g}s (failure {n} in a row)",
                reason=reason,
                delay=self._hold(),
                n=n,
            )

    def _hold(self) -> float:
        """
        Make starts wait after the latest failure, unless they already do.

        @return: the delay the latest failure calls for.
        """
        growing: float = self.config.backoff * 2.0 ** (self.failures - 1)
        delay = min(growing, self.config.maxBackoff)
        if self._wait is None:
            self._wait = self.clock.callLater(delay, self._waited)
        return delay

    def _waited(self) -> None:
        self._wait = None
        self._over()

    def cancel(self) -> None:
        """The pool stops: no wait is over any more."""
        if self._wait is not None and self._wait.active():
            self._wait.cancel()
        self._wait = None
