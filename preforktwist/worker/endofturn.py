"""
Writes sent at the end of the reactor's turn instead of on its next one.

Twisted's transports buffer what a protocol writes and register for
writing; the reactor's next poll reports the socket writable, which it
nearly always already is, the buffer is sent and the registration removed:
two C{epoll_ctl} calls and one more event per response.  A worker's
transports defer that registration instead: the first C{startWriting} of
a turn puts the transport on a list that a C{callLater(0)} serves once
every event of the turn has been dispatched, by calling the transport's
own C{doWrite}, as the reactor would have; only what the kernel does not
take then waits for the reactor the usual way.

Nothing a protocol sees changes: the bytes are Twisted's own buffer, sent
by Twisted's own C{doWrite}, with its producer calls and its close; a
connection aborted or lost during the turn is off the list before it is
served, so what it had buffered is dropped as Twisted drops it; an error
from C{doWrite} ends the connection with the reason the reactor would
give it.
"""

from __future__ import annotations

import sys
from typing import Any
from weakref import WeakKeyDictionary

from twisted.python import log
from twisted.python.failure import Failure


class EndOfTurn:
    """
    The transports of one reactor whose writes are due at the end of the
    current turn.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._due: list[WritesAtEndOfTurn] = []
        self._call: Any = None

    def add(self, transport: WritesAtEndOfTurn) -> None:
        self._due.append(transport)
        if self._call is None:
            self._call = self.reactor.callLater(0, self._run)

    def _run(self) -> None:
        self._call = None
        due, self._due = self._due, []
        for transport in due:
            transport.writeNow()


_turns: WeakKeyDictionary[Any, EndOfTurn] = WeakKeyDictionary()


def endOfTurn(reactor: Any) -> EndOfTurn:
    """
    The end-of-turn list of C{reactor}.
    """
    turn = _turns.get(reactor)
    if turn is None:
        turn = _turns[reactor] = EndOfTurn(reactor)
    return turn


class WritesAtEndOfTurn:
    """
    A C{FileDescriptor} mixin whose registration for writing waits for the
    end of the turn, and is made only if the kernel did not take it all.
    """

    reactor: Any
    connected: Any
    #: Registered for writing with the reactor.
    _registered = False
    #: On the end-of-turn list.
    _due = False
    #: Nothing left to send since the last C{startWriting}: C{doWrite} sent
    #: it all, or the connection was aborted (both call C{stopWriting}).
    _drained = False

    def startWriting(self) -> None:
        if self._registered:
            return
        self._drained = False
        if not self._due:
            self._due = True
            endOfTurn(self.reactor).add(self)

    def stopWriting(self) -> None:
        self._drained = True
        if self._registered:
            self._registered = False
            super().stopWriting()  # type: ignore[misc]

    def writeNow(self) -> None:
        """
        Send what is buffered, as the reactor would on a writable event.
        """
        self._due = False
        if not self.connected or self._registered or self._drained:
            # Lost, or waiting for the reactor already, or emptied (or
            # aborted: abortConnection stops writing) since it was due.
            return
        try:
            why = self.doWrite()  # type: ignore[attr-defined]
        except BaseException:
            why = sys.exc_info()[1]
            log.err()
        if why:
            # As the reactor's own handling of a failed write.
            self.reactor.removeReader(self)
            self.reactor.removeWriter(self)
            self.connectionLost(Failure(why))  # type: ignore[attr-defined]
        elif not self._drained and self.connected:
            self._registered = True
            super().startWriting()  # type: ignore[misc]
