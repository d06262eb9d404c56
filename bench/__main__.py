"""Run one benchmark: ``python -m bench SCENARIO [options] [--json]``.

End-to-end scenarios (each starts its own Redis, HubSpot emulator, Ray and hubsync on 127.0.0.1
and stops them on the way out): backfill, flips, latency, ingest, memory, fairness, load, soak, peers, tenants.
Component benchmarks: coalescer_memory, simulation, emulator_throughput, intake_cpu.
``python -m bench SCENARIO --help`` lists a scenario's options; BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import runpy
import sys

SCENARIOS = {
    "backfill": "N contacts enter an audience: time until HubSpot holds them all (starter plan)",
    "flips": "contacts flip in and out of an audience, plus attribute churn: writes per contact",
    "latency": "a steady trickle of changes: p50/p95/p99 from XADD to the write in HubSpot",
    "ingest": "the pipeline's own ceiling (streams -> coalesced state) vs raw XREADGROUP+XACK",
    "memory": "RSS of an idle ActivationActor, bytes per pending contact",
    "fairness": "a big backfill on one activation, a realtime trickle on another, one token",
    "load": "a sustained stream (default 50,000 changes/s for a minute): intake, memory, lag recovery",
    "soak": "a steady mixed load for minutes (default 5,000 changes/s for 10): does anything keep growing?",
    "tenants": "N activations, a token and a small audience each, at once: memory per tenant, p99",
    "peers": "hubsync vs HubSpot's SDK (a call per change; batches of 100 + Retry): rate, 429s, writes",
    "coalescer_memory": "the Coalescer alone: bytes per pending contact (1,000,000 contacts)",
    "simulation": "the scheduler on a fake clock: a flood of changes, HubSpot as a dict",
    "emulator_throughput": "requests per second the HubSpot emulator serves",
    "intake_cpu": "Router and ActivationActor CPU per change in one process, GC passes; --profile",
}


def usage() -> str:
    width = max(map(len, SCENARIOS))
    lines = [__doc__.strip(), "", "scenarios:"]
    lines += [f"  {name:<{width}}  {what}" for name, what in SCENARIOS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SCENARIOS:
        print(f"unknown scenario {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv = [f"python -m bench {name}", *rest]
    try:
        runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
