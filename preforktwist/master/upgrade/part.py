"""
L{ServicePart}: one pre-forked service's part in a hot upgrade, what the
L{Upgrader} (and, in the new master, the L{Successor}) acts on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from preforktwist.master.listeners import ListeningSockets
from preforktwist.master.pool import Pool
from preforktwist.master.systemd import SystemdService
from preforktwist.settings import Settings

if TYPE_CHECKING:
    from preforktwist.master.control.server import ControlService
    from preforktwist.master.status.web import StatusListener


class ServicePart:
    """
    What one service hands over (its listening, status and control
    sockets), and what it does when it hands over or takes over.
    """

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        listeners: ListeningSockets,
        systemd: SystemdService,
        statusListener: StatusListener | None,
        control: ControlService | None,
        running: Callable[[], bool],
    ) -> None:
        """
        @param running: whether the service runs.
        """
        self.settings = settings
        self.pool = pool
        self.listeners = listeners
        self.systemd = systemd
        self.statusListener = statusListener
        self.control = control
        self._running = running

    @property
    def bootTimeout(self) -> float:
        return self.settings.bootTimeout

    @property
    def grace(self) -> float:
        return self.settings.grace

    def refusesUpgrade(self) -> str | None:
        if not self._running() or self.pool.stopping:
            return "the server is stopping"
        if self.pool.reloading:
            return "a reload is under way"
        if self.listeners.shared:
            return "this master has not taken over from the old one yet"
        return None

    def handoffSockets(self) -> list[tuple[str, int]]:
        sockets = self.listeners.handoffSockets()
        if self.statusListener is not None:
            sockets += self.statusListener.handoffSockets()
        if self.control is not None:
            sockets += self.control.handoffSockets()
        return sockets

    def systemdDescriptors(self) -> list[int]:
        return [
            listener.spec.inherited
            for listener in self.listeners
            if listener.spec.inherited is not None
        ]

    def handOver(self, successor: int) -> None:
        """
        The new master C{successor} is ready: it serves every socket from
        now on, and systemd follows it.  Stopping next, this master's
        workers retire, leaving the queue to the new master's, and none of
        the sockets is refused or removed.
        """
        self.listeners.handOver(successor)
        if self.statusListener is not None:
            self.statusListener.handOver()
        if self.control is not None:
            self.control.handOver(successor)
        self.systemd.handOver(successor)
        self.pool.leaveQueue()

    def takeOver(self) -> None:
        """
        The old master handed over, or is gone: the sockets are this
        master's alone, and it serves the status and control sockets and
        tells systemd.
        """
        self.listeners.takeOver()
        if self.statusListener is not None:
            self.statusListener.takeOver()
        if self.control is not None:
            self.control.takeOver()
        self.systemd.takeOver()
