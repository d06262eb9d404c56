"""actors: the cores and the Ray actors that run them (one worker process per actor).

Every actor process pays for what it imports (issue 15, section 5: each activation costs two
worker processes), so this package and what it imports load only what an actor needs: no CLI,
web framework, console, emulator or terminal rendering. ``tests/unit/test_actor_imports.py``
pins it.

httpx imports its command-line tool (``httpx._main``: click, rich and pygments, ~4 MiB of unique
memory and ~0.1 s per process) whenever click is installed, which hubsync's own CLI needs. No
actor runs httpx's CLI, so before anything here imports httpx, its ``_main`` is marked absent
(``None`` in ``sys.modules``): httpx then falls back to the stub ``main`` it defines for an install
without the CLI extra. A process that imported httpx before this package keeps its CLI.
"""

import sys

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
