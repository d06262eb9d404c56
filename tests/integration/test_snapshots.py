"""Snapshots in pieces against a real Redis (and a Redis Cluster): written piece by piece, made
current at once, the previous pieces deleted, a failed save leaving the current snapshot alone;
and an ActivationActor's state recovered from both formats."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
import redis.asyncio as aioredis

from actors.activation import ActivationCore, State
from events.redis_backend import RedisStorage
from events.snapshots import SnapshotError, SnapshotStore
from events.streams import Keys, ensure_partitions
from scheduler import Coalescer, FlushPolicy, Lane

pytestmark = pytest.mark.integration

P0 = 1_800_000_000_000 << 20


async def _parts(redis: aioredis.Redis, prefix: str) -> list[bytes]:
    return [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]


async def test_pieces_replace_the_previous_snapshot_whole(
    redis: aioredis.Redis, keys: Keys
) -> None:
    store = SnapshotStore(redis, keys)
    prefix = keys.activation_snapshot_parts("a2")
    await store.save("act2", b"v1", {"inbox": 1})
    old = await store.load("act2")
    assert old is not None and old.format == 1 and await store.pieces(old) == [b"v1"]

    await store.save_pieces("act2", [b"h", b"p1", b"p2"], {"inbox": 2}, parts_prefix=prefix)
    first = await store.load("act2")
    assert first is not None and first.format == 2 and first.positions == {"inbox": 2}
    assert await store.pieces(first) == [b"h", b"p1", b"p2"]
    assert await redis.ttl(first.parts) == -1  # complete: kept for as long as it is current

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"x", b"y"):
            yield piece

    await store.save_pieces("act2", pieces(), {"inbox": 3}, parts_prefix=prefix)
    second = await store.load("act2")
    assert second is not None and await store.pieces(second) == [b"x", b"y"]
    assert not await redis.exists(first.parts)  # the previous snapshot's pieces are gone

    def broken() -> Iterator[bytes]:
        yield b"z"
        raise RuntimeError("the encoder failed")

    with pytest.raises(RuntimeError, match="encoder failed"):
        await store.save_pieces("act2", broken(), {"inbox": 4}, parts_prefix=prefix)
    assert await store.pieces(await store.load("act2")) == [b"x", b"y"]  # type: ignore[arg-type]
    partial = [k for k in await _parts(redis, prefix) if k.decode() != second.parts]
    assert len(partial) == 1 and 0 < await redis.ttl(partial[0]) <= 3600  # it expires
    await redis.delete(*partial)

    await redis.delete(second.parts)
    with pytest.raises(SnapshotError, match="0 of its 2 pieces"):
        await store.pieces(second)
    await store.delete("act2")
    assert await store.load("act2") is None and await _parts(redis, prefix) == []


async def test_an_activation_recovers_from_either_format_and_snapshots_in_pieces(
    redis: aioredis.Redis, keys: Keys
) -> None:
    await ensure_partitions(redis, keys, 1)
    coalescer = Coalescer(policy=FlushPolicy())
    coalescer.offer("ada@example.com", "hs_aud", "true", P0 + 1)
    coalescer.offer("bob@example.com", "hs_ltv", "12", P0 + 2, Lane.BACKFILL)
    pending = {e: coalescer.pending_values(e) for e in ("ada@example.com", "bob@example.com")}
    # A snapshot written by the previous version: the Coalescer inside the state (format 1).
    old = State(inbox_id="0-0", coalescer=msgspec.msgpack.encode(coalescer.to_builtins()))
    await SnapshotStore(redis, keys).save("activation:a1", msgspec.msgpack.encode(old), {})

    def no_governor(fingerprint: str) -> None:
        raise AssertionError("recovery calls no governor")

    core = ActivationCore(RedisStorage(redis, keys), "a1", no_governor)  # type: ignore[arg-type]
    await core.recover()
    assert {e: core.coalescer.pending_values(e) for e in pending} == pending

    await core.checkpoint()  # format 2, pieces under the activation's own keys
    snap = await SnapshotStore(redis, keys).load("activation:a1")
    assert snap is not None and snap.format == 2
    assert snap.parts.startswith(keys.activation_snapshot_parts("a1"))
    again = ActivationCore(RedisStorage(redis, keys), "a1", no_governor)  # type: ignore[arg-type]
    await again.recover()
    assert {e: again.coalescer.pending_values(e) for e in pending} == pending
    assert again.coalescer.snapshot() == core.coalescer.snapshot()
