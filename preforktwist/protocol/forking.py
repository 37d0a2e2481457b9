"""
The fork server's line protocol: the second wire format between the
master and the worker side, beside the AMP control channel of
L{preforktwist.protocol.control}.

The master talks to its fork server (L{preforktwist.worker.forkserver})
over a C{AF_UNIX} stream socket, the fork server's fd 3.  Each message is
one line of ASCII words ending in C{\\n}; the fork server runs no reactor
(see its module), so this format is one that a blocking loop reads as
easily as a Twisted protocol does.  Both sides encode and decode with the
functions below, and nowhere else.

Master to fork server:

    - C{fork CONFIG-JSON} (L{Fork}): fork one worker with this
      L{WorkerConfig}.
    - C{close} (L{Close}): fork no more; give back the listening sockets and
      exit once every child has.  EOF on the socket means the same.

Fork server to master:

    - C{forked PID} (L{Forked}): a worker was born.  The same C{sendmsg}
      carries L{FORKED_FDS} descriptors (C{SCM_RIGHTS}): the master's ends
      of the worker's control channel, stdout and stderr, in that order.
      Workers are forked in the order they were asked for.
    - C{exited PID STATUS} (L{Exited}): the fork server reaped a worker;
      C{STATUS} is the raw C{waitpid} status.

A line of an unknown kind is ignored, so that either side may learn new
messages first; a known kind with arguments that do not parse is a broken
peer, and raises C{ValueError}.
"""

from __future__ import annotations

from dataclasses import dataclass

from preforktwist.protocol.config import WorkerConfig

#: What ends each line.
DELIMITER = b"\n"

#: The longest line either side accepts: a L{WorkerConfig} as JSON is a
#: few hundred bytes, but endpoint descriptions (TLS paths) are the user's.
MAX_LENGTH = 1 << 20

#: Descriptors that come with each L{Forked}: control, stdout, stderr.
FORKED_FDS = 3


@dataclass(frozen=True)
class Fork:
    """
    Master to fork server: fork a worker with this configuration.
    """

    config: WorkerConfig


@dataclass(frozen=True)
class Close:
    """
    Master to fork server: no more forks.
    """


@dataclass(frozen=True)
class Forked:
    """
    Fork server to master: worker C{pid} was born (its descriptors come
    with this line).
    """

    pid: int


@dataclass(frozen=True)
class Exited:
    """
    Fork server to master: worker C{pid} ended with C{waitpid} C{status}.
    """

    pid: int
    status: int


#: What the master sends.
Command = Fork | Close

#: What the fork server sends.
Report = Forked | Exited


def encode(message: Command | Report) -> bytes:
    """
    One message as its line, without the delimiter
    (L{twisted.protocols.basic.LineReceiver.sendLine} adds it).
    """
    if isinstance(message, Fork):
        return b"fork " + message.config.toJSON().encode()
    if isinstance(message, Close):
        return b"close"
    if isinstance(message, Forked):
        return b"forked %d" % (message.pid,)
    return b"exited %d %d" % (message.pid, message.status)


def decodeCommand(line: bytes) -> Command | None:
    """
    A line the fork server received, without its delimiter.

    @return: the command, or C{None} for a kind this version does not know.
    @raise ValueError: for a known kind whose argument does not parse.
    """
    verb, _, argument = line.partition(b" ")
    if verb == b"fork":
        try:
            return Fork(WorkerConfig.fromJSON(argument.decode()))
        except (TypeError, UnicodeDecodeError) as e:
            raise ValueError(f"bad fork command: {e}") from None
    if verb == b"close":
        return Close()
    return None


def decodeReport(line: bytes) -> Report | None:
    """
    A line the master received, without its delimiter.

    @return: the report, or C{None} for a kind this version does not know.
    @raise ValueError: for a known kind whose arguments do not parse.
    """
    words = line.split()
    if words[:1] == [b"forked"] and len(words) == 2:
        return Forked(int(words[1]))
    if words[:1] == [b"exited"] and len(words) == 3:
        return Exited(int(words[1]), int(words[2]))
    if words[:1] in ([b"forked"], [b"exited"]):
        raise ValueError(f"bad report: {line!r}")
    return None
