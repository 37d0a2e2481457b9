"""
L{PeriodicService}: Twisted's L{TimerService}, typed, with its clock given.

The policy loops (memory and age limits, the autoscaler) and the
scoreboard's sampler each call one method at a steady interval while they
run.  Each is a L{TimerService}, so it is an ordinary C{IService}: a parent
C{MultiService} starts and stops it, and a test drives it with a
L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime


class PeriodicService(TimerService):
    """
    Calls C{call} every C{step} seconds of C{clock} while it runs, the first
    time as it starts.

    @ivar clock: the source of time (L{TimerService}'s own attribute).
    """

    clock: IReactorTime

    def __init__(
        self, step: float, call: Callable[[], object], clock: IReactorTime
    ) -> None:
        TimerService.__init__(self, step, call)
        self.clock = clock

    def startService(self) -> None:
        TimerService.startService(self)

    def stopService(self) -> Deferred[None]:
        """
        @return: fires once the call under way, if any, has finished.
        """
        d: Deferred[None] = TimerService.stopService(self)
        return d
