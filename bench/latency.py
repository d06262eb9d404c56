"""Latency: a steady trickle of changes, well under HubSpot's limits; how long from the CDP's XADD
to the HubSpot emulator applying the write.

    python -m bench latency [--rate 200] [--seconds 30] [--linger-ms 250] [--json]

Every change is for a contact of its own (half audience entries, half attribute values), so
the emulator's per-property ``written_at`` is exactly that change's write; the start is the
time in the change's stream id (Redis's clock at XADD; same machine, same clock).
Goal: p99 < 2 s with the default linger (250 ms).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from typing import Any

from bench import harness as h
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
)

GOAL_P99 = 2.0


def trickle(prefix: str, count: int) -> list[AudienceEntered | AttributeChanged]:
    events: list[AudienceEntered | AttributeChanged] = []
    for i in range(count):
        email = f"{prefix}{i:07d}@example.com"
        if i % 2 == 0:
            events.append(AudienceEntered(audience_id="lt", email=email))
        else:
            events.append(AttributeChanged(attribute_id="score", email=email, value=i))
    return events


async def scenario(stack: h.LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    redis = h.redis_of(stack)
    try:
        publisher = h.publisher_of(stack, redis)
        await publisher.publish(
            [
                AudienceDefined(audience_id="lt", name="Bench Latency"),
                AttributeDefined(attribute_id="score", name="Bench Score", value_type="number"),
            ]
        )
        token = f"pat-bench-{secrets.token_hex(6)}"
        await h.create_activation(
            stack, redis, "latency", token, audiences=["lt"], attributes=["score"]
        )
        handle = await h.activation_handle(stack, "latency")
        await publisher.publish(trickle("warm", 2))  # schema created, connections open
        await h.wait_settled(handle, changes_in=2, timeout=60, quiet=0.5)
        before = await h.emulator_stats(stack)
        events = trickle("lt", int(args.rate * args.seconds))
        h.log(f"publishing {len(events):,} changes at {args.rate:g}/s for {args.seconds:g}s")
        started = time.monotonic()
        ids = await h.publish_paced(publisher, events, args.rate)
        published_in = time.monotonic() - started
        s = await h.wait_settled(handle, changes_in=2 + len(events), timeout=120, quiet=1.0)
        contacts = h.by_email(await h.emulator_contacts(stack))
        after = await h.emulator_stats(stack)
    finally:
        await redis.aclose()
    names = {"a:lt": s["properties"]["a:lt"], "t:score": s["properties"]["t:score"]}
    latencies: list[float] = []
    missing = 0
    for event, stream_id in zip(events, ids, strict=True):
        prop = names["a:lt"] if isinstance(event, AudienceEntered) else names["t:score"]
        written = contacts.get(event.email, {}).get("written_at", {}).get(prop)
        if written is None:
            missing += 1
            continue
        latencies.append(written - h.xadd_seconds(stream_id))
    pct = h.percentiles(latencies)
    calls = after["requests"] - before["requests"]
    result = {
        "scenario": "latency",
        "changes": len(events),
        "rate_target": args.rate,
        "rate_achieved": round(len(events) / published_in, 1),
        "linger_ms": args.linger_ms,
        "written": len(latencies),
        "missing": missing,
        **{f"{k}_s": v for k, v in pct.items()},
        "mean_s": round(sum(latencies) / len(latencies), 3) if latencies else None,
        "calls": calls,
        "contacts_per_call": round(len(latencies) / calls, 1) if calls else None,
        "calls_per_s": round(calls / published_in, 2),
        "rate_limited_429": after["rate_limited"] - before["rate_limited"],
        "max_calls_in_any_window": after["max_calls_in_any_window"],
    }
    result["goal_met"] = pct["p99"] is not None and pct["p99"] < GOAL_P99 and missing == 0
    return result


def rows(r: dict[str, Any]) -> list[h.Row]:
    return [
        (
            "changes (one contact each)",
            r["changes"],
            f"at {r['rate_achieved']}/s (target {r['rate_target']:g}/s)",
        ),
        ("written / missing", f"{r['written']:,} / {r['missing']}", ""),
        ("p50 XADD -> HubSpot", f"{r['p50_s']} s", f"linger {r['linger_ms']} ms"),
        ("p95", f"{r['p95_s']} s", ""),
        ("p99", f"{r['p99_s']} s", f"goal < {GOAL_P99:g} s"),
        ("max", f"{r['max_s']} s", ""),
        (
            "HubSpot calls",
            r["calls"],
            f"{r['calls_per_s']}/s, {r['contacts_per_call']} contacts per call",
        ),
        ("429s", r["rate_limited_429"], ""),
        ("max calls in any 10 s window", r["max_calls_in_any_window"], "limit 100"),
        ("goal met", r["goal_met"], ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench latency", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--rate", type=float, default=200.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--linger-ms", type=int, default=250)
    h.add_common(parser)
    args = parser.parse_args(argv)
    result = h.run_scenario(
        scenario, args, emulator_args=("--plan", "starter"), linger_ms=args.linger_ms
    )
    h.emit(
        f"latency: {args.rate:g} changes/s for {args.seconds:g} s, starter plan",
        rows(result),
        result,
        args.json,
    )
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
