"""
Interfaces an application may provide to take part in a worker's life.

A worker retires when it stops accepting for good: its allowance (C{-m})
is used, it is replaced for its memory or age, the pool shrinks, a rolling
reload replaces it, the server stops gracefully, or it was sent C{SIGTERM}.
It then exits once its open connections have closed, or when C{--grace}
runs out.  Connections that would stay open for ever (idle keep-alives,
WebSockets, subscriptions) keep it waiting that long unless the
application closes them; L{IRetiring} tells it when.
"""

from __future__ import annotations

from zope.interface import Interface


class IRetiring(Interface):
    """
    A protocol factory, or a protocol, that wants to know when its worker
    stops accepting connections for good.

    The worker calls L{retiring} once on its factory, if the factory
    provides this interface, then once on the protocol of every open
    connection that provides it (inside the layers the worker adds itself,
    TLS and the PROXY header, and inside any
    C{twisted.protocols.policies.ProtocolWrapper}).  A connection accepted
    afterwards, while a stopping worker serves what was already queued, is
    told right after its C{connectionMade}.  Nothing else changes: the
    connections stay open until they are closed, or until the grace period
    ends.

    Protocols of C{twisted.web.http.HTTPChannel} (C{Site} and other
    C{HTTPFactory} subclasses) that do not provide it are retired by the
    worker itself: idle keep-alive connections are closed, and a request
    in progress is answered with C{Connection: close}.

    For example, a line-based chat protocol that asks its clients to
    reconnect elsewhere::

        from zope.interface import implementer
        from twisted.protocols.basic import LineReceiver
        from preforktwist.interfaces import IRetiring

        @implementer(IRetiring)
        class Chat(LineReceiver):
            def retiring(self):
                self.sendLine(b"server going away: reconnect")
                self.transport.loseConnection()
    """

    def retiring() -> None:
        """
        This worker accepts no more connections and exits once its open
        connections are closed, or when its grace period ends, whichever
        comes first: finish or close what is open, soon.  Called in the
        worker's reactor thread; an exception is logged and does not stop
        the others from being told.
        """
