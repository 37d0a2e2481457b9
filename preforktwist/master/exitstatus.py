"""
The master's exit status when it gives up.

twistd exits 0 whenever its reactor stops without a signal, so a server
whose workers can never boot would look like a clean stop to systemd or a
shell script.  The only way past twistd's own exit is an exit handler that
runs after twistd has removed its pid file and stopped logging.
"""

from __future__ import annotations

import atexit
import os
import sys


def exitWithStatusAtInterpreterExit(status: int) -> None:
    """
    End the process with C{status} once the interpreter exits.  Registered
    last, this handler runs first among the exit handlers, after twistd's
    own clean-up (which happens before the interpreter exits).
    """

    def exitNow() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)

    atexit.register(exitNow)
