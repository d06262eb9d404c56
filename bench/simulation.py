"""Simulation: a flood of CDP changes through Coalescer, lanes and TokenBudget on a FakeClock.

Models one activation on the Starter plan (100 calls / 10 s, 100 contacts per call): a backfill
of every contact into one audience, then realtime flips in and out of audiences and attribute
changes, delivered slightly out of order. HubSpot is a dict; 1% of calls fail (half of those
after HubSpot applied them) and are retried. At the end HubSpot must hold, for every contact
property, the value of the change with the highest position.

    python -m bench.simulation [--changes 1000000] [--contacts 100000] [--minutes 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from scheduler import Coalescer, FakeClock, FlushPolicy, Lane, TokenBudget

T0 = 1_800_000_000.0
AUDIENCES = ("cdp_aud_a1", "cdp_aud_a2", "cdp_aud_a3")
ATTRIBUTE = "cdp_attr_ltv"


def _changes(n: int, contacts: int, seconds: float, rng: random.Random):
    """(arrival, email, prop, value, position, lane), in arrival order, and the truth."""
    out = []
    state: dict[tuple[int, str], bool] = {}
    backfill = min(contacts, n)
    for i in range(backfill):  # the backfill: everyone enters a1 (positions from an old scan)
        pos = ((int(T0 * 1000) - 3_600_000) << 20) | i
        out.append((T0, i, AUDIENCES[0], "true", pos, Lane.BACKFILL))
        state[(i, AUDIENCES[0])] = True
    realtime = n - backfill
    for j in range(realtime):
        at = T0 + (j + 1) * seconds / max(realtime, 1)
        ms = int(at * 1000)
        c = rng.randrange(contacts)
        if rng.random() < 0.8:
            prop = rng.choice(AUDIENCES)
            member = not state.get((c, prop), False)
            state[(c, prop)] = member
            value = "true" if member else "false"
        else:
            prop, value = ATTRIBUTE, f"{rng.randrange(100_000) / 100:.2f}"
        out.append((at, c, prop, value, (ms << 20) | (j & 0xFFFFF), Lane.REALTIME))
    # Delivered out of order within small windows: order must come from positions.
    for k in range(backfill, len(out) - 1, 2):
        if rng.random() < 0.1:
            a, b = out[k], out[k + 1]
            out[k], out[k + 1] = (b[0], *a[1:]), (a[0], *b[1:])
    truth: dict[tuple[str, str], tuple[int, str]] = {}
    for _, c, prop, value, pos, _ in out:
        key = (f"c{c}@example.com", prop)
        if key not in truth or truth[key][0] < pos:
            truth[key] = (pos, value)
    return out, {k: v for k, (_, v) in truth.items()}


def simulate(
    changes: int = 1_000_000,
    contacts: int = 100_000,
    minutes: float = 10.0,
    *,
    per_interval: int = 100,
    batch_size: int = 100,
    failure_rate: float = 0.01,
    seed: int = 7,
) -> dict[str, float | int | bool]:
    rng = random.Random(seed)
    stream, truth = _changes(changes, contacts, minutes * 60.0, rng)
    clock = FakeClock(T0)
    budget = TokenBudget.for_plan(per_interval, 250_000)
    coalescer = Coalescer(clock, FlushPolicy(batch_size=batch_size))
    hubspot: dict[tuple[str, str], str] = {}
    grants: list[float] = []
    calls = failed = contacts_written = 0
    started = time.perf_counter()
    i, n = 0, len(stream)
    while True:
        now = clock.now()
        while i < n and stream[i][0] <= now:
            _, c, prop, value, pos, lane = stream[i]
            coalescer.offer(f"c{c}@example.com", prop, value, pos, lane)
            i += 1
        while coalescer.ready(now) and budget.reserve(now) == 0.0:
            batch = coalescer.take(now)
            if batch is None:
                budget.release(now, now)
                break
            grants.append(now)
            calls += 1
            applied = rng.random() >= failure_rate / 2
            if applied:
                for contact in batch.contacts:
                    for prop, value, _ in contact.values:
                        hubspot[(contact.email, prop)] = value
            if applied and rng.random() >= failure_rate / 2:
                coalescer.acknowledge(batch)
                contacts_written += len(batch)
            else:
                failed += 1
                coalescer.retry(batch)
        # Sleep exactly until the next thing can happen.
        candidates = []
        if i < n:
            candidates.append(stream[i][0])
        flush_at = coalescer.next_flush_at()
        if flush_at is not None:
            candidates.append(max(flush_at, now + budget.wait_time(now)))
        if not candidates:
            break
        clock.set(max(min(candidates), now))
        if clock.now() == now and i < n and stream[i][0] > now:
            clock.set(stream[i][0])
    elapsed = time.perf_counter() - started
    window = budget.window.interval
    worst = 0
    lo = 0
    for hi, t in enumerate(grants):
        while grants[lo] + window <= t:
            lo += 1
        worst = max(worst, hi - lo + 1)
    stats = coalescer.stats()
    correct = all(hubspot.get(k) == v for k, v in truth.items())
    return {
        "changes": changes,
        "contacts": contacts,
        "simulated_minutes": minutes,
        "calls": calls,
        "failed_calls": failed,
        "contacts_written": contacts_written,
        "values_written": stats.written,
        "coalesced": stats.coalesced,
        "max_calls_in_any_window": worst,
        "window_limit": per_interval,
        "drained_at_s": round(clock.now() - T0, 3),
        "hubspot_matches_last_by_position": correct,
        "wall_seconds": round(elapsed, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = simulate(args.changes, args.contacts, args.minutes, seed=args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0 if result["hubspot_matches_last_by_position"] else 1


if __name__ == "__main__":
    sys.exit(main())
