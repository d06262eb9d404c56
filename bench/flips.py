"""Flips: contacts that flip in and out of an audience K times within a second or two, with
attribute churn; how many HubSpot writes that costs and whether HubSpot ends right.

    python -m bench flips [--contacts 2000] [--flips 4] [--spread-s 1.5]
                          [--rounds 6] [--gap-ms 300] [--patterns burst,spread,rounds] [--json]

Every contact starts in HubSpot (backfilled: in the audience, with an ``ltv``). Then the patterns
run one after another, each on its own `--contacts` contacts:

- ``burst``: each contact's events back to back (one contact's flips within milliseconds),
  contacts spread evenly over `--spread-s` seconds;
- ``spread``: K rounds, each round one flip of every contact, rounds spread over `--spread-s`
  (a contact's flips ~spread-s/K apart, about the 250 ms linger). Even-numbered contacts flip
  K = `--flips` times (net: unchanged), odd ones K+1 (net: left the audience);
- ``rounds``: `--rounds` R rounds `--gap-ms` G apart, each round published at once and holding one
  flip of every contact; even-numbered contacts flip in all R rounds, odd ones skip the last
  (with R even: even ones net unchanged, odd ones net left the audience).

In every pattern, every third contact's ``ltv`` changes three times, back to its start value for
every sixth (net: unchanged). The HubSpot emulator (bench.counting_emulator) records every write
of every contact. Goals: at most 1.2 writes per net-changed contact, at most 5% of the
net-unchanged contacts written at all, never two writes of one contact in one call, and HubSpot
ends right.
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

PATTERNS = ("burst", "spread", "rounds")
GOAL_WRITES_PER_NET_CHANGED = 1.2
GOAL_UNCHANGED_WRITTEN_SHARE = 0.05


class Plan:
    """One pattern's contacts, their events in publishing order, and what HubSpot must end with."""

    def __init__(self, pattern: str, contacts: int, flips: int, rounds: int = 6) -> None:
        self.pattern = pattern
        self.emails = [f"{pattern}{i:06d}@example.com" for i in range(contacts)]
        self.base_ltv = {e: 1000 + i for i, e in enumerate(self.emails)}
        self.expected: dict[str, dict[str, str]] = {}
        self.net_changed: set[str] = set()
        # per contact, its events by round: one flip per round, ltv churn beside the first three
        # flips (rounds) or after the flips (burst, spread: one event per round)
        per_round: list[list[list[CdpEvent]]] = []
        for i, email in enumerate(self.emails):
            if pattern == "rounds":
                n = rounds if i % 2 == 0 else rounds - 1
            else:
                n = flips if i % 2 == 0 else flips + 1
            steps: list[list[CdpEvent]] = []
            member = True
            for _ in range(n):
                member = not member
                steps.append(
                    [(AudienceEntered if member else AudienceLeft)(audience_id="fl", email=email)]
                )
            ltv = self.base_ltv[email]
            if i % 3 == 0:
                final = ltv if i % 6 == 0 else ltv + 7
                for r, v in enumerate((ltv + 1, ltv + 2, final)):
                    change = AttributeChanged(attribute_id="ltv", email=email, value=v)
                    if pattern == "rounds" and r < len(steps):
                        steps[r].append(change)
                    else:
                        steps.append([change])
                ltv = final
            self.expected[email] = {"a:fl": "true" if member else "false", "t:ltv": str(ltv)}
            if not member or ltv != self.base_ltv[email]:
                self.net_changed.add(email)
            per_round.append(steps)
        depth = max(map(len, per_round))
        # round r holds every contact's r-th step (burst publishes them contact by contact)
        self.rounds: list[list[CdpEvent]] = [
            [e for steps in per_round if r < len(steps) for e in steps[r]] for r in range(depth)
        ]
        if pattern == "burst":
            self.events = [e for steps in per_round for step in steps for e in step]
        else:
            self.events = [e for events in self.rounds for e in events]


async def _baseline_done(stack: h.LocalStack, handle: Any, contacts: int) -> dict[str, Any]:
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


async def scenario(stack: h.LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    plans = [Plan(p, args.contacts, args.flips, args.rounds) for p in args.patterns]
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
            started = time.monotonic()
            if plan.pattern == "rounds":
                h.log(
                    f"rounds: {len(plan.events):,} events in {len(plan.rounds)} rounds "
                    f"{args.gap_ms} ms apart"
                )
                await _publish_rounds(h.publisher_of(stack, redis), plan.rounds, args.gap_ms / 1000)
            else:
                h.log(f"{plan.pattern}: {len(plan.events):,} events over {args.spread_s:g}s")
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
        "rounds": args.rounds,
        "gap_ms": args.gap_ms,
        "patterns": list(args.patterns),
        **results,
    }
    result["goal_met"] = all(
        r["writes_per_net_changed_contact"] <= GOAL_WRITES_PER_NET_CHANGED
        and r["unchanged_written_share"] <= GOAL_UNCHANGED_WRITTEN_SHARE
        and r["max_writes_one_contact_one_call"] <= 1
        and r["final_state_correct"]
        for r in results.values()
    )
    return result


async def _publish_rounds(publisher: Any, rounds: list[list[CdpEvent]], gap: float) -> None:
    """Each round published at once (pipelined chunks), round r starting r x `gap` after the first."""
    start = time.monotonic()
    for r, events in enumerate(rounds):
        delay = start + r * gap - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for i in range(0, len(events), 1000):
            await publisher.publish(events[i : i + 1000])


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
        "unchanged_written_share": round(
            sum(1 for e in unchanged if new_writes[e]) / len(unchanged), 4
        )
        if unchanged
        else 0.0,
        "net_changed_written_exactly_once": sum(
            1 for e in plan.net_changed if len(new_writes[e]) == 1
        ),
        "wrong_values": wrong,
        "final_state_correct": wrong == 0,
        "rate_limited_429": after["rate_limited"] - before["rate_limited"],
    }


def rows(r: dict[str, Any]) -> list[h.Row]:
    out: list[h.Row] = []
    for p in r["patterns"]:
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
                f"{x['net_changed_written_exactly_once']:,}/{x['contacts_net_changed']:,} written "
                f"exactly once; max {x['max_writes_one_contact']} for one contact "
                f"(goal <= {GOAL_WRITES_PER_NET_CHANGED})",
            ),
            (
                f"[{p}] net-unchanged contacts written",
                f"{x['unchanged_contacts_written']:,}/{x['contacts_unchanged']:,}",
                f"{x['unchanged_written_share']:.1%}, {x['writes_to_unchanged_contacts']:,} writes "
                f"(goal <= {GOAL_UNCHANGED_WRITTEN_SHARE:.0%} written)",
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


def _patterns(raw: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in raw.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PATTERNS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"patterns are {', '.join(PATTERNS)}; got {raw!r}")
    return chosen


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
    parser.add_argument(
        "--rounds", type=int, default=6, help="R: rounds of the `rounds` pattern (>= 2)"
    )
    parser.add_argument(
        "--gap-ms", type=int, default=300, help="G: milliseconds between rounds of `rounds`"
    )
    parser.add_argument(
        "--patterns",
        type=_patterns,
        default=PATTERNS,
        help=f"comma-separated, of {', '.join(PATTERNS)} (default: all)",
    )
    h.add_common(parser)
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.gap_ms < 0:
        parser.error("--rounds must be >= 2 and --gap-ms >= 0")
    result = h.run_scenario(
        scenario, args, emulator_args=("--plan", "starter"), counting_emulator=True
    )
    h.emit(
        f"flips: {args.contacts:,} contacts per pattern, K={args.flips} within {args.spread_s:g} s; "
        f"rounds: R={args.rounds}, G={args.gap_ms} ms",
        rows(result),
        result,
        args.json,
    )
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
