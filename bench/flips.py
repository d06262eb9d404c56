"""Flips: contacts that flip in and out of an audience K times within a second or two, with
attribute churn; how many HubSpot writes that costs and whether HubSpot ends right.

    python -m bench flips [--contacts 2000] [--flips 4] [--spread-s 1.5] [--json]

Every contact starts in HubSpot (backfilled: in the audience, with an ``ltv``). Then two patterns
run, each on its own `--contacts` contacts, all events within `--spread-s` seconds:

- ``burst``: each contact's events back to back (one contact's flips within milliseconds),
  contacts spread evenly over the period;
- ``spread``: K rounds, each round one flip of every contact, rounds spread over the period (a
  contact's flips ~spread-s/K apart, about the 250 ms linger).

Even-numbered contacts flip K times (net: unchanged), odd ones K+1 (net: left the audience);
every third contact's ``ltv`` changes three times, back to its start value for every sixth (net:
unchanged). The HubSpot emulator (bench.counting_emulator) records every write of every contact.
Goal: at most one write per contact per flush, none for contacts whose net state did not change.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections import Counter
from typing import Any

from bench import harness as h
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
)

PATTERNS = ("burst", "spread")


class Plan:
    """One pattern's contacts, their events in publishing order, and what HubSpot must end with."""

    def __init__(self, pattern: str, contacts: int, flips: int) -> None:
        self.pattern = pattern
        self.emails = [f"{pattern}{i:06d}@example.com" for i in range(contacts)]
        self.base_ltv = {e: 1000 + i for i, e in enumerate(self.emails)}
        per_contact: list[list[CdpEvent]] = []
        self.expected: dict[str, dict[str, str]] = {}
        self.net_changed: set[str] = set()
        for i, email in enumerate(self.emails):
            n = flips if i % 2 == 0 else flips + 1
            events: list[CdpEvent] = []
            member = True
            for _ in range(n):
                member = not member
                events.append(
                    (AudienceEntered if member else AudienceLeft)(audience_id="fl", email=email)
                )
            ltv = self.base_ltv[email]
            if i % 3 == 0:
                final = ltv if i % 6 == 0 else ltv + 7
                for v in (ltv + 1, ltv + 2, final):
                    events.append(AttributeChanged(attribute_id="ltv", email=email, value=v))
                ltv = final
            self.expected[email] = {"a:fl": "true" if member else "false", "t:ltv": str(ltv)}
            if not member or ltv != self.base_ltv[email]:
                self.net_changed.add(email)
            per_contact.append(events)
        if pattern == "burst":
            self.events = [e for events in per_contact for e in events]
        else:  # round r holds every contact's r-th event
            depth = max(map(len, per_contact))
            self.events = [
                events[r] for r in range(depth) for events in per_contact if r < len(events)
            ]


async def _baseline_done(stack: h.BenchStack, handle: Any, contacts: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        stats = await h.emulator_stats(stack)
        s = await h.status(handle)
        b = s["backfills"]
        if (
            stats["contacts"] >= contacts
            and s["pending"] == 0
            and len(b) == 2
            and all(not x.get("loading") and x["done"] >= x["total"] for x in b.values())
        ):
            return s
        if time.monotonic() > deadline:
            raise TimeoutError(f"baseline backfill incomplete: {s}")
        await asyncio.sleep(0.25)


async def scenario(stack: h.BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    plans = [Plan(p, args.contacts, args.flips) for p in PATTERNS]
    redis = h.redis_of(stack)
    results: dict[str, Any] = {}
    try:
        publisher = h.publisher_of(stack, redis)
        await publisher.publish(
            [
                AudienceDefined(audience_id="fl", name="Bench Flips"),
                AttributeDefined(attribute_id="ltv", name="Bench LTV", value_type="number"),
            ]
        )
        everyone = [e for p in plans for e in p.emails]
        base = {e: v for p in plans for e, v in p.base_ltv.items()}
        await publisher.publish(
            [
                ev
                for e in everyone
                for ev in (
                    AudienceEntered(audience_id="fl", email=e),
                    AttributeChanged(attribute_id="ltv", email=e, value=base[e]),
                )
            ]
        )
        await h.wait_routed(stack, redis)
        token = f"pat-bench-{secrets.token_hex(6)}"
        await h.create_activation(
            stack, redis, "flips", token, audiences=["fl"], attributes=["ltv"]
        )
        handle = await h.activation_handle(stack, "flips")
        s = await _baseline_done(stack, handle, len(everyone))
        names = s["properties"]
        h.log(f"baseline: {len(everyone):,} contacts in HubSpot")
        routed = 0
        for plan in plans:
            before = await h.emulator_stats(stack)
            writes_before = {
                e: len(c["writes"]) for e, c in h.by_email(await h.emulator_contacts(stack)).items()
            }
            s0 = await h.status(handle)
            h.log(f"{plan.pattern}: {len(plan.events):,} events over {args.spread_s:g}s")
            started = time.monotonic()
            await h.publish_paced(
                h.publisher_of(stack, redis), plan.events, len(plan.events) / args.spread_s
            )
            published_in = time.monotonic() - started
            routed += len(plan.events)
            s1 = await h.wait_settled(handle, changes_in=routed, timeout=120, quiet=1.5)
            after = await h.emulator_stats(stack)
            contacts = h.by_email(await h.emulator_contacts(stack))
            results[plan.pattern] = _figures(
                plan, names, before, after, s0, s1, writes_before, contacts, published_in
            )
    finally:
        await redis.aclose()
    result: dict[str, Any] = {
        "scenario": "flips",
        "contacts_per_pattern": args.contacts,
        "flips": args.flips,
        "spread_s": args.spread_s,
        **results,
    }
    result["goal_met"] = all(
        r["writes_to_unchanged_contacts"] == 0
        and r["max_writes_one_contact_one_call"] <= 1
        and r["final_state_correct"]
        for r in results.values()
    )
    return result


def _figures(
    plan: Plan,
    names: dict[str, str],
    before: dict[str, Any],
    after: dict[str, Any],
    s0: dict[str, Any],
    s1: dict[str, Any],
    writes_before: dict[str, int],
    contacts: dict[str, dict[str, Any]],
    published_in: float,
) -> dict[str, Any]:
    new_writes: dict[str, list[float]] = {}
    for email in plan.emails:
        times = contacts.get(email, {}).get("writes", [])
        new_writes[email] = times[writes_before.get(email, 0) :]
    written = {e for e, w in new_writes.items() if w}
    total = sum(len(w) for w in new_writes.values())
    same_call = max((max(Counter(w).values()) for w in new_writes.values() if w), default=0)
    wrong = sum(
        1
        for e in plan.emails
        for key, value in plan.expected[e].items()
        if contacts.get(e, {}).get("properties", {}).get(names[key]) != value
    )
    unchanged = [e for e in plan.emails if e not in plan.net_changed]
    return {
        "events": len(plan.events),
        "published_in_s": round(published_in, 2),
        "changes_coalesced": s1["coalesced"] - s0["coalesced"],
        "hubspot_calls": after["requests"] - before["requests"],
        "contact_writes": total,
        "contacts_written": len(written),
        "contacts_net_changed": len(plan.net_changed),
        "writes_per_contact_written": round(total / len(written), 3) if written else 0.0,
        "writes_per_net_changed_contact": round(
            sum(len(new_writes[e]) for e in plan.net_changed) / len(plan.net_changed), 3
        ),
        "max_writes_one_contact": max(map(len, new_writes.values())),
        "max_writes_one_contact_one_call": same_call,
        "contacts_unchanged": len(unchanged),
        "writes_to_unchanged_contacts": sum(len(new_writes[e]) for e in unchanged),
        "unchanged_contacts_written": sum(1 for e in unchanged if new_writes[e]),
        "net_changed_written_exactly_once": sum(
            1 for e in plan.net_changed if len(new_writes[e]) == 1
        ),
        "wrong_values": wrong,
        "final_state_correct": wrong == 0,
        "rate_limited_429": after["rate_limited"] - before["rate_limited"],
    }


def rows(r: dict[str, Any]) -> list[h.Row]:
    out: list[h.Row] = []
    for p in PATTERNS:
        x = r[p]
        out += [
            (f"[{p}] events (published in)", x["events"], f"{x['published_in_s']} s"),
            (
                f"[{p}] HubSpot calls",
                x["hubspot_calls"],
                f"{x['changes_coalesced']:,} changes coalesced away",
            ),
            (
                f"[{p}] contact writes / contacts written",
                f"{x['contact_writes']:,} / {x['contacts_written']:,}",
                f"{x['writes_per_contact_written']} writes per contact written",
            ),
            (
                f"[{p}] net-changed contacts: writes each",
                x["writes_per_net_changed_contact"],
                f"{x['net_changed_written_exactly_once']:,}/{x['contacts_net_changed']:,} written exactly once; max {x['max_writes_one_contact']} for one contact",
            ),
            (
                f"[{p}] net-unchanged contacts written",
                f"{x['unchanged_contacts_written']:,}/{x['contacts_unchanged']:,}",
                f"{x['writes_to_unchanged_contacts']:,} writes (goal 0)",
            ),
            (
                f"[{p}] max writes of one contact in one call",
                x["max_writes_one_contact_one_call"],
                "goal <= 1",
            ),
            (
                f"[{p}] final state correct",
                x["final_state_correct"],
                f"{x['wrong_values']} wrong values; 429s {x['rate_limited_429']}",
            ),
        ]
    out.append(("goal met", r["goal_met"], ""))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench flips", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--contacts", type=int, default=2000, help="contacts per pattern")
    parser.add_argument(
        "--flips", type=int, default=4, help="K: flips of an even contact (odd ones: K+1)"
    )
    parser.add_argument(
        "--spread-s", type=float, default=1.5, help="seconds the events of one pattern span"
    )
    h.add_common(parser)
    args = parser.parse_args(argv)
    result = h.run_scenario(
        scenario, args, emulator_args=("--plan", "starter"), counting_emulator=True
    )
    h.emit(
        f"flips: {args.contacts:,} contacts per pattern, K={args.flips}, within {args.spread_s:g} s",
        rows(result),
        result,
        args.json,
    )
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
