"""
A worker's Python stacks, on request: the worker registered faulthandler
for SIGUSR2, which writes every thread's stack to its stderr from C, even
while its Python code is stuck; the master reads those lines back from
what it relays to the log.
"""

from __future__ import annotations

import re
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from preforktwist.protocol.admin import ControlError

#: The first line of a thread's stack in faulthandler's dump.
_HEADER = re.compile(r"^(Current thread|Thread) |^Stack \(most recent call first\)")


class DumpsStack(Protocol):
    """What a stack capture needs of a worker (L{WorkerProcess})."""

    number: int
    stderrObservers: list  # type: ignore[type-arg]

    def dumpStack(self) -> None: ...


class StackCapture:
    """
    One worker's stack dump: its lines from the first thread's header,
    until its stderr has been quiet for a moment.  faulthandler writes the
    whole dump at once, so a short quiet ends it.

    Lines the worker writes meanwhile that are not part of a dump (neither
    a header, an indented frame nor blank) are left out.
    """

    #: Seconds of quiet that end a dump.
    QUIET = 0.3
    #: Seconds to wait for the dump to begin.
    TIMEOUT = 5.0

    def __init__(self, worker: DumpsStack, clock: IReactorTime) -> None:
        self.worker = worker
        self.clock = clock
        self.lines: list[str] = []
        self._done: Deferred[str] = Deferred()
        self._timer: IDelayedCall | None = None

    def capture(self) -> Deferred[str]:
        """
        Ask for the dump.

        @return: fires with the dump's text, or fails with L{ControlError}
            if none came in time.
        """
        self.worker.stderrObservers.append(self._line)
        self._timer = self.clock.callLater(self.TIMEOUT, self._over)
        self.worker.dumpStack()
        return self._done

    def _line(self, text: str) -> None:
        if not self.lines and not _HEADER.match(text):
            return
        if self.lines and text and not text.startswith(" ") and not _HEADER.match(text):
            return
        self.lines.append(text)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(self.QUIET, self._over)

    def _over(self) -> None:
        self._timer = None
        self.worker.stderrObservers.remove(self._line)
        if not self.lines:
            self._done.errback(
                ControlError(
                    f"worker {self.worker.number} wrote no stack within "
                    f"{self.TIMEOUT:g}s"
                )
            )
            return
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        self._done.callback("\n".join(self.lines) + "\n")
