"""
The hello as twisted.web serves it: a L{Resource} answering C{GET /} with
the same 5-byte C{hello} as L{preforktwist.examples.HelloHTTP}, in a
L{Site}.

    twistd -n preforked -l tcp:8080 -f bench.webhello.site -w 2
    python bench/single.py --port 8080 --factory bench.webhello.site

The site keeps no access log: one plain process has no log observer while
preforktwist's workers send their log to the master, so an access line
per request would measure logging, not serving.
"""

from __future__ import annotations

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class Hello(Resource):
    """
    C{hello}, whatever the path.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"hello"


class QuietSite(Site):
    """
    A L{Site} that logs no line per request.
    """

    def log(self, request: http.Request) -> None:
        pass


#: The factory both servers serve: C{--factory bench.webhello.site}.
site = QuietSite(Hello())
site.noisy = False
