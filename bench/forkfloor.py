"""
The floor under the CPU of one replacement: what forking a template like
preforktwist's fork server costs when the child does nothing at all.

    python bench/forkfloor.py [--count 300] [--preload DOTTED ...]

The process imports what the fork server imports before it forks
(L{preforktwist.worker.forkserver._preimport}, and with C{--preload} the
named modules, as C{--preload} does), freezes the collector as the fork
server does, then forks C{--count} children that call C{os._exit(0)} at
once, each waited for before the next.  It prints one JSON line: the CPU
per fork of the parent (the copy of the page tables) and of the child
(Python's after-fork work, the copy-on-write faults that causes, and the
kernel's teardown of the address space at exit), and the template's size.

No worker can cost less than this: a replacement adds to it the worker's
start, the retiring worker's end and the master's part.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys

# After PYTHONPATH: bench/run.py puts a --snapshot export there, which must
# be what the template imports; the checkout is only the fallback (and
# where bench.heavyapp lives).
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EPOLL_REACTOR = "twisted.internet.epollreactor"


def cpuSeconds(who: int) -> tuple[float, int]:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


def rssKiB() -> int:
    """
    This process's resident size (not C{bench.measurement.readKiB}: importing the
    harness here would make the template bigger than the fork server).
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--preload", action="append", default=[])
    args = parser.parse_args()

    from preforktwist.worker import forkserver

    forkserver._preimport(EPOLL_REACTOR)
    if args.preload:
        forkserver._preload(EPOLL_REACTOR, args.preload)
        from twisted.python.reflect import namedAny

        for name in args.preload:
            # _preload reports a name it cannot import and goes on; the
            # floor of a template without it would be mislabelled.
            namedAny(name)
    # As the fork server does before it forks.
    gc.collect()
    gc.freeze()

    parent0, _ = cpuSeconds(resource.RUSAGE_SELF)
    child0, faults0 = cpuSeconds(resource.RUSAGE_CHILDREN)
    for _ in range(args.count):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    parent1, _ = cpuSeconds(resource.RUSAGE_SELF)
    child1, faults1 = cpuSeconds(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "forks": args.count,
                "preload": args.preload,
                "parent_ms_each": (parent1 - parent0) / args.count * 1000,
                "child_ms_each": (child1 - child0) / args.count * 1000,
                "child_faults_each": (faults1 - faults0) / args.count,
                "template_rss_mib": rssKiB() / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
