"""The event log's contract, against a real Redis: order, at-least-once, dead letters, projections."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import redis.asyncio as aioredis

from events.model import AttributeChanged, AudienceEntered, AudienceLeft, CdpEvent, encode
from events.projections import Projections
from events.snapshots import SnapshotStore
from events.streams import (
    EVENT_FIELD,
    DeadLetters,
    Keys,
    NotStarted,
    Publisher,
    StreamConsumer,
    decode_entries,
    ensure_partitions,
    partition_of,
)

pytestmark = pytest.mark.integration


def changes(n: int, contacts: int, seed: int = 7) -> list[CdpEvent]:
    rng = random.Random(seed)
    out: list[CdpEvent] = []
    for i in range(n):
        email = f"c{rng.randrange(contacts)}@example.com"
        kind = rng.randrange(3)
        if kind == 0:
            out.append(AudienceEntered(audience_id="a1", email=email))
        elif kind == 1:
            out.append(AudienceLeft(audience_id="a1", email=email))
        else:
            out.append(AttributeChanged(attribute_id="ltv", email=email, value=i))
    return out


async def drain(consumer: StreamConsumer, *, ack: bool = True) -> list:
    seen = []
    while True:
        entries = await consumer.read(block=False)
        if not entries:
            return seen
        seen += entries
        if ack:
            await consumer.ack([e.id for e in entries])


class TestEventLog:
    """The contract every backend of the log passes (here: a real Redis server)."""

    async def test_partitions_are_written_once_and_then_fixed(
        self, redis: aioredis.Redis, keys: Keys
    ) -> None:
        assert await ensure_partitions(redis, keys, default=8) == 8
        assert await ensure_partitions(redis, keys, default=2) == 8
        assert await ensure_partitions(redis, keys) == 8  # read by everyone else

    async def test_only_an_explicit_caller_fixes_the_partition_count(
        self, redis: aioredis.Redis, keys: Keys
    ) -> None:
        """A reader (publisher, CLI, actor) before `hubsync up` fails clearly and writes nothing,
        so the count is the one `hubsync up` was told, not whoever came first's default."""
        with pytest.raises(NotStarted, match="run hubsync up first, which fixes the partition"):
            await ensure_partitions(redis, keys)
        assert await redis.hget(keys.config, "partitions") is None
        assert await ensure_partitions(redis, keys, 8) == 8

    async def test_100k_events_none_lost_none_duplicated_order_kept_per_partition(
        self, redis: aioredis.Redis, keys: Keys
    ) -> None:
        partitions = await ensure_partitions(redis, keys, 4)
        events = changes(100_000, contacts=5_000)
        ids = await Publisher(redis, keys, partitions).publish(events)
        assert len(ids) == len(events)

        read: dict[int, list[bytes]] = {}
        for p in range(partitions):
            consumer = StreamConsumer(redis, keys.changes(p), "routers", "r0")
            await consumer.ensure_group()
            entries = await drain(consumer)
            read[p] = [e.raw for e in entries]
            assert [e.position for e in entries] == sorted({e.position for e in entries})
            assert await drain(consumer) == []  # acked: nothing comes back

        expected: dict[int, list[bytes]] = defaultdict(list)
        for event in events:
            expected[partition_of(event.email, partitions)].append(encode(event))  # type: ignore[attr-defined]
        assert read == dict(expected)
        assert sum(len(v) for v in read.values()) == 100_000

    async def test_unacked_entries_come_back_after_the_consumer_restarts(
        self, redis: aioredis.Redis, keys: Keys
    ) -> None:
        await Publisher(redis, keys, 1).publish(changes(50, contacts=10))
        first = StreamConsumer(redis, keys.changes(0), "g", "c1", count=20)
        await first.ensure_group()
        got = await first.read(block=False)
        assert len(got) == 20  # ... and the consumer dies without acking

        again = StreamConsumer(
            redis, keys.changes(0), "g", "c1", count=100
        )  # same name, after restart
        redelivered = await again.read(block=False)
        assert [e.id for e in redelivered] == [e.id for e in got]
        await again.ack([e.id for e in redelivered])
        rest = await drain(again)
        assert len(rest) == 30

    async def test_a_dead_consumers_entries_are_taken_over(
        self, redis: aioredis.Redis, keys: Keys
    ) -> None:
        await Publisher(redis, keys, 1).publish(changes(30, contacts=10))
        dead = StreamConsumer(redis, keys.changes(0), "g", "dead", count=30)
        await dead.ensure_group()
        taken = await dead.read(block=False)
        assert len(taken) == 30

        heir = StreamConsumer(redis, keys.changes(0), "g", "heir", claim_idle_ms=0)
        claimed = await drain(heir)
        assert sorted(e.id for e in claimed) == sorted(e.id for e in taken)
        pending = await redis.xpending(keys.changes(0), "g")
        assert pending["pending"] == 0

    async def test_bad_entries_are_dead_lettered_with_the_reason_and_the_rest_goes_on(
        self, redis: aioredis.Redis, keys: Keys
    ) -> None:
        stream = keys.changes(0)
        good = encode(AudienceEntered(audience_id="a1", email="ada@example.com"))
        for raw in [
            good,
            b"{oops",
            b'{"type":"audience_entered","audience_id":"a1","email":"nope"}',
            good,
        ]:
            await redis.xadd(stream, {EVENT_FIELD: raw})
        await redis.xadd(stream, {b"other": b"field"})
        consumer = StreamConsumer(redis, stream, "g", "c")
        await consumer.ensure_group()
        entries = await consumer.read(block=False)
        decoded, letters = decode_entries(entries)
        assert len(decoded) == 2
        dead = DeadLetters(redis, keys)
        await dead.park(letters)
        await consumer.ack([e.id for e in entries])

        parked = await dead.list()
        assert await dead.count() == 3
        reasons = sorted(letter.reason for letter in parked)
        assert "entry has no 'event' field" in reasons
        assert any("not a JSON object" in r for r in reasons)
        assert any("invalid email 'nope'" in r for r in reasons)
        assert {letter.stream for letter in parked} == {stream}
        assert b"{oops" in {letter.raw for letter in parked}

    async def test_projection_rebuilt_from_scratch_equals_the_incremental_one(
        self, redis: aioredis.Redis, keys: Keys
    ) -> None:
        await Publisher(redis, keys, 1).publish(changes(3_000, contacts=200))
        incremental = Projections(redis, keys)
        consumer = StreamConsumer(redis, keys.changes(0), "g", "c", count=137)
        await consumer.ensure_group()
        redelivered_once = False
        while entries := await consumer.read(block=False):
            decoded, _ = decode_entries(entries)
            await incremental.apply(0, [(e.position, ev) for e, ev in decoded])
            if (
                not redelivered_once
            ):  # at-least-once: applying the same entries again changes nothing
                await incremental.apply(0, [(e.position, ev) for e, ev in decoded])
                redelivered_once = True
            await consumer.ack([e.id for e in entries])
        live = await incremental.dump(0)

        rebuilt_keys = Keys(namespace=keys.namespace + "r")
        rebuilt = Projections(redis, rebuilt_keys)
        rows = await redis.xrange(keys.changes(0))
        from events.model import decode_cdp_event
        from events.streams import position

        await rebuilt.apply(0, [(position(i), decode_cdp_event(f[EVENT_FIELD])) for i, f in rows])
        assert await rebuilt.dump(0) == live
        # dump says field names are str (emails, or "" for a string key): it decodes Redis's bytes
        assert live and all(isinstance(f, str) for fields in live.values() for f in fields)

        members = [m async for page in incremental.members("a1", 1) for m in page]
        assert len(members) == await incremental.count_members("a1", 1) > 0
        values = [v async for page in incremental.values("ltv", 1) for v in page]
        assert all(isinstance(v.value, int) for v in values)

    async def test_snapshots_keep_state_and_positions(
        self, redis: aioredis.Redis, keys: Keys
    ) -> None:
        store = SnapshotStore(redis, keys)
        assert await store.load("act1") is None
        await store.save("act1", b"\x01\x02", {"inbox": 42}, saved_at=1.0)
        await store.save("act1", b"\x03", {"inbox": 43}, saved_at=2.0)
        snap = await store.load("act1")
        assert snap is not None
        assert (snap.state, snap.positions, snap.saved_at) == (b"\x03", {"inbox": 43}, 2.0)
