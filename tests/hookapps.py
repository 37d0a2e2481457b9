"""
Hooks for the tests: observers of the pool named by C{--hooks} (and
things that are not).
"""

from __future__ import annotations

import json
import os

from twisted.internet.defer import Deferred
from zope.interface import implementer

from preforktwist.master.hooks import IPoolObserver, PoolEvent

#: Where L{FileRecorder} appends each event, as one JSON line.
EVENTS_FILE = "PREFORKTWIST_TEST_EVENTS"

#: Where L{cleanUpAtShutdown} has each worker write its pid as it ends.
CLEAN_UP_FILE = "PREFORKTWIST_TEST_CLEAN_UPS"


@implementer(IPoolObserver)
class Recorder:
    """
    Keeps every event it is told of.
    """

    def __init__(self) -> None:
        self.events: list[PoolEvent] = []

    def poolEvent(self, event: PoolEvent) -> None:
        self.events.append(event)


@implementer(IPoolObserver)
class FileRecorder:
    """
    Appends each event, as plain data, to the file named by the
    environment variable C{PREFORKTWIST_TEST_EVENTS}: a file written by the
    master, for the test to read.  (A local file append is quick; slower
    work belongs in a thread.)
    """

    def __init__(self) -> None:
        self.path = os.environ[EVENTS_FILE]

    def poolEvent(self, event: PoolEvent) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps(event.asDict()) + "\n")


#: An observer itself, not a callable that makes one.
recorder = Recorder()

#: Neither an observer nor callable.
notAnObserver = 3


def returnsNothing() -> None:
    """A callable that returns no observer."""


def raises() -> IPoolObserver:
    raise RuntimeError("no hooks today")


def cleanUpAtShutdown() -> None:
    """
    A C{--worker-init}: the worker's clean-up, as the README shows it, a
    shutdown trigger.  Its Deferred is waited for before the reactor
    stops, then the worker's pid is written.
    """
    from twisted.internet import reactor

    def cleanUp() -> Deferred[None]:
        done: Deferred[None] = Deferred()

        def write() -> None:
            with open(os.environ[CLEAN_UP_FILE], "a") as out:
                out.write(f"{os.getpid()}\n")
            done.callback(None)

        reactor.callLater(0.05, write)
        return done

    reactor.addSystemEventTrigger("before", "shutdown", cleanUp)
