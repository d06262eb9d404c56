"""Fairness: one activation backfills a big audience while another, sharing the same HubSpot
token (so the same RateGovernor and the same 100 calls per 10 s), gets a realtime trickle.

    python -m bench fairness [--contacts 50000] [--rate 50] [--json]     (--contacts 100000: ~100 s)

The trickle (one contact per change, XADD time -> the emulator's ``written_at``) runs for as long
as the backfill does. Figures: the trickle's p50/p95/p99 (goal: p99 < 2 s), the backfill's
duration and contacts/s (efficiency against the starter ceiling of 1,000 contacts/s), calls,
429s and the most calls in any 10 s window.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from typing import Any

from bench import harness as h
from events.model import AudienceDefined, AudienceEntered
from events.streams import Publisher

GOAL_P99 = 2.0


async def _trickle(
    publisher: Publisher, rate: float, stop: asyncio.Event, sent: list[tuple[str, str]]
) -> None:
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        emails = [f"rt{i + k:07d}@example.com" for k in range(per_tick)]
        ids = await publisher.publish(
            [AudienceEntered(audience_id="small", email=e) for e in emails]
        )
        sent += zip(emails, ids, strict=True)
        i += per_tick
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def scenario(stack: h.LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    n = args.contacts
    redis = h.redis_of(stack)
    sent: list[tuple[str, str]] = []
    try:
        publisher = h.publisher_of(stack, redis)
        await publisher.publish(
            [
                AudienceDefined(audience_id="big", name="Bench Big"),
                AudienceDefined(audience_id="small", name="Bench Small"),
            ]
        )
        big_members = [f"bf{i:07d}@example.com" for i in range(n)]
        config = stack.config
        assert config is not None  # set once the stack has started, as it has here
        await Publisher(redis, config.keys, config.partitions, batch=2000).publish(
            [AudienceEntered(audience_id="big", email=e) for e in big_members]
        )
        await h.wait_routed(stack, redis)
        token = f"pat-bench-{secrets.token_hex(6)}"
        await h.create_activation(stack, redis, "small", token, audiences=["small"])
        small = await h.activation_handle(stack, "small")
        await publisher.publish([AudienceEntered(audience_id="small", email="warm@example.com")])
        await h.wait_settled(small, changes_in=1, timeout=60, quiet=0.5)
        before = await h.emulator_stats(stack)
        created = await h.create_activation(stack, redis, "big", token, audiences=["big"])
        big = await h.activation_handle(stack, "big")
        h.log(
            f"backfilling {n:,} contacts on 'big' with a {args.rate:g}/s trickle on 'small' (same token)"
        )
        stop = asyncio.Event()
        trickle = asyncio.create_task(_trickle(h.publisher_of(stack, redis), args.rate, stop, sent))
        deadline = time.monotonic() + max(300.0, n / 200)
        try:
            while True:
                s = await h.status(big)
                b = s["backfills"].get("a:big")
                if (
                    b
                    and not b.get("loading")
                    and b["done"] >= b["total"] == n
                    and s["pending"] == 0
                ):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"backfill incomplete: {s}")
                if trickle.done():
                    trickle.result()
                await asyncio.sleep(0.25)
        finally:
            stop.set()
            await trickle
        s_small = await h.wait_settled(small, changes_in=1 + len(sent), timeout=60, quiet=1.0)
        after = await h.emulator_stats(stack)
        contacts = h.by_email(await h.emulator_contacts(stack))
    finally:
        await redis.aclose()
    small_prop = s_small["properties"]["a:small"]
    big_prop = s["properties"]["a:big"]
    latencies = [
        contacts[e]["written_at"][small_prop] - h.xadd_seconds(i) for e, i in sent if e in contacts
    ]
    big_times = sorted(contacts[e]["written_at"][big_prop] for e in big_members if e in contacts)
    first, last = big_times[0], big_times[-1]
    per_second = [0] * (int(last - first) + 1)
    for t in big_times:
        per_second[int(t - first)] += 1
    rt_times = sorted(contacts[e]["written_at"][small_prop] for e, _ in sent if e in contacts)
    pct = h.percentiles(latencies)
    rate = len(big_times) / (last - created)
    result = {
        "scenario": "fairness",
        "backfill_contacts": n,
        "backfill_in_hubspot": len(big_times),
        "backfill_seconds_from_creation": round(last - created, 2),
        "backfill_seconds_creation_to_first_write": round(first - created, 2),
        "backfill_contacts_per_s": round(rate, 1),
        "backfill_contacts_by_second": per_second,
        "trickle_writes_by_second": _by_second(rt_times, first, len(per_second)),
        "backfill_efficiency": round(rate / h.STARTER_CEILING, 3),
        "trickle_rate": args.rate,
        "trickle_changes": len(sent),
        "trickle_written": len(latencies),
        **{f"trickle_{k}_s": v for k, v in pct.items()},
        "calls": after["requests"] - before["requests"],
        "backfill_write_calls": s["calls"],
        "trickle_write_calls": s_small["calls"] - 1,
        "rate_limited_429": after["rate_limited"],
        "max_calls_in_any_window": after["max_calls_in_any_window"],
    }
    result["goal_met"] = (
        pct["p99"] is not None
        and pct["p99"] < GOAL_P99
        and len(latencies) == len(sent)
        and after["rate_limited"] == 0
    )
    return result


def _by_second(times: list[float], origin: float, seconds: int) -> list[int]:
    out = [0] * seconds
    for t in times:
        if 0 <= t - origin < seconds:
            out[int(t - origin)] += 1
    return out


def rows(r: dict[str, Any]) -> list[h.Row]:
    return [
        (
            "backfill (activation 'big')",
            f"{r['backfill_in_hubspot']:,}/{r['backfill_contacts']:,}",
            f"in {r['backfill_seconds_from_creation']} s from creation",
        ),
        (
            "backfill contacts/s",
            r["backfill_contacts_per_s"],
            f"efficiency {r['backfill_efficiency']} of 1,000/s, sharing the token",
        ),
        (
            "trickle (activation 'small')",
            f"{r['trickle_written']:,}/{r['trickle_changes']:,}",
            f"at {r['trickle_rate']:g}/s, written/sent",
        ),
        ("trickle p50 XADD -> HubSpot", f"{r['trickle_p50_s']} s", ""),
        ("trickle p95", f"{r['trickle_p95_s']} s", ""),
        ("trickle p99", f"{r['trickle_p99_s']} s", f"goal < {GOAL_P99:g} s"),
        ("trickle max", f"{r['trickle_max_s']} s", ""),
        (
            "write calls backfill / trickle",
            f"{r['backfill_write_calls']} / {r['trickle_write_calls']}",
            f"{r['calls']} calls in all",
        ),
        ("429s", r["rate_limited_429"], ""),
        ("max calls in any 10 s window", r["max_calls_in_any_window"], "limit 100"),
        ("goal met", r["goal_met"], ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench fairness", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument(
        "--contacts", type=int, default=50_000, help="backfill size (100000 for the full case)"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="trickle changes per second")
    h.add_common(parser)
    args = parser.parse_args(argv)
    result = h.run_scenario(scenario, args, emulator_args=("--plan", "starter"))
    h.emit(
        f"fairness: {args.contacts:,}-contact backfill + {args.rate:g}/s trickle on one token",
        rows(result),
        result,
        args.json,
    )
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
