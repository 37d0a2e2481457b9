"""
A twisted.web site, pre-forked: every worker serves the same resources.

    cd tap/recipes
    twistd -n preforked -w 4 -m 1000 -l tcp:8080 -f webapp.site

C{/} answers at once; C{/slow} answers after two seconds without blocking
its worker (a L{Deferred}), so a graceful stop can be watched finishing it.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

SLOW_SECONDS = 2.0


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"hello from %d\n" % os.getpid()


class Slow(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> int:
        def answer() -> None:
            request.write(b"slow done by %d\n" % os.getpid())
            request.finish()

        later = deferLater(reactor, SLOW_SECONDS, answer)
        # A client that goes away cancels the answer.
        request.notifyFinish().addErrback(lambda _: later.cancel())
        return NOT_DONE_YET


root = Resource()
root.putChild(b"", Hello())
root.putChild(b"slow", Slow())

#: The factory each worker serves: C{--factory webapp.site}.
site = Site(root)
