"""
The worker side: the program each worker runs (and the fork server that
forks them), which serves the user's factory on the inherited sockets.
Nothing here imports the master side.
"""
