"""
The machine and the software a run measured on, for RESULTS.md.
"""

from __future__ import annotations

import platform
import subprocess

from bench.common import PYTHON, ROOT, optionalTool
from bench.processes import CODE


def capture(command: list[str]) -> str:
    """
    The first line a command prints, or "?".
    """
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (
        (out.stdout + out.stderr).strip().splitlines()[0]
        if (out.stdout + out.stderr).strip()
        else "?"
    )


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpuModel() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def codeNote() -> str:
    """
    What preforktwist code the servers run: the snapshot's, or the
    checkout's commit, said to be changed if it is.
    """
    commit = capture(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = capture(["git", "-C", ROOT, "status", "--porcelain", "--", "preforktwist"])
    return CODE.note or commit + (
        " (working tree, with uncommitted changes in preforktwist/)"
        if dirty not in ("", "?")
        else ""
    )


def machine() -> dict[str, str]:
    """
    The machine, the versions of what runs on it, and its load at start.
    """
    cpu = cpuModel()
    twisted = capture([PYTHON, "-c", "import twisted; print(twisted.__version__)"])
    preforktwist = codeNote()
    return {
        "nproc": capture(["nproc"]),
        "cpu": cpu,
        "kernel": capture(["uname", "-r"]),
        "python": platform.python_version(),
        "twisted": twisted,
        "wrk": capture(["wrk", "-v"]),
        "nginx": capture([optionalTool("nginx"), "-v"]),
        "perl": capture([optionalTool("perl"), "-e", "print $^V"]),
        "gunicorn": capture([optionalTool("gunicorn"), "--version"]),
        "preforktwist": preforktwist,
        "loadavg_start": loadavg(),
    }
