"""
Every setting of a pre-forked server, each declared once.

Each field of L{Settings} is one setting: its name (the keyword a C{.tac}
file passes to L{preforktwist.PreforkService}), its type and default, and,
in its metadata, its command-line flag, the check its values must pass,
the side that needs it (master, worker or both), the text of C{--help} and
the text of the options reference.  From that one declaration come
C{twistd preforked}'s options (L{preforktwist.tap}), the checks that both
the command line and the keywords go through, with one message format
(C{--option: reason}), the part a worker is told (L{workerConfig}) and the
options reference of the documentation (L{optionGroups}, which the
documentation's build renders).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, ClassVar

from preforktwist.common.endpoints import ListenError, parseListen
from preforktwist.protocol.config import (
    ACCEPT_WAKEUPS,
    DEFAULT_ACCEPT_REORDER,
    DEFAULT_PROTOCOL,
    WorkerConfig,
)

#: The most workers one master will keep: beyond this a value is a typo.
MAX_WORKERS = 1024

#: Bytes in a megabyte, the unit of C{--max-worker-memory}.
MIB = 1024 * 1024

_COUNT = "a whole number, 0 or more"
_WORKERS = f"a whole number from 1 to {MAX_WORKERS}"
_SECONDS = "a number of seconds from 0 to 86400"
_AT_LEAST_0 = "a number of seconds, 0 or more"


def defaultWorkerCount() -> int:
    """
    One worker per CPU this process may run on.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class SettingError(ValueError):
    """
    A value that cannot work.  The message is one line, C{--option: reason},
    naming the command-line flag even for a keyword: the documentation
    names the flags.
    """


class Side(Enum):
    """
    Which process needs a setting: the master, the workers (it travels in
    L{WorkerConfig} under the same name), or both.
    """

    MASTER = "master"
    WORKER = "worker"
    BOTH = "both"


# Kinds of value: how a flag's text is read, and what a value must be.


class Kind:
    """
    What the values of a setting must be.  L{parse} reads the command
    line's text, L{check} a keyword's value; both return the value to keep
    or raise C{ValueError} with the reason alone (L{Setting} adds the flag).
    """

    @property
    def coerceDoc(self) -> str | None:
        """
        What C{--help} adds after the help text, e.g. C{"(a whole number)"}.
        """
        return None

    def parse(self, text: str) -> Any:
        return self.check(text)

    def check(self, value: Any, shown: str | None = None) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Kind):
    """
    A string, such as a dotted name or an endpoint description; checked
    where it is used (imported by the worker, listened on by the master).
    """

    what: str

    def check(self, value: Any, shown: str | None = None) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be {self.what}, not {shown or repr(value)}")
        return value


@dataclass(frozen=True)
class Choice(Kind):
    """
    One of a few words.
    """

    choices: tuple[str, ...]

    @property
    def coerceDoc(self) -> str:
        return "(" + " or ".join(self.choices) + ")"

    def check(self, value: Any, shown: str | None = None) -> Any:
        if value not in self.choices:
            raise ValueError(
                f"must be {' or '.join(self.choices)}, not {shown or repr(value)}"
            )
        return value


@dataclass(frozen=True)
class Flag(Kind):
    """
    On or off.  A negated flag (C{--no-fork-server}) turns its setting
    (C{forkServer}) off.
    """

    negated: bool = False

    def check(self, value: Any, shown: str | None = None) -> Any:
        if not isinstance(value, bool):
            raise ValueError(f"must be True or False, not {shown or repr(value)}")
        return value


@dataclass(frozen=True)
class Ranged(Kind):
    """
    A number from C{low} to C{high}, read from the command line by
    L{convert}; C{what} names the range in messages and in C{--help}.
    """

    low: float
    high: float
    what: str

    #: How the command line's text becomes a number.
    convert: ClassVar[Callable[[str], float]]

    @property
    def coerceDoc(self) -> str:
        return f"({self.what})"

    def parse(self, text: str) -> Any:
        try:
            value = type(self).convert(text)
        except ValueError:
            raise ValueError(f"must be {self.what}, not {text!r}") from None
        return self.check(value, repr(text))


@dataclass(frozen=True)
class Whole(Ranged):
    """
    A whole number from C{low} to C{high}.
    """

    low: int
    high: int
    convert = int

    def check(self, value: Any, shown: str | None = None) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not self.low <= value <= self.high
        ):
            raise ValueError(f"must be {self.what}, not {shown or repr(value)}")
        return value


@dataclass(frozen=True)
class WholeOrAuto(Whole):
    """
    A whole number from C{low} to C{high}, or C{auto} (kept as C{None}):
    the value is then worked out where it is used, from what only that
    process knows (C{--max-concurrent} from a worker's open-file limit).
    """

    @property
    def coerceDoc(self) -> str:
        return f"({self.what}, or auto)"

    def parse(self, text: str) -> Any:
        if text.strip().lower() == AUTO:
            return None
        try:
            return super().parse(text)
        except ValueError:
            raise ValueError(f"must be {self.what} or auto, not {text!r}") from None

    def check(self, value: Any, shown: str | None = None) -> Any:
        if value is None or value == AUTO:
            return None
        try:
            return super().check(value, shown)
        except ValueError:
            raise ValueError(
                f"must be {self.what} or auto, not {shown or repr(value)}"
            ) from None


#: The word for a value worked out where it is used.
AUTO = "auto"


@dataclass(frozen=True)
class Number(Ranged):
    """
    A finite number from C{low} to C{high}, kept as a float.
    """

    convert = float

    def check(self, value: Any, shown: str | None = None) -> Any:
        shown = shown or repr(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be {self.what}, not {shown}")
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError(f"must be {self.what}, not {shown}")
        return float(value)


@dataclass(frozen=True)
class OffOrAtLeast(Number):
    """
    0 for off, or a number from C{least} to C{high}: below C{least}, the
    check would be finer than a loaded machine can keep.
    """

    least: float = 1

    @property
    def coerceDoc(self) -> str:
        return f"(0 to disable, or {self.least:g} to {self.high:g} seconds)"

    def check(self, value: Any, shown: str | None = None) -> Any:
        checked: float = super().check(value, shown)
        if 0 < checked < self.least:
            raise ValueError(
                f"must be 0 (off) or at least {self.least:g}, "
                f"not {shown or repr(value)}"
            )
        return checked


@dataclass(frozen=True)
class Endpoints(Kind):
    """
    One or more endpoint descriptions; the flag may be given more than
    once.  Each is parsed in L{Settings}, which knows the backlog.
    """

    def parse(self, text: str) -> Any:
        return text

    def check(self, value: Any, shown: str | None = None) -> Any:
        descriptions = (value,) if isinstance(value, str) else value
        if not isinstance(descriptions, Sequence) or not all(
            isinstance(d, str) for d in descriptions
        ):
            raise ValueError(
                f"must be endpoint descriptions, not {shown or repr(value)}"
            )
        if not descriptions:
            raise ValueError("give at least one endpoint description")
        return tuple(descriptions)


# The declaration of one setting.


@dataclass(frozen=True, kw_only=True)
class Setting:
    """
    One setting, as declared on its L{Settings} field.

    @ivar name: the field's name, the keyword of L{PreforkService}.
    @ivar default: the field's default, the one default of the setting.
    @ivar flag: the long command-line flag, without its dashes.
    @ivar short: the one-letter flag, or C{None}.
    @ivar kind: what a value must be.
    @ivar side: who needs it.
    @ivar help: the text of C{--help}.
    @ivar doc: the text of the options reference, in Markdown's inline
        code spans; C{None} to share the entry of the setting declared
        before it.
    @ivar metavar: what the reference shows after the flag, e.g.
        C{SECONDS}.
    @ivar scale: the flag's unit in the keyword's units (C{--max-worker-
        memory} is in megabytes, C{maxWorkerMemory} in bytes).
    """

    flag: str
    short: str | None = None
    kind: Kind
    side: Side
    help: str
    doc: str | None
    metavar: str = ""
    scale: int = 1
    name: str = ""
    default: Any = None

    def error(self, reason: str) -> SettingError:
        return SettingError(f"--{self.flag}: {reason}")

    def check(self, value: Any) -> Any:
        """
        A keyword's value, checked and normalised.
        """
        if value is None and self.default is None:
            return None
        try:
            if self.scale == 1:
                return self.kind.check(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"must be a number of bytes, not {value!r}")
            self.kind.check(value / self.scale, f"{value!r} bytes")
            return int(value)
        except ValueError as e:
            raise self.error(str(e)) from None

    # The command line.

    @property
    def coercer(self) -> Callable[[str], Any] | None:
        """
        The coercer for L{twisted.python.usage.Options}, or C{None} to keep the text.
        """
        if isinstance(self.kind, Text):
            return None

        def coerce(text: str) -> Any:
            try:
                return self.kind.parse(text)
            except ValueError as e:
                raise self.error(str(e)) from None

        coerce.coerceDoc = self.kind.coerceDoc  # type: ignore[attr-defined]
        return coerce

    @property
    def optionDefault(self) -> Any:
        """
        The default as C{--help} shows it, in the flag's unit.
        """
        if self.scale == 1 or self.default is None:
            return self.default
        if self.default % self.scale == 0:
            return self.default // self.scale
        return self.default / self.scale

    def fromOption(self, value: Any) -> Any:
        """
        The keyword's value for what the command line gave.
        """
        if isinstance(self.kind, Flag):
            return bool(value) != self.kind.negated
        if isinstance(self.kind, Endpoints):
            return tuple(value) if value else self.default
        if value is not None and self.scale != 1:
            return int(value * self.scale)
        return value

    def toOption(self, value: Any) -> Any:
        """
        What the command line's options hold for the keyword's value.
        """
        if isinstance(self.kind, Flag):
            return int(value != self.kind.negated)
        if isinstance(self.kind, Endpoints):
            return list(value)
        if value is not None and self.scale != 1:
            return value / self.scale
        return value


def setting(
    *,
    default: Any,
    flag: str,
    kind: Kind,
    side: Side,
    help: str,
    doc: str | None,
    short: str | None = None,
    metavar: str = "",
    scale: int = 1,
) -> Any:
    """
    Declare a field of L{Settings} as a setting, each part named as in
    L{Setting}; C{default} is the field's default.
    """
    declared = Setting(
        flag=flag,
        short=short,
        kind=kind,
        side=side,
        help=help,
        doc=doc,
        metavar=metavar,
        scale=scale,
    )
    return field(default=default, metadata={"setting": declared})


@dataclass(frozen=True)
class Settings:
    """
    Everything one pre-forked server is configured with, checked.

    Construct it with keywords, as C{PreforkService(**keywords)} does: each
    value is checked by its setting, then the settings are checked against
    each other, and the defaults that depend on others are filled in
    (C{workers}, C{standby}, C{maxWorkerAgeJitter}), so that every value
    read from a L{Settings} is the one in use.

    @raise SettingError: with C{--option: reason}.
    """

    listen: tuple[str, ...] = setting(
        default=("tcp:8080",),
        flag="listen",
        short="l",
        metavar="ENDPOINT",
        kind=Endpoints(),
        side=Side.BOTH,
        help=(
            "A Twisted server endpoint description to serve, e.g. tcp:8080, "
            "tcp6:8080, unix:/run/app.sock, ssl:8443:privateKey=key.pem, "
            "systemd:domain=INET:index=0. May be given more than once: every "
            "worker serves every one [default: tcp:8080]."
        ),
        doc=(
            "A Twisted server endpoint description: `tcp:8080`, "
            "`tcp:8080:interface=127.0.0.1`, `tcp6:8080`, "
            "`unix:/run/app.sock:mode=660`, "
            "`ssl:8443:privateKey=key.pem:certKey=cert.pem`, "
            "`systemd:domain=INET:index=0`. May be given more than once: every "
            "worker serves every listener. Default `tcp:8080`. The master binds it "
            "once and holds it for its whole life."
        ),
    )
    proxyProtocol: bool = setting(
        default=False,
        flag="proxy-protocol",
        kind=Flag(),
        side=Side.WORKER,
        help=(
            "Every connection starts with a PROXY protocol header (v1 or v2, "
            "as from HAProxy's send-proxy or send-proxy-v2); the protocol sees "
            "the client's address in transport.getPeer()."
        ),
        doc=(
            "Every connection starts with a PROXY header (v1 or v2), as HAProxy's "
            "`send-proxy` or `send-proxy-v2` sends it; the protocol sees the "
            "client's address in `transport.getPeer()` from `connectionMade` on."
        ),
    )
    protocol: str | None = setting(
        default=None,
        flag="protocol",
        short="p",
        metavar="DOTTED",
        kind=Text("a dotted name"),
        side=Side.WORKER,
        help="Dotted name of a Protocol subclass to serve.",
        doc="A `Protocol` subclass, served as `Factory.forProtocol(cls)`.",
    )
    factory: str | None = setting(
        default=None,
        flag="factory",
        short="f",
        metavar="DOTTED",
        kind=Text("a dotted name"),
        side=Side.WORKER,
        help=(
            "Dotted name of a protocol factory, or of a callable taking no "
            "arguments that returns one."
        ),
        doc=(
            "An `IProtocolFactory` instance, or a callable taking no arguments "
            "that returns one. With neither this nor `--protocol`, the bundled "
            "echo (`preforktwist.examples.Echo`) is served and the log says so."
        ),
    )
    workers: int | None = setting(
        default=None,
        flag="workers",
        short="w",
        metavar="N",
        kind=Whole(1, MAX_WORKERS, _WORKERS),
        side=Side.MASTER,
        help="Workers to keep [default: one per CPU].",
        doc="Workers to keep (1 to 1024). Default: one per CPU.",
    )
    maxConnectionsPerWorker: int = setting(
        default=0,
        flag="max-connections-per-worker",
        short="m",
        metavar="N",
        kind=Whole(0, 2**62, _COUNT),
        side=Side.MASTER,
        help=(
            "A worker serves this many connections and is then replaced; 0 means never."
        ),
        doc=(
            "A worker accepts exactly N connections, then is replaced: whatever "
            "`--replace-at` and `--standby` say, it keeps accepting until its N-th "
            "connection, and its replacement (booted ahead of time, held) starts "
            "accepting at that moment. Only a reload, `--max-worker-memory`, "
            "`--max-worker-age`, a scale-down or a signal retire a worker before "
            "its N. 0 (default) means never. (At a graceful stop a worker may go "
            "past N to serve what was queued before the stop: no replacement "
            "comes then.)"
        ),
    )
    grace: float = setting(
        default=30.0,
        flag="grace",
        metavar="SECONDS",
        kind=Number(0, 86400, _SECONDS),
        side=Side.BOTH,
        help=(
            "Seconds a retiring or stopping worker may take to finish its "
            "open connections before it is killed."
        ),
        doc=(
            "How long a retiring or stopping worker may take to finish its open "
            "connections before it is killed. Default 30."
        ),
    )
    backlog: int | None = setting(
        default=None,
        flag="backlog",
        metavar="N",
        kind=Whole(1, 65535, "a whole number from 1 to 65535"),
        side=Side.MASTER,
        help="The listen backlog [default: 1024, or what the endpoint says].",
        doc="The listen backlog. Default 1024, or what the endpoint description says.",
    )
    bootTimeout: float = setting(
        default=30.0,
        flag="boot-timeout",
        metavar="SECONDS",
        kind=Number(0.1, 86400, "a number of seconds from 0.1 to 86400"),
        side=Side.MASTER,
        help=(
            "Seconds a new worker may take to become ready before it is "
            "killed and counted as a boot failure; the fork server gets as "
            "long to import --preload code."
        ),
        doc=(
            "How long a new worker may take to become ready before it is killed "
            "and counted as a boot failure. The fork server gets as long to "
            "import the --preload code; if it takes longer it is killed and "
            "workers start as fresh interpreters. Default 30."
        ),
    )
    maxConnectionsJitter: int = setting(
        default=0,
        flag="max-connections-jitter",
        metavar="J",
        kind=Whole(0, 2**62, _COUNT),
        side=Side.MASTER,
        help=(
            "Each worker's allowance is -m plus a random 0 to this many, so "
            "that workers do not all retire together."
        ),
        doc=(
            "Each worker's allowance is `-m` plus `randint(0, J)`, so that workers "
            "do not all retire together. Default 0."
        ),
    )
    replaceAt: float = setting(
        default=0.9,
        flag="replace-at",
        metavar="FRACTION",
        kind=Number(0.01, 1, "a number from 0.01 to 1"),
        side=Side.WORKER,
        help=(
            "Share of its allowance after which a worker has its replacement "
            "booted, held, to take over at its last connection; 1 boots it only "
            "when the allowance is used up."
        ),
        doc=(
            "Once a worker has used this share of its allowance, its replacement "
            "boots and waits, held; the old worker goes on accepting until its "
            "allowance is used (exactly `-m`), and the replacement accepts from "
            "that moment, so the pool neither dips nor has more than `--workers` "
            "accepting. At most `--reload-batch` replacements (or `--standby`, if "
            "more) are held at once: workers that reach their allowance within "
            "one boot of each other beyond that leave the pool one fewer for that "
            "boot (`--max-connections-jitter` spreads them). Default 0.9; `1` "
            "boots the replacement only when the allowance is used up (a boot's "
            "worth of one worker fewer)."
        ),
    )
    maxConcurrent: int | None = setting(
        default=None,
        flag="max-concurrent",
        short="c",
        metavar="C",
        kind=WholeOrAuto(0, 2**31, _COUNT),
        side=Side.WORKER,
        help=(
            "Connections one worker holds open at once; at the cap it stops "
            "accepting and leaves new ones queued for the other workers. "
            "auto (the default): the worker's open-file limit, raised to its "
            "hard limit at start, less 64 for its own descriptors. 0 means no "
            "cap."
        ),
        doc=(
            "A worker holding C open connections stops accepting until one closes, "
            "leaving new connections queued for its siblings; when every worker is "
            "at its cap the pool is *saturated* (logged, and shown by `--status`) "
            "and new connections wait in the backlog. Default `auto`: each worker "
            "raises its soft open-file limit to the hard limit when it starts "
            "(`ulimit -Hn`, as nginx's `worker_rlimit_nofile`) and holds that many "
            "less 64, kept for its own descriptors; an explicit C above that is "
            "lowered to it. The worker logs both at start. 0 means no cap (a worker "
            "out of descriptors then leaves the queue to its siblings for a moment)."
        ),
    )
    firstByteTimeout: float = setting(
        default=0.0,
        flag="first-byte-timeout",
        metavar="SECONDS",
        kind=OffOrAtLeast(0, 86400, _SECONDS, least=0.1),
        side=Side.WORKER,
        help=(
            "Close a connection that has sent nothing this many seconds after "
            "it was accepted (for protocols where the client speaks first); "
            "0 (the default) disables."
        ),
        doc=(
            "Close a connection whose client has sent nothing this long after it "
            "was accepted: idle sockets (slowloris, forgotten keep-alives) then "
            "cannot hold a worker's `--max-concurrent` slots. For protocols where "
            "the client speaks first only: HTTP yes, SMTP or a server banner no. "
            "A TLS handshake or a PROXY header is the first byte. Counted in the "
            "status as the close cause `first_byte_timeout`. 0 (default) disables; "
            "at least 0.1."
        ),
    )
    heartbeatTimeout: float = setting(
        default=30.0,
        flag="heartbeat-timeout",
        metavar="SECONDS",
        kind=OffOrAtLeast(0, 86400, _SECONDS),
        side=Side.MASTER,
        help=(
            "Seconds a worker's reactor may go without turning before the "
            "worker is killed (its stack logged) and replaced; 0 disables."
        ),
        doc=(
            "A worker whose reactor has not turned for this long is stuck: its "
            "Python stack is logged, it gets SIGTERM, then SIGKILL 2 s later, and "
            "is replaced at once. Default 30; 0 disables; at least 1."
        ),
    )
    workerInit: str | None = setting(
        default=None,
        flag="worker-init",
        metavar="DOTTED",
        kind=Text("a dotted name"),
        side=Side.WORKER,
        help=(
            "Dotted name of a callable run in each worker before it accepts "
            "(it may return a Deferred); if it fails, the worker is a boot "
            "failure."
        ),
        doc=(
            "A callable run in each worker after its reactor starts and before it "
            "accepts (open a database pool, warm a cache); it may return a "
            "`Deferred`. If it fails, that worker is a boot failure."
        ),
    )
    hooks: str | None = setting(
        default=None,
        flag="hooks",
        metavar="DOTTED",
        kind=Text("a dotted name"),
        side=Side.MASTER,
        help=(
            "Dotted name of an IPoolObserver, or of a callable taking no "
            "arguments that returns one, told in the master of the pool's "
            "events: ready, a worker started, accepting or exited (and why), "
            "the size changed, a reload started, finished or failed, the stop."
        ),
        doc=(
            "An `IPoolObserver` (or a callable taking no arguments that returns "
            "one), imported by the master and told of the pool's events: ready, "
            "a worker started, accepting or exited and why, the size changed, a "
            "reload started, finished or failed, the stop."
        ),
    )
    reloadBatch: int = setting(
        default=1,
        flag="reload-batch",
        metavar="N",
        kind=Whole(1, MAX_WORKERS, _WORKERS),
        side=Side.MASTER,
        help=(
            "Workers a rolling reload (SIGHUP) replaces at a time: at most "
            "this many run beyond --workers."
        ),
        doc=(
            "How many workers a rolling reload replaces at a time, and how many "
            "replacements ahead of time (`--replace-at`) may be held at once: at "
            "most `--workers + N` workers run. Default 1."
        ),
    )
    acceptBatch: int = setting(
        default=0,
        flag="accept-batch",
        metavar="N",
        kind=Whole(0, 100000, _COUNT),
        side=Side.WORKER,
        help=(
            "The most connections a worker accepts per wake-up; small values "
            "spread bursts over the workers. 0 leaves Twisted's adaptive batch."
        ),
        doc=(
            "The most connections a worker accepts per wake-up. 0 (default) leaves "
            "Twisted's adaptive batch (100 and more); small values spread bursts "
            "over the workers."
        ),
    )
    acceptWakeup: str = setting(
        default=ACCEPT_WAKEUPS[0],
        flag="accept-wakeup",
        metavar="MODE",
        kind=Choice(ACCEPT_WAKEUPS),
        side=Side.WORKER,
        help=(
            "How idle workers wait on the shared sockets: exclusive wakes one "
            "worker per connection (epoll reactor, Linux 4.5+), plain wakes "
            "every idle worker (Twisted's own registration)."
        ),
        doc=(
            "How idle workers wait on the listening sockets: `exclusive` "
            "(default) registers them with `EPOLLEXCLUSIVE` in the epoll reactor, "
            "so one connection wakes one worker; `plain` is Twisted's own "
            "registration, which wakes every idle worker (the thundering herd). "
            "Other reactors always wait the plain way."
        ),
    )
    acceptReorder: int = setting(
        default=DEFAULT_ACCEPT_REORDER,
        flag="accept-reorder",
        metavar="N",
        kind=Whole(0, 2**31, _COUNT),
        side=Side.WORKER,
        help=(
            "With exclusive wake-ups: re-add a worker's registration after this "
            "many accepts, sending it to the back of the kernel's wait queue so "
            "that bursts spread over the workers; 0 never re-adds."
        ),
        doc=(
            f"With exclusive wake-ups, a worker re-adds its registration after N "
            f"accepts, which sends it to the back of the kernel's wait queue, so "
            f"that a burst spreads over the workers, as nginx does. Default "
            f"{DEFAULT_ACCEPT_REORDER}; 0 never re-adds."
        ),
    )
    standby: int | None = setting(
        default=None,
        flag="standby",
        metavar="N",
        kind=Whole(0, MAX_WORKERS, _COUNT),
        side=Side.MASTER,
        help=(
            "Workers kept booted but not accepting, so that a replacement "
            "accepts at once [default: 1 when workers are recycled (-m, "
            "--max-worker-memory, --max-worker-age), else 0]."
        ),
        doc=(
            "Workers kept booted, their sockets adopted, but accepting nothing: a "
            "replacement (allowance, memory, age, crash) then accepts at once, "
            "without waiting for a boot. Default 1 when workers are recycled "
            "(`-m`, `--max-worker-memory`, `--max-worker-age`), else 0."
        ),
    )
    forkServer: bool = setting(
        default=True,
        flag="no-fork-server",
        kind=Flag(negated=True),
        side=Side.MASTER,
        help=(
            "Start each worker as a fresh interpreter, which imports Twisted "
            "anew, instead of forking it from a template process that has "
            "already imported it (a small fraction of the CPU)."
        ),
        doc=(
            "Start each worker as a fresh interpreter instead of forking it from "
            "the fork server, a template process that has already imported "
            "Twisted."
        ),
    )
    preload: bool = setting(
        default=False,
        flag="preload",
        kind=Flag(),
        side=Side.MASTER,
        help=(
            "The fork server imports the application (--protocol or --factory, "
            "and --worker-init) before forking workers: no worker imports it "
            "again, and all share its memory. SIGHUP re-imports it in a new "
            "fork server."
        ),
        doc=(
            "The fork server imports the application (`--protocol` or "
            "`--factory`, and `--worker-init`) once, before it forks workers: a "
            "replacement then costs the same whatever the application's import "
            "costs, and the workers share its memory with the fork server. "
            "`SIGHUP` starts a new fork server, which imports the code on disk "
            "anew. Off by default, for the traps of running the application's "
            "import once for every worker."
        ),
    )
    status: str | None = setting(
        default=None,
        flag="status",
        metavar="ENDPOINT",
        kind=Text("an endpoint description"),
        side=Side.MASTER,
        help=(
            "Serve a live status page, /status.json and /metrics on this "
            "endpoint, e.g. tcp:9100:interface=127.0.0.1. Never expose it "
            "publicly."
        ),
        doc=(
            "Serve the status page, `/status.json`, `/metrics`, `/readyz` and "
            "`/livez` there, over HTTP. Off by default; never expose it publicly."
        ),
    )
    control: str | None = setting(
        default=None,
        flag="control",
        metavar="ENDPOINT",
        kind=Text("an endpoint description"),
        side=Side.MASTER,
        help=(
            "Serve the control commands of preforktwist-ctl on this UNIX socket, "
            "e.g. unix:/run/app/control.sock (created mode 0600, owned by the "
            "master's user)."
        ),
        doc=(
            "Serve `preforktwist-ctl` on this UNIX socket, `unix:PATH` only, "
            "created mode 0600 and owned by the master's user: only that user "
            "and root may use it. Off by default."
        ),
    )
    minWorkers: int | None = setting(
        default=None,
        flag="min-workers",
        metavar="N",
        kind=Whole(1, MAX_WORKERS, _WORKERS),
        side=Side.MASTER,
        help=(
            "With --max-workers: adapt the pool to the listen queue, never "
            "below this many workers (--workers is the starting count)."
        ),
        doc=(
            "Adapt the pool's size to the listen queue between N and M: one "
            "worker more while connections keep waiting, one fewer while the "
            "pool has room to spare."
        ),
    )
    maxWorkers: int | None = setting(
        default=None,
        flag="max-workers",
        metavar="M",
        kind=Whole(1, MAX_WORKERS, _WORKERS),
        side=Side.MASTER,
        help="With --min-workers: never above this many workers.",
        doc=None,
    )
    scaleUpAfter: float = setting(
        default=2.0,
        flag="scale-up-after",
        kind=Number(0.1, 3600, "a number of seconds from 0.1 to 3600"),
        side=Side.MASTER,
        help=(
            "Adaptive pool: seconds connections must keep waiting in the queue "
            "before a worker is added."
        ),
        doc="The adaptive pool's timings, in seconds (defaults 2, 10, 5).",
    )
    scaleDownAfter: float = setting(
        default=10.0,
        flag="scale-down-after",
        kind=Number(0.1, 86400, "a number of seconds from 0.1 to 86400"),
        side=Side.MASTER,
        help=(
            "Adaptive pool: seconds of slack (nothing waiting, workers mostly "
            "idle) before a worker is retired."
        ),
        doc=None,
    )
    scaleCooldown: float = setting(
        default=5.0,
        flag="scale-cooldown",
        kind=Number(0, 86400, _SECONDS),
        side=Side.MASTER,
        help="Adaptive pool: least seconds between two changes of size.",
        doc=None,
    )
    maxWorkerMemory: int = setting(
        default=0,
        flag="max-worker-memory",
        metavar="MB",
        kind=Number(0, 2**40, "a number of megabytes, 0 or more"),
        side=Side.MASTER,
        scale=MIB,
        help=(
            "Megabytes of resident memory a worker may use before it is "
            "replaced (gracefully, replacement first); 0 means no limit."
        ),
        doc=(
            "Replace a worker whose resident memory passes this (replacement "
            "first). 0 (default) means no limit."
        ),
    )
    maxWorkerAge: float = setting(
        default=0,
        flag="max-worker-age",
        metavar="SECONDS",
        kind=Number(0, 10**9, _AT_LEAST_0),
        side=Side.MASTER,
        help="Seconds a worker may serve before it is replaced; 0 means no limit.",
        doc=(
            "Replace a worker older than this plus a random jitter (default a "
            "tenth). 0 (default) means no limit."
        ),
    )
    maxWorkerAgeJitter: float | None = setting(
        default=None,
        flag="max-worker-age-jitter",
        metavar="SECONDS",
        kind=Number(0, 10**9, _AT_LEAST_0),
        side=Side.MASTER,
        help=(
            "Each worker's age limit is --max-worker-age plus a random 0 to "
            "this many seconds [default: a tenth of --max-worker-age]."
        ),
        doc=None,
    )
    minWorkerLifetime: float = setting(
        default=30.0,
        flag="min-worker-lifetime",
        metavar="SECONDS",
        kind=Number(0, 10**9, _AT_LEAST_0),
        side=Side.MASTER,
        help=(
            "No worker younger than this many seconds is replaced for memory "
            "or age, so a limit set too low cannot make a spawn loop."
        ),
        doc="No worker younger than this is replaced for memory or age. Default 30.",
    )

    def __post_init__(self) -> None:
        for each in SETTINGS:
            self._set(each.name, each.check(getattr(self, each.name)))
        self._checkTogether()
        self._fillDefaults()

    def _set(self, name: str, value: Any) -> None:
        # Frozen: only construction may set a value, here.
        object.__setattr__(self, name, value)

    def _checkTogether(self) -> None:
        """
        The rules between settings, in the same C{--option: reason} form.
        """
        if self.protocol is not None and self.factory is not None:
            raise BY_NAME["protocol"].error(
                "give one of --protocol and --factory, not both"
            )
        low, high = self.minWorkers, self.maxWorkers
        if low is None and high is not None:
            raise BY_NAME["maxWorkers"].error("give --min-workers too")
        if low is not None and high is None:
            raise BY_NAME["minWorkers"].error("give --max-workers too")
        if low is not None and high is not None and low > high:
            raise BY_NAME["minWorkers"].error(f"{low} is above --max-workers {high}")
        if self.preload and not self.forkServer:
            raise BY_NAME["preload"].error(
                "the application is preloaded into the fork server: "
                "drop --no-fork-server"
            )
        for description in self.listen:
            try:
                parseListen(description, self.backlog)
            except ListenError as e:
                raise BY_NAME["listen"].error(str(e)) from None
        if self.control is not None:
            self._checkControl(self.control)

    @staticmethod
    def _checkControl(description: str) -> None:
        """
        The control socket is a UNIX socket with a path, whose mode keeps
        other users out (an abstract socket has none).
        """
        error = BY_NAME["control"].error
        try:
            spec = parseListen(description)
        except ListenError as e:
            raise error(str(e)) from None
        path = spec.address
        if (
            spec.family != socket.AF_UNIX
            or spec.inherited is not None
            or not isinstance(path, str)
            or path.startswith(("\0", "@"))
        ):
            raise error(f"must be unix:PATH, a UNIX socket path, not {description!r}")

    def _fillDefaults(self) -> None:
        """
        The defaults that depend on other settings or on the machine.
        """
        low, high = self.minWorkers, self.maxWorkers
        workers = self.workers
        if workers is None:
            workers = low if low is not None else defaultWorkerCount()
        if low is not None and high is not None:
            # The adaptive pool starts inside its bounds.
            workers = min(max(workers, low), high)
        self._set("workers", workers)
        if self.standby is None:
            recycled = (
                self.maxConnectionsPerWorker
                or self.maxWorkerMemory
                or self.maxWorkerAge
            )
            self._set("standby", int(bool(recycled)))
        if self.maxWorkerAgeJitter is None:
            self._set("maxWorkerAgeJitter", self.maxWorkerAge / 10)

    @classmethod
    def fromOptions(cls, options: Mapping[str, Any]) -> Settings:
        """
        The settings that parsed command-line options give.

        @param options: L{preforktwist.tap.Options}, keyed by flag.
        """
        return cls(**{s.name: s.fromOption(options[s.flag]) for s in SETTINGS})

    @property
    def adaptive(self) -> bool:
        """
        Whether the pool adapts its size between C{minWorkers} and
        C{maxWorkers}.
        """
        return self.minWorkers is not None and self.maxWorkers is not None


#: Every setting, in the order the reference lists them.
SETTINGS: tuple[Setting, ...] = tuple(
    replace(f.metadata["setting"], name=f.name, default=f.default)
    for f in fields(Settings)
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def workerConfig(
    settings: Settings,
    *,
    number: int,
    masterPid: int,
    families: list[int],
    tls: list[bool],
    allowance: int,
    standby: bool,
    reactor: str,
    countsInterval: float,
    loadSlot: int | None,
) -> WorkerConfig:
    """
    What one worker is told: every setting a worker needs, by its own name,
    and what the master decided for this worker.

    @param allowance: connections this worker accepts before it retires:
        C{maxConnectionsPerWorker} plus this worker's share of
        C{maxConnectionsJitter}; 0 for never.
    @param loadSlot: its slot on the load board, if there is one.
    """
    shared = {
        s.name: _wire(getattr(settings, s.name))
        for s in SETTINGS
        if s.side is not Side.MASTER
    }
    return WorkerConfig(
        number=number,
        masterPid=masterPid,
        families=families,
        tls=tls,
        allowance=allowance,
        standby=standby,
        reactor=reactor,
        countsInterval=countsInterval,
        loadSlot=loadSlot,
        **shared,
    )


def preloadNames(settings: Settings) -> list[str]:
    """
    The user's code a C{--preload} fork server imports: what the workers
    would import first (the protocol or factory, the bundled echo when
    neither is given, then the worker-init callable).
    """
    names = [settings.factory or settings.protocol or DEFAULT_PROTOCOL]
    if settings.workerInit is not None:
        names.append(settings.workerInit)
    return names


def _wire(value: Any) -> Any:
    # JSON has lists, not tuples: a config reads back equal to itself.
    return list(value) if isinstance(value, tuple) else value


def optionGroups() -> list[tuple[Setting, ...]]:
    """
    The settings as the options reference lists them: one entry per
    setting with its own text, and a setting without (C{doc} is C{None})
    in the entry of the one declared before it (C{--max-workers} beside
    C{--min-workers}).
    """
    groups: list[list[Setting]] = []
    for each in SETTINGS:
        if each.doc is None:
            groups[-1].append(each)
        else:
            groups.append([each])
    return [tuple(group) for group in groups]
