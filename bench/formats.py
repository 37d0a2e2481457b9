"""
How figures are written in RESULTS.md and the progress lines.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.common import ROOT, VENV_BIN


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def fmtRatio(values: Sequence[float]) -> str:
    """
    Same-round ratios as their median and (min-max).
    """
    if not values:
        return "n/a"
    m = statistics.median(values)
    return f"{m:.2f}x ({min(values):.2f}-{max(values):.2f})"


def fmtShare(v: float) -> str:
    """
    Busiest / idlest worker.
    """
    return "inf (a worker took none)" if v == float("inf") else f"{v:.2f}"


def fmtSpread(s: tuple[float, float] | None, digits: int = 0) -> str:
    return "-" if s is None else f"{s[0]:,.{digits}f}-{s[1]:,.{digits}f}"


def shortPaths(command: str) -> str:
    """
    A command line without the virtualenv's and the checkout's paths.
    """
    return command.replace(VENV_BIN + "/", "").replace(ROOT + "/", "")
