"""The Router hands changes over by appending to inboxes, on one Redis and on a Redis Cluster, with
no Ray at all: one entry per live activation per step (field ``c``, the ``encode_changes``
payload), acknowledged only after the appends, never to a deleted activation."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from actors.messages import decode_changes
from actors.router import GROUP, INBOX_FIELD, RouterCore
from events.activations import Activations
from events.model import (
    ActivationCreated,
    ActivationDeleted,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
)
from events.redis_backend import RedisStorage
from events.streams import Keys, Publisher, ensure_partitions

pytestmark = pytest.mark.integration


async def _activation(redis: aioredis.Redis, keys: Keys, activation_id: str) -> None:
    await Activations().execute(
        redis,
        keys,
        ActivationCreated(
            activation_id=activation_id,
            name=activation_id,
            token_sealed="v2:never-opened-here",  # routing reads no token
            token_fingerprint="fp",
            audiences=("vip",),
        ),
    )


async def _inbox(redis: aioredis.Redis, keys: Keys, activation_id: str) -> list[list[tuple]]:
    rows = await redis.xrange(keys.inbox(activation_id))
    return [
        [(c.email, c.key, c.value) for c in decode_changes(fields[INBOX_FIELD])]
        for _, fields in rows
    ]


async def test_a_step_appends_one_entry_per_live_activation_then_acknowledges(
    redis: aioredis.Redis, keys: Keys
) -> None:
    await ensure_partitions(redis, keys, 1)
    publisher = Publisher(redis, keys, 1)

    async def publish(*events: CdpEvent) -> None:
        await publisher.publish(events)

    await publish(AudienceDefined(audience_id="vip", name="VIP"))
    await _activation(redis, keys, "one")
    await _activation(redis, keys, "two")
    router = RouterCore(RedisStorage(redis, keys), 0)
    await router.start()
    await publish(
        AudienceEntered(audience_id="vip", email="ada@example.com"),
        AudienceLeft(audience_id="vip", email="ada@example.com"),
    )
    assert await router.step(block=False) == 2
    expected = [
        [("ada@example.com", "a:vip", "true"), ("ada@example.com", "a:vip", "false")],
    ]
    assert await _inbox(redis, keys, "one") == expected
    assert await _inbox(redis, keys, "two") == expected
    assert (await redis.xpending(keys.changes(0), GROUP))["pending"] == 0

    # A deleted activation gets nothing more, and its inbox goes with it.
    await Activations().execute(redis, keys, ActivationDeleted(activation_id="two"))
    await publish(AudienceEntered(audience_id="vip", email="bob@example.com"))
    assert await router.step(block=False) == 1
    assert await _inbox(redis, keys, "one") == [*expected, [("bob@example.com", "a:vip", "true")]]
    assert not await redis.exists(keys.inbox("two"))
    assert router.stats.by_activation == {"one": 3, "two": 2}


async def test_entries_whose_appends_failed_stay_unacknowledged_and_are_routed_again(
    redis: aioredis.Redis, keys: Keys
) -> None:
    await ensure_partitions(redis, keys, 1)
    await Publisher(redis, keys, 1).publish([AudienceDefined(audience_id="vip", name="VIP")])
    await _activation(redis, keys, "one")
    router = RouterCore(RedisStorage(redis, keys), 0)
    await router.start()
    await Publisher(redis, keys, 1).publish(
        [AudienceEntered(audience_id="vip", email="ada@example.com")]
    )
    await redis.set(keys.inbox("one"), "not a stream")  # the append fails (WRONGTYPE)
    with pytest.raises(Exception, match="WRONGTYPE"):
        await router.step(block=False)
    assert (await redis.xpending(keys.changes(0), GROUP))["pending"] == 1
    await redis.delete(keys.inbox("one"))
    assert await router.step(block=False) == 1  # the same step, again
    assert await _inbox(redis, keys, "one") == [[("ada@example.com", "a:vip", "true")]]
    assert (await redis.xpending(keys.changes(0), GROUP))["pending"] == 0
