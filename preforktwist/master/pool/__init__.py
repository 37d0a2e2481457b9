"""
The population policy: how many workers, when to start one, when to
retire one, when to give up, and how to stop them all.

This is the supervisor's whole story, kept free of processes and sockets:
it is given a clock and a function that starts a worker, and is told what
happens to workers.  It records each event, then decides in one step,
L{Pool.reconcile}, what to do.  Its rules:

 - C{size} workers serve.  A worker that is booting or accepting counts,
   unless it is I{doomed}: its replacement is wanted, because it is close
   to its allowance or because a reload replaces it.  A doomed worker
   keeps accepting until its replacement is ready (reload) or its
   allowance is used (allowance), so the pool never dips.
 - At most C{size + surplus} workers boot or accept at once: the surplus
   (default 1) is what replacement ahead of time and rolling reloads may
   use, so memory never grows beyond it.  A fork storm is impossible by
   construction, whatever the user's code does.
 - A worker that accepts no more is I{retiring}: it finishes its open
   connections within the grace period and does not count at all.
 - A worker that dies before it became ready is a boot failure.  Boot
   failures are retried one worker at a time, with exponential backoff.
   If no worker has ever become ready after C{maxBootFailures} of them, the
   pool gives up: the user's code cannot serve, and saying so beats a
   server that starts and never answers.  A failure during a reload stops
   the reload; the old workers keep serving.
 - A worker that dies soon after it became ready counts as a failure too,
   for the backoff, so that code which crashes on its first connection does
   not make a respawn loop.
 - A worker whose heartbeat stops (its reactor no longer turns) has its
   stack dumped, is sent SIGTERM, then SIGKILL, and is replaced.
 - Stop: every worker drains and exits within the grace period, or is
   killed.

The invariants these rules keep are stated in
L{preforktwist.master.pool.invariants}.
"""

from preforktwist.master.pool.config import PoolConfig
from preforktwist.master.pool.core import Pool
from preforktwist.master.pool.roster import PoolWorker, WorkerRecord, WorkerState

__all__ = ["Pool", "PoolConfig", "PoolWorker", "WorkerRecord", "WorkerState"]
