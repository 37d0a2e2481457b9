"""
preforktwist: a pre-forking network server for Twisted.

A master process binds the listening sockets and keeps a pool of worker
processes, each running its own reactor and accepting on the shared
sockets.  Use it as C{twistd preforked}, or put L{PreforkService} in an
application beside any other Twisted service.

L{PreforkService} is imported on first use: the workers and the fork
server import this package too, and need none of the master's modules.
C{__version__} is read from the installed distribution's metadata on first
use too: C{pyproject.toml} declares the version, once.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from preforktwist.master.service import PreforkService

__all__ = ["PreforkService", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "PreforkService":
        from preforktwist.master.service import PreforkService

        return PreforkService
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("preforktwist")
        except PackageNotFoundError:
            # A checkout on sys.path that was never installed.
            return "0+unknown"
    raise AttributeError(f"module 'preforktwist' has no attribute {name!r}")
