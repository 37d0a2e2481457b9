"""
Process titles, so that C{ps} and C{top} tell the master from its workers.

C{setproctitle} is an optional extra (C{preforktwist[titles]}); without it
the titles are simply not set.
"""

from __future__ import annotations


def setTitle(title: str) -> None:
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)
