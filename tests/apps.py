"""
Protocols and factories the end-to-end tests serve, imported by the
workers by dotted name (C{tests.apps.PidEcho}).
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol


class PidEcho(Protocol):
    """
    Answer each message with C{PID:message} and close: the client learns
    which worker served it.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"%d:%s" % (os.getpid(), data))
        self.transport.loseConnection()


class SlowReply(Protocol):
    """
    Answer the first message after a second and a half, then close: an
    exchange that is still going on when the test stops the server.
    """

    DELAY = 1.5

    def dataReceived(self, data: bytes) -> None:
        reactor.callLater(self.DELAY, self._reply, data)

    def _reply(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"done:%d:%s" % (os.getpid(), data))
        self.transport.loseConnection()


class Environment(Protocol):
    """
    Answer with the value of C{PREFORKTWIST_TEST_MARK} in the worker's
    environment.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(os.environ.get("PREFORKTWIST_TEST_MARK", "-").encode())
        self.transport.loseConnection()


def makeEchoFactory() -> Factory:
    """
    A factory callable, for C{--factory}.
    """
    return Factory.forProtocol(PidEcho)


echoFactory = Factory.forProtocol(PidEcho)


def raisingFactory() -> Factory:
    raise RuntimeError("the database is down")
