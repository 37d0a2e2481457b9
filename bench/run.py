"""
The preforktwist benchmark: one command starts, loads, measures and stops
every server, then writes RESULTS.md and the charts.

    python bench/run.py            # full: 3 rounds of 8 s runs, ~25 minutes
    python bench/run.py --quick    # smoke test: 1 round of 3 s runs

See bench/README.md for what is measured and why, and for the modules of
the harness (L{bench.harness} runs it).  Everything listens on 127.0.0.1
only, every run is bounded in time, and every process started is stopped
(its whole session, by pid) before the next run starts.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as a script, Python puts bench/ itself first on sys.path, where
    # the harness's modules would shadow top-level names: the checkout
    # instead, so that they are imported as the bench package.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    from bench.harness import main

    main()
