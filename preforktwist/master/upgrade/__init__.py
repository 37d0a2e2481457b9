"""
Hot upgrade (SIGUSR2): a new master, started afresh from the same command
line so that the code on disk runs, takes over the listening sockets
without closing them, so nothing queued in the kernel is lost.

  - L{handoff}: what the old master hands the new one, in one environment
    variable: the sockets' descriptors by name, and a channel.
  - L{command}: the new master's command line, and twistd's pidfile.
  - L{pidfile}: the pidfile moved aside, put back or handed over.
  - L{channel}: the AMP commands the two masters exchange.
  - L{newmaster}: the old master's view of the new one: ready in time or
    not.
  - L{upgrader}: one upgrade from start to hand-over (or failure), for
    every pre-forked service of the process.
  - L{successor}: the new master's side.
"""
