"""Load: a sustained stream of changes through the pipeline for a minute (issue 7), HubSpot's
limits raised out of the way: does intake keep up, does memory stay flat, does lag recover?

    python -m bench load [--rate 50000] [--seconds 60] [--contacts 200000] [--live] [--json]

The bench process publishes at ``--rate`` changes a second (pipelined XADDs every 50 ms of JSON
encoded up front, as a producer in another process would; mostly audience flips, some attribute
values, over ``--contacts`` contacts) while it samples, every
second: the changes published, the changes the activation has taken in (its ``changes_in``), the
routers' backlog (entries not yet read by their consumer group), and the RSS of the activation
and each router. After the publisher stops, it measures how long the backlog takes to drain.
By default the activation is paused, so the figure is the pipeline's own (streams -> routers ->
coalesced state); ``--live`` lets it write to the emulator too (limits raised), which on this
2-core machine also spends a core on the emulator.
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
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    encode,
)
from events.streams import EVENT_FIELD, group_backlog, partition_of

TICK = 0.05


def event(i: int, contacts: int) -> AudienceEntered | AudienceLeft | AttributeChanged:
    email = f"ld{(i * 7919) % contacts:07d}@example.com"
    kind = i % 10
    if kind < 4:
        return AudienceEntered(audience_id="ld", email=email)
    if kind < 8:
        return AudienceLeft(audience_id="ld", email=email)
    return AttributeChanged(attribute_id="lv", email=email, value=i % 100_000)


def prepared(count: int, contacts: int, partitions: int, keys: Any) -> list[tuple[str, bytes]]:
    """(stream, JSON) for ``count`` events, encoded once up front, as a CDP producer in another
    process would hand them over: the publisher's CPU then goes to XADD, not to building events."""
    out = []
    for i in range(count):
        e = event(i, contacts)
        out.append((keys.changes(partition_of(e.email, partitions)), encode(e)))
    return out


async def backlog(redis: Any, stack: h.LocalStack) -> int:
    """Entries of the change streams the routers have not read yet (consumer-group lag)."""
    assert stack.config is not None
    keys = stack.config.keys
    return sum(
        [
            await group_backlog(redis, keys.changes(p), "routers")
            for p in range(stack.config.partitions)
        ]
    )


async def scenario(stack: h.LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.config is not None
    redis = h.redis_of(stack)
    publisher = h.publisher_of(stack, redis)
    await publisher.publish(
        [
            AudienceDefined(audience_id="ld", name="Load"),
            AttributeDefined(attribute_id="lv", name="Load Value", value_type="number"),
        ]
    )
    await h.create_activation(
        stack,
        redis,
        "load",
        f"pat-bench-{secrets.token_hex(6)}",
        audiences=["ld"],
        attributes=["lv"],
        plan="addon",
        paused=not args.live,
    )
    handle = await h.activation_handle(stack, "load")
    pids = {"activation": await h.actor_pid(handle)}
    for p in range(stack.config.partitions):
        pids[f"router:{p}"] = await h.actor_pid(
            ray.get_actor(f"router:{p}", namespace=stack.config.namespace)
        )
    await asyncio.sleep(2.0)  # let the routers and the activation settle

    h.log("encoding the events up front ...")
    ring = prepared(
        min(args.rate * 10, 1_000_000), args.contacts, stack.config.partitions, stack.config.keys
    )
    samples: list[dict[str, Any]] = []
    published = 0
    stop = asyncio.Event()

    async def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            s = await h.status(handle)
            samples.append(
                {
                    "t": round(time.monotonic() - t0, 2),
                    "published": published,
                    "taken_in": s["changes_in"],
                    "backlog": await backlog(redis, stack),
                    "rss_mib": {k: round(h.pid_rss(pid) / 2**20, 1) for k, pid in pids.items()},
                }
            )
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    per_tick = max(1, round(args.rate * TICK))
    start = time.monotonic()
    behind = 0.0
    while (now := time.monotonic()) - start < args.seconds:
        due = start + published / args.rate
        if due > now:
            await asyncio.sleep(due - now)
        else:
            behind = max(behind, now - due)
        pipe = redis.pipeline(transaction=False)
        for n in range(published, published + per_tick):
            stream, raw = ring[n % len(ring)]
            pipe.xadd(stream, {EVENT_FIELD: raw})
        await pipe.execute()
        published += per_tick
    publish_seconds = time.monotonic() - start
    stopped_at = time.monotonic()
    peak_backlog = max(s["backlog"] for s in samples) if samples else 0
    while await backlog(redis, stack) > 0:
        if time.monotonic() - stopped_at > 600:
            break
        await asyncio.sleep(0.2)
    drained_after = time.monotonic() - stopped_at
    stop.set()
    await sampler
    status = await h.status(handle)
    await redis.aclose()

    steady = [s for s in samples if 10 <= s["t"] <= args.seconds]
    intake = (
        (steady[-1]["taken_in"] - steady[0]["taken_in"]) / (steady[-1]["t"] - steady[0]["t"])
        if len(steady) >= 2
        else None
    )
    rss_first = steady[0]["rss_mib"] if steady else {}
    rss_last = steady[-1]["rss_mib"] if steady else {}
    return {
        "scenario": "load",
        "target_rate": args.rate,
        "seconds": args.seconds,
        "contacts": args.contacts,
        "live": args.live,
        "published": published,
        "published_rate": round(published / publish_seconds, 1),
        "publisher_max_behind_s": round(behind, 2),
        "intake_rate_steady": round(intake, 1) if intake else None,
        "peak_backlog_entries": peak_backlog,
        "backlog_drained_s_after_publish_stopped": round(drained_after, 2),
        "taken_in": status["changes_in"],
        "coalesced": status["coalesced"],
        "rss_mib_at_10s": rss_first,
        "rss_mib_at_end": rss_last,
        "samples": samples,
        "goal_met": bool(intake and intake >= 0.95 * args.rate and drained_after < 30),
    }


def rows(r: dict[str, Any]) -> list[h.Row]:
    growth = {
        k: round(r["rss_mib_at_end"].get(k, 0) - v, 1) for k, v in r["rss_mib_at_10s"].items()
    }
    return [
        (
            "target / published changes/s",
            f"{r['target_rate']:,} / {r['published_rate']:,.0f}",
            f"{r['seconds']} s, {r['contacts']:,} contacts, publisher at most {r['publisher_max_behind_s']} s behind",
        ),
        (
            "intake changes/s (10 s to the end)",
            r["intake_rate_steady"],
            "streams -> coalesced activation state",
        ),
        ("peak backlog (entries not yet routed)", f"{r['peak_backlog_entries']:,}", ""),
        (
            "backlog drained after the publisher stopped",
            f"{r['backlog_drained_s_after_publish_stopped']} s",
            "lag recovers",
        ),
        ("RSS MiB at 10 s", r["rss_mib_at_10s"], ""),
        ("RSS growth MiB to the end", growth, "flat memory: ~0"),
        (
            "changes taken in / coalesced",
            f"{r['taken_in']:,} / {r['coalesced']:,}",
            "live: written to the emulator"
            if r["live"]
            else "activation paused: HubSpot out of the way",
        ),
        ("goal met (intake >= 95% of target, drained < 30 s)", r["goal_met"], ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench load", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--live", action="store_true", help="let the activation write to the emulator too"
    )
    h.add_common(parser)
    args = parser.parse_args(argv)
    result = h.run_scenario(
        scenario,
        args,
        partitions=args.partitions,
        emulator_args=("--plan", "addon", "--rate", "100000", "--daily", "100000000"),
    )
    h.emit(f"load: {args.rate:,} changes/s for {args.seconds} s", rows(result), result, args.json)
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
