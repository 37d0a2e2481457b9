"""
The master's memory: preforktwist -w 2 from a default install and from
the bench's own virtualenv, with and without the status endpoint, idle
and after connections the workers served.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

from bench.common import BENCH, HOST, PYTHON, ROOT, VENV_BIN
from bench.measurement import readKiB
from bench.processes import CODE, Running, freePort, launch, probe
from bench.servers import PT_READY, Server, preforkedCommand

#: The virtualenv of a default install (`pip install .`, no extras), kept
#: between runs: what a user who installs preforktwist gets.
DEFAULT_VENV = os.path.join(BENCH, "out", "venv-default")


def defaultInstall() -> str:
    """
    The bin directory of a virtualenv holding a default install of this
    checkout: core dependencies only.  The bench's own virtualenv has the
    extras, and with pyOpenSSL importable Twisted's C{tcp} module imports
    it and cryptography (about 10 MiB), in the master too.
    """
    python = os.path.join(DEFAULT_VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([PYTHON, "-m", "venv", DEFAULT_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", ROOT], check=True)
    else:
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--force-reinstall",
                ROOT,
            ],
            check=True,
        )
    return os.path.dirname(python)


def masterServer(bin: str, install: str, status: bool) -> Server:
    """
    preforktwist -w 2 run from the virtualenv in C{bin}, optionally with
    the status endpoint, for the master's memory alone.
    """
    statusPort = freePort()

    def argv(port: int, tmp: str) -> list[str]:
        command = preforkedCommand(
            os.path.join(bin, "twistd"),
            port,
            ["-p", "preforktwist.examples.HelloHTTP"],
            2,
        )
        if status:
            command += ["--status", f"tcp:{statusPort}:interface={HOST}"]
        return command

    key = f"master-{install}" + ("-status" if status else "")
    return Server(
        key=key,
        label=f"preforktwist -w 2, {install}" + (", --status" if status else ""),
        kind="preforktwist",
        workload="hello",
        argv=argv,
        readyPattern=PT_READY,
        readyCount=2,
        processes=3,
        stopSignal=signal.SIGINT,
        workers=2,
        # Only the snapshot's code (if any) ahead of the install's own.
        env={"PYTHONPATH": os.pathsep.join(CODE.path)},
    )


def masterSizes(running: Running, connections: int, result: dict[str, Any]) -> None:
    """
    The master's RSS when ready, then its RSS and PSS after C{connections}
    connections, into C{result} (MiB).
    """
    pid = running.pid
    running.waitReady()
    result["rss_start_mib"] = readKiB(f"/proc/{pid}/status", "VmRSS") / 1024
    for _ in range(connections):
        probe(running.port)
    time.sleep(0.5)
    result["rss_mib"] = readKiB(f"/proc/{pid}/status", "VmRSS") / 1024
    result["pss_mib"] = readKiB(f"/proc/{pid}/smaps_rollup", "Pss") / 1024


def oneMaster(bin: str, install: str, status: bool, connections: int) -> dict[str, Any]:
    """
    The master's memory in one install, with or without C{--status}.
    """
    server = masterServer(bin, install, status)
    result: dict[str, Any] = {"install": install, "status": status}
    running = launch(server, "bench-master-")
    try:
        masterSizes(running, connections, result)
    except (RuntimeError, OSError) as e:
        result["failed"] = str(e)
    finally:
        running.stop()
    result["command"] = running.command()
    running.remove()
    return result


def masterMemory(connections: int = 2000) -> list[dict[str, Any]]:
    """
    The master's RSS and PSS after start and after C{connections}
    connections (served by the workers; the master only watches), in the
    default install and in the bench's virtualenv with every extra.
    """
    installs = [
        ("default install", defaultInstall()),
        ("bench venv, all extras", VENV_BIN),
    ]
    return [
        oneMaster(bin, install, status, connections)
        for install, bin in installs
        for status in (False, True)
    ]
