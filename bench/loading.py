"""
Load a protocol class or a factory by dotted name for the benchmark's own
servers.

C{preforktwist.examples} is loaded from its file alone, not through the
C{preforktwist} package, whose C{__init__} imports the whole service
(master, pool, control channel): the single-process baseline and the naive
pre-fork serve exactly the same protocol code, with only what a plain
Twisted program would import.
"""

from __future__ import annotations

import importlib
import importlib.util
import os


def loadName(dotted: str) -> object:
    """
    The object named C{dotted}: C{module.name}.
    """
    module, _, name = dotted.rpartition(".")
    if module == "preforktwist.examples":
        package = importlib.util.find_spec("preforktwist")  # finds, no import
        assert package is not None and package.origin is not None
        path = os.path.join(os.path.dirname(package.origin), "examples.py")
        spec = importlib.util.spec_from_file_location("bench_examples", path)
        assert spec is not None and spec.loader is not None
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    else:
        loaded = importlib.import_module(module)
    found: object = getattr(loaded, name)
    return found


def loadProtocol(dotted: str) -> type:
    """
    The protocol class named C{dotted}.
    """
    cls = loadName(dotted)
    if not isinstance(cls, type):
        raise SystemExit(f"bench: {dotted} is not a class")
    return cls
