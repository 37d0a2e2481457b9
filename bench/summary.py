"""
The runs summed up: medians and spreads over the rounds, and same-round
ratios of one server against another.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench.common import MODES
from bench.servers import Server, baselineKey


def med(values: Sequence[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def spread(values: Sequence[float | None]) -> tuple[float, float] | None:
    clean = [v for v in values if v is not None]
    return (min(clean), max(clean)) if clean else None


def byRound(
    runs: list[dict[str, Any]], key: str, mode: str
) -> dict[int, dict[str, Any]]:
    return {
        r["round"]: r
        for r in runs
        if r["server"] == key and r["mode"] == mode and "failed" not in r
    }


def ratios(
    runs: list[dict[str, Any]], key: str, base: str, mode: str, field: str = "rps"
) -> list[float]:
    """
    key / base for each round where both ran: same-round ratios.
    """
    mine, theirs = byRound(runs, key, mode), byRound(runs, base, mode)
    out = []
    for rnd, r in sorted(mine.items()):
        b = theirs.get(rnd)
        if b and r.get(field) is not None and b.get(field):
            out.append(r[field] / b[field])
    return out


def entry(
    server: Server, mode: str, mine: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """
    The summary of one server under one load, from its runs C{mine}.
    """
    good = [r for r in mine if "failed" not in r]
    base = baselineKey(server)
    rps = [r["rps"] for r in good]
    result: dict[str, Any] = {
        "runs": len(mine),
        "failed": len(mine) - len(good),
        "rps": rps,
        "rps_median": med(rps),
        "rps_spread": spread(rps),
    }
    result.update(
        {
            "ratio": ratios(runs, server.key, base, mode),
            "cpu_ratio": ratios(runs, server.key, base, mode, "cpu_per_1000"),
            "p50_ms": med([r["p50_ms"] for r in good]),
            "p99_ms": med([r["p99_ms"] for r in good]),
            "p99_spread": spread([r["p99_ms"] for r in good]),
            "errors": sum(r["errors"] for r in good),
            "requests": sum(r["requests"] for r in good),
            "cpu_per_1000": med([r["cpu_per_1000"] for r in good]),
            "cpu_spread": spread([r["cpu_per_1000"] for r in good]),
            "pss_mib": med([r["pss_kib"] / 1024 for r in good]),
            "processes": med([r["processes"] for r in good]),
            "other_cores": med([r.get("other_cores") for r in good]),
            "client_cpu_per_1000": med(
                [
                    r["client_cpu_s"] / r["requests"] * 1000
                    for r in good
                    if r.get("requests")
                ]
            ),
        }
    )
    result["ratio_median"] = med(result["ratio"])
    result["ratio_spread"] = spread(result["ratio"])
    result["cpu_ratio_median"] = med(result["cpu_ratio"])
    addShares(result, good)
    return result


def addShares(result: dict[str, Any], good: list[dict[str, Any]]) -> None:
    """
    The workers' shares of the connections, from their logs, into C{result}.
    """
    shared = [r["share"] for r in good if "share" in r]
    shares = [s["max_over_min"] for s in shared if "max_over_min" in s]
    if shares:
        result["share_median"] = med(shares)
        result["share_worst"] = max(shares)
        result["share_counts"] = [s["counts"] for s in shared]
    started = [s["workers_started"] for s in shared if "workers_started" in s]
    if started:
        result["workers_started"] = med(started)
    result["log_errors"] = sum(s.get("worker_errors", 0) for s in shared)


def summarize(servers: list[Server], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    Each server's summary under each load it ran, keyed C{KEY/MODE}.
    """
    summary: dict[str, Any] = {}
    for server in servers:
        for mode in MODES:
            mine = [r for r in runs if r["server"] == server.key and r["mode"] == mode]
            if mine:
                summary[f"{server.key}/{mode}"] = entry(server, mode, mine, runs)
    return summary
