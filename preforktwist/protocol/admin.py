"""
The control socket's commands (C{--control}), between the master and
C{preforktwist-ctl}: AMP over a UNIX socket, each command answered once
what it asked for is done or has failed.

Every refusal or failure is a L{ControlError} whose message is one line,
shown to the operator as it is.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols import amp


class ControlError(Exception):
    """
    The command cannot be carried out, or failed; the message says why.
    """


#: Errors a command may answer with, by their name on the wire.
_ERRORS: dict[type[Exception], bytes] = {ControlError: b"CONTROL_ERROR"}


class BigText(amp.Argument):
    """
    Text of any length: an AMP value holds at most 65,535 bytes, so the
    UTF-8 bytes are spread over as many keys as needed (C{name},
    C{name.1}, C{name.2}, ...) and joined again.
    """

    CHUNK = 0xFFFF

    def toBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: Any,
    ) -> None:
        data = str(objects[name.decode("ascii")]).encode("utf-8")
        chunks = [data[i : i + self.CHUNK] for i in range(0, len(data), self.CHUNK)]
        for index, chunk in enumerate(chunks or [b""]):
            strings[name if index == 0 else b"%s.%d" % (name, index)] = chunk

    def fromBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: Any,
    ) -> None:
        parts = []
        key, index = name, 0
        while key in strings:
            parts.append(strings[key])
            index += 1
            key = b"%s.%d" % (name, index)
        objects[name.decode("ascii")] = b"".join(parts).decode("utf-8")


class Status(amp.Command):
    """
    The pool and each worker: the snapshot C{/status.json} shows, as JSON.
    """

    response = [(b"snapshot", BigText())]
    errors = _ERRORS


class Resize(amp.Command):
    """
    C{delta} workers more (or fewer, if negative), exactly: the pool's size
    once changed is the answer.
    """

    arguments = [(b"delta", amp.Integer())]
    response = [(b"size", amp.Integer())]
    errors = _ERRORS


class Reload(amp.Command):
    """
    A rolling reload (as SIGHUP), answered once it has finished, or
    failed with a L{ControlError} once it stopped.
    """

    response = [(b"message", amp.Unicode())]
    errors = _ERRORS


class Upgrade(amp.Command):
    """
    A hot upgrade (as SIGUSR2), answered with the new master's pid once it
    is ready and this master retires, or failed with a L{ControlError}.
    """

    response = [(b"pid", amp.Integer())]
    errors = _ERRORS


class Stack(amp.Command):
    """
    The Python stacks of every thread of one worker, named by its number
    or its pid.
    """

    arguments = [(b"worker", amp.Unicode())]
    response = [(b"pid", amp.Integer()), (b"stack", BigText())]
    errors = _ERRORS


class Stop(amp.Command):
    """
    A graceful stop (as SIGTERM), answered at once with the master's pid;
    the connection ends when the master exits.
    """

    response = [(b"pid", amp.Integer())]
    errors = _ERRORS
