"""
The pool's state in Prometheus' exposition format, produced by the
C{prometheus_client} library (the optional extra C{preforktwist[metrics]}).

A custom collector turns each scoreboard snapshot into metric families at
scrape time: nothing is updated on the accept path.  Per-worker series are
left out on purpose: worker numbers grow without end, and labels that do
would grow Prometheus' series without end.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Any

from preforktwist.master.events import CloseCause, RestartCause
from preforktwist.master.status.scoreboard import STATES, Scoreboard


class MetricsUnavailableError(Exception):
    """
    C{prometheus_client} is not installed.
    """


def _families(snapshot: dict[str, Any]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    connections = snapshot["connections"]
    pool = snapshot["pool"]
    yield CounterMetricFamily(
        "preforktwist_connections_accepted",
        "Connections accepted by workers.",
        value=connections["accepted"],
    )
    yield CounterMetricFamily(
        "preforktwist_connections_served",
        "Connections accepted and closed again.",
        value=connections["served"],
    )
    yield GaugeMetricFamily(
        "preforktwist_connections_open",
        "Connections open in workers now.",
        value=connections["open"],
    )
    workers = GaugeMetricFamily(
        "preforktwist_workers", "Workers by state.", labels=["state"]
    )
    for state in STATES:
        workers.add_metric([state], pool[state])
    yield workers
    yield GaugeMetricFamily(
        "preforktwist_workers_wanted", "Workers the pool keeps.", value=pool["wanted"]
    )
    yield CounterMetricFamily(
        "preforktwist_workers_spawned", "Workers ever started.", value=pool["spawned"]
    )
    yield GaugeMetricFamily(
        "preforktwist_reloading",
        "1 while a rolling reload runs.",
        value=pool["reloading"],
    )
    yield _byCause(
        "preforktwist_worker_restarts",
        "Workers replaced, by cause.",
        RestartCause,
        snapshot["restarts"],
    )
    yield _byCause(
        "preforktwist_connections_closed",
        "Connections workers closed themselves, by cause.",
        CloseCause,
        snapshot["closes"],
    )
    yield GaugeMetricFamily(
        "preforktwist_saturated",
        "1 while every accepting worker is at its --max-concurrent cap.",
        value=int(pool["saturated"]),
    )
    if pool["queued"] is not None:
        yield GaugeMetricFamily(
            "preforktwist_connections_queued",
            "Connections waiting in all listening sockets' queues for a worker.",
            value=pool["queued"],
        )
    queue = GaugeMetricFamily(
        "preforktwist_listen_queue_depth",
        "Connections waiting in a listening socket's queue for a worker.",
        labels=["listener"],
    )
    backlog = GaugeMetricFamily(
        "preforktwist_listen_backlog",
        "Size of a listening socket's queue.",
        labels=["listener"],
    )
    for listener in snapshot["listeners"]:
        if listener["queue"] is not None:
            queue.add_metric([listener["description"]], listener["queue"])
        backlog.add_metric([listener["description"]], listener["backlog"])
    yield queue
    yield backlog
    yield GaugeMetricFamily(
        "preforktwist_uptime_seconds",
        "Seconds since the pool started.",
        value=snapshot["uptime"],
    )


class _Collector:
    def __init__(self, scoreboard: Scoreboard) -> None:
        self.scoreboard = scoreboard

    def collect(self) -> Iterator[Any]:
        return _families(self.scoreboard.snapshot())


def _byCause(
    name: str, documentation: str, causes: type[Enum], counts: dict[str, int]
) -> Any:
    """
    A counter labelled C{cause}, one sample per member of C{causes} (each
    spelled as in the status JSON), so that a cause never seen is a 0.
    """
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, documentation, labels=["cause"])
    for cause in causes:
        family.add_metric([cause.value], counts[cause.value])
    return family


def exposition(scoreboard: Scoreboard) -> tuple[bytes, str]:
    """
    The metrics as a Prometheus scrape response: body and content type.

    @raise MetricsUnavailableError: C{prometheus_client} is not installed.
    """
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
        from prometheus_client.exposition import generate_latest
    except ImportError:
        raise MetricsUnavailableError(
            "/metrics needs prometheus_client: pip install 'preforktwist[metrics]'"
        ) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(scoreboard))
    return generate_latest(registry), CONTENT_TYPE_LATEST
