"""
Turning C{--protocol} and C{--factory} dotted names into a protocol
factory, in the worker.

The master never imports user code: a reload must pick up new code on disk
in fresh workers, and a factory that breaks at import must break a worker,
where it is a boot failure the master can count, not the master itself.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.python.reflect import namedAny

from preforktwist.protocol.config import DEFAULT_PROTOCOL


class FactoryError(Exception):
    """
    The user's factory cannot be had.  The message is one line.
    """


def _importName(name: str, option: str) -> object:
    try:
        return namedAny(name)
    except Exception as e:
        raise FactoryError(
            f"{option} {name}: cannot import: {type(e).__name__}: {e}"
        ) from None


def loadFactory(protocol: str | None, factory: str | None) -> IProtocolFactory:
    """
    Import and build the factory to serve.

    @param protocol: dotted name of a L{Protocol} subclass, served as
        C{Factory.forProtocol(cls)}.
    @param factory: dotted name of an L{IProtocolFactory} provider, or of a
        callable taking no arguments that returns one.
    @raise FactoryError: the name cannot be imported, is not what it should
        be, or raised when called.
    """
    if factory is not None:
        found = _importName(factory, "--factory")
        if IProtocolFactory.providedBy(found):
            return found
        if not callable(found):
            raise FactoryError(
                f"--factory {factory}: is neither a protocol factory "
                f"nor a callable returning one"
            )
        try:
            built = found()
        except Exception as e:
            raise FactoryError(
                f"--factory {factory}: raised {type(e).__name__}: {e}"
            ) from None
        if not IProtocolFactory.providedBy(built):
            raise FactoryError(
                f"--factory {factory}: returned {built!r}, "
                f"which is not a protocol factory"
            )
        return built
    name = protocol or DEFAULT_PROTOCOL
    found = _importName(name, "--protocol")
    if not (isinstance(found, type) and issubclass(found, Protocol)):
        raise FactoryError(f"--protocol {name}: is not a Protocol subclass")
    return Factory.forProtocol(found)


def loadWorkerInit(name: str) -> Callable[[], object]:
    """
    Import the C{--worker-init} callable.  It takes no arguments and may
    return a L{twisted.internet.defer.Deferred}.

    @raise FactoryError: it cannot be imported or is not callable.
    """
    found = _importName(name, "--worker-init")
    if not callable(found):
        raise FactoryError(f"--worker-init {name}: is not callable")
    return found
