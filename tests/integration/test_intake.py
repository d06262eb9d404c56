"""Intake against a real Redis: ids no position can hold, a step that fails half-way, the catalog
changing under a Router, and change streams trimmed to what is not acknowledged yet."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis

from actors.router import GROUP, RouterCore
from events.connection import connect
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceDeleted,
    AudienceEntered,
    CdpEvent,
    encode,
)
from events.projections import Projections
from events.redis_backend import RedisStorage
from events.streams import (
    EVENT_FIELD,
    DeadLetters,
    Keys,
    Publisher,
    StreamConsumer,
    decode_entries,
    partition_of,
    position,
    trim_acknowledged,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


def entered(i: int, audience: str = "a1") -> CdpEvent:
    return AudienceEntered(audience_id=audience, email=f"c{i}@example.com")


async def one_partition(r: aioredis.Redis, keys: Keys, *catalog: CdpEvent) -> Publisher:
    await r.hset(keys.config, "partitions", 1)
    publisher = Publisher(r, keys, 1)
    await publisher.publish(catalog or [AudienceDefined(audience_id="a1", name="A1")])
    return publisher


async def drain(core: RouterCore) -> None:
    while await core.step(block=False):
        pass


async def members(r: aioredis.Redis, keys: Keys, audience: str = "a1") -> set[str]:
    return {m.email async for page in Projections(r, keys).members(audience, 1) for m in page}


# --- ids that do not fit a position ----------------------------------------------------------------


async def _poisoned_stream(r: aioredis.Redis, stream: str) -> str:
    good = encode(entered(0))
    await r.xadd(stream, {EVENT_FIELD: good})
    [(top, _)] = await r.xrevrange(stream, count=1)
    ms = top.decode().split("-")[0]
    bad_id = f"{ms}-2000000"  # explicit, after the top: Redis accepts it, SEQ_BITS cannot hold it
    await r.xadd(stream, {EVENT_FIELD: good}, id=bad_id)
    await r.xadd(stream, {EVENT_FIELD: good}, id=f"{int(ms) + 1}-0")
    return bad_id


async def test_an_id_beyond_seq_bits_comes_back_as_a_problem_from_read(
    r: aioredis.Redis, keys: Keys
) -> None:
    stream = keys.changes(0)
    bad_id = await _poisoned_stream(r, stream)
    consumer = StreamConsumer(r, stream, "g", "c")
    await consumer.ensure_group()
    entries = await consumer.read(block=False)  # raised ValueError from position() before
    assert len(entries) == 3
    good, dead = decode_entries(entries)
    assert len(good) == 2
    [letter] = dead
    assert letter.id == bad_id
    assert "unusable stream id" in letter.reason and "too large" in letter.reason


async def test_an_id_beyond_seq_bits_comes_back_as_a_problem_from_xautoclaim(
    r: aioredis.Redis, keys: Keys
) -> None:
    stream = keys.changes(0)
    bad_id = await _poisoned_stream(r, stream)
    dead = StreamConsumer(r, stream, "g", "dead")
    await dead.ensure_group()
    assert len(await dead.read(block=False)) == 3  # ... and it dies without acking
    heir = StreamConsumer(r, stream, "g", "heir", claim_idle_ms=0)
    heir._backlog_done = True  # no backlog of its own: straight to the claim
    claimed = await heir.read(block=False)  # the XAUTOCLAIM path
    assert [e.id for e in claimed if e.problem] == [bad_id]
    assert len(claimed) == 3


async def test_a_dead_consumers_entries_are_claimed_once_a_tenth_of_the_idle_time_not_every_read(
    r: aioredis.Redis, keys: Keys
) -> None:
    stream = keys.changes(0)
    [entry_id] = await Publisher(r, keys, 1).publish([entered(1)])
    dead = StreamConsumer(r, stream, "g", "dead")
    await dead.ensure_group()
    assert len(await dead.read(block=False)) == 1  # ... and it dies without acking
    now = [0.0]
    heir = StreamConsumer(r, stream, "g", "heir", claim_idle_ms=60_000, clock=lambda: now[0])
    assert await heir.read(block=False) == []  # a claim pass at 0 s: nothing idle that long yet
    # The entry now looks idle for two minutes (XCLAIM to its owner, with IDLE): claimable.
    await r.xclaim(stream, "g", "dead", 0, [entry_id], idle=120_000, justid=True)
    now[0] = 5.9
    assert await heir.read(block=False) == []  # within 6 s of the last pass: not looked at
    now[0] = 6.0
    assert [e.id for e in await heir.read(block=False)] == [entry_id]


async def test_a_router_parks_the_entry_with_the_bad_id_and_routes_the_rest(
    r: aioredis.Redis, keys: Keys
) -> None:
    await one_partition(r, keys)
    stream = keys.changes(0)
    bad_id = await _poisoned_stream(r, stream)
    core = RouterCore(RedisStorage(r, keys), 0, trim_every_s=3600)
    await core.start()
    await drain(core)
    assert await members(r, keys) == {"c0@example.com"}
    [letter] = await DeadLetters(r, keys).list()
    assert (letter.id, letter.email, letter.audience_id) == (bad_id, "c0@example.com", "a1")
    assert (await r.xpending(stream, GROUP))["pending"] == 0


# --- one contact, one partition ------------------------------------------------------------------


async def test_an_entry_on_the_wrong_partition_is_parked_with_the_reason(
    r: aioredis.Redis, keys: Keys
) -> None:
    await r.hset(keys.config, "partitions", 2)
    await Publisher(r, keys, 2).publish([AudienceDefined(audience_id="a1", name="A1")])
    emails = [f"c{i}@example.com" for i in range(20)]
    mine = [e for e in emails if partition_of(e, 2) == 0]
    stray = [e for e in emails if partition_of(e, 2) == 1]
    for email in mine[:2] + stray[:1] + mine[2:4]:  # a producer that hashes differently, once
        event = AudienceEntered(audience_id="a1", email=email)
        await r.xadd(keys.changes(0), {EVENT_FIELD: encode(event)})
    core = RouterCore(RedisStorage(r, keys), 0, trim_every_s=3600)
    await core.start()
    await drain(core)
    assert await members(r, keys) == set(mine[:4])
    [letter] = await DeadLetters(r, keys).list()
    assert letter.email == stray[0]
    assert f"email {stray[0]!r} belongs to partition 1, not 0" in letter.reason


# --- a transient error mid-step: the same entries first, in order -------------------------------


class FailingOnce(Projections):
    """A real projection whose next write fails, as when Redis goes away for a moment."""

    fail = True

    async def apply(self, p: int, changes: Sequence[tuple[int, CdpEvent]], **kw: object) -> int:
        if self.fail:
            self.fail = False
            raise ConnectionError("Redis went away for a moment")
        return await super().apply(p, changes, **kw)  # type: ignore[arg-type]


async def test_a_failed_step_is_redone_first_and_the_projection_loses_nothing(
    r: aioredis.Redis, keys: Keys
) -> None:
    publisher = await one_partition(r, keys)
    first = await publisher.publish([entered(i) for i in range(5)])
    core = RouterCore(
        RedisStorage(r, keys), 0, count=5, trim_every_s=3600, projections=FailingOnce(r, keys)
    )
    await core.start()
    with pytest.raises(ConnectionError):
        await core.step(block=False)
    await publisher.publish([entered(i) for i in range(5, 10)])  # newer entries arrive meanwhile

    assert await core.step(block=False) == 5
    assert core.stats.last_position == position(first[-1])  # the failed batch, not the newer one
    await drain(core)
    assert await members(r, keys) == {f"c{i}@example.com" for i in range(10)}
    assert (await r.xpending(keys.changes(0), GROUP))["pending"] == 0


# --- the catalog changes under a running Router -------------------------------------------------


async def test_the_router_follows_redefinitions_and_deletions_without_a_restart(
    r: aioredis.Redis, keys: Keys
) -> None:
    tier = AttributeDefined(
        attribute_id="tier", name="Tier", value_type="enumeration", options=["gold"]
    )
    publisher = await one_partition(r, keys, AudienceDefined(audience_id="a1", name="A1"), tier)
    core = RouterCore(RedisStorage(r, keys), 0, trim_every_s=3600)
    await core.start()

    def silver(email: str) -> CdpEvent:
        return AttributeChanged(attribute_id="tier", email=email, value="silver")

    await publisher.publish([silver("before@example.com")])
    await drain(core)
    await publisher.publish(
        [
            AttributeDefined(
                attribute_id="tier",
                name="Tier",
                value_type="enumeration",
                options=["gold", "silver"],
            ),
            AudienceDeleted(audience_id="a1"),
        ]
    )
    await publisher.publish([silver("after@example.com"), entered(1)])
    await drain(core)
    await publisher.publish([AudienceDefined(audience_id="a1", name="A1 again"), entered(2)])
    await drain(core)

    values = {
        v.email: v.value async for page in Projections(r, keys).values("tier", 1) for v in page
    }
    assert values == {"after@example.com": "silver"}
    assert await members(r, keys) == {"c2@example.com"}  # c1 came while a1 was deleted
    reasons = sorted(letter.reason for letter in await DeadLetters(r, keys).list())
    assert len(reasons) == 2
    assert "'silver' is not one of its options ['gold']" in reasons[0]
    assert "audience 'a1' was deleted" in reasons[1]


# --- trimming ----------------------------------------------------------------------------------


async def test_routed_changes_are_trimmed_to_what_is_unacknowledged(
    r: aioredis.Redis, keys: Keys
) -> None:
    publisher = await one_partition(r, keys)
    stream = keys.changes(0)
    await publisher.publish([entered(i) for i in range(50)])
    core = RouterCore(RedisStorage(r, keys), 0, trim_every_s=0)
    await core.start()
    await drain(core)
    await core.step(block=False)  # the next step trims what the last one acknowledged
    assert await r.xlen(stream) == 0
    assert core.stats.trimmed == 50
    # entries nobody has read yet stay
    await publisher.publish([entered(i) for i in range(50, 53)])
    assert await trim_acknowledged(r, stream) == 0
    assert await r.xlen(stream) == 3


async def test_with_a_retention_entries_younger_than_it_stay(r: aioredis.Redis, keys: Keys) -> None:
    await one_partition(r, keys)
    stream = keys.changes(0)
    await r.xadd(stream, {EVENT_FIELD: encode(entered(0))}, id="1000-0")  # from 1970: old
    publisher = Publisher(r, keys, 1)
    await publisher.publish([entered(i) for i in range(1, 11)])
    core = RouterCore(RedisStorage(r, keys), 0, trim_every_s=0, change_retention_s=3600)
    await core.start()
    await drain(core)
    await core.step(block=False)
    assert await members(r, keys) == {f"c{i}@example.com" for i in range(11)}
    assert [i for i, _ in await r.xrange(stream, count=1)] != [b"1000-0"]
    assert await r.xlen(stream) == 10  # acknowledged, but younger than an hour


async def test_an_entry_pending_in_another_group_is_never_trimmed(
    r: aioredis.Redis, keys: Keys
) -> None:
    publisher = await one_partition(r, keys)
    stream = keys.changes(0)
    ids = await publisher.publish([entered(i) for i in range(10)])
    audit = StreamConsumer(r, stream, "audit", "auditor", count=2)
    await audit.ensure_group()
    held = await audit.read(block=False)  # two entries pending in "audit"
    core = RouterCore(RedisStorage(r, keys), 0, trim_every_s=0)
    await core.start()
    await drain(core)
    await core.step(block=False)
    assert await r.xlen(stream) == 10  # "audit" still needs the first of them
    await audit.ack([e.id for e in held])
    await core.step(block=False)
    assert [i.decode() for i, _ in await r.xrange(stream)] == ids[2:]  # not delivered to audit yet


# --- dead letters as operators and the console read them ------------------------------------------


async def test_dead_letters_are_bounded_and_old_letters_still_list(
    r: aioredis.Redis, keys: Keys
) -> None:
    old = {b"stream": b"hubsync:changes:0", b"id": b"1-1", b"reason": b"old", b"raw": b"{oops"}
    await r.xadd(keys.dead, old)  # as parked before raw_bytes and the names existed
    dead = DeadLetters(r, keys, maxlen=50)
    await one_partition(r, keys)
    stream = keys.changes(0)
    huge = b'{"type":"audience_entered","audience_id":"a1","email":"x@y.co","v":"' + b"q" * 300_000
    for _ in range(200):
        await r.xadd(stream, {EVENT_FIELD: huge})
    core = RouterCore(RedisStorage(r, keys, dead_letters_max=50), 0, trim_every_s=3600)
    await core.start()
    await drain(core)
    assert await dead.count() <= 150  # MAXLEN ~ trims whole nodes: about 50, never unbounded
    newest = (await dead.list(count=1))[0]
    assert (len(newest.raw), newest.raw_bytes, newest.email) == (4096, len(huge), "x@y.co")
    raw_row = (await r.xrevrange(keys.dead, count=1))[0][1]
    assert {b"stream", b"id", b"reason", b"raw", b"raw_bytes", b"raw_sha256"} <= set(raw_row)
    assert {b"audience_id", b"attribute_id", b"email"} <= set(raw_row)

    other = Keys(keys.namespace + "o")
    await r.xadd(other.dead, old)
    [letter] = await DeadLetters(r, other).list()
    assert (letter.reason, letter.raw, letter.raw_bytes, letter.email) == ("old", b"{oops", 5, "")
