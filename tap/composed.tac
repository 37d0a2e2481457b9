"""
A pre-forked pool beside other Twisted services, in one application:

    twistd -ny tap/composed.tac

 - the HTTP "hello" example, pre-forked, on PREFORKTWIST_LISTEN
   (default tcp:8080);
 - a plain single-process echo service in the master itself, on
   PREFORKTWIST_ECHO_LISTEN (default tcp:8081:interface=127.0.0.1);
 - a TimerService in the master that logs how many workers are alive,
   once a minute (PREFORKTWIST_TICK seconds).

Stopping the application stops all three; the pool's stop waits for its
workers to finish their connections.
"""

import os

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import Application, MultiService
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from preforktwist import PreforkService
from preforktwist.examples import Echo

log = Logger(namespace="composed")
application = Application("preforktwist-composed")
everything = MultiService()
everything.setServiceParent(application)

pool = PreforkService(
    listen=os.environ.get("PREFORKTWIST_LISTEN", "tcp:8080"),
    protocol="preforktwist.examples.HelloHTTP",
    workers=int(os.environ.get("PREFORKTWIST_WORKERS", "2")),
)
pool.setServiceParent(everything)

StreamServerEndpointService(
    serverFromString(
        reactor,
        os.environ.get("PREFORKTWIST_ECHO_LISTEN", "tcp:8081:interface=127.0.0.1"),
    ),
    Factory.forProtocol(Echo),
).setServiceParent(everything)


def tick() -> None:
    log.info("pool: {summary}", summary=pool.pool.summary())


TimerService(float(os.environ.get("PREFORKTWIST_TICK", "60")), tick).setServiceParent(
    everything
)
