"""
How far a pre-forked pool can outrun one process on this machine, given
what the load generator itself costs: from a bench/run.py results file.

    python bench/ceiling.py [bench/out/full/results.json]

wrk shares the machine's cores with the servers.  In each round, for each
workload and mode, it takes wrk's CPU per request (C{client_cpu_s}) and
each server's CPU per request (C{cpu_per_1000}), and reports the most the
pool could serve if every core were busy with wrk and the workers and
nothing else, as a ratio to the single process's rate in that round:

    ceiling = cores / (single rate * (wrk CPU + pool CPU, per request))

and what the pool's CPU per request would have to be for a target ratio:

    pool CPU needed = cores / (target * single rate) - wrk CPU

The arithmetic is RESULTS.md's (L{bench.targets.rateCeiling} and
L{bench.targets.cpuBudget}), taken here round by round for the hello
protocol and the Site, with each target; medians over the rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

# Runnable as a script from anywhere, as bench/run.py is.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.targets import cpuBudget, rateCeiling

TARGETS = {
    ("single", "pt-w2-m0", "close"): 1.05,
    ("single", "pt-w2-m0", "keepalive"): 1.8,
    ("single-site", "pt-w2-m0-site", "close"): 1.2,
    ("single-site", "pt-w2-m0-site", "keepalive"): 1.6,
}


def per1000(run: dict[str, Any]) -> tuple[float, float]:
    """
    The server's and wrk's CPU per 1,000 requests, in seconds.
    """
    requests = run["requests"]
    return run["cpu_s"] / requests * 1000, run["client_cpu_s"] / requests * 1000


def rows(runs: list[dict[str, Any]], cores: int) -> list[dict[str, Any]]:
    found = []
    for (single, pool, mode), target in TARGETS.items():
        rounds = sorted({r["round"] for r in runs})
        table: dict[str, list[float]] = {
            k: []
            for k in (
                "ratio",
                "single_us",
                "pool_us",
                "wrk_us",
                "ceiling",
                "ceiling_same_cpu",
                "needed_us",
            )
        }
        for n in rounds:
            pick = {
                r["server"]: r
                for r in runs
                if r["round"] == n and r["mode"] == mode and "failed" not in r
            }
            if single not in pick or pool not in pick:
                continue
            s, p = pick[single], pick[pool]
            singleCPU, _ = per1000(s)
            poolCPU, wrkCPU = per1000(p)
            rate = s["rps"]
            table["ratio"].append(p["rps"] / rate)
            # Seconds per 1,000 requests are milliseconds per request.
            table["single_us"].append(singleCPU * 1000)
            table["pool_us"].append(poolCPU * 1000)
            table["wrk_us"].append(wrkCPU * 1000)
            table["ceiling"].append(rateCeiling(cores, poolCPU, wrkCPU) / rate)
            table["ceiling_same_cpu"].append(
                rateCeiling(cores, singleCPU, wrkCPU) / rate
            )
            table["needed_us"].append(cpuBudget(cores, target * rate, wrkCPU) * 1000)
        if table["ratio"]:
            found.append(
                {"pool": pool, "mode": mode, "target": target}
                | {k: statistics.median(v) for k, v in table.items()}
            )
    return found


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/out/full/results.json"
    with open(path) as f:
        results = json.load(f)
    cores = int(results["info"].get("nproc") or os.cpu_count() or 1)
    print(
        f"{cores} cores; medians of {results['args']['rounds']} rounds; "
        "CPU in microseconds per request"
    )
    print(
        f"{'pool':15} {'mode':9} {'ratio':>6} {'target':>6} {'single':>7} "
        f"{'pool':>7} {'wrk':>6} {'ceiling':>8} {'at single CPU':>14} "
        f"{'pool CPU needed':>16}"
    )
    for row in rows(results["runs"], cores):
        print(
            f"{row['pool']:15} {row['mode']:9} {row['ratio']:6.2f} "
            f"{row['target']:6.2f} {row['single_us']:7.1f} {row['pool_us']:7.1f} "
            f"{row['wrk_us']:6.1f} {row['ceiling']:8.2f} "
            f"{row['ceiling_same_cpu']:14.2f} {row['needed_us']:16.1f}"
        )


if __name__ == "__main__":
    main()
