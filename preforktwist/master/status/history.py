"""
The last five minutes of the pool, for the status page's picture:
connections per second, open connections and the listen queue, sampled
once a second into a ring buffer, with marks for what changed the pool
(reloads, upgrades, restarts by cause).

A reload's marks come from the pool's events as they happen.  Restarts
are the differences of the pool's restart counters from one sample to the
next, so the marks add up to the counts C{/status.json} shows under
C{restarts}, at the sampling's resolution.  An upgrade's marks are made by
whoever carries the upgrade out, with L{History.mark} and
L{MarkKind.UPGRADE}, C{started}, then C{finished} or C{failed}.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from preforktwist.master.events import (
    PoolEvent,
    ReloadFailed,
    ReloadFinished,
    ReloadStarted,
    RestartCause,
)

#: Seconds of history kept.
SPAN = 300.0

#: Seconds between two samples.
INTERVAL = 1.0

#: The most marks kept, whatever the span: a restart loop cannot grow
#: the master's memory (restarts are marked once per sample at most, per
#: cause; reloads and upgrades are rarer still).
MAX_MARKS = 1000


class MarkKind(str, enum.Enum):
    """
    What a mark on the picture shows; its value is the C{kind} in the
    JSON.
    """

    #: A rolling reload (C{SIGHUP}): C{started}, then C{finished} or
    #: C{failed}.
    RELOAD = "reload"
    #: A hot upgrade of the master: C{started}, then C{finished} or
    #: C{failed}.
    UPGRADE = "upgrade"
    #: Workers replaced: the detail is the L{RestartCause}'s value.
    RESTART = "restart"


#: The details of a reload's or an upgrade's marks.
STARTED, FINISHED, FAILED = "started", "finished", "failed"


@dataclass(frozen=True, slots=True)
class Mark:
    """
    Something that changed the pool, at a moment (clock seconds).
    """

    at: float
    kind: MarkKind
    detail: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class Sample:
    """
    The pool at one moment (clock seconds): connections accepted per
    second since the sample before (L{None} for the first), open, and
    waiting in the listen queues (L{None} where the kernel won't say).
    """

    at: float
    perSecond: float | None
    open: int
    queued: int | None


class History:
    """
    A ring buffer of L{Sample}s over the last C{span} seconds, and the
    marks made over the same time.
    """

    def __init__(self, span: float = SPAN, interval: float = INTERVAL) -> None:
        self.span = span
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=round(span / interval) + 1)
        self.marks: deque[Mark] = deque(maxlen=MAX_MARKS)
        self._accepted: tuple[float, int] | None = None
        self._restarts: dict[RestartCause, int] = {}

    def sample(
        self,
        now: float,
        accepted: int,
        open: int,
        queued: int | None,
        restarts: Mapping[RestartCause, int],
    ) -> None:
        """
        Keep the pool's state at C{now}: its counters of connections
        accepted and of restarts by cause, both totals since the start.
        """
        perSecond = None
        if self._accepted is not None:
            since, before = self._accepted
            if now > since:
                perSecond = max(0, accepted - before) / (now - since)
        self._accepted = (now, accepted)
        self.samples.append(Sample(now, perSecond, open, queued))
        for cause in RestartCause:
            count = restarts.get(cause, 0)
            new = count - self._restarts.get(cause, 0)
            if new > 0:
                self.mark(now, MarkKind.RESTART, cause.value, new)
            self._restarts[cause] = count
        self._forget(now)

    def mark(self, now: float, kind: MarkKind, detail: str, count: int = 1) -> None:
        """
        Mark C{now} on the picture.
        """
        self.marks.append(Mark(now, kind, detail, count))

    def poolEvent(self, event: PoolEvent) -> None:
        """
        The pool's observer: a reload's beginning and end are marked.
        """
        match event:
            case ReloadStarted():
                self.mark(event.at, MarkKind.RELOAD, STARTED)
            case ReloadFinished():
                self.mark(event.at, MarkKind.RELOAD, FINISHED)
            case ReloadFailed():
                self.mark(event.at, MarkKind.RELOAD, FAILED)

    def _forget(self, now: float) -> None:
        while self.marks and now - self.marks[0].at > self.span:
            self.marks.popleft()

    def asJSON(self, now: float) -> dict[str, Any]:
        """
        The history as C{/status.json} shows it, times as seconds before
        C{now} (see L{preforktwist.master.status.scoreboard}).
        """
        self._forget(now)
        samples = list(self.samples)
        return {
            "interval": self.interval,
            "span": self.span,
            "samples": {
                "ago": [_round(now - s.at) for s in samples],
                "per_second": [
                    None if s.perSecond is None else _round(s.perSecond)
                    for s in samples
                ],
                "open": [s.open for s in samples],
                "queued": [s.queued for s in samples],
            },
            "marks": [
                {
                    "ago": _round(now - m.at),
                    "kind": m.kind.value,
                    "detail": m.detail,
                    "count": m.count,
                }
                for m in self.marks
            ],
        }


def _round(seconds: float) -> float:
    return round(seconds, 3)
