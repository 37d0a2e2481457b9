"""
twistd's pidfile across a hot upgrade.

twistd refuses to start while its pidfile names a live process, writes the
file once it runs and removes it as it exits, whoever's pid it holds.  So,
as nginx does, the old master moves its pidfile aside to C{PIDFILE.oldbin}
before it starts the new one (whose twistd then starts, and writes its own
pid to the pidfile); if the upgrade fails, it moves it back once the new
master is gone; if it succeeds, it writes the new master's pid back into
the pidfile after its own twistd has removed it, at the very end of its
exit, and removes C{PIDFILE.oldbin}.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable

from preforktwist.common.logs import NamedLogger

log = NamedLogger("preforktwist.upgrade")


def _readPid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _writePid(path: str, pid: int) -> None:
    """
    Write C{pid} to C{path} as twistd does, whole or not at all.
    """
    partial = f"{path}.new"
    with open(partial, "w") as f:
        f.write(str(pid))
    os.replace(partial, path)


class Pidfile:
    """
    This master's pidfile, moved aside for an upgrade and put back, or
    handed over.

    @ivar path: where twistd wrote it.
    @ivar parked: it is at L{oldbin} now.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.parked = False

    @property
    def oldbin(self) -> str:
        return f"{self.path}.oldbin"

    def park(self, pid: int | None = None) -> bool:
        """
        Move the pidfile aside, if it names this master, so that the new
        master's twistd may start.

        @param pid: this master's pid; default this process's (known only
            once twistd has daemonized).
        @return: whether it was moved.
        """
        if _readPid(self.path) != (os.getpid() if pid is None else pid):
            return False
        try:
            os.replace(self.path, self.oldbin)
        except OSError as e:
            log.warn("cannot move {path} aside: {e}", path=self.path, e=e)
            return False
        self.parked = True
        return True

    def restore(self) -> None:
        """
        The upgrade failed and the new master is gone: the pidfile names
        this master again.
        """
        if not self.parked:
            return
        self.parked = False
        try:
            os.replace(self.oldbin, self.path)
        except OSError as e:
            log.warn("cannot put {path} back: {e}", path=self.path, e=e)

    def handOver(
        self,
        successor: int,
        atExit: Callable[[Callable[[], None]], object] = atexit.register,
    ) -> None:
        """
        The upgrade succeeded: once this process's twistd has removed the
        pidfile at its exit, it names C{successor}.

        @param atExit: registers what to do as the process exits.
        """
        if not self.parked:
            return
        self.parked = False

        def rewrite() -> None:
            try:
                if not os.path.exists(self.path):
                    _writePid(self.path, successor)
                os.remove(self.oldbin)
            except OSError:
                pass

        atExit(rewrite)
