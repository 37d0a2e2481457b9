"""
Fixtures: every master a test starts is reaped with all its workers, and a
test that leaves any process alive fails; every pool a test drives in
process keeps its invariants.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Master

StartMaster = Callable[..., Master]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartMaster]:
    """
    C{serve("-w", "2", ...)} starts C{twistd -n preforked} with those
    options, listening on an ephemeral port on 127.0.0.1 unless the test
    gives C{--listen} itself.
    """
    started: list[Master] = []

    def start(*args: str, master: type[Master] = Master, **kwargs: Any) -> Master:
        options = list(args)
        if "-l" not in options and "--listen" not in options:
            options += ["--listen", "tcp:0:interface=127.0.0.1"]
        started.append(master(options, cwd=tmp_path, **kwargs))
        return started[-1]

    yield start
    leaked = []
    for master in started:
        leaked += master.reap()
    assert not leaked, f"processes left running: {leaked}"


@pytest.fixture(autouse=True)
def poolInvariants() -> Iterator[None]:
    """
    Every pool a test drives through C{tests.test_pool.Harness} finds none
    of its invariants broken after any of its steps (it checks them after
    each, and keeps what it found broken in C{broken}).
    """
    yield
    module = sys.modules.get("tests.test_pool")
    if module is None:
        return
    made = module.Harness.made[:]
    del module.Harness.made[:]
    broken = [what for h in made for what in h.pool.broken]
    assert not broken, f"pool invariants broken: {broken}"
