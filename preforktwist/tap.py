"""
C{twistd preforked}: command-line options and the service they make.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from preforktwist.common.endpoints import ListenError, parseListen
from preforktwist.master.service import PreforkService, defaultWorkerCount

#: The most workers one master will keep: beyond this a value is a typo.
MAX_WORKERS = 1024

_COUNT = "a whole number, 0 or more"
_WORKERS = f"a whole number from 1 to {MAX_WORKERS}"
_SECONDS = "a number of seconds from 0 to 86400"


def _number(
    option: str, kind: Callable[[str], Any], low: float, high: float, what: str
) -> Callable[[str], Any]:
    """
    A coercer for L{usage.Options} that accepts C{kind} values in
    C{[low, high]} and says what it wanted otherwise.
    """

    def coerce(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"--{option}: must be {what}, not {text!r}") from None
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (finite and low <= value <= high):
            raise ValueError(f"--{option}: must be {what}, not {text!r}")
        return value

    coerce.coerceDoc = f"({what})"  # type: ignore[attr-defined]
    return coerce


def _heartbeat(text: str) -> float:
    """
    0 disables the check; below a second, the heartbeat's own rhythm would
    be too fine for a loaded machine.
    """
    value: float = _number("heartbeat-timeout", float, 0, 86400, _SECONDS)(text)
    if 0 < value < 1:
        raise ValueError(
            f"--heartbeat-timeout: must be 0 (off) or at least 1, not {text!r}"
        )
    return value


_heartbeat.coerceDoc = "(0 to disable, or 1 to 86400 seconds)"  # type: ignore[attr-defined]


class Options(usage.Options):
    """
    Options for C{twistd preforked}.  Any mistake ends the command with one
    line naming the option and the reason, and exit status 1.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve a Twisted protocol from a pool of pre-started worker processes "
        "that share one listening socket.  With neither --protocol nor "
        "--factory, the bundled echo example is served."
    )

    optFlags = [
        [
            "no-fork-server",
            None,
            "Start each worker as a fresh interpreter (about 0.3 s of CPU) "
            "instead of forking it from a template process that has already "
            "imported Twisted (about a millisecond).",
        ],
        [
            "proxy-protocol",
            None,
            "Every connection starts with a PROXY protocol header (v1 or v2, "
            "as from HAProxy's send-proxy or send-proxy-v2); the protocol sees "
            "the client's address in transport.getPeer().",
        ],
    ]

    optParameters = [
        ["protocol", "p", None, "Dotted name of a Protocol subclass to serve."],
        [
            "factory",
            "f",
            None,
            "Dotted name of a protocol factory, or of a callable taking no "
            "arguments that returns one.",
        ],
        [
            "workers",
            "w",
            None,
            "Workers to keep [default: one per CPU].",
            _number(
                "workers",
                int,
                1,
                MAX_WORKERS,
                _WORKERS,
            ),
        ],
        [
            "max-connections-per-worker",
            "m",
            0,
            "A worker serves this many connections and is then replaced; "
            "0 means never.",
            _number("max-connections-per-worker", int, 0, 2**62, _COUNT),
        ],
        [
            "max-connections-jitter",
            None,
            0,
            "Each worker's allowance is -m plus a random 0 to this many, so "
            "that workers do not all retire together.",
            _number("max-connections-jitter", int, 0, 2**62, _COUNT),
        ],
        [
            "replace-at",
            None,
            0.9,
            "Share of its allowance after which a worker asks for its "
            "replacement ahead of time, so the pool never dips; 1 asks only "
            "when the allowance is used up.",
            _number("replace-at", float, 0.01, 1, "a number from 0.01 to 1"),
        ],
        [
            "max-concurrent",
            "c",
            1000,
            "Connections one worker holds open at once; at the cap it stops "
            "accepting and leaves new ones queued for the other workers. "
            "0 means no cap.",
            _number("max-concurrent", int, 0, 2**31, _COUNT),
        ],
        [
            "heartbeat-timeout",
            None,
            30.0,
            "Seconds a worker's reactor may go without turning before the "
            "worker is killed (its stack logged) and replaced; 0 disables.",
            _heartbeat,
        ],
        [
            "worker-init",
            None,
            None,
            "Dotted name of a callable run in each worker before it accepts "
            "(it may return a Deferred); if it fails, the worker is a boot "
            "failure.",
        ],
        [
            "reload-batch",
            None,
            1,
            "Workers a rolling reload (SIGHUP) replaces at a time: at most "
            "this many run beyond --workers.",
            _number(
                "reload-batch",
                int,
                1,
                MAX_WORKERS,
                _WORKERS,
            ),
        ],
        [
            "min-workers",
            None,
            None,
            "With --max-workers: adapt the pool to the listen queue, never "
            "below this many workers (--workers is the starting count).",
            _number("min-workers", int, 1, MAX_WORKERS, _WORKERS),
        ],
        [
            "max-workers",
            None,
            None,
            "With --min-workers: never above this many workers.",
            _number("max-workers", int, 1, MAX_WORKERS, _WORKERS),
        ],
        [
            "scale-up-after",
            None,
            2.0,
            "Adaptive pool: seconds connections must keep waiting in the queue "
            "before a worker is added.",
            _number(
                "scale-up-after",
                float,
                0.1,
                3600,
                "a number of seconds from 0.1 to 3600",
            ),
        ],
        [
            "scale-down-after",
            None,
            10.0,
            "Adaptive pool: seconds of slack (nothing waiting, workers mostly "
            "idle) before a worker is retired.",
            _number(
                "scale-down-after",
                float,
                0.1,
                86400,
                "a number of seconds from 0.1 to 86400",
            ),
        ],
        [
            "scale-cooldown",
            None,
            5.0,
            "Adaptive pool: least seconds between two changes of size.",
            _number("scale-cooldown", float, 0, 86400, _SECONDS),
        ],
        [
            "max-worker-memory",
            None,
            0,
            "Megabytes of resident memory a worker may use before it is "
            "replaced (gracefully, replacement first); 0 means no limit.",
            _number(
                "max-worker-memory", float, 0, 2**40, "a number of megabytes, 0 or more"
            ),
        ],
        [
            "max-worker-age",
            None,
            0,
            "Seconds a worker may serve before it is replaced; 0 means no limit.",
            _number(
                "max-worker-age", float, 0, 10**9, "a number of seconds, 0 or more"
            ),
        ],
        [
            "max-worker-age-jitter",
            None,
            None,
            "Each worker's age limit is --max-worker-age plus a random 0 to "
            "this many seconds [default: a tenth of --max-worker-age].",
            _number(
                "max-worker-age-jitter",
                float,
                0,
                10**9,
                "a number of seconds, 0 or more",
            ),
        ],
        [
            "min-worker-lifetime",
            None,
            30.0,
            "No worker younger than this many seconds is replaced for memory "
            "or age, so a limit set too low cannot make a spawn loop.",
            _number(
                "min-worker-lifetime", float, 0, 10**9, "a number of seconds, 0 or more"
            ),
        ],
        [
            "accept-batch",
            None,
            0,
            "The most connections a worker accepts per wake-up; small values "
            "spread bursts over the workers. 0 leaves Twisted's adaptive batch.",
            _number("accept-batch", int, 0, 100000, _COUNT),
        ],
        [
            "standby",
            None,
            None,
            "Workers kept booted but not accepting, so that a replacement "
            "accepts at once [default: 1 when workers are recycled (-m, "
            "--max-worker-memory, --max-worker-age), else 0].",
            _number("standby", int, 0, MAX_WORKERS, _COUNT),
        ],
        [
            "status",
            None,
            None,
            "Serve a live status page, /status.json and /metrics on this "
            "endpoint, e.g. tcp:9100:interface=127.0.0.1. Never expose it "
            "publicly.",
        ],
        [
            "grace",
            None,
            30.0,
            "Seconds a retiring or stopping worker may take to finish its "
            "open connections before it is killed.",
            _number("grace", float, 0, 86400, _SECONDS),
        ],
        [
            "backlog",
            None,
            None,
            "The listen backlog [default: 1024, or what the endpoint says].",
            _number("backlog", int, 1, 65535, "a whole number from 1 to 65535"),
        ],
        [
            "boot-timeout",
            None,
            30.0,
            "Seconds a new worker may take to become ready before it is "
            "killed and counted as a boot failure.",
            _number(
                "boot-timeout",
                float,
                0.1,
                86400,
                "a number of seconds from 0.1 to 86400",
            ),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        A Twisted server endpoint description to serve, e.g. tcp:8080,
        tcp6:8080, unix:/run/app.sock, ssl:8443:privateKey=key.pem,
        systemd:domain=INET:index=0. May be given more than once: every
        worker serves every one [default: tcp:8080].
        """
        self["listen"].append(description)

    opt_l = opt_listen

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse, and turn any usage error into a one-line message and exit
        status 1, instead of twistd's whole usage text before it.
        """
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            reason = str(e).removeprefix("Parameter type enforcement failed: ")
            raise SystemExit(f"twistd preforked: {reason}") from None

    def postOptions(self) -> None:
        if self["protocol"] is not None and self["factory"] is not None:
            raise usage.UsageError("--protocol and --factory: give one, not both")
        if not self["listen"]:
            self["listen"] = ["tcp:8080"]
        for description in self["listen"]:
            try:
                parseListen(description, self["backlog"])
            except ListenError as e:
                raise usage.UsageError(f"--listen: {e}") from None
        low, high = self["min-workers"], self["max-workers"]
        if (low is None) != (high is None):
            raise usage.UsageError("--min-workers and --max-workers: give both")
        if low is not None and low > high:
            raise usage.UsageError(f"--min-workers {low} is above --max-workers {high}")
        if self["workers"] is None:
            self["workers"] = low if low is not None else defaultWorkerCount()


def makeService(config: Options) -> IService:
    """
    Make the service and bind its sockets now, while twistd may still be
    root and before any worker starts: a port in use is reported as one
    line, not as a traceback from inside the reactor.
    """
    try:
        service = PreforkService(
            listen=config["listen"],
            protocol=config["protocol"],
            factory=config["factory"],
            workers=config["workers"],
            maxConnectionsPerWorker=config["max-connections-per-worker"],
            grace=config["grace"],
            backlog=config["backlog"],
            bootTimeout=config["boot-timeout"],
            maxConnectionsJitter=config["max-connections-jitter"],
            replaceAt=config["replace-at"],
            maxConcurrent=config["max-concurrent"],
            heartbeatTimeout=config["heartbeat-timeout"],
            workerInit=config["worker-init"],
            reloadBatch=config["reload-batch"],
            status=config["status"],
            proxyProtocol=bool(config["proxy-protocol"]),
            forkServer=not config["no-fork-server"],
            acceptBatch=config["accept-batch"],
            standby=config["standby"],
            minWorkers=config["min-workers"],
            maxWorkers=config["max-workers"],
            maxWorkerMemory=int(config["max-worker-memory"] * 1024 * 1024),
            maxWorkerAge=config["max-worker-age"],
            maxWorkerAgeJitter=config["max-worker-age-jitter"],
            minWorkerLifetime=config["min-worker-lifetime"],
            scaleUpAfter=config["scale-up-after"],
            scaleDownAfter=config["scale-down-after"],
            scaleCooldown=config["scale-cooldown"],
        )
        service.bindListeners()
    except (ValueError, ListenError) as e:
        raise SystemExit(f"twistd preforked: {e}") from None
    return service
