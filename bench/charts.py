"""
The charts beside RESULTS.md: requests per second and CPU per 1,000
requests per server (bars), and the timelines (connections per second).
"""

from __future__ import annotations

import os
from typing import Any

from bench.common import MODE_TITLES
from bench.servers import Server

COLOURS = {
    "preforktwist": "tab:blue",
    "single": "tab:gray",
    "naive": "tab:orange",
    "forking": "tab:red",
    "perl": "tab:purple",
    "gunicorn": "tab:green",
    "nginx": "black",
}

#: The bar charts' panels: (workloads, mode), top to bottom.  The hello
#: panels show the hello protocol and twisted.web's Site serving it.
PANELS = [
    (("hello", "site"), "close"),
    (("hello", "site"), "keepalive"),
    (("burn",), "close"),
    (("burn",), "keepalive"),
]

#: (field, its spread, title, x label, file name) of each bar chart.
BAR_CHARTS = [
    (
        "rps_median",
        "rps_spread",
        "Requests per second (median of rounds; bars: min-max)",
        "requests/s",
        "requests_per_second.png",
    ),
    (
        "cpu_per_1000",
        "cpu_spread",
        "Server CPU seconds per 1,000 requests (all processes; lower is better)",
        "CPU s / 1,000 requests",
        "cpu_per_1000.png",
    ),
]


def barPanel(
    ax: Any,
    rows: list[tuple[Server, dict[str, Any]]],
    fieldName: str,
    spreadName: str,
) -> None:
    """
    One panel: a horizontal bar per server, its spread as error bars.
    """
    labels = [s.label for s, _ in rows]
    values = [e[fieldName] for _, e in rows]
    low = [e[fieldName] - e[spreadName][0] if e[spreadName] else 0 for _, e in rows]
    high = [e[spreadName][1] - e[fieldName] if e[spreadName] else 0 for _, e in rows]
    ax.barh(
        labels,
        values,
        xerr=[low, high],
        color=[COLOURS.get(s.kind, "tab:gray") for s, _ in rows],
        capsize=3,
    )
    for y, v in enumerate(values):
        ax.text(
            v,
            y,
            f" {v:,.0f}" if v >= 10 else f" {v:.2f}",
            va="center",
            fontsize=8,
        )


def panelRows(
    servers: list[Server],
    summary: dict[str, Any],
    workloads: tuple[str, ...],
    mode: str,
    fieldName: str,
) -> list[tuple[Server, dict[str, Any]]]:
    """
    The servers of one panel with their summaries, bottom to top.
    """
    rows = [
        (s, summary[f"{s.key}/{mode}"])
        for s in servers
        if s.workload in workloads
        and f"{s.key}/{mode}" in summary
        and summary[f"{s.key}/{mode}"][fieldName] is not None
    ]
    rows.reverse()
    return rows


def barChart(
    plt: Any,
    servers: list[Server],
    summary: dict[str, Any],
    chart: tuple[str, str, str, str, str],
    outdir: str,
) -> str:
    """
    One bar chart of C{BAR_CHARTS}, written into C{outdir}; its path.
    """
    fieldName, spreadName, title, xlabel, name = chart
    fig, axes = plt.subplots(
        len(PANELS),
        1,
        figsize=(9, 14),
        gridspec_kw={"height_ratios": [12, 12, 4, 4]},
    )
    for ax, (workloads, mode) in zip(axes, PANELS, strict=False):
        rows = panelRows(servers, summary, workloads, mode, fieldName)
        barPanel(ax, rows, fieldName, spreadName)
        what = "HTTP hello" if "hello" in workloads else "CPU-bound (~1 ms/request)"
        ax.set_title(f"{what}, {MODE_TITLES[mode]}", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlabel(xlabel, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(outdir, name)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def timelinePanel(ax: Any, t: dict[str, Any], steady: dict[str, Any] | None) -> None:
    """
    One timeline: completions and errors per second, the steady run's
    completions dotted behind it, the SIGHUP marked.
    """
    # A completion in second k (k <= t < k+1) is drawn at k + 0.5.
    xs = [k + 0.5 for k in range(len(t["ok"]))]
    if steady is not None and t is not steady:
        ax.plot(
            [k + 0.5 for k in range(len(steady["ok"]))],
            steady["ok"],
            color="tab:gray",
            linestyle=":",
            label="steady -w 2 -m 0 (reference)",
        )
    ax.plot(xs, t["ok"], marker="o", label="completed connections/s")
    ax.bar(xs, t["errors"], color="tab:red", label="errors/s")
    if "hup_at" in t:
        ax.axvline(t["hup_at"], color="tab:orange", linestyle="--", label="SIGHUP")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("per second")
    ax.set_title(
        f"{t['title']}: {sum(t['ok']):,} ok, {sum(t['errors'])} errors, "
        f"{t['workers_started']} workers started",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="best")


def timelineChart(plt: Any, good: list[dict[str, Any]], outdir: str) -> str:
    """
    The timelines that did not fail, one panel each; the chart's path.
    """
    fig, axes = plt.subplots(len(good), 1, figsize=(9, 3 * len(good)), sharex=True)
    if len(good) == 1:
        axes = [axes]
    steady = next((t for t in good if t["name"] == "steady"), None)
    for ax, t in zip(axes, good, strict=False):
        timelinePanel(ax, t, steady)
    axes[-1].set_xlabel("seconds since the client started")
    axes[-1].set_xlim(0, max(len(t["ok"]) for t in good))
    fig.tight_layout()
    path = os.path.join(outdir, "timeline.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def charts(
    servers: list[Server],
    summary: dict[str, Any],
    timelines: list[dict[str, Any]],
    outdir: str,
) -> list[str]:
    """
    Draw every chart into C{outdir}; their paths (none without matplotlib).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "bench: matplotlib is not installed: no charts (pip install -e '.[bench]')",
            flush=True,
        )
        return []
    written = [barChart(plt, servers, summary, c, outdir) for c in BAR_CHARTS]
    good = [t for t in timelines if "failed" not in t]
    if good:
        written.append(timelineChart(plt, good, outdir))
    return written
