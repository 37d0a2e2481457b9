"""
A Klein app, pre-forked.

    cd tap/recipes
    twistd -n preforked -w 4 -m 1000 -l tcp:8080 -f kleinapp.site

A route may return a L{Deferred}: C{/slow} answers after two seconds
without blocking its worker.
"""

from __future__ import annotations

import os

from klein import Klein
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.server import Request, Site

SLOW_SECONDS = 2.0

app = Klein()


@app.route("/")
def hello(request: Request) -> str:
    return f"hello from {os.getpid()}\n"


@app.route("/slow")
def slow(request: Request) -> Deferred[str]:
    return deferLater(reactor, SLOW_SECONDS, lambda: f"slow done by {os.getpid()}\n")


#: The factory each worker serves: C{--factory kleinapp.site}.
site = Site(app.resource())
