"""hubsync: entry points (the CLI, configuration, wiring a service together).

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when ``ray`` is first imported; without it a
"local" Ray binds the machine's external address. Every entry point imports this package first,
so when hubsync starts its own Ray (no RAY_ADDRESS) the setting is in place before Ray loads.
"""

import os

if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
