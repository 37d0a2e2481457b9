"""
An Autobahn WebSocket server, pre-forked.

    cd tap/recipes
    twistd -n preforked -w 4 -m 1000 -l tcp:8080 -f wsapp.factory

Each message is echoed with the worker's pid in front; the message C{slow}
is answered after two seconds, without blocking the worker.  A WebSocket
is a long connection: at a stop or a recycling its worker waits for it to
close, up to C{--grace}.
"""

from __future__ import annotations

import os

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.internet.task import deferLater

SLOW_SECONDS = 2.0


class PidEcho(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload == b"slow":
            answer = b"slow done by %d" % os.getpid()
            deferLater(reactor, SLOW_SECONDS, self.sendMessage, answer)
        else:
            self.sendMessage(b"%d:%s" % (os.getpid(), payload), isBinary)


#: The factory each worker serves: C{--factory wsapp.factory}.
factory = WebSocketServerFactory()
factory.protocol = PidEcho
