"""
A conformance suite whose oracle is Twisted itself: the same protocols and
the same clients against one plain Twisted process and against the pool.
"""
