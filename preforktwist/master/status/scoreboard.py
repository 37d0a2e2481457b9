"""
The pool's live state as one plain dictionary: what the status page, its
JSON and the Prometheus metrics all show.

Everything here is read from what the master already knows: the pool's
records, the counters each worker reports over its control channel (at
least once a second), the kernel's view of the listening sockets, and
C{/proc}.  Nothing asks a worker anything, so a slow or dead worker can
never hold up a status request.

The snapshot's schema (version 1), stable: keys are only ever added::

    {
      "schema": 1,
      "time": 1764260000.0,             # Unix time of the snapshot
      "uptime": 3600.0,                 # seconds since the pool started
      "listeners": [
        {"description": "tcp:8080", "address": "0.0.0.0:8080",
         "queue": 0,                    # connections waiting for a worker
                                        # (null where the kernel won't say)
         "backlog": 1024}
      ],
      "pool": {
        "wanted": 4, "alive": 5, "booting": 1, "standby": 0, "accepting": 3,
        "paused": 0,                    # accepting, but at --max-concurrent
        "retiring": 1, "stopping": 0,
        "reloading": false, "spawned": 17,
        "saturated": false,             # every accepting worker at its cap
        "queued": 0                     # connections waiting, all listeners
                                        # (null where the kernel won't say)
      },
      "connections": {
        "accepted": 12345, "served": 12300, "open": 45,
        "per_second": 210.5             # served, over the last minute
      },
      "restarts": {"allowance": 10, "memory": 0, "age": 0, "crash": 1,
                   "boot_failure": 0,
                   "heartbeat_timeout": 0, "reload": 4, "scaling": 0,
                   "signal": 0},
      "closes": {"first_byte_timeout": 3},  # connections workers closed
                                        # themselves, by cause
      "autoscale": {"min": 2, "max": 8,  # null unless --min/--max-workers
                    "last_decision": {"ago": 12.5, "size": 5,
                                      "reason": "3 connections waiting for 2.0s"}},
      "history": {                      # the last five minutes, for the page's
                                        # picture; times in seconds before
                                        # this snapshot
        "interval": 1.0,                # seconds between samples
        "span": 300.0,                  # seconds kept
        "samples": {                    # one column per series, oldest first
          "ago": [299.0, 298.0, ..., 0.0],
          "per_second": [null, 12.0, ...],  # connections accepted per second
                                        # since the sample before (null for
                                        # the first)
          "open": [3, 4, ...],          # connections open in workers
          "queued": [0, 0, ...]         # waiting in all listen queues (null
                                        # where the kernel won't say)
        },
        "marks": [                      # what changed the pool, oldest first
          {"ago": 42.1, "kind": "reload", "detail": "started", "count": 1},
          {"ago": 40.0, "kind": "restart", "detail": "crash", "count": 1}
        ]                               # kind: reload or upgrade (detail:
                                        # started, finished, failed), or
                                        # restart (detail: the cause, count:
                                        # how many in that sample)
      },
      "workers": [
        {"number": 17, "pid": 4242,
         "state": "accepting",          # booting, standby, accepting,
                                        # paused, retiring, stopping
         "open": 12, "accepted": 800, "served": 788,
         "allowance": 1000,             # 0: no allowance
         "allowance_left": 200,         # null without an allowance
         "max_concurrent": 19936,       # its cap; 0: none, null: unknown
         "age": 61.2,                   # seconds since it was started
         "last_heartbeat": 0.4,         # seconds since it last reported
         "rss": 31457280}               # bytes, null if unknown
      ]
    }
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime

from preforktwist.master.events import CloseCause, RestartCause
from preforktwist.master.listeners import Listener, listenQueue
from preforktwist.master.periodic import PeriodicService
from preforktwist.master.pool import Pool, WorkerState
from preforktwist.master.procfs import residentBytes
from preforktwist.master.status.history import History
from preforktwist.master.status.saturation import atCap, isSaturated, queued

SCHEMA = 1

#: Per-worker states shown, in order.
STATES = ("booting", "standby", "accepting", "paused", "retiring", "stopping")


class Scoreboard(PeriodicService):
    """
    Builds snapshots of the pool, and keeps a minute of history for the
    connection rate and five minutes for the page's picture (L{History}):
    while it runs as a service, it samples the pool once a second.
    """

    WINDOW = 60.0

    def __init__(
        self, pool: Pool, listeners: Sequence[Listener], clock: IReactorTime
    ) -> None:
        super().__init__(1.0, self._sample, clock)
        self.pool = pool
        self.listeners = listeners
        self.startedAt = clock.seconds()
        #: Set by the service when the pool adapts its size.
        self.autoscaler: Any = None
        self._minute: deque[tuple[float, int]] = deque()
        #: The last five minutes, marked with the reloads as they happen.
        self.history = History()
        pool.observers.append(self.history.poolEvent)

    def startService(self) -> None:
        self.startedAt = self.clock.seconds()
        super().startService()

    def _served(self) -> int:
        return self.pool.exitedServed + sum(
            w.served for w in self.pool.workers.values()
        )

    def _accepted(self) -> int:
        return self.pool.exitedAccepted + sum(
            w.accepted for w in self.pool.workers.values()
        )

    def _open(self) -> int:
        return sum(getattr(w, "open", 0) for w in self.pool.workers.values())

    def _sample(self) -> None:
        now = self.clock.seconds()
        self._minute.append((now, self._served()))
        while self._minute and now - self._minute[0][0] > self.WINDOW:
            self._minute.popleft()
        self.history.sample(
            now,
            self._accepted(),
            self._open(),
            queued(self.listeners),
            self.pool.restarts,
        )

    def perSecond(self) -> float:
        """
        Connections served per second over the last minute (or since the
        start, if that is shorter).
        """
        if not self._minute:
            return 0.0
        since, servedThen = self._minute[0]
        elapsed = self.clock.seconds() - since
        return (self._served() - servedThen) / elapsed if elapsed > 0 else 0.0

    def workerState(self, worker: Any) -> str:
        if worker.state is WorkerState.ACCEPTING and atCap(worker):
            return "paused"
        return str(worker.state.value)

    def snapshot(self) -> dict[str, Any]:
        now = self.clock.seconds()
        pool = self.pool
        workers = []
        for worker in sorted(pool.workers.values(), key=lambda w: w.number):
            record = pool.record(worker)
            config = getattr(worker, "config", None)
            allowance = config.allowance if config is not None else 0
            workers.append(
                {
                    "number": worker.number,
                    "pid": getattr(worker, "pid", None),
                    "state": self.workerState(worker),
                    "open": getattr(worker, "open", 0),
                    "accepted": worker.accepted,
                    "served": worker.served,
                    "allowance": allowance,
                    "allowance_left": (
                        max(0, allowance - worker.accepted) if allowance else None
                    ),
                    "max_concurrent": getattr(worker, "maxConcurrent", None),
                    "age": round(now - record.startedAt, 3),
                    "last_heartbeat": round(now - record.lastSeen, 3),
                    "rss": residentBytes(getattr(worker, "pid", None)),
                }
            )
        counts = {state: 0 for state in STATES}
        for row in workers:
            counts[str(row["state"])] += 1
        listeners = []
        for listener in self.listeners:
            queue = listenQueue(listener.socket)
            listeners.append(
                {
                    "description": listener.spec.description,
                    "address": (
                        listener.describeAddress() if listener.socket else None
                    ),
                    "queue": queue[0] if queue else None,
                    "backlog": listener.spec.backlog,
                }
            )
        # Every cause, at 0 if it never happened.
        restarts = {cause.value: pool.restarts.get(cause, 0) for cause in RestartCause}
        live = pool.workers.values()
        closes = {
            CloseCause.FIRST_BYTE_TIMEOUT.value: pool.exitedFirstByteTimeouts
            + sum(getattr(w, "firstByteTimeouts", 0) for w in live)
        }
        depths = [row["queue"] for row in listeners if row["queue"] is not None]
        return {
            "schema": SCHEMA,
            "time": time.time(),
            "uptime": round(now - self.startedAt, 3),
            "listeners": listeners,
            "pool": {
                "wanted": pool.size,
                "alive": len(workers),
                **counts,
                "reloading": pool.reloading,
                "spawned": pool.spawned,
                "saturated": isSaturated(pool),
                "queued": sum(depths) if depths else None,
            },
            "connections": {
                "accepted": self._accepted(),
                "served": self._served(),
                "open": self._open(),
                "per_second": round(self.perSecond(), 3),
            },
            "restarts": restarts,
            "closes": closes,
            "workers": workers,
            "autoscale": self._autoscale(now),
            "history": self.history.asJSON(now),
        }

    def _autoscale(self, now: float) -> dict[str, Any] | None:
        scaler = self.autoscaler
        if scaler is None:
            return None
        last = scaler.decisions[-1] if scaler.decisions else None
        return {
            "min": scaler.minimum,
            "max": scaler.maximum,
            "last_decision": (
                {
                    "ago": round(now - last.time, 3),
                    "size": last.size,
                    "reason": last.reason,
                }
                if last
                else None
            ),
        }
