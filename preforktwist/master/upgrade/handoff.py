"""
What an old master hands the new one at a hot upgrade, in one environment
variable, as systemd's C{LISTEN_FDS} and gunicorn's C{GUNICORN_FD} do: its
own pid, the descriptor of the channel between the two, and every socket it
listens on, by what it is (C{listen tcp:8080}, C{status tcp:9100},
C{control unix:/run/app.ctl}).  The descriptors keep their numbers in the
new master, so a socket systemd passed in stays where C{LISTEN_FDS} says.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from preforktwist.common.logs import NamedLogger

#: The environment variable the new master finds its inheritance in.
HANDOFF_VARIABLE = "PREFORKTWIST_HANDOFF"

log = NamedLogger("preforktwist.upgrade")


def socketKey(kind: str, description: str) -> str:
    """
    How a socket is named in a handoff: what it serves (C{listen},
    C{status}, C{control}) and the endpoint description it was made from.
    """
    return f"{kind} {description}"


@dataclass(frozen=True)
class Handoff:
    """
    What one master hands the next.

    @ivar predecessor: the old master's pid.
    @ivar channel: the descriptor of the new master's end of the channel.
    @ivar sockets: the listening sockets' descriptors by L{socketKey}; a
        key given twice (two pools on the same description) lists its
        sockets in the order the pools were made.
    """

    predecessor: int
    channel: int
    sockets: dict[str, list[int]] = field(default_factory=dict)

    def descriptors(self) -> list[int]:
        """Every descriptor handed over, the channel's too."""
        return [self.channel] + [fd for fds in self.sockets.values() for fd in fds]

    def toText(self) -> str:
        return json.dumps(
            {
                "predecessor": self.predecessor,
                "channel": self.channel,
                "sockets": self.sockets,
            }
        )

    @classmethod
    def fromText(cls, text: str) -> Handoff:
        """
        @raise ValueError: the text is not a handoff.
        """
        try:
            value = json.loads(text)
            sockets = {
                str(key): [int(fd) for fd in fds]
                for key, fds in value["sockets"].items()
            }
            return cls(int(value["predecessor"]), int(value["channel"]), sockets)
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as e:
            raise ValueError(f"{HANDOFF_VARIABLE} is not a handoff: {e}") from None


class Inheritance:
    """
    The sockets this master was handed, each claimed once by what serves
    it; what nobody claims is closed once everything has bound.

    @ivar handoff: what was handed over; L{None} in a master started
        afresh.
    """

    def __init__(self, handoff: Handoff | None) -> None:
        self.handoff = handoff
        self._left = {
            key: list(fds) for key, fds in (handoff.sockets if handoff else {}).items()
        }

    @property
    def predecessor(self) -> int | None:
        """The old master's pid, if this master is the new one."""
        return self.handoff.predecessor if self.handoff is not None else None

    def has(self, key: str) -> bool:
        """Whether a socket is left to claim under C{key}."""
        return bool(self._left.get(key))

    def claim(self, key: str) -> int | None:
        """
        The next socket handed over under C{key}, taken; L{None} if none is
        left.
        """
        fds = self._left.get(key)
        if not fds:
            return None
        return fds.pop(0)

    def closeUnclaimed(self) -> None:
        """
        Close what nothing here serves (the new code listens on less), so
        the old master's close really ends those sockets.
        """
        for key, fds in self._left.items():
            for fd in fds:
                log.info("not serving {key} any more: closing it", key=key)
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._left.clear()


def inheritanceFrom(environ: MutableMapping[str, str]) -> Inheritance:
    """
    The inheritance in C{environ}, taken out of it: neither the workers
    nor a later new master must see it.
    """
    text = environ.pop(HANDOFF_VARIABLE, None)
    if text is None:
        return Inheritance(None)
    try:
        return Inheritance(Handoff.fromText(text))
    except ValueError as e:
        log.error("{error}: starting afresh", error=e)
        return Inheritance(None)


_inherited: list[Inheritance] = []


def inherited(environ: MutableMapping[str, str] = os.environ) -> Inheritance:
    """
    This process's inheritance, read once (the first call takes it out of
    the environment).
    """
    if not _inherited:
        _inherited.append(inheritanceFrom(environ))
    return _inherited[0]


def withHandoff(environ: Mapping[str, str], handoff: Handoff) -> dict[str, str]:
    """
    C{environ} with C{handoff} in it, for the new master.
    """
    return {**environ, HANDOFF_VARIABLE: handoff.toText()}
