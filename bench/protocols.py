"""
Protocols used only by the benchmark.

L{BurnHTTP} is the CPU-bound workload: the same HTTP "hello" as
L{preforktwist.examples.HelloHTTP}, but every request first burns a fixed
amount of pure-Python work, about 1 ms of CPU on the 2-core benchmark
machine.  The work is a fixed number of loop iterations, not a time budget,
so a request costs the same work in every server, busy or idle.  Override
the count with the environment variable C{BENCH_BURN_ITERATIONS}.

Serve it with C{twistd -n preforked -p bench.protocols.BurnHTTP} (with the
checkout on C{PYTHONPATH}) or C{python bench/single.py --protocol
bench.protocols.BurnHTTP}.
"""

from __future__ import annotations

import os

from preforktwist.examples import HelloHTTP

#: Iterations of the loop in L{burn}: 6,500 took about 1.0 ms of CPU on the
#: benchmark machine (CPython 3.11, AMD EPYC, 2 vCPU).
BURN_ITERATIONS = int(os.environ.get("BENCH_BURN_ITERATIONS", "6500"))


def burn(iterations: int = BURN_ITERATIONS) -> int:
    """
    Spend CPU in the interpreter the way application code does: a loop of
    integer arithmetic whose result is used, so nothing is optimised away.
    """
    x = 0
    for i in range(iterations):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


class BurnHTTP(HelloHTTP):
    """
    L{HelloHTTP} that burns about 1 ms of CPU before each 200 answer.
    """

    def _reply(self, code: int, reason: bytes, keepAlive: bool) -> None:
        if code == 200:
            burn()
        super()._reply(code, reason, keepAlive)
