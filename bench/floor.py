"""
The floor under a replacement: C{bench/forkfloor.py} run with the
servers' code and environment, once without and once with the Django app
preloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from bench.common import BENCH, PYTHON
from bench.processes import CODE

#: What each floor preloads, as C{--preload} would: nothing, and the app.
PRELOADS: tuple[list[str], ...] = ([], ["bench.heavyapp.site"])


def floorCommand(preload: Sequence[str], count: int) -> list[str]:
    command = [PYTHON, os.path.join(BENCH, "forkfloor.py"), "--count", str(count)]
    for name in preload:
        command += ["--preload", name]
    return command


def forkFloor(preload: Sequence[str] = (), count: int = 300) -> dict[str, Any]:
    """
    The floor under a replacement's CPU (C{bench/forkfloor.py}): forking a
    template like the fork server's, with C{preload} imported as
    C{--preload} would, the child exiting at once.  Run with the servers'
    code and environment.
    """
    env = CODE.environment()
    command = floorCommand(preload, count)
    CODE.compile()
    label = "fork server template"
    if preload:
        label += f", --preload {' '.join(preload)}"
    result: dict[str, Any] = {"server": label, "floor": True}
    try:
        done = subprocess.run(
            command,
            cwd=tempfile.gettempdir(),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1])
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
        result["failed"] = str(e)
        return result
    result["cpu_ms_each"] = result["parent_ms_each"] + result["child_ms_each"]
    return result
