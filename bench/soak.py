"""
The soak test: ten minutes of mixed load on one master, with everything an
operator and bad luck do to it meanwhile, to show that nothing leaks and
nothing is lost.  Not part of CI (it takes ten minutes on purpose).

    python bench/soak.py                 # 600 s, writes bench/SOAK.md and soak.png
    python bench/soak.py --duration 60   # a shorter run, same report

What runs, all on 127.0.0.1, bounded in time:

- the server: C{twistd preforked -w 3 -m 500 --max-connections-jitter 100}
  serving L{preforktwist.examples.Echo}, with C{--status} for its pids;
- connection-rate clients (connect, one exchange, close), keep-alive
  clients (100 exchanges per connection) and long-lived clients (a hundred
  connections held for 10 s each, pinged every second), all at once;
- a rolling reload (C{SIGHUP}) every 30 s and a C{SIGKILL} of a random
  accepting worker every 20 s;
- every 10 s, the master's resident memory and open file descriptors.

A connection that fails within two seconds of a worker's C{SIGKILL} may
have been on that worker (the only loss the project allows); any other
failure is a lost connection, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
HOST = "127.0.0.1"
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

#: Failures this soon after a worker's SIGKILL may have been on that worker.
KILL_WINDOW = 2.0


def freePort() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Tally:
    """
    What the clients saw, by kind of load, with the time of each failure.
    """

    served: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self.served[kind] = self.served.get(kind, 0) + n

    def failed(self, kind: str, why: str) -> None:
        with self.lock:
            self.failures.append((time.monotonic(), kind, why))


def _exchange(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(received)} bytes")
        received += chunk
    if received != payload:
        raise ConnectionError(f"wrong echo {received[:40]!r}")


def rateClient(port: int, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with socket.create_connection((HOST, port), timeout=10) as s:
                _exchange(s, b"rate\n")
            tally.ok("rate")
        except OSError as e:
            tally.failed("rate", type(e).__name__ + f": {e}")


def keepAliveClient(port: int, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with socket.create_connection((HOST, port), timeout=10) as s:
                for _ in range(100):
                    if stop.is_set():
                        break
                    _exchange(s, b"keep-alive\n")
            tally.ok("keep-alive")
        except OSError as e:
            tally.failed("keep-alive", type(e).__name__ + f": {e}")


def longLivedClient(port: int, tally: Tally, stop: threading.Event) -> None:
    """
    Hold a connection for 10 s, pinging it every second, then open another.
    """
    while not stop.is_set():
        try:
            with socket.create_connection((HOST, port), timeout=10) as s:
                until = time.monotonic() + 10
                while time.monotonic() < until and not stop.is_set():
                    _exchange(s, b"long-lived\n")
                    stop.wait(1.0)
            tally.ok("long-lived")
        except OSError as e:
            tally.failed("long-lived", type(e).__name__ + f": {e}")


def statusJSON(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/status.json", timeout=5) as r:
        data: dict[str, Any] = json.load(r)
        return data


def masterSample(pid: int) -> tuple[float, int]:
    """
    The master's resident memory in MiB and its open file descriptors.
    """
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def run(duration: float) -> dict[str, Any]:
    port, statusPort = freePort(), freePort()
    logs = os.path.join(BENCH, "out")
    os.makedirs(logs, exist_ok=True)
    log = open(os.path.join(logs, "soak-master.log"), "wb")
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    master = subprocess.Popen(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            "--logfile=-",
            "preforked",
            "-w",
            "3",
            "-m",
            "500",
            "--max-connections-jitter",
            "100",
            "-l",
            f"tcp:{port}:interface={HOST}",
            "--status",
            f"tcp:{statusPort}:interface={HOST}",
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    tally, stop = Tally(), threading.Event()
    samples: list[tuple[float, float, int]] = []
    kills: list[float] = []
    reloads = 0
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if statusJSON(statusPort)["pool"]["accepting"] >= 3:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or master.poll() is not None:
                raise SystemExit("soak: the server did not start; see soak-master.log")
            time.sleep(0.2)
        clients = (
            [
                threading.Thread(target=rateClient, args=(port, tally, stop))
                for _ in range(3)
            ]
            + [
                threading.Thread(target=keepAliveClient, args=(port, tally, stop))
                for _ in range(2)
            ]
            + [
                threading.Thread(target=longLivedClient, args=(port, tally, stop))
                for _ in range(100)
            ]
        )
        for client in clients:
            client.daemon = True
            client.start()
        started = time.monotonic()
        nextSample = nextKill = nextReload = started
        nextKill += 20
        nextReload += 30
        while (now := time.monotonic()) < started + duration:
            if now >= nextSample:
                rss, fds = masterSample(master.pid)
                samples.append((now - started, rss, fds))
                print(
                    f"[{now - started:5.0f}s] master RSS {rss:.1f} MiB, {fds} fds, "
                    f"served {sum(tally.served.values())}, "
                    f"failed {len(tally.failures)}",
                    flush=True,
                )
                nextSample += 10
            if now >= nextReload:
                master.send_signal(signal.SIGHUP)
                reloads += 1
                nextReload += 30
            if now >= nextKill:
                workers = [
                    w["pid"]
                    for w in statusJSON(statusPort)["workers"]
                    if w["state"] == "accepting" and w["pid"]
                ]
                if workers:
                    os.kill(random.choice(workers), signal.SIGKILL)
                    kills.append(time.monotonic())
                nextKill += 20
            time.sleep(0.1)
        stop.set()
        for client in clients:
            client.join(15)
    finally:
        stop.set()
        if master.poll() is None:
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(master.pid, signal.SIGKILL)
                master.wait(5)
        log.close()
    nearKill = [
        f for f in tally.failures if any(0 <= f[0] - k <= KILL_WINDOW for k in kills)
    ]
    lost = [f for f in tally.failures if f not in nearKill]
    return {
        "duration": duration,
        "served": tally.served,
        "attempted": sum(tally.served.values()) + len(tally.failures),
        "failed": len(tally.failures),
        "failedNearKill": len(nearKill),
        "lost": [(round(t - started, 1), kind, why) for t, kind, why in lost],
        "kills": len(kills),
        "reloads": reloads,
        "exitStatus": master.returncode,
        "samples": samples,
    }


def chart(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in result["samples"]]
    fig, rssAxis = plt.subplots(figsize=(8, 3.5))
    rssAxis.plot(t, [s[1] for s in result["samples"]], color="tab:blue")
    rssAxis.set_xlabel("seconds")
    rssAxis.set_ylabel("master RSS (MiB)", color="tab:blue")
    rssAxis.set_ylim(bottom=0)
    fdAxis = rssAxis.twinx()
    fdAxis.plot(t, [s[2] for s in result["samples"]], color="tab:orange")
    fdAxis.set_ylabel("master open fds", color="tab:orange")
    fdAxis.set_ylim(bottom=0)
    fig.suptitle("soak: the master over time (reload every 30 s, SIGKILL every 20 s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(result: dict[str, Any], path: str) -> None:
    samples = result["samples"]
    first, last = samples[0], samples[-1]
    lines = [
        "# Soak",
        "",
        f"`python bench/soak.py --duration {result['duration']:g}`: mixed load "
        "(connection rate, keep-alive, long-lived) on `-w 3 -m 500 "
        "--max-connections-jitter 100`, a reload every 30 s "
        f"({result['reloads']} in all), a worker SIGKILL every 20 s "
        f"({result['kills']} in all).",
        "",
        "| | count |",
        "| --- | --- |",
        f"| connections attempted | {result['attempted']:,} |",
        *(f"| served, {kind} | {n:,} |" for kind, n in result["served"].items()),
        f"| failed | {result['failed']:,} |",
        f"| of which within {KILL_WINDOW:g} s of a worker SIGKILL | "
        f"{result['failedNearKill']:,} |",
        f"| lost otherwise | {len(result['lost']):,} |",
        f"| master exit status at the end (SIGTERM) | {result['exitStatus']} |",
        "",
        f"The master, sampled every 10 s: RSS {first[1]:.1f} MiB at "
        f"{first[0]:.0f} s, {last[1]:.1f} MiB at {last[0]:.0f} s "
        f"(highest {max(s[1] for s in samples):.1f}); open fds {first[2]} to "
        f"{last[2]} (highest {max(s[2] for s in samples)}).",
        "",
        "![the master's memory and descriptors](soak.png)",
        "",
    ]
    if result["lost"]:
        lines += ["Failures not near a kill:", ""]
        lines += [f"- {t} s {kind}: {why}" for t, kind, why in result["lost"][:20]]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--out", default=BENCH, help="where SOAK.md and soak.png go")
    options = parser.parse_args()
    os.makedirs(os.path.join(options.out), exist_ok=True)
    result = run(options.duration)
    with open(os.path.join(options.out, "soak.json"), "w") as f:
        json.dump(result, f, indent=1)
    report(result, os.path.join(options.out, "SOAK.md"))
    chart(result, os.path.join(options.out, "soak.png"))
    print(
        f"attempted {result['attempted']}, failed {result['failed']} "
        f"({result['failedNearKill']} near a kill), lost {len(result['lost'])}"
    )


if __name__ == "__main__":
    main()
