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

Medians over the rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

TARGETS = {
    ("single", "pt-w2-m0", "close"): 1.05,
    ("single", "pt-w2-m0", "keepalive"): 1.8,
    ("single-site", "pt-w2-m0-site", "close"): 1.2,
    ("single-site", "pt-w2-m0-site", "keepalive"): 1.6,
}


def perRequest(run: dict[str, Any]) -> tuple[float, float]:
    """
    The server's and wrk's CPU per request, in microseconds.
    """
    requests = run["requests"]
    return run["cpu_s"] / requests * 1e6, run["client_cpu_s"] / requests * 1e6


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
                "wrk_single_us",
                "wrk_pool_us",
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
            singleUs, wrkSingleUs = perRequest(s)
            poolUs, wrkPoolUs = perRequest(p)
            rate = s["rps"]
            table["ratio"].append(p["rps"] / rate)
            table["single_us"].append(singleUs)
            table["pool_us"].append(poolUs)
            table["wrk_single_us"].append(wrkSingleUs)
            table["wrk_pool_us"].append(wrkPoolUs)
            table["ceiling"].append(cores / (rate * (wrkPoolUs + poolUs) * 1e-6))
            table["ceiling_same_cpu"].append(
                cores / (rate * (wrkPoolUs + singleUs) * 1e-6)
            )
            table["needed_us"].append(cores / (target * rate * 1e-6) - wrkPoolUs)
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
            f"{row['wrk_pool_us']:6.1f} {row['ceiling']:8.2f} "
            f"{row['ceiling_same_cpu']:14.2f} {row['needed_us']:16.1f}"
        )


if __name__ == "__main__":
    main()
