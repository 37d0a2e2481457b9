"""
preforktwist: a pre-forking network server for Twisted.

A master process binds the listening sockets and keeps a pool of worker
processes, each running its own reactor and accepting on the shared
sockets.  Use it as C{twistd preforked}, or put L{PreforkService} in an
application beside any other Twisted service.
"""

from preforktwist.service import PreforkService

__all__ = ["PreforkService"]
