"""
The control socket (C{--control}): C{preforktwist-ctl}'s commands, served
by the master on a UNIX socket only its user may use.

  - L{server}: the commands' answers, and the socket as a service.
  - L{stacks}: a worker's stack dump, read back from its stderr.
"""
