"""
The contract between master and worker: the control channel's AMP commands,
the worker's configuration and the fork server's messages.  It imports
neither side.
"""
