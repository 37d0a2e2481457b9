"""
One worker as the master sees it (L{preforktwist.master.handle}): a signal
sent to a worker the fork server has not forked yet is delivered once it
is, so a boot timeout that fires first on a busy machine still kills it.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any

from twisted.internet.testing import MemoryReactor

from preforktwist.master.handle import WorkerProcess


class _Pool:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def test_signalBeforeTheForkIsSentOnceForked() -> None:
    worker = WorkerProcess(1, _Pool(), MemoryReactor())  # type: ignore[arg-type]
    worker.terminate()
    worker.kill()
    worker.terminate()
    child = subprocess.Popen(["sleep", "30"])
    try:
        worker.born(child.pid)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_noSignalNothingSent() -> None:
    worker = WorkerProcess(1, _Pool(), MemoryReactor())  # type: ignore[arg-type]
    child = subprocess.Popen(["sleep", "30"])
    try:
        worker.born(child.pid)
        assert worker.pid == child.pid
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
