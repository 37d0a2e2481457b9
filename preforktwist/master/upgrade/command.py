"""
The new master's command line, from the old master's own: the same
interpreter, flags and arguments (C{sys.orig_argv}), so that C{twistd
preforked ...}, C{twistd -y app.tac} and C{twist preforked ...} all start
again as they were started, reading the code on disk anew.
"""

from __future__ import annotations

import getopt
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Run by the interpreter that becomes the new master under systemd
#: socket activation: Twisted only takes the sockets in C{LISTEN_FDS} when
#: C{LISTEN_PID} is the process's own pid, which only the process itself
#: knows before it runs the command (systemd sets it between fork and
#: exec, as gunicorn does; a spawned process has no such moment).
_OWN_LISTEN_PID = (
    "import os,sys;os.environ['LISTEN_PID']=str(os.getpid());"
    "os.execv(sys.argv[1],sys.argv[2:])"
)


@dataclass(frozen=True)
class MasterCommand:
    """
    How to start a master: the program, its arguments (the first being its
    name) and its working directory.
    """

    executable: str
    arguments: tuple[str, ...]
    directory: str

    @classmethod
    def ofThisProcess(cls, directory: str | None = None) -> MasterCommand:
        """
        This process's own command: C{sys.orig_argv} (the interpreter's
        flags, C{-m} and the script included), run by C{sys.executable}.

        @param directory: where it was started; default the current
            directory.
        """
        original = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
        return cls(
            sys.executable,
            (sys.executable, *original[1:]),
            directory if directory is not None else os.getcwd(),
        )

    def spawnArguments(self, environ: Mapping[str, str]) -> tuple[str, list[str]]:
        """
        The executable and arguments to spawn.  With sockets from systemd
        in C{environ}, the command runs through a short interpreter that
        sets C{LISTEN_PID} to its own pid and then becomes the command.
        """
        if environ.get("LISTEN_FDS"):
            trampoline = [sys.executable, "-I", "-S", "-c", _OWN_LISTEN_PID]
            return sys.executable, [*trampoline, self.executable, *self.arguments]
        return self.executable, list(self.arguments)


def systemdEnvironment(
    environ: Mapping[str, str], inherited: Sequence[int]
) -> tuple[dict[str, str], list[int]]:
    """
    The environment that gives the new master the sockets systemd passed
    in, and those sockets' descriptors (from 3, as systemd numbers them).
    Twisted takes C{LISTEN_FDS} and C{LISTEN_PID} out of the environment
    when it reads them; C{LISTEN_FDNAMES} stays, and says how many there
    were.

    @param inherited: the descriptors of the C{systemd:} endpoints served.
    """
    if not inherited:
        return dict(environ), []
    names = [n for n in environ.get("LISTEN_FDNAMES", "").split(":") if n]
    count = max(len(names), max(inherited) - 2)
    if environ.get("LISTEN_FDS"):
        count = int(environ["LISTEN_FDS"])
    descriptors = []
    for fd in range(3, 3 + count):
        try:
            os.fstat(fd)
        except OSError:
            continue
        descriptors.append(fd)
    return {**environ, "LISTEN_FDS": str(count)}, descriptors


def twistdPidfile(argv: Sequence[str], directory: str) -> str | None:
    """
    The pidfile C{twistd} was told to write, from its own command line,
    read with C{twistd}'s own option table as C{twistd} reads it (long
    options abbreviated or not, the last one given winning), up to the
    subcommand: C{twistd.pid} if no C{--pidfile} is given, none for
    C{--pidfile=}.

    @param argv: C{sys.argv} of a C{twistd} process.
    @param directory: where it was started (a relative path is from
        there, as C{twistd} makes it absolute before it daemonizes).
    @return: L{None} if the command line cannot be read so.
    """
    from twisted.scripts import twistd

    # twistd's own options (its public name, re-exported from the platform's).
    options = twistd.ServerOptions()  # type: ignore[attr-defined,no-untyped-call]
    try:
        given, _ = getopt.getopt(list(argv[1:]), options.shortOpt, options.longOpt)
    except getopt.GetoptError:
        return None
    pidfile = str(options["pidfile"])
    for name, value in given:
        if name == "--pidfile":
            pidfile = value
    if not pidfile:
        return None
    return os.path.join(directory, pidfile)


def runningUnderTwistd() -> bool:
    """
    Whether this process is C{twistd} (which writes a pidfile), not
    C{twist} or another program running the service.
    """
    return "twisted.scripts.twistd" in sys.modules
