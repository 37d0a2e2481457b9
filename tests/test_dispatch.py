"""
The worker's epoll reactor (L{preforktwist.worker.dispatch}): it serves
every ready descriptor, and one whose handling raises is logged and costs
the others nothing, as with Twisted's own dispatch.
"""

from __future__ import annotations

import os
import select
from typing import Any, cast

import pytest
from twisted.logger import ILogObserver, globalLogPublisher

if not hasattr(select, "epoll"):
    pytest.skip("no epoll here", allow_module_level=True)

from preforktwist.worker.dispatch import WorkerEPollReactor


class Reader:
    """
    A readable end of a pipe that records its reads, or raises from its
    C{connectionLost} once it is read (as buggy application code may).
    """

    def __init__(self, fd: int, raises: bool = False) -> None:
        self.fd = fd
        self.raises = raises
        self.reads = 0

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "Reader"

    def doRead(self) -> Any:
        os.read(self.fd, 100)
        self.reads += 1
        return ValueError("done") if self.raises else None

    def connectionLost(self, reason: object) -> None:
        raise RuntimeError("buggy connectionLost")


def test_everyReadyDescriptorIsServed() -> None:
    reactor = WorkerEPollReactor()
    errors: list[dict[str, Any]] = []
    observer = cast(ILogObserver, errors.append)
    globalLogPublisher.addObserver(observer)
    pipes = [os.pipe() for _ in range(3)]
    try:
        readers = [Reader(r, raises=(i == 0)) for i, (r, _) in enumerate(pipes)]
        for reader in readers:
            reactor.addReader(reader)
        for _, w in pipes:
            os.write(w, b"x")
        reactor.doPoll(1.0)
        assert [reader.reads for reader in readers] == [1, 1, 1]
        assert any(e.get("isError") for e in errors)
    finally:
        globalLogPublisher.removeObserver(observer)
        for reader in readers[1:]:
            reactor.removeReader(reader)
        for r, w in pipes:
            os.close(r)
            os.close(w)
        reactor._poller.close()
