"""
A Flask (WSGI) app in twisted.web's WSGI container, pre-forked, written as
Twisted's documentation shows: the L{Site} built at module level, with the
reactor's own thread pool.

    cd tap/recipes
    twistd -n preforked -w 4 -m 1000 -l tcp:8080 -f flaskapp.site \\
        --worker-init flaskapp.workerInit

Each worker imports this module after it has installed and started its
reactor (forked from the fork server or as a fresh interpreter alike), so
the module-level C{from twisted.internet import reactor} is that worker's
reactor, and C{reactor.getThreadPool()} is that worker's own pool, started
by the running reactor and stopped at its shutdown, after the last request
has finished.  A request runs in a pool thread: C{/slow} sleeps there for
two seconds while the worker's reactor goes on serving.

C{--worker-init} runs in each worker before it accepts: here it sizes the
thread pool (Twisted's default is at most 10 threads), the place to open a
database pool or warm a cache too.
"""

from __future__ import annotations

import os
import threading
import time

from flask import Flask
from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource

SLOW_SECONDS = 2.0
THREADS = 20

app = Flask(__name__)


def _where() -> str:
    pool = reactor.getThreadPool()  # type: ignore[attr-defined]
    thread = threading.current_thread().name
    return f"{os.getpid()} in {thread} (pool of {pool.max})"


@app.route("/")
def hello() -> str:
    return f"hello from {_where()}\n"


@app.route("/slow")
def slow() -> str:
    time.sleep(SLOW_SECONDS)  # blocking is fine here: this is a pool thread
    return f"slow done by {_where()}\n"


def workerInit() -> None:
    """
    C{--worker-init flaskapp.workerInit}: room for twenty requests at once.
    """
    reactor.suggestThreadPoolSize(THREADS)  # type: ignore[attr-defined]


resource = WSGIResource(reactor, reactor.getThreadPool(), app)  # type: ignore[attr-defined]

#: The factory each worker serves: C{--factory flaskapp.site}.
site = Site(resource)
