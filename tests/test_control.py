"""
The control socket (C{--control}) and C{preforktwist-ctl}, end to end: a
real master, the real console script, each command's output and exit
status.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import StartMaster
from tests.harness import REPO, Master, exchange, isAlive, waitUntil

CTL = str(Path(sys.executable).with_name("preforktwist-ctl"))


def ctl(path: Path, *arguments: str, timeout: float = 60) -> tuple[int, str, str]:
    """
    Run C{preforktwist-ctl --socket PATH ARGUMENTS}: its exit status,
    output and errors.
    """
    done = subprocess.run(
        [CTL, "--socket", str(path), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return done.returncode, done.stdout, done.stderr


def test_status_resize_stack_reload_stop(serve: StartMaster, tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    master = serve(
        "-w",
        "2",
        "-p",
        "tests.apps.PidEcho",
        "--control",
        f"unix:{path}",
        "--status",
        "tcp:0:interface=127.0.0.1",
    )
    master.waitForWorkers(2)
    master.waitForLine("control socket on")
    mode = os.stat(path)
    assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o600
    assert mode.st_uid == os.getuid()
    assert exchange(master.port, b"hi").endswith(b":hi")

    status, out, _ = ctl(path, "status")
    assert status == 0
    assert out.startswith("pool: 2 wanted, 2 alive (2 accepting)")
    rows = [line.split() for line in out.splitlines() if re.match(r"\d+ +\d+ ", line)]
    assert sorted(row[1] for row in rows) == sorted(map(str, master.liveWorkers()))
    assert all(row[2] == "accepting" for row in rows)

    status, out, _ = ctl(path, "status", "--json")
    port = master.waitForLine(r"status page on http://[\d.]+:(\d+)/").group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json") as page:
        fromPage = json.load(page)
    fromCtl = json.loads(out)
    assert status == 0 and fromCtl.keys() == fromPage.keys()
    assert fromCtl["workers"][0].keys() == fromPage["workers"][0].keys()
    assert fromCtl["pool"]["wanted"] == 2

    assert ctl(path, "add", "2")[:2] == (0, "pool size 2 -> 4\n")
    master.waitForWorkers(4)
    assert ctl(path, "remove", "3")[:2] == (0, "pool size 4 -> 1\n")
    status, _, err = ctl(path, "remove")
    assert status == 1
    assert err == (
        "preforktwist-ctl: cannot remove 1: "
        "the pool has 1 worker and keeps at least 1\n"
    )
    assert master.count(r"pool size 2 -> 4") == 1
    assert master.count(r"pool size 4 -> 1") == 1

    waitUntil(lambda: len(master.liveWorkers()) == 1, 30, "one worker")
    (worker,) = master.liveWorkers()
    status, out, _ = ctl(path, "stack", str(worker))
    assert status == 0
    assert out.splitlines()[0].endswith(f"(pid {worker}):")
    assert "(most recent call first):" in out and "in mainLoop" in out
    status, _, err = ctl(path, "stack", "99")
    assert status == 1 and err.startswith("preforktwist-ctl: no worker 99 (workers: ")

    status, out, _ = ctl(path, "reload")
    assert status == 0 and out.startswith("reload finished: every worker is new")
    assert not isAlive(worker) or worker not in master.liveWorkers()

    status, out, _ = ctl(path, "stop")
    assert status == 0
    assert out == f"stopping the master (pid {master.pid}) gracefully...\nstopped\n"
    assert master.wait(10) == 0
    assert not path.exists()
    # Signals keep working beside the socket: checked by every other test.


def test_failed_reload_exits_1(serve: StartMaster, tmp_path: Path) -> None:
    path, marker = tmp_path / "control.sock", tmp_path / "broken"
    master = serve(
        "-w",
        "1",
        "-p",
        "tests.apps.InitialisedEcho",
        "--worker-init",
        "tests.apps.workerInit",
        "--control",
        f"unix:{path}",
        env={"PREFORKTWIST_TEST_BREAK": str(marker)},
    )
    master.waitForWorkers(1)
    marker.touch()
    status, _, err = ctl(path, "reload")
    assert status == 1
    assert err.startswith("preforktwist-ctl: reload stopped: boot failure: worker")
    assert "init is broken on purpose" in err
    assert err.endswith("the old workers keep serving\n")


def test_upgrade_through_the_socket(tmp_path: Path) -> None:
    """
    C{upgrade} waits for the new master: exit 0 once it serves, the control
    socket with it; exit 1, with the reason, when it cannot boot.
    """
    from tests.test_upgrade import environment, newMasters, writeApp

    path = tmp_path / "control.sock"
    writeApp(tmp_path, b"v1")
    master = Master(
        [
            "-w",
            "2",
            "-l",
            "tcp:0:interface=127.0.0.1",
            "-p",
            "upgradeapp.Versioned",
            "--control",
            f"unix:{path}",
        ],
        cwd=tmp_path,
        env=environment(tmp_path),
    )
    try:
        master.waitForWorkers(2)
        writeApp(tmp_path, b"v2", broken=True)
        status, _, err = ctl(path, "upgrade")
        assert status == 1
        assert "exited with status 1 before it was ready" in err
        master.waitForLine(r"upgrade: the new master \(pid \d+\) is gone")
        writeApp(tmp_path, b"v2")
        status, out, _ = ctl(path, "upgrade")
        new = newMasters(master)[-1]
        assert (status, out) == (0, f"upgraded: the new master (pid {new}) serves\n")
        assert master.wait(60) == 0
        assert exchange(master.port, b"ping").startswith(b"v2:")
        status, out, _ = ctl(path, "status")
        assert status == 0 and out.startswith("pool: 2 wanted")
        assert os.readlink(f"{path}.lock") == str(new)
        assert ctl(path, "stop")[0] == 0
        assert not isAlive(new) and not path.exists()
    finally:
        for pid in newMasters(master):
            if isAlive(pid):
                os.kill(pid, signal.SIGTERM)
        assert master.reap() == []


def test_control_socket_in_use(serve: StartMaster, tmp_path: Path) -> None:
    """
    A second master on the same control socket, or one whose directory is
    missing, stops at once with one line and exit status 1.
    """
    path = tmp_path / "control.sock"
    first = serve("-w", "1", "--control", f"unix:{path}")
    first.waitForLine("control socket on")
    for where, why in [
        (path, f"another server listens on {path}"),
        (tmp_path / "none" / "c.sock", f"no directory {tmp_path / 'none'}"),
    ]:
        second = serve("-w", "1", "--control", f"unix:{where}")
        assert second.wait(30) == 1
        assert second.errors == [f"twistd preforked: --control: {why}"]
    assert ctl(path, "status")[0] == 0


def test_no_server(tmp_path: Path) -> None:
    status, out, err = ctl(tmp_path / "nothing.sock", "status")
    assert (status, out) == (1, "")
    assert err == f"preforktwist-ctl: no server at {tmp_path / 'nothing.sock'}\n"
    status, _, err = ctl(tmp_path / "x.sock", "add", "zero")
    assert status == 1 and err.startswith("preforktwist-ctl: N must be a whole number")


#: What another user runs to connect: the system's interpreter (this
#: test's own may live where that user cannot read).
CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect(sys.argv[1])\n"
    "except PermissionError:\n"
    "    sys.exit(3)\n"
)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run as another user")
def test_other_users_are_refused(serve: StartMaster, tmp_path: Path) -> None:
    """
    The socket is 0600: another user's connect is refused by the kernel.
    """
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 to run as another user")
    # A directory any user may pass through (pytest's own are 0700), so
    # that the socket's own mode is what refuses.
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        path = Path(directory) / "control.sock"
        master = serve("-w", "1", "--control", f"unix:{path}")
        master.waitForLine("control socket on")
        other = subprocess.run(
            [python, "-I", "-c", CONNECT, str(path)],
            user=65534,
            group=65534,
            timeout=30,
        )
        assert other.returncode == 3
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
