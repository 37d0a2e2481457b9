"""
The status endpoint (C{--status}): a live scoreboard page, its data as
JSON, Prometheus metrics and health checks, served by twisted.web in the
master.

Each request builds a fresh snapshot from what the master already knows,
so it costs the workers nothing and never waits on one of them.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from preforktwist.common.endpoints import ListenError, endpointError
from preforktwist.common.logs import NamedLogger
from preforktwist.master.listeners import BindsEarly
from preforktwist.master.status.health import LiveResource, Readiness, ReadyResource
from preforktwist.master.status.metrics import MetricsUnavailableError, exposition
from preforktwist.master.status.scoreboard import Scoreboard


class _Page(Resource):
    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        self.html = (
            resources.files("preforktwist.master.status")
            .joinpath("status.html")
            .read_bytes()
        )

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self.html


class _FromScoreboard(Resource):
    """
    A leaf that renders a fresh snapshot of the scoreboard.
    """

    isLeaf = True

    def __init__(self, scoreboard: Scoreboard) -> None:
        Resource.__init__(self)
        self.scoreboard = scoreboard


class _JSON(_FromScoreboard):
    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self.scoreboard.snapshot(), indent=1).encode()


class _Metrics(_FromScoreboard):
    def render_GET(self, request: Request) -> bytes:
        try:
            body, contentType = exposition(self.scoreboard)
        except MetricsUnavailableError as e:
            request.setResponseCode(501)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"{e}\n".encode()
        request.setHeader(b"content-type", contentType.encode())
        return body


def statusSite(scoreboard: Scoreboard) -> Site:
    """
    The whole status endpoint: C{/}, C{/status.json}, C{/metrics}, and
    the health checks C{/readyz} and C{/livez}.  Built before the pool
    starts, so that readiness sees every pool event.
    """
    root = Resource()
    page = _Page()
    root.putChild(b"", page)
    root.putChild(b"index.html", page)
    root.putChild(b"status.json", _JSON(scoreboard))
    root.putChild(b"metrics", _Metrics(scoreboard))
    root.putChild(b"readyz", ReadyResource(Readiness(scoreboard.pool)))
    root.putChild(b"livez", LiveResource())
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site


class StatusListener(BindsEarly):
    """
    The status endpoint as a service, on Twisted's own endpoint (this
    socket is the master's alone).  It listens as soon as it can, like the
    serving sockets, so that a port in use is one line before anything
    starts, and it stops listening last: while the pool drains, the page
    and C{/readyz} still answer.
    """

    log = NamedLogger("preforktwist.service.PreforkService")

    def __init__(self, reactor: IReactorCore, description: str, site: Site) -> None:
        self.reactor = reactor
        self.description = description
        self.site = site
        self.port: IListeningPort | None = None

    def bind(self) -> None:
        """
        Listen now, if not yet.

        @raise ListenError: at once, if it cannot.
        """
        if self.port is not None:
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

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return None
        result: Deferred[None] | None = port.stopListening()
        return result
