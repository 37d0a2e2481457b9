"""
twisted.web's HTTP/1 connections in a retiring worker: each is closed as
soon as it has nothing more to answer, so that idle keep-alive clients do
not hold the worker for its whole grace period.

  - A connection with a request in progress answers it, and the pipelined
    requests it has already received, the last with C{Connection: close},
    then closes (twisted.web's own non-persistent path).
  - A connection with no request in progress is given L{QUIET} seconds to
    send one, which is then answered the same way; if none comes, it is
    closed cleanly (a FIN after the last response, never a reset: nothing
    unread is left behind).

That moment is what keeps a busy client free of errors: one in the middle
of a keep-alive run sends its next request as soon as it has read a
response, and a connection closed under that request is an error to many
clients (they retry only idempotent requests, some never).

Nothing is imported from twisted.web here: a worker serving something else
never loads it.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import IReactorTime

from preforktwist.common.private import unparsedInput

#: Seconds a retiring connection with no request in progress is given to
#: send one before it is closed.
QUIET = 0.2
#: The longest wait between two later looks at a connection that was not
#: idle yet (a request that takes long, a partial request).
LONGEST_WAIT = 5.0


class RetiringChannel:
    """
    One twisted.web C{HTTPChannel} of a retiring worker.

    @ivar channel: the channel.
    @ivar transport: the worker's transport under it (under TLS, if any).
    """

    def __init__(self, channel: Any, transport: Any, clock: IReactorTime) -> None:
        self.channel = channel
        self.transport = transport
        self.clock = clock
        self._writeHeaders: Any = None

    def start(self) -> None:
        """
        From now on, the response that leaves nothing more to answer says
        C{Connection: close} and closes the connection; look for idleness
        in L{QUIET} seconds.
        """
        channel = self.channel
        self._writeHeaders = channel.writeHeaders
        channel.writeHeaders = self._writeHeadersLast
        if any(r.startedWriting for r in channel.requests) and not self._more():
            # Its headers are gone already: it closes after its end.
            channel.persistent = False
        self.clock.callLater(QUIET, self._closeIfIdle, QUIET)

    def _writeHeadersLast(
        self, version: bytes, code: bytes, reason: bytes, headers: Any
    ) -> None:
        if not self._more():
            self.channel.persistent = False
            headers = _withClose(headers)
        self._writeHeaders(version, code, reason, headers)

    def _more(self) -> bool:
        """
        Whether the client sent more than the request being answered:
        pipelined requests read and held back by the channel, or bytes still
        in the kernel.
        """
        return unparsedInput(self.channel) > 0 or self._unread()

    def _unread(self) -> bool:
        try:
            data = self.transport.getHandle().recv(
                1, socket.MSG_PEEK | socket.MSG_DONTWAIT
            )
        except OSError:
            # Nothing there (EAGAIN), or an error the reactor will report.
            return False
        return bool(data)

    def _closeIfIdle(self, waited: float) -> None:
        transport = self.transport
        if not transport.connected or transport.disconnecting:
            return
        if not self.channel.requests and not self._more():
            self.channel.loseConnection()
            return
        wait = min(waited * 2, LONGEST_WAIT)
        self.clock.callLater(wait, self._closeIfIdle, wait)


def _withClose(headers: Any) -> Any:
    """
    The response headers C{headers} with C{Connection: close}.
    """
    from twisted.web.http_headers import Headers

    if isinstance(headers, Headers):
        headers.setRawHeaders(b"Connection", [b"close"])
        return headers
    return [*headers, (b"Connection", b"close")]
