"""
The control channel between the master and each worker: the first of the
two wire formats of their contract, each written down in one place.

It is AMP over a socketpair whose worker end is the worker's fd 3.  AMP
gives typed, acknowledged commands in both directions and nothing is
pickled.  The channel is also the worker's lifeline: when it reaches EOF,
the master is gone and the worker drains and exits.

The second wire format is the fork server's line protocol (on the fork
server's own fd 3, not a worker's), in L{preforktwist.protocol.forking}.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

#: The worker's file descriptor for its end of the control channel.
CONTROL_FD = 3

#: The worker's first listening socket; further ones follow in order.
FIRST_LISTEN_FD = 4


class ControlChannel(amp.AMP):
    """
    AMP without its log lines for every connection made and lost: the
    pool logs a worker's life in words that mean something to an operator.
    """

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


# Worker to master.


class Ready(amp.Command):
    """
    The worker has adopted its listening sockets and is accepting.
    C{maxConcurrent} is the cap on open connections it settled on (its
    C{--max-concurrent}, worked out from its open-file limit; 0 for none):
    the master needs it to tell a worker at its cap, and a pool saturated.
    Optional, so that a worker of another version still boots.
    """

    arguments = [
        (b"pid", amp.Integer()),
        (b"maxConcurrent", amp.Integer(optional=True)),
    ]


class BootFailed(amp.Command):
    """
    The worker cannot start serving: its factory cannot be imported or
    built.  The reason is one line, shown in the master's log; the worker
    exits right after.
    """

    arguments = [(b"reason", amp.Unicode())]


class Counts(amp.Command):
    """
    The worker's counters, sent at a steady interval: it is also the proof
    that the worker's reactor still turns.

    Not answered: the worker waits for nothing, and an answer was one more
    message each way per heartbeat and per replacement (the retiring
    worker's last ones, still unanswered at its close, each failed with a
    L{Failure} of their own).  A master of another version answers only
    if asked, as AMP does, so either side may be older.
    """

    requiresAnswer = False

    arguments = [
        (b"accepted", amp.Integer()),
        (b"open", amp.Integer()),
        (b"served", amp.Integer()),
        # Connections closed for sending nothing (--first-byte-timeout);
        # optional, so a worker of another version still reports.
        (b"firstByteTimeouts", amp.Integer(optional=True)),
    ]


class NearAllowance(amp.Command):
    """
    The worker will soon have used its allowance: the master may start its
    replacement now, so that it is accepting by the time this one stops.
    """


class ReplaceCause(str, enum.Enum):
    """
    Why a worker asks for its replacement.  The values are what travels
    on the wire, and what the master counts and shows as restart causes.
    """

    #: It used its allowance (C{--max-connections-per-worker}).
    ALLOWANCE = "allowance"
    #: It received SIGTERM or SIGINT.
    SIGNAL = "signal"


class ReplaceCauseArgument(amp.Argument):
    """
    A L{ReplaceCause} on the wire, by its value: a cause the other side
    does not know is an error at the channel, not a stray string later.
    """

    def __init__(self, optional: bool = False) -> None:
        amp.Argument.__init__(self, optional)

    def fromString(self, inString: bytes) -> ReplaceCause:
        return ReplaceCause(inString.decode("utf-8"))

    def toString(self, inObject: ReplaceCause) -> bytes:
        return inObject.value.encode("utf-8")


class ReplaceMe(amp.Command):
    """
    The worker accepts no more, because it used its allowance (C{cause}
    C{allowance}) or received SIGTERM or SIGINT (C{signal}): the master
    should start its replacement now, unless one already started.  The
    worker finishes its open connections and exits by itself.
    """

    arguments = [
        (b"accepted", amp.Integer()),
        (b"open", amp.Integer()),
        (b"cause", ReplaceCauseArgument()),
    ]


# Master to worker.


class Retire(amp.Command):
    """
    Stop accepting, finish the open connections and exit, leaving what is
    queued to the other workers.
    """


class Activate(amp.Command):
    """
    A standby worker, booted with its sockets adopted but accepting
    nothing, takes its place in the pool: it starts accepting now.
    """


class Stop(amp.Command):
    """
    The server is stopping: accept what is already queued, stop accepting,
    finish the open connections and exit.
    """
