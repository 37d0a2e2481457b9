"""
The open-file limit (C{RLIMIT_NOFILE}), raised as far as this process may,
as nginx's C{worker_rlimit_nofile} does.

Most systems start a process with a soft limit of 1024 and a hard limit far
above it: the soft limit is low for the sake of old programs that use
C{select()}, whose sets hold descriptors below 1024 only.  Twisted's
default reactor on Linux is epoll, which has no such bound, so a server
that keeps the soft limit runs out of descriptors (EMFILE) long before the
machine would make it.  Any process may raise its soft limit up to its hard
limit, with no privilege; only the hard limit needs one.

Used by both sides: each worker raises its own limit when it starts (a
worker forked by the fork server, or started by hand, has whatever limit
its parent had), and the master raises its own (it holds two descriptors
per worker and one per listening socket).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

#: What Linux allows when the hard limit says "unlimited" but the kernel
#: does not (C{/proc/sys/fs/nr_open}); read when needed.
_NR_OPEN = "/proc/sys/fs/nr_open"


@dataclass(frozen=True)
class FileLimit:
    """
    The open-file limit before and after L{raiseFileLimit}.

    @ivar before: the soft limit the process started with.
    @ivar soft: the soft limit now.
    @ivar hard: the hard limit (C{resource.RLIM_INFINITY} for none).
    @ivar error: why the raise failed, or C{None}.
    """

    before: int
    soft: int
    hard: int
    error: str | None = None

    def describe(self) -> str:
        """
        One phrase for the log: C{open-file limit 1024 -> 65536 (hard
        65536)}.
        """

        def show(n: int) -> str:
            return "unlimited" if n == resource.RLIM_INFINITY else str(n)

        change = (
            f"{show(self.before)} -> {show(self.soft)}"
            if self.soft != self.before
            else f"{show(self.soft)}"
        )
        text = f"open-file limit {change} (hard {show(self.hard)})"
        if self.error is not None:
            text += f", not raised: {self.error}"
        return text


def _ceiling(hard: int) -> int:
    """
    The highest soft limit worth asking for: the hard limit, or, when that
    is "unlimited" (which Linux refuses for this resource), the kernel's
    own most.
    """
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        with open(_NR_OPEN) as f:
            return int(f.read())
    except (OSError, ValueError):
        # macOS and the BSDs refuse more than OPEN_MAX-like values too;
        # this is what their default hard limits are.
        return 10240


def raiseFileLimit() -> FileLimit:
    """
    Raise this process's soft open-file limit to its hard limit.  Never
    lowers it, never raises an exception: a limit that cannot be raised is
    reported in L{FileLimit.error} and the process goes on with what it has.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _ceiling(hard)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return FileLimit(soft, soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError) as e:
        return FileLimit(soft, soft, hard, str(e))
    return FileLimit(soft, wanted, hard)
