"""
The Django site in twisted.web's WSGI container, as a pre-forked worker
serves it (C{-f bench.heavyapp.site.site}): Django is set up and its URLs
resolved at import, as a deployment's WSGI module does, so the import is
the application's whole start-up cost.  Requests run in the reactor's
thread pool, Twisted's WSGI idiom.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.heavyapp.settings")

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver
from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource

application = get_wsgi_application()
# Import the URL modules (the admin's included) now, not on the first request.
resolvedURLs = get_resolver().url_patterns

pool = reactor.getThreadPool()  # type: ignore[attr-defined]
site = Site(WSGIResource(reactor, pool, application))
site.noisy = False
