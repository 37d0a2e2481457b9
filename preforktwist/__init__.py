"""
preforktwist: a pre-forking network server for Twisted.

A master process binds the listening sockets and keeps a pool of worker
processes, each running its own reactor and accepting on the shared
sockets.  Use it as C{twistd preforked}, or put L{PreforkService} in an
application beside any other Twisted service.

L{PreforkService} is imported on first use: the workers and the fork
server import this package too, and need none of the master's modules.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from preforktwist.master.service import PreforkService

__all__ = ["PreforkService"]


def __getattr__(name: str) -> Any:
    if name == "PreforkService":
        from preforktwist.master.service import PreforkService

        return PreforkService
    raise AttributeError(f"module 'preforktwist' has no attribute {name!r}")
