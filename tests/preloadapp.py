"""
An application that uses the reactor at import, as real ones do, for the
C{--preload} tests: a thread pool and a delayed call made at module level.
Each connection is answered with one line of JSON: this worker's pid, the
pid that imported the module, where the import-time C{callLater} fired,
the pid a thread-pool job ran in, the reactor's poller and waker
descriptors, and the module's C{VERSION} file (read at import).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread

IMPORTED_IN = os.getpid()
VERSION = (
    Path(os.environ.get("PREFORKTWIST_TEST_VERSION", "/nonexistent")).read_text()
    if os.environ.get("PREFORKTWIST_TEST_VERSION")
    else ""
)
POOL = reactor.getThreadPool()  # type: ignore[attr-defined]
FIRED: list[int] = []
reactor.callLater(0, lambda: FIRED.append(os.getpid()))


class Report(Protocol):
    def connectionMade(self) -> None:
        d = deferToThread(os.getpid)
        d.addCallback(self.answer)

    def answer(self, threadPid: int) -> None:
        waker = reactor.waker  # type: ignore[attr-defined]
        line = {
            "pid": os.getpid(),
            "imported": IMPORTED_IN,
            "fired": FIRED,
            "thread": threadPid,
            "poller": reactor._poller.fileno(),  # type: ignore[attr-defined]
            "waker": [waker.i, waker.o],
            "version": VERSION,
        }
        assert self.transport is not None
        self.transport.write(json.dumps(line).encode() + b"\n")
        self.transport.loseConnection()
