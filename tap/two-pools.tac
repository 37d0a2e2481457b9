"""
Two pre-forked pools in one master, each with its own protocol and port:

    twistd -ny tap/two-pools.tac

 - HTTP "hello" on PREFORKTWIST_HTTP_LISTEN (default tcp:8080), 2 workers;
 - echo on PREFORKTWIST_ECHO_LISTEN (default tcp:8081), 1 worker, each
   worker replaced after 1000 connections.

The master's signals act on both: SIGHUP reloads both, SIGTTIN/SIGTTOU
grow and shrink both, SIGTERM stops both gracefully.
"""

import os

from twisted.application.service import Application, MultiService

from preforktwist import PreforkService

application = Application("preforktwist-two-pools")
pools = MultiService()
pools.setServiceParent(application)

PreforkService(
    listen=os.environ.get("PREFORKTWIST_HTTP_LISTEN", "tcp:8080"),
    protocol="preforktwist.examples.HelloHTTP",
    workers=2,
).setServiceParent(pools)

PreforkService(
    listen=os.environ.get("PREFORKTWIST_ECHO_LISTEN", "tcp:8081"),
    protocol="preforktwist.examples.Echo",
    workers=1,
    maxConnectionsPerWorker=1000,
).setServiceParent(pools)
