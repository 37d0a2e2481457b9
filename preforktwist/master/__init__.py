"""
The master side: the service, its listening sockets, the pool of workers
and everything that watches them.  No worker module imports any of this.
"""
