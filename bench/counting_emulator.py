"""`hubsync emulator`, instrumented for benchmarks: it remembers every write of every contact.

The emulator keeps only the last write time per property; the flips scenario needs how many
times each contact was written. This child-process entry point wraps the emulator's state so that
``GET /_emulator/contacts?with_timestamps=1`` also returns ``writes``: the time of each write of
the contact, in order. Nothing else changes; it takes the same flags as `hubsync emulator`.

    python -m bench.counting_emulator --port 0 --plan starter
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from crm.emulator.state import HubSpotState
from hubsync.emulator_cmd import emulator

_writes: defaultdict[str, list[float]] = defaultdict(list)
_write = HubSpotState._write
_dump = HubSpotState.dump_contacts


def _counted_write(self: HubSpotState, contact: Any, values: Any, now: float) -> None:
    _write(self, contact, values, now)
    _writes[contact.id].append(now)


def _dump_with_writes(self: HubSpotState, *, with_timestamps: bool = False) -> list[dict[str, Any]]:
    out = _dump(self, with_timestamps=with_timestamps)
    if with_timestamps:
        for item in out:
            item["writes"] = list(_writes.get(item["id"], ()))
    return out


def main() -> None:
    # Patching the class is the point here (the bench's emulator counts every write): mypy
    # flags assigning to a method by design, hence these two ignores.
    HubSpotState._write = _counted_write  # type: ignore[method-assign]
    HubSpotState.dump_contacts = _dump_with_writes  # type: ignore[method-assign]
    emulator(prog_name="hubsync emulator")


if __name__ == "__main__":
    main()
