"""
Issue 12's targets, each checked against this run's measurements, and
what bounds the rate targets on this machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import MODE_TITLES, MODES
from bench.formats import fmtRatio, fmtShare
from bench.summary import med, ratios

Row = tuple[str, str, str, str]


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


class Targets:
    """
    The rows of the targets table, (target, threshold, measured, verdict),
    as they are checked.
    """

    def __init__(self, runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
        self.runs = runs
        self.summary = summary
        self.rows: list[Row] = []

    def ratios(self, key: str, base: str, mode: str, field: str = "rps") -> list[float]:
        return ratios(self.runs, key, base, mode, field)

    def check(
        self,
        name: str,
        threshold: str,
        values: list[float],
        ok: Callable[[float], bool],
    ) -> None:
        """
        A row whose verdict is C{ok} of the median of C{values}.
        """
        m = med(values)
        self.rows.append(
            (name, threshold, fmtRatio(values), verdict(None if m is None else ok(m)))
        )

    def reference(self, name: str, values: list[float]) -> None:
        """
        A row for comparison, with no threshold.
        """
        self.rows.append((name, "-", fmtRatio(values), "(reference)"))


def rateTargets(t: Targets) -> None:
    """
    1-3: the connection rate and keep-alive against one process, -w 8
    against -w 2.
    """
    t.check(
        "1. connection rate, -w 2 vs single",
        ">= 1.15x",
        t.ratios("pt-w2-m0", "single", "close"),
        lambda m: m >= 1.15,
    )
    t.check(
        "1. CPU per connection, -w 2 vs single",
        "<= 1.05x",
        t.ratios("pt-w2-m0", "single", "close", "cpu_per_1000"),
        lambda m: m <= 1.05,
    )
    t.reference(
        "1. (for comparison) naive pre-fork -w 2 vs single, connection rate",
        t.ratios("naive-w2", "single", "close"),
    )
    t.check(
        "2. connection rate, -w 8 vs -w 2",
        ">= 0.95x",
        t.ratios("pt-w8-m0", "pt-w2-m0", "close"),
        lambda m: m >= 0.95,
    )
    t.check(
        "2. CPU per connection, -w 8 vs -w 2",
        "<= 1.05x",
        t.ratios("pt-w8-m0", "pt-w2-m0", "close", "cpu_per_1000"),
        lambda m: m <= 1.05,
    )
    t.reference(
        "2. (for comparison) naive pre-fork -w 8 vs -w 2, connection rate",
        t.ratios("naive-w8", "naive-w2", "close"),
    )
    t.check(
        "3. keep-alive, -w 2 vs single",
        ">= 1.3x",
        t.ratios("pt-w2-m0", "single", "keepalive"),
        lambda m: m >= 1.3,
    )


def balanceTargets(t: Targets, bursts: Sequence[dict[str, Any]]) -> None:
    """
    4: busiest / idlest worker, under the connection rate and in the burst.
    """
    for w in (2, 4, 8):
        s = t.summary.get(f"pt-w{w}-m0/close", {})
        if "share_median" in s:
            t.rows.append(
                (
                    f"4. balance, connection rate, -w {w} (busiest / idlest worker)",
                    "<= 1.5",
                    f"median {s['share_median']:.2f}, worst {s['share_worst']:.2f}",
                    verdict(s["share_worst"] <= 1.5),
                )
            )
        else:
            t.rows.append(
                (f"4. balance, connection rate, -w {w}", "<= 1.5", "n/a", "n/a")
            )
    for w in (2, 4, 8):
        held = [
            b["max_over_min"]
            for b in bursts
            if b["server"] == f"pt-w{w}-m0" and "max_over_min" in b
        ]
        t.rows.append(
            (
                f"4. balance, long-lived burst, -w {w} (busiest / idlest worker)",
                "<= 1.5",
                f"median {fmtShare(statistics.median(held))}, "
                f"worst {fmtShare(max(held))}"
                if held
                else "n/a",
                verdict(max(held) <= 1.5) if held else "n/a",
            )
        )


def recyclingTargets(t: Targets, replacements: Sequence[dict[str, Any]]) -> None:
    """
    5: recycling's cost in rate and errors, and the CPU of one replacement
    with its floor.
    """
    for m, need in ((1000, 0.95), (100, 0.75)):
        values = t.ratios(f"pt-w2-m{m}", "pt-w2-m0", "close")
        errors = t.summary.get(f"pt-w2-m{m}/close", {}).get("errors")
        mm = med(values)
        t.rows.append(
            (
                f"5. recycling -m {m} vs -m 0 (-w 2, connection rate), zero errors",
                f">= {need}x, 0 errors",
                f"{fmtRatio(values)}; errors {errors}",
                verdict(None if mm is None else (mm >= need and errors == 0)),
            )
        )
    for r in replacements:
        if "cpu_ms_each" in r and r.get("floor"):
            t.rows.append(
                (
                    f"5. (for comparison) fork + immediate exit, {r['server']}",
                    "-",
                    f"{r['cpu_ms_each']:.2f} ms (x{r['forks']})",
                    "(floor)",
                )
            )
        elif "cpu_ms_each" in r:
            t.rows.append(
                (
                    f"5. CPU of one replacement, all processes ({r['server']})",
                    "<= 5 ms",
                    f"{r['cpu_ms_each']:.1f} ms (x{r['replacements']}), wall "
                    f"{r['wall_ms_median']:.0f} ms",
                    verdict(r["cpu_ms_each"] <= 5),
                )
            )


def heavyTargets(t: Targets) -> None:
    """
    6: recycling the Django app, with and without --preload.
    """
    for suffix, label in (("", ""), ("-preload", ", --preload")):
        values = t.ratios(
            f"pt-w2-m1000-heavy{suffix}", f"pt-w2-m0-heavy{suffix}", "close"
        )
        if values:
            t.check(
                f"6. heavy app{label}: -m 1000 vs -m 0 (-w 2, connection rate)",
                ">= 0.95x",
                values,
                lambda m: m >= 0.95,
            )


def peerTargets(t: Targets, masters: Sequence[dict[str, Any]]) -> None:
    """
    7: against the naive pre-fork and gunicorn, and the master's memory.
    """
    for w in (2, 4, 8):
        for mode in MODES:
            t.check(
                f"7. -w {w} vs naive pre-fork -w {w} ({mode})",
                ">= 1.0x",
                t.ratios(f"pt-w{w}-m0", f"naive-w{w}", mode),
                lambda m: m >= 1.0,
            )
    t.check(
        "7. -w 2 vs gunicorn sync -w 2 (connection rate)",
        ">= 2x",
        t.ratios("pt-w2-m0", "gunicorn-w2", "close"),
        lambda m: m >= 2.0,
    )
    for r in masters:
        if "rss_mib" in r:
            t.rows.append(
                (
                    f"7. master RSS, -w 2, {r['install']}"
                    + (", --status" if r["status"] else ""),
                    "<= 40 MiB",
                    f"{r['rss_mib']:.1f} MiB (at start {r['rss_start_mib']:.1f})",
                    verdict(r["rss_mib"] <= 40),
                )
            )


def targets(
    runs: list[dict[str, Any]],
    summary: dict[str, Any],
    bursts: Sequence[dict[str, Any]] = (),
    replacements: Sequence[dict[str, Any]] = (),
    masters: Sequence[dict[str, Any]] = (),
) -> list[Row]:
    """
    (target, threshold, measured, verdict) for each of issue 12's targets,
    numbered as the issue numbers them.
    """
    t = Targets(runs, summary)
    rateTargets(t)
    balanceTargets(t, bursts)
    recyclingTargets(t, replacements)
    heavyTargets(t)
    peerTargets(t, masters)
    return t.rows


def rateCeiling(cores: int, serverPer1000: float, wrkPer1000: float) -> float:
    """
    The most requests a second C{cores} allow when each 1,000 requests cost
    the server C{serverPer1000} and wrk C{wrkPer1000} seconds of CPU: the
    load generator runs on the same cores.
    """
    return cores / (serverPer1000 + wrkPer1000) * 1000


def cpuBudget(cores: int, rate: float, wrkPer1000: float) -> float:
    """
    The server's CPU per 1,000 requests, in seconds, at which C{cores}
    still allow C{rate} requests a second beside wrk's C{wrkPer1000}.
    """
    return cores / (rate / 1000) - wrkPer1000


def ceilingLine(
    mode: str, need: float, one: dict[str, Any], two: dict[str, Any], cores: int
) -> str:
    """
    What C{cores} allow preforktwist -w 2 (C{two}) under one load, against
    what one process (C{one}) served and what the target C{need} asks.
    """
    wrk = two["client_cpu_per_1000"]
    ceiling = rateCeiling(cores, two["cpu_per_1000"], wrk)
    target = need * one["rps_median"]
    budget = cpuBudget(cores, target, wrk)
    return (
        f"- {MODE_TITLES[mode]}: one process served {one['rps_median']:,.0f} "
        f"req/s at {one['cpu_per_1000'] * 1000:.0f} ms of CPU per 1,000 "
        f"(wrk: {one['client_cpu_per_1000'] * 1000:.0f} ms). preforktwist -w 2 "
        f"spends {two['cpu_per_1000'] * 1000:.0f} ms and wrk "
        f"{wrk * 1000:.0f} ms per 1,000, so {cores} cores allow at most "
        f"{ceiling:,.0f} req/s ({ceiling / one['rps_median']:.2f}x one "
        f"process); measured {two['rps_median']:,.0f}. {need:g}x "
        f"({target:,.0f} req/s) would need the server at "
        f"{budget * 1000:.0f} ms per 1,000 or less, "
        f"{budget / one['cpu_per_1000']:.2f}x what one process spends."
    )


def cpuCeiling(summary: dict[str, Any], cores: int) -> list[str]:
    """
    RESULTS.md's paragraph on what bounds the rate targets on this machine:
    wrk and the server share its cores, so with C{c} seconds of server CPU
    and C{k} of wrk's per 1,000 requests no server can pass C{cores / (c +
    k)} thousand requests per second, and one process is bounded by one
    core as well.  Computed from this run's own medians.
    """
    lines: list[str] = []
    for mode, need in (("close", 1.15), ("keepalive", 1.3)):
        one = summary.get(f"single/{mode}", {})
        two = summary.get(f"pt-w2-m0/{mode}", {})
        if not (one.get("cpu_per_1000") and two.get("cpu_per_1000")):
            continue
        if not (one.get("client_cpu_per_1000") and two.get("client_cpu_per_1000")):
            continue
        lines.append(ceilingLine(mode, need, one, two, cores))
    if not lines:
        return []
    return [
        "## What bounds the rate targets on this machine",
        "",
        "The load generator runs on the same cores as the server. From this "
        "run's medians:",
        "",
        *lines,
        "",
    ]
