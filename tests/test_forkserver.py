"""
The fork server's own loop (L{preforktwist.worker.forkserver.ForkTemplate}),
in a real process: once the master is gone it waits for its children
without spinning, and leaves when they have.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .harness import REPO

#: A template whose master end is closed at once, with one child of its
#: own that sleeps until killed (a worker still serving its connections
#: after the master died).
TEMPLATE = """
import os, socket, time
from preforktwist.worker.forkserver import ForkTemplate

child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
# Made after the fork: the child holds no copy of the master's end.
master, ours = socket.socketpair()
template = ForkTemplate(ours, 0)
template.children.add(child)
master.close()
print(child, flush=True)
template.serve()
"""


def cpuTicks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_orphaned_template_waits_for_its_children_without_spinning() -> None:
    """
    With its master gone (the control socket at end of file, readable for
    ever), the template waits for its last child on signals alone: about
    no CPU in a second of waiting, where polling the dead socket spent all
    of it.  Once the child is gone, it leaves.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    template = subprocess.Popen(
        [sys.executable, "-c", TEMPLATE], stdout=subprocess.PIPE, text=True, env=env
    )
    child = 0
    try:
        assert template.stdout is not None
        child = int(template.stdout.readline())
        # Printed just before its loop starts: the second that follows is
        # all waiting.
        before = cpuTicks(template.pid)
        try:
            template.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
        spent = cpuTicks(template.pid) - before
        assert spent < 20, f"{spent} ticks of CPU in a second of waiting"
        os.kill(child, signal.SIGKILL)
        assert template.wait(10) == 0
    finally:
        if template.poll() is None:
            template.kill()
            template.wait()
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_forked_worker_keeps_only_its_descriptors() -> None:
    """
    The child closes every descriptor it inherited but those it keeps
    (C{_closeAllBut}): in the gaps between kept ones and above them.
    """
    from preforktwist.worker.forkserver import _closeAllBut

    report, child_end = os.pipe()
    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(6)]
    keep = {0, 1, 2, child_end, opened[1], opened[4]}
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            _closeAllBut(keep)
            # listdir's own descriptor is in its list, closed by now.
            still = [fd for fd in map(int, os.listdir("/proc/self/fd")) if isOpen(fd)]
            os.write(child_end, " ".join(map(str, still)).encode())
            status = 0
        finally:
            os._exit(status)
    try:
        os.close(child_end)
        left = {int(fd) for fd in os.read(report, 4096).split()}
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert left == keep
    finally:
        os.close(report)
        for fd in opened:
            os.close(fd)
