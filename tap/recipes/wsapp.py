"""
An Autobahn WebSocket server, pre-forked.

    cd tap/recipes
    twistd -n preforked -w 4 -m 1000 -l tcp:8080 -f wsapp.factory

Each message is echoed with the worker's pid in front; the message C{slow}
is answered after two seconds, without blocking the worker.  A WebSocket
is a long connection: when its worker retires (a stop, a reload, a
recycling), the protocol is told (L{IRetiring}) and sends its client a
close frame with code 1001, I{going away}; the client reconnects, to
another worker, and the retiring one exits as soon as its clients have
gone instead of waiting for C{--grace}.
"""

from __future__ import annotations

import os

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from zope.interface import implementer

from preforktwist.interfaces import IRetiring

SLOW_SECONDS = 2.0
GOING_AWAY = WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY


@implementer(IRetiring)
class PidEcho(WebSocketServerProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.retired = False
        #: Slow answers not yet sent.
        self.pending: set[Deferred[None]] = set()

    def onOpen(self) -> None:
        if self.retired:
            # Told while its opening handshake was under way.
            self.goAway()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload == b"slow":
            answer = b"slow done by %d" % os.getpid()
            later = deferLater(reactor, SLOW_SECONDS, self.sendMessage, answer)
            self.pending.add(later)
            later.addBoth(lambda _: self.pending.discard(later))
        else:
            self.sendMessage(b"%d:%s" % (os.getpid(), payload), isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.cancelPending()

    def cancelPending(self) -> None:
        for later in list(self.pending):
            later.cancel()

    def retiring(self) -> None:
        """
        Our worker accepts no more connections: ask the client to go away.
        """
        self.retired = True
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.goAway()

    def goAway(self) -> None:
        # sendClose() takes only the application's codes (1000, 3000-4999);
        # 1001 is the protocol's own, sent with the frame-level call.
        self.cancelPending()
        self.sendCloseFrame(code=GOING_AWAY, reasonUtf8=b"server going away")


#: The factory each worker serves: C{--factory wsapp.factory}.
factory = WebSocketServerFactory()
factory.protocol = PidEcho
