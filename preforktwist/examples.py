"""
Example protocols: the echo served by default, and a minimal HTTP "hello"
used by the tests and benchmarks.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Send back whatever arrives.

    A client that never reads cannot make the worker buffer without end:
    the transport is its own producer, so reading stops while what was
    written waits to be sent.  A client that sends and then shuts down its
    side (C{nc -N}) still gets the answer: the connection closes once the
    echo is written.
    """

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class HelloHTTP(Protocol):
    """
    Answer every HTTP/1.x request with C{200 OK} and the body C{hello}.

    Enough HTTP for load generators and browsers: requests are found by
    their blank line (bodies are not expected), pipelined requests are
    answered in order, HTTP/1.1 keeps the connection open unless the client
    says C{Connection: close}, and HTTP/1.0 closes it unless the client says
    C{keep-alive}.  A request head over 64 KiB, or anything that is not
    HTTP, gets C{400} and the connection is closed.
    """

    MAX_HEAD = 65536
    BODY = b"hello"

    def connectionMade(self) -> None:
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.MAX_HEAD:
                    self._reply(400, b"Bad Request", keepAlive=False)
                return
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            if not self._answer(head):
                return

    def _answer(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._reply(400, b"Bad Request", keepAlive=False)
            return False
        connection = b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"connection":
                connection = value.strip().lower()
        if parts[2] == b"HTTP/1.0":
            keepAlive = connection == b"keep-alive"
        else:
            keepAlive = connection != b"close"
        self._reply(200, b"OK", keepAlive)
        return keepAlive

    def _reply(self, code: int, reason: bytes, keepAlive: bool) -> None:
        body = self.BODY if code == 200 else reason
        header = b"keep-alive" if keepAlive else b"close"
        self.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: text/plain"
            b"\r\nConnection: %s\r\n\r\n%s" % (code, reason, len(body), header, body)
        )
        if not keepAlive:
            self.transport.loseConnection()  # type: ignore[union-attr]
