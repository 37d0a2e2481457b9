"""
C{twistd preforked}: command-line options and the service they make.

Every option comes from L{preforktwist.settings}: its flag, default, check
and help text are declared there, once.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from preforktwist.common.endpoints import ListenError
from preforktwist.master.service import PreforkService
from preforktwist.settings import (
    MAX_WORKERS,
    SETTINGS,
    Endpoints,
    Flag,
    Setting,
    SettingError,
    Settings,
)

__all__ = ["MAX_WORKERS", "Options", "makeService"]


def _repeatable(setting: Setting) -> Any:
    """
    An C{opt_} method that gathers every value of a flag that may be given
    more than once (C{--listen}).
    """

    def gather(self: Options, value: str) -> None:
        self[setting.flag].append(value)

    gather.__doc__ = setting.help
    return gather


class Options(usage.Options):
    """
    Options for C{twistd preforked}.  Any mistake ends the command with one
    line naming the option and the reason, and exit status 1.

    @ivar settings: the L{Settings} the options give, once parsed.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve a Twisted protocol from a pool of pre-started worker processes "
        "that share one listening socket.  With neither --protocol nor "
        "--factory, the bundled echo example is served."
    )

    optFlags = [[s.flag, s.short, s.help] for s in SETTINGS if isinstance(s.kind, Flag)]
    optParameters = [
        [s.flag, s.short, s.optionDefault, s.help, s.coercer]
        for s in SETTINGS
        if not isinstance(s.kind, (Flag, Endpoints))
    ]

    settings: Settings

    def __init__(self) -> None:
        usage.Options.__init__(self)
        for s in _REPEATABLE:
            self[s.flag] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse, and turn any usage error into a one-line message and exit
        status 1, instead of twistd's whole usage text before it.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            reason = str(e).removeprefix("Parameter type enforcement failed: ")
            raise SystemExit(f"twistd preforked: {reason}") from None

    def postOptions(self) -> None:
        try:
            self.settings = Settings.fromOptions(self)
        except SettingError as e:
            raise usage.UsageError(str(e)) from None
        # The options show the values in use (the defaults filled in).
        for s in SETTINGS:
            self[s.flag] = s.toOption(getattr(self.settings, s.name))


_REPEATABLE = [s for s in SETTINGS if isinstance(s.kind, Endpoints)]
for _setting in _REPEATABLE:
    _gather = _repeatable(_setting)
    setattr(Options, f"opt_{_setting.flag.replace('-', '_')}", _gather)
    if _setting.short is not None:
        setattr(Options, f"opt_{_setting.short}", _gather)


def makeService(config: Options) -> IService:
    """
    Make the service and bind its sockets now, while twistd may still be
    root and before any worker starts: a port in use is reported as one
    line, not as a traceback from inside the reactor.
    """
    try:
        service = PreforkService(settings=config.settings)
        service.bindListeners()
    except (ValueError, ListenError) as e:
        raise SystemExit(f"twistd preforked: {e}") from None
    return service
