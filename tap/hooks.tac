"""
Hooks for the master's events, as a .tac file:

    twistd -ny tap/hooks.tac

 - every event of the pool is logged in one line;
 - a worker that crashed, failed to boot or got stuck, and a reload that
   failed, are posted as JSON to PREFORKTWIST_ALERT_URL, if set (a chat
   webhook, say).  The post is a blocking call (urllib), so it runs in a
   thread with deferToThread: a hook runs on the master's reactor, and one
   that blocks stalls the whole master.

PREFORKTWIST_LISTEN and PREFORKTWIST_WORKERS override the defaults
(tcp:8080, two workers).  On the command line the same observer would be
`twistd -n preforked --hooks mymodule.Alerts`.
"""

import json
import os
import urllib.request

from twisted.application.service import Application
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from preforktwist import PreforkService
from preforktwist.master.hooks import (
    IPoolObserver,
    PoolEvent,
    ReloadFailed,
    RestartCause,
    WorkerExited,
)

log = Logger(namespace="hooks")

#: Exits worth waking someone for.
TROUBLE = {
    RestartCause.CRASH,
    RestartCause.BOOT_FAILURE,
    RestartCause.HEARTBEAT_TIMEOUT,
}


def post(url: str, data: dict) -> None:
    """Blocking: run in a thread."""
    request = urllib.request.Request(
        url,
        data=json.dumps(data).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@implementer(IPoolObserver)
class Alerts:
    def __init__(self, url: str | None) -> None:
        self.url = url

    def poolEvent(self, event: PoolEvent) -> object:
        data = event.asDict()
        log.info(
            "pool event {name}: {details}",
            name=data.pop("event"),
            details=" ".join(f"{k}={v}" for k, v in data.items() if k != "at"),
        )
        trouble = isinstance(event, ReloadFailed) or (
            isinstance(event, WorkerExited) and event.cause in TROUBLE
        )
        if trouble and self.url:
            # Not waited for by the pool; a failure is logged by it.
            return deferToThread(post, self.url, event.asDict())
        return None


application = Application("preforktwist-hooks")
PreforkService(
    listen=os.environ.get("PREFORKTWIST_LISTEN", "tcp:8080"),
    protocol="preforktwist.examples.Echo",
    workers=int(os.environ.get("PREFORKTWIST_WORKERS", "2")),
    observers=[Alerts(os.environ.get("PREFORKTWIST_ALERT_URL"))],
).setServiceParent(application)
