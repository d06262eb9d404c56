"""hubsync's benchmarks: `python -m bench` lists the scenarios (see BENCHMARKS.md)."""

import hubsync  # noqa: F401  (keeps a local Ray on 127.0.0.1: see hubsync/__init__.py)
