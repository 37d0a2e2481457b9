"""
A user module that never finishes importing: an endless loop at module
level, as a bad import-time side effect (a connection retried forever)
would be.  Serving C{tests.hangs_at_import.Echo} must end C{twistd} with a
one-line error within C{--boot-timeout} and a few seconds, after a bounded
number of workers.
"""

from __future__ import annotations

import time

from twisted.internet.protocol import Protocol

while True:
    time.sleep(0.05)


class Echo(Protocol):  # never reached
    pass
