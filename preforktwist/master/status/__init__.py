"""
What the master shows of the pool: the scoreboard, its web page and JSON,
Prometheus metrics.
"""
