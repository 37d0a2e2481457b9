"""
What a worker's log observer passes to the master: everything the worker
and the application say, less Twisted's routine lines about the worker's
own port, factory and reactor (the master logs those facts itself, once
per worker).  The events are Twisted's own, made by the calls that make
them in a worker.
"""

from __future__ import annotations

import io
import socket

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, globalLogPublisher
from twisted.python import log

from preforktwist.worker.main import _PipeObserver


def test_routine_lines_are_left_out() -> None:
    out, err = io.StringIO(), io.StringIO()
    observer = _PipeObserver(out, err)
    globalLogPublisher.addObserver(observer)
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        factory = Factory.forProtocol(Protocol)
        port = reactor.adoptStreamPort(  # type: ignore[attr-defined]
            listener.fileno(), socket.AF_INET, factory
        )
        port.stopListening()
        Logger(namespace="twisted.internet.base").info("Main loop terminated.")
        log.msg("the application says hello")
        log.msg("Echo starting on a journey, says the application")
        Logger().warn("Stopping factory {factory!r}", factory=factory)
    finally:
        globalLogPublisher.removeObserver(observer)
        listener.close()
    assert out.getvalue().splitlines() == [
        "the application says hello",
        "Echo starting on a journey, says the application",
    ]
    assert err.getvalue().startswith("Stopping factory")
