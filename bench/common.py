"""
What every part of the harness shares: where the checkout, its Python and
its tools are, the one address everything listens on, and the two loads.
"""

from __future__ import annotations

import os
import shutil
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PYTHON = sys.executable
VENV_BIN = os.path.dirname(PYTHON)
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

MODES = ("close", "keepalive")
MODE_TITLES = {
    "close": "connection rate (Connection: close)",
    "keepalive": "keep-alive",
}


def tool(name: str) -> str:
    """
    A program from the virtualenv the harness runs in, else from PATH.
    """
    candidate = os.path.join(VENV_BIN, name)
    if os.path.exists(candidate):
        return candidate
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"bench: {name} not found (see bench/README.md)")
    return found


def optionalTool(name: str) -> str:
    """
    L{tool}, or the bare name when it is missing (its version shows as
    "?"): a run of some servers only needs those servers' programs.
    """
    try:
        return tool(name)
    except SystemExit:
        return name


def readText(path: str) -> str:
    """
    A server's log as text, or nothing if it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
