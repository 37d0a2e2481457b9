"""
The echo example as a .tac file:

    twistd -ny tap/echo.tac

PREFORKTWIST_LISTEN and PREFORKTWIST_WORKERS override the defaults
(tcp:8080, one worker per CPU).
"""

import os

from twisted.application.service import Application

from preforktwist import PreforkService

application = Application("preforktwist-echo")
workers = os.environ.get("PREFORKTWIST_WORKERS")
PreforkService(
    listen=os.environ.get("PREFORKTWIST_LISTEN", "tcp:8080"),
    protocol="preforktwist.examples.Echo",
    workers=int(workers) if workers else None,
).setServiceParent(application)
