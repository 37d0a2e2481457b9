"""
Policies over the pool, each a timer loop: memory and age limits, and the
adaptive pool size.
"""
