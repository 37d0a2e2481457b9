"""
The benchmark harness: servers, clients and the runner (C{python bench/run.py}).
"""
