"""
The channel between an old master and the new one it started: AMP over a
socketpair, the new master's end handed over with the sockets.  It is also
each one's news of the other's end: EOF means the other process is gone.
"""

from __future__ import annotations

from twisted.protocols import amp

from preforktwist.protocol.control import ControlChannel

__all__ = ["ControlChannel", "Hello", "Ready", "TakeOver"]


class Hello(amp.Command):
    """
    New to old: this master runs (after daemonizing, if it does) as
    C{pid}.
    """

    arguments = [(b"pid", amp.Integer())]


class Ready(amp.Command):
    """
    New to old: every pool of this master has all its wanted workers
    accepting.
    """


class TakeOver(amp.Command):
    """
    Old to new: the old master has stopped accepting on the status and
    control sockets and is retiring its workers; the sockets, the pidfile
    and systemd's attention are the new master's from now on.
    """
