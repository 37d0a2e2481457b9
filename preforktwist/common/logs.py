"""
Log namespaces that stay put when code moves.

An operator filters the log by namespace (C{preforktwist.pool.Pool} is in
the documentation's log reference and in people's alerting rules), so the
namespace is a public name, not an accident of which module a class lives
in.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger


class NamedLogger(Logger):
    """
    A L{Logger} that, used as a class attribute, keeps the namespace it was
    given instead of taking the class's dotted name.
    """

    def __get__(self, instance: object, owner: type | None = None) -> Logger:
        source: Any = owner if instance is None else instance
        return Logger(self.namespace, source, observer=self.observer)
