"""Ingest: the pipeline's own ceiling, streams -> Routers -> ActivationActor's coalesced state,
with HubSpot out of the way (the activation is paused), against the raw XREADGROUP+XACK rate of
the same Redis in the same run.

    python -m bench ingest [--changes 200000] [--contacts 50000] [--json]

The change streams are filled BEFORE hubsync starts (so the publisher does not compete for the
CPU while the pipeline runs); then hubsync starts and the Routers drain the backlog into the
activation. The rate is read from the activation's ``changes_in`` (polled from the actor every
0.2 s): ``rate_10_90`` over the middle 80% of the volume, ``rate_overall`` from the first change
in to the last. Then the same entries are written to a second set of streams and drained by a
raw consumer loop (redis-py asyncio, one task and connection per partition, XREADGROUP of 2,000
like the Routers + XACK, nothing decoded): ``raw_rate``. Goal: pipeline / raw >= 0.6 (issue 15:
the median of several runs; ``goal_met`` judges one).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import sys
import time
from typing import Any

import ray
import redis.asyncio as aioredis

from bench import harness as h
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
)
from events.streams import Keys, Publisher, read_rows

GOAL_RATIO = 0.6
READ_COUNT = 2000  # what RouterCore reads per XREADGROUP


def workload(changes: int, contacts: int) -> list[CdpEvent]:
    """Audience enters/leaves and attribute values, round robin over the contacts."""
    events: list[CdpEvent] = []
    for i in range(changes):
        c = i % contacts
        email = f"in{c:07d}@example.com"
        turn = (i // contacts) % 3
        if turn == 0:
            events.append(AudienceEntered(audience_id="in", email=email))
        elif turn == 1:
            events.append(AttributeChanged(attribute_id="v", email=email, value=i))
        else:
            events.append(AudienceLeft(audience_id="in", email=email))
    return events


def _prefill(args: argparse.Namespace, published: dict[str, Any]) -> Any:
    def fill(stack: h.LocalStack) -> None:
        async def go() -> None:
            redis = h.redis_of(stack)
            try:
                publisher = h.publisher_of(stack, redis)
                await publisher.publish(
                    [
                        AudienceDefined(audience_id="in", name="Bench Ingest"),
                        AttributeDefined(attribute_id="v", name="Bench Value", value_type="number"),
                    ]
                )
                await h.create_activation(
                    stack,
                    redis,
                    "ingest",
                    f"pat-bench-{secrets.token_hex(6)}",
                    audiences=["in"],
                    attributes=["v"],
                    paused=True,
                )
                events = workload(args.changes, args.contacts)
                started = time.monotonic()
                config = stack.config
                assert config is not None  # set once the stack has started, as it has here
                await Publisher(redis, config.keys, config.partitions, batch=2000).publish(events)
                published["publish_rate"] = len(events) / (time.monotonic() - started)
                published["events"] = events
            finally:
                await redis.aclose()

        asyncio.run(go())
        h.log(
            f"prefilled {args.changes:,} changes at {published['publish_rate']:,.0f}/s; starting hubsync"
        )

    return fill


async def raw_rate(redis_url: str, events: list[CdpEvent], partitions: int) -> tuple[float, int]:
    """Publish the same entries under another namespace, then drain them with XREADGROUP+XACK."""
    keys = Keys("benchraw")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await Publisher(redis, keys, partitions, batch=2000).publish(events)
        for p in range(partitions):
            await redis.xgroup_create(keys.changes(p), "raw", id="0", mkstream=True)
    finally:
        await redis.aclose()

    async def drain(p: int) -> int:
        conn = aioredis.Redis.from_url(redis_url)
        done = 0
        try:
            while True:
                reply = await conn.xreadgroup(
                    "raw", "raw-0", {keys.changes(p): ">"}, count=READ_COUNT
                )
                if not reply:
                    return done
                ids = [i for _, rows in read_rows(reply) for i, _ in rows]
                await conn.xack(keys.changes(p), "raw", *ids)
                done += len(ids)
        finally:
            await conn.aclose()

    started = time.monotonic()
    counts = await asyncio.gather(*(drain(p) for p in range(partitions)))
    seconds = time.monotonic() - started
    return sum(counts) / seconds, sum(counts)


async def scenario(stack: h.LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.config is not None
    published = args.published
    handle = await h.activation_handle(stack, "ingest")
    pids = {"activation": await h.actor_pid(handle)}
    for p in range(stack.config.partitions):
        pids[f"router:{p}"] = await h.actor_pid(
            ray.get_actor(f"router:{p}", namespace=stack.config.namespace)
        )
    assert stack.redis is not None and stack.redis.process is not None
    pids["redis"] = stack.redis.process.pid
    cpu0 = {k: h.cpu_seconds(pid) for k, pid in pids.items()}
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + 600
    while True:
        s = await h.status(handle)
        samples.append((time.monotonic(), s["changes_in"]))
        if s["changes_in"] >= args.changes:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"ingest stalled at {s['changes_in']:,}/{args.changes:,}")
        await asyncio.sleep(0.2)
    cpu = {k: h.cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
    pending = s["pending"]
    coalesced = s["coalesced"]

    def crossing(level: float) -> float:
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if c1 >= level:
                return t0 + (t1 - t0) * ((level - c0) / (c1 - c0) if c1 > c0 else 1.0)
        return samples[-1][0]

    t10, t90 = crossing(0.1 * args.changes), crossing(0.9 * args.changes)
    first = next(t for t, c in samples if c > 0)
    previous = samples[max(0, samples.index(next(x for x in samples if x[1] > 0)) - 1)][0]
    rate_10_90 = 0.8 * args.changes / (t90 - t10)
    rate_overall = args.changes / (samples[-1][0] - previous)
    h.log(f"pipeline: {rate_10_90:,.0f} changes/s (10-90%); measuring raw XREADGROUP+XACK")
    redis_cpu0, own_cpu0 = h.cpu_seconds(pids["redis"]), time.process_time()
    raw, raw_count = await raw_rate(
        stack.config.resolve_redis_url(), published["events"], stack.config.partitions
    )
    raw_cpu = {
        "redis (incl. the XADDs that fill the raw streams)": h.cpu_seconds(pids["redis"])
        - redis_cpu0,
        "raw consumer process": time.process_time() - own_cpu0,
    }
    routers = sum(v for k, v in cpu.items() if k.startswith("router:"))
    result = {
        "scenario": "ingest",
        "changes": args.changes,
        "contacts": args.contacts,
        "partitions": stack.config.partitions,
        "pipeline_rate_10_90": round(rate_10_90, 1),
        "pipeline_rate_overall": round(rate_overall, 1),
        "pipeline_seconds": round(samples[-1][0] - previous, 2),
        "first_change_seen_s_after_ready": round(first - samples[0][0], 2),
        "raw_xreadgroup_xack_rate": round(raw, 1),
        "raw_entries": raw_count,
        "ratio_10_90": round(rate_10_90 / raw, 3),
        "ratio_overall": round(rate_overall / raw, 3),
        "publish_rate": round(published["publish_rate"], 1),
        "pipeline_cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "pipeline_cpu_us_per_change": {
            "routers": round(routers / args.changes * 1e6, 1),
            "activation": round(cpu["activation"] / args.changes * 1e6, 1),
            "redis": round(cpu["redis"] / args.changes * 1e6, 1),
        },
        "raw_cpu_s": {k: round(v, 2) for k, v in raw_cpu.items()},
        "pending_contacts_after": pending,
        "coalesced": coalesced,
    }
    result["goal_met"] = result["ratio_10_90"] >= GOAL_RATIO
    return result


def rows(r: dict[str, Any]) -> list[h.Row]:
    return [
        (
            "changes (contacts)",
            f"{r['changes']:,} ({r['contacts']:,})",
            f"{r['partitions']} partitions, activation paused",
        ),
        (
            "pipeline changes/s, 10%-90%",
            r["pipeline_rate_10_90"],
            "streams -> Routers -> coalesced activation state",
        ),
        (
            "pipeline changes/s, first-last",
            r["pipeline_rate_overall"],
            f"{r['pipeline_seconds']} s",
        ),
        (
            "raw XREADGROUP+XACK entries/s",
            r["raw_xreadgroup_xack_rate"],
            f"same Redis, same run, {r['raw_entries']:,} entries",
        ),
        ("ratio (10%-90%)", r["ratio_10_90"], f"goal >= {GOAL_RATIO}"),
        ("ratio (first-last)", r["ratio_overall"], ""),
        ("publisher XADD rate (prefill)", r["publish_rate"], "for scale"),
        (
            "CPU us per change: routers / activation / redis",
            " / ".join(str(v) for v in r["pipeline_cpu_us_per_change"].values()),
            "during the pipeline run (2 cores in all)",
        ),
        (
            "pending contacts after",
            r["pending_contacts_after"],
            f"{r['coalesced']:,} changes coalesced",
        ),
        ("goal met", r["goal_met"], ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench ingest", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument(
        "--partitions", type=int, default=4, help="change-stream partitions, hence Routers"
    )
    h.add_common(parser)
    args = parser.parse_args(argv)
    args.published = {}
    result = h.run_scenario(
        scenario,
        args,
        emulator_args=("--plan", "addon", "--rate", "100000", "--daily", "100000000"),
        partitions=args.partitions,
        before_service=_prefill(args, args.published),
    )
    h.emit(
        f"ingest: {args.changes:,} changes, HubSpot out of the way", rows(result), result, args.json
    )
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
