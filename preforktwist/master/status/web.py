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

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from preforktwist.master.status.health import LiveResource, Readiness, ReadyResource
from preforktwist.master.status.metrics import MetricsUnavailableError, exposition
from preforktwist.master.status.scoreboard import Scoreboard


class _Page(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
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
        super().__init__()  # type: ignore[no-untyped-call]
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
