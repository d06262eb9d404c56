"""Memory of pending contacts: 1,000,000 contacts with one pending audience property each.

Everything the Coalescer holds is counted (emails, records, dict slots, arrival runs), measured
two ways: tracemalloc (Python allocations made while offering) and the growth of the process's
resident set (RSS, from /proc/self/statm). Goal: <= 120 bytes per pending contact. The Coalescer
has flap damping on, as the service runs it (it keeps state only for contacts that flip).

    python -m bench.coalescer_memory [--contacts 1000000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc

from scheduler import Coalescer, DampingPolicy, FakeClock, Lane

GOAL_BYTES_PER_CONTACT = 120
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return None


def _fill(n: int, clock: FakeClock) -> Coalescer:
    coalescer = Coalescer(clock, damping=DampingPolicy())  # as the service runs it
    base = int(clock.now() * 1000) << 20
    for i in range(n):
        if i % 10_000 == 0:
            clock.advance(0.01)
        coalescer.offer(f"user{i:07d}@example.com", "cdp_aud_a17", "true", base + i, Lane.REALTIME)
    return coalescer


def measure(contacts: int = 1_000_000) -> dict[str, float | int | bool | None]:
    clock = FakeClock(1_800_000_000.0)
    gc.collect()
    rss0 = _rss()
    started = time.perf_counter()
    coalescer = _fill(contacts, clock)
    fill_seconds = time.perf_counter() - started
    gc.collect()
    rss1 = _rss()
    assert coalescer.pending() == contacts
    del coalescer
    gc.collect()

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    coalescer = _fill(contacts, FakeClock(1_800_000_000.0))
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_contact = traced / contacts
    rss_per = None if rss0 is None or rss1 is None else (rss1 - rss0) / contacts
    return {
        "contacts": contacts,
        "pending": coalescer.pending(),
        "traced_bytes": traced,
        "bytes_per_contact_tracemalloc": round(per_contact, 1),
        "bytes_per_contact_rss": None if rss_per is None else round(rss_per, 1),
        "goal_bytes_per_contact": GOAL_BYTES_PER_CONTACT,
        "within_goal": per_contact <= GOAL_BYTES_PER_CONTACT
        and (rss_per is None or rss_per <= GOAL_BYTES_PER_CONTACT),
        "offer_us_per_contact": round(fill_seconds / contacts * 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(args.contacts)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0 if result["within_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
