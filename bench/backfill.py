"""Backfill: N contacts are already in an audience when an activation for it is created; how long
until the HubSpot emulator (starter plan: 100 calls per rolling 10 s) holds all of them.

    python -m bench backfill [--contacts 20000] [--json]

Figures: contacts/s and efficiency = contacts/s / the plan's ceiling (100 contacts x 100 calls /
10 s = 1,000 contacts/s), measured (a) from the activation's creation to the last write and (b)
from the first HubSpot write to the last; calls (schema calls among them), 429s, the most calls
the emulator saw in any rolling 10 s. Goal: efficiency >= 0.97 with zero 429s.

A rolling window lets the first 100 calls go at once and quantises the rest: C calls cannot
finish sooner than floor((C - 1) / 100) x 10 s after the first one (205 calls: 20 s, whatever
the client does). ``efficiency_vs_window_bound`` is that bound / the first-to-last time: how close
hubsync came to what the limit allows, independent of where N falls between windows.

``startup`` splits the seconds from creation to the first write: the Supervisor placing the
actor (its name registered), the actor's constructor running (a Ray worker process started),
its first reconcile (recovered), the schema ready in HubSpot, the members loaded, the first write.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from typing import Any

import ray

from bench import harness as h
from events.model import AudienceDefined, AudienceEntered

GOAL_EFFICIENCY = 0.97
WINDOW = 10.0


async def scenario(stack: h.LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    n = args.contacts
    redis = h.redis_of(stack)
    try:
        publisher = h.publisher_of(stack, redis)
        await publisher.publish([AudienceDefined(audience_id="bf", name="Bench Backfill")])
        emails = [f"bf{i:07d}@example.com" for i in range(n)]
        await publisher.publish([AudienceEntered(audience_id="bf", email=e) for e in emails])
        await h.wait_routed(stack, redis)
        h.log(f"{n:,} members projected; creating the activation")
        token = f"pat-bench-{secrets.token_hex(6)}"
        created = await h.create_activation(stack, redis, "backfill", token, audiences=["bf"])
        handle, placed = await _placed(stack, "backfill")
        trace: dict[str, list[Any]] = {"stalls": [], "refusals": []}
        tracer = asyncio.create_task(_trace(stack, handle, trace)) if args.trace else None
        deadline = time.monotonic() + max(120.0, n / 500)
        while True:
            stats = await h.emulator_stats(stack)
            s = await h.status(handle)
            if (
                stats["contacts"] >= n
                and s["pending"] == 0
                and s["backfills"]
                and all(not b.get("loading") for b in s["backfills"].values())
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill incomplete: {stats['contacts']}/{n} in HubSpot")
            await asyncio.sleep(0.25)
        done_at = time.time()
        timeline = await handle.__ray_call__.remote(
            lambda self: dict(getattr(self.core, "timeline", {}))
        )
        if tracer is not None:
            tracer.cancel()
        prop = s["properties"]["a:bf"]
        contacts = h.by_email(await h.emulator_contacts(stack))
        stats = await h.emulator_stats(stack)
    finally:
        await redis.aclose()
    members = set(emails)
    times = sorted(c["written_at"][prop] for e, c in contacts.items() if e in members)
    correct = sum(
        1 for e in emails if contacts.get(e, {}).get("properties", {}).get(prop) == "true"
    )
    first, last = times[0], times[-1]
    accepted = stats["requests"] - stats["rate_limited"]
    write_calls = s["calls"]
    per_window = stats["limits"]["per_window"]
    bound = (accepted - 1) // per_window * WINDOW
    from_creation = n / (last - created)
    first_to_last = n / (last - first) if last > first else float("inf")
    result = {
        "scenario": "backfill",
        "contacts": n,
        "correct_in_hubspot": correct,
        "seconds_from_creation": round(last - created, 2),
        "seconds_first_to_last_write": round(last - first, 2),
        "seconds_creation_to_first_write": round(first - created, 2),
        "seconds_until_bench_saw_done": round(done_at - created, 2),
        "startup": _startup(created, placed, timeline, first),
        "contacts_per_s_from_creation": round(from_creation, 1),
        "contacts_per_s_first_to_last": round(first_to_last, 1),
        "ceiling_contacts_per_s": h.STARTER_CEILING,
        "efficiency_from_creation": round(from_creation / h.STARTER_CEILING, 3),
        "efficiency_first_to_last": round(first_to_last / h.STARTER_CEILING, 3),
        "window_bound_seconds": bound,
        "efficiency_vs_window_bound": round(bound / (last - first), 3)
        if last > first and bound
        else None,
        "calls": stats["requests"],
        "write_calls": write_calls,
        "schema_calls": accepted - write_calls,
        "contacts_per_write_call": round(n / write_calls, 1) if write_calls else None,
        "rate_limited_429": stats["rate_limited"],
        "max_calls_in_any_window": stats["max_calls_in_any_window"],
        "window_limit": stats["limits"]["per_window"],
    }
    result["goal_met"] = (
        result["efficiency_from_creation"] >= GOAL_EFFICIENCY and stats["rate_limited"] == 0
    )
    if args.trace:
        result["trace"] = {
            k: [[round(x - created, 2) for x in row] for row in v] for k, v in trace.items()
        }
    return result


async def _placed(stack: h.LocalStack, activation_id: str) -> tuple[Any, float]:
    """The activation's handle and when its name was registered (the Supervisor placed it)."""
    assert stack.config is not None
    deadline = time.monotonic() + 60.0
    while True:
        try:
            handle = ray.get_actor(f"activation:{activation_id}", namespace=stack.config.namespace)
            return handle, time.time()
        except ValueError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"activation:{activation_id} was not placed") from None
            await asyncio.sleep(0.01)


def _startup(
    created: float, placed: float, timeline: dict[str, float], first_write: float
) -> dict[str, float | None]:
    """Seconds from the creation to each step (None: the actor does not record that step)."""

    def since(at: float | None) -> float | None:
        return None if at is None else round(at - created, 3)

    return {
        "placed": since(placed),
        "actor_started": since(timeline.get("started")),
        "first_reconcile": since(timeline.get("reconcile")),
        "schema_ready": since(timeline.get("schema_ready")),
        "members_loaded": since(timeline.get("members_loaded")),
        "first_write": since(first_write),
    }


async def _trace(stack: h.LocalStack, handle: Any, trace: dict[str, list[Any]]) -> None:
    """Every 0.1 s: time an actor call (a slow answer means the actor's event loop was blocked)
    and read the emulator's 429 count; records [start, seconds] stalls over 0.2 s and [time] of
    each new 429, relative to the activation's creation."""
    refused = 0
    while True:
        started = time.time()
        await h.status(handle)
        took = time.time() - started
        if took > 0.2:
            trace["stalls"].append([started, started + took])
        stats = await h.emulator_stats(stack)
        if stats["rate_limited"] > refused:
            trace["refusals"] += [[time.time()]] * (stats["rate_limited"] - refused)
            refused = stats["rate_limited"]
        await asyncio.sleep(0.1)


def rows(r: dict[str, Any]) -> list[h.Row]:
    return [
        (
            "contacts backfilled (correct in HubSpot)",
            f"{r['correct_in_hubspot']:,}/{r['contacts']:,}",
            "",
        ),
        (
            "creation -> last write",
            f"{r['seconds_from_creation']} s",
            f"first write after {r['seconds_creation_to_first_write']} s",
        ),
        (
            "creation -> first write, by step",
            " / ".join("-" if v is None else f"{v:g}" for v in r["startup"].values()),
            "s to: " + " / ".join(r["startup"]),
        ),
        ("first write -> last write", f"{r['seconds_first_to_last_write']} s", ""),
        (
            "contacts/s from creation",
            r["contacts_per_s_from_creation"],
            f"efficiency {r['efficiency_from_creation']} (goal >= {GOAL_EFFICIENCY})",
        ),
        (
            "contacts/s first -> last write",
            r["contacts_per_s_first_to_last"],
            f"efficiency {r['efficiency_first_to_last']} (the first window's burst inflates it)",
        ),
        (
            "rolling-window bound for these calls",
            f"{r['window_bound_seconds']:g} s",
            f"efficiency vs that bound {r['efficiency_vs_window_bound']} (bound / first -> last)",
        ),
        (
            "calls (write / schema)",
            f"{r['calls']} ({r['write_calls']} / {r['schema_calls']})",
            f"{r['contacts_per_write_call']} contacts per write call",
        ),
        ("429s", r["rate_limited_429"], "goal 0"),
        (
            "max calls in any 10 s window",
            r["max_calls_in_any_window"],
            f"limit {r['window_limit']}",
        ),
        ("goal met", r["goal_met"], ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench backfill", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument(
        "--trace", action="store_true", help="record actor event-loop stalls and 429 times"
    )
    h.add_common(parser)
    args = parser.parse_args(argv)
    result = h.run_scenario(scenario, args, emulator_args=("--plan", "starter"))
    h.emit(f"backfill of {args.contacts:,} contacts, starter plan", rows(result), result, args.json)
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
