"""
Small helpers both sides use: endpoint parsing, process titles, log
namespaces.
"""
