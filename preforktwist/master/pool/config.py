"""
What a pool is configured with, in one object.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolConfig:
    """
    The pool's settings, in seconds where they are times.

    @ivar size: workers that serve at first; the pool's C{resize} changes
        it.
    @ivar grace: seconds a retiring or stopping worker may take.
    @ivar bootTimeout: seconds a worker may take to become ready.
    @ivar maxBootFailures: boot failures after which the pool gives up, if
        no worker ever became ready.
    @ivar backoff: the first retry delay after a failure; it doubles with
        each consecutive failure, up to C{maxBackoff}.
    @ivar maxBackoff: the longest retry delay.
    @ivar minUptime: a worker that dies sooner than this after becoming
        ready counts as a failure for the backoff.
    @ivar surplus: workers that may boot or accept beyond the size, to
        replace others ahead of time and during reloads (C{--reload-batch}).
    @ivar standby: workers kept booted but not accepting, so that a
        replacement starts accepting at once instead of after a boot.
    @ivar heartbeatTimeout: seconds without news from a worker before it is
        taken for stuck; 0 disables the check.
    @ivar stuckKillDelay: seconds between SIGTERM and SIGKILL for a stuck
        worker.
    @ivar renewInterval: least seconds between two renewals of the starter;
        a reload asked for sooner runs on the starter as it is (each worker
        still imports the user's code anew) and one renewal, with a last
        pass, follows when the interval is over.
    """

    size: int
    grace: float = 30.0
    bootTimeout: float = 30.0
    maxBootFailures: int = 3
    backoff: float = 0.5
    maxBackoff: float = 30.0
    minUptime: float = 1.0
    surplus: int = 1
    standby: int = 0
    heartbeatTimeout: float = 0.0
    stuckKillDelay: float = 2.0
    renewInterval: float = 0.0
