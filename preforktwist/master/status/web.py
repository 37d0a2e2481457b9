"""
The status endpoint (C{--status}): a live scoreboard page, its data as
JSON, Prometheus metrics and health checks, served by Twisted's HTTP
server in the master.

Each request builds a fresh snapshot from what the master already knows,
so it costs the workers nothing and never waits on one of them.

The endpoint is a fixed table of five pages, each answered at once, so it
is served by C{twisted.web.http} (Twisted's HTTP/1.1 server: parsing,
keep-alive, pipelining, timeouts) with a request that looks its path up in
that table, rather than by C{twisted.web.server}'s C{Site} and resource
tree: that module also imports Perspective Broker, C{twisted.cred} and the
template system (for sessions and error pages): resident memory of the
master's that this endpoint never uses, in a process meant to stay small.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPFactory, Request, datetimeToString

from preforktwist.common.adopted import adoptListeningPort
from preforktwist.common.endpoints import ListenError, endpointError
from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import IPreforkReactor
from preforktwist.master.listeners import BindsEarly
from preforktwist.master.status.health import Readiness, live, ready
from preforktwist.master.status.metrics import MetricsUnavailableError, exposition
from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.master.upgrade.handoff import Inheritance, socketKey

#: What a page answers: status code, content type, body.
Answer = tuple[int, bytes, bytes]

#: Headers every answer carries: a status is stale the moment it is sent.
_NO_STORE = (b"cache-control", b"no-store")

_log = Logger(namespace="preforktwist.status")


def _text(code: int, text: str) -> Answer:
    return code, b"text/plain; charset=utf-8", f"{text}\n".encode()


class StatusSite(HTTPFactory):
    """
    The status endpoint's HTTP server: C{pages} maps each path to what
    answers it.
    """

    noisy = False

    def __init__(
        self,
        pages: dict[bytes, Callable[[], Answer]],
        readiness: Readiness | None = None,
    ) -> None:
        HTTPFactory.__init__(self)
        self.pages = pages
        #: What C{/readyz} answers from.
        self.readiness = readiness

    def buildProtocol(self, addr: Any) -> Any:
        # As twisted.web.server.Site does: the channel knows its site.
        channel: Any = HTTPFactory.buildProtocol(self, addr)
        channel.requestFactory = _StatusRequest
        channel.site = self
        return channel


class _StatusRequest(Request):
    """
    One request to the status endpoint: C{GET} or C{HEAD} of a page in
    the site's table, answered at once.
    """

    def process(self) -> None:
        site: StatusSite = cast(Any, self.channel).site
        # /readyz and /readyz/ alike, as the resource tree answered.
        path = self.path.split(b"?", 1)[0].rstrip(b"/") or b"/"
        page = site.pages.get(path)
        if self.method not in (b"GET", b"HEAD"):
            code, contentType, body = _text(405, "method not allowed")
            self.setHeader(b"allow", b"GET, HEAD")
        elif page is None:
            code, contentType, body = _text(404, "no such page")
        else:
            try:
                code, contentType, body = page()
            except Exception:
                _log.failure("status page {path!r}", path=self.path)
                code, contentType, body = _text(500, "internal error")
        self.setResponseCode(code)
        self.setHeader(b"date", datetimeToString())
        self.setHeader(b"content-type", contentType)
        self.setHeader(*_NO_STORE)
        self.setHeader(b"content-length", b"%d" % len(body))
        if self.method != b"HEAD":
            self.write(body)
        self.finish()


def statusSite(scoreboard: Scoreboard) -> StatusSite:
    """
    The whole status endpoint: C{/}, C{/status.json}, C{/metrics}, and
    the health checks C{/readyz} and C{/livez}.  Built before the pool
    starts, so that readiness sees every pool event.
    """
    html = (
        resources.files("preforktwist.master.status")
        .joinpath("status.html")
        .read_bytes()
    )
    readiness = Readiness(scoreboard.pool)

    def page() -> Answer:
        return 200, b"text/html; charset=utf-8", html

    def snapshot() -> Answer:
        body = json.dumps(scoreboard.snapshot(), indent=1).encode()
        return 200, b"application/json", body

    def metrics() -> Answer:
        try:
            body, contentType = exposition(scoreboard)
        except MetricsUnavailableError as e:
            return _text(501, str(e))
        return 200, contentType.encode(), body

    return StatusSite(
        {
            b"/": page,
            b"/index.html": page,
            b"/status.json": snapshot,
            b"/metrics": metrics,
            b"/readyz": lambda: _text(*ready(readiness)),
            b"/livez": lambda: _text(*live()),
        },
        readiness,
    )


class StatusListener(BindsEarly):
    """
    The status endpoint as a service, on Twisted's own endpoint (this
    socket is the master's alone).  It listens as soon as it can, like the
    serving sockets, so that a port in use is one line before anything
    starts, and it stops listening last: while the pool drains, the page
    and C{/readyz} still answer.
    """

    log = NamedLogger("preforktwist.service.PreforkService")

    def __init__(
        self,
        reactor: IPreforkReactor,
        description: str,
        site: StatusSite,
        inheritance: Inheritance | None = None,
    ) -> None:
        """
        @param inheritance: the sockets an old master handed over (a hot
            upgrade): the status socket among them is served, once this
            master L{takeOver}s, instead of a new one.
        """
        self.reactor = reactor
        self.description = description
        self.site = site
        self.inheritance = inheritance
        self.port: IListeningPort | None = None
        #: Handed over by the old master and not yet served here.
        self.waiting = False
        #: Handed over to a new master: served there from now on.
        self.handedOver = False

    @property
    def key(self) -> str:
        return socketKey("status", self.description)

    def bind(self) -> None:
        """
        Listen now, if not yet.

        @raise ListenError: at once, if it cannot.
        """
        if self.port is not None:
            return
        fd = self.inheritance.claim(self.key) if self.inheritance else None
        if fd is not None:
            # The old master answers until it hands over: a probe never
            # meets this master still starting.
            self.port = adoptListeningPort(self.reactor, fd, self.site)
            cast(Any, self.port).stopReading()
            self.waiting = True
            return
        try:
            endpoint = serverFromString(self.reactor, self.description)
        except Exception as e:
            raise ListenError(endpointError(self.description, e)) from None
        outcome: list[Any] = []
        endpoint.listen(self.site).addBoth(outcome.append)
        if outcome and isinstance(outcome[0], Failure):
            raise ListenError(
                f"cannot listen on {self.description}: {outcome[0].getErrorMessage()}"
            )
        self.port = outcome[0] if outcome else None

    def announce(self) -> None:
        if self.port is not None:
            host = self.port.getHost()
            self.log.info(
                "status page on http://{host}:{port}/ (also /status.json, /metrics, "
                "/readyz, /livez)",
                host=getattr(host, "host", host),
                port=getattr(host, "port", ""),
            )

    def handoffSockets(self) -> list[tuple[str, int]]:
        if self.port is None:
            return []
        return [(self.key, cast(Any, self.port).fileno())]

    def handOver(self) -> None:
        """
        The new master serves the status socket from now on: accept no
        more (what is queued is the new master's), and answer what was
        accepted as ready, for the instance is.
        """
        self.handedOver = True
        if self.site.readiness is not None:
            self.site.readiness.handedOver = True
        if self.port is not None:
            cast(Any, self.port).stopReading()

    def takeOver(self) -> None:
        """The old master handed over: serve the status socket."""
        if self.waiting and self.port is not None:
            self.waiting = False
            cast(Any, self.port).startReading()

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None or self.handedOver:
            # A port stopped would shut the socket down, or remove its
            # path, for the new master too: the process's exit closes it.
            return None
        result: Deferred[None] | None = port.stopListening()
        return result
