"""Snapshots in pieces against a real Redis (and a Redis Cluster): written piece by piece, made
current at once, the previous pieces deleted, a failed save leaving the current snapshot alone;
and an ActivationActor's state recovered from both formats."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from actors.activation import ActivationCore, State
from actors.messages import Change, encode_changes
from actors.router import INBOX_FIELD
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


FIXTURE = Path(__file__).parents[1] / "unit" / "fixtures" / "snapshot_v2.msgpack"


def _no_governor(fingerprint: str) -> None:
    raise AssertionError("recovery calls no governor")


async def test_an_activation_recovers_a_snapshot_written_before_the_format_was_typed(
    redis: aioredis.Redis, keys: Keys
) -> None:
    """tests/unit/fixtures/snapshot_v2.msgpack: the pieces an ActivationActor wrote at commit
    ba1daa3 (format 2, the Coalescer's header an untyped map), saved as that code saved them."""
    await ensure_partitions(redis, keys, 1)
    fixture = msgspec.msgpack.decode(FIXTURE.read_bytes())
    await SnapshotStore(redis, keys).save_pieces(
        "activation:a1",
        fixture["pieces"],
        {"inbox": 0},
        parts_prefix=keys.activation_snapshot_parts("a1"),
    )
    core = ActivationCore(RedisStorage(redis, keys), "a1", _no_governor)  # type: ignore[arg-type]
    await core.recover()
    assert core.state.inbox_id == "1800000000000-5"
    assert core.state.names == {"a:vip": "hs_aud", "t:ltv": "hs_ltv"}
    assert core.state.backfills["a:vip"].loaded and core.state.counters.changes_in == 14
    for email, values in fixture["expected"]["pending"].items():
        assert core.coalescer.pending_values(email) == {p: tuple(v) for p, v in values.items()}


async def _inbox_entry(redis: aioredis.Redis, keys: Keys) -> str:
    change = Change("ada@example.com", "a:vip", "true", P0 + 5)
    entry = await redis.xadd(keys.inbox("a1"), {INBOX_FIELD: encode_changes([change])})
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def _save_current(redis: aioredis.Redis, keys: Keys) -> None:
    """A snapshot as this code writes it, covering nothing of the inbox yet."""
    core = ActivationCore(RedisStorage(redis, keys), "a1", _no_governor)  # type: ignore[arg-type]
    core.state.names["a:vip"] = "hs_aud"
    core.coalescer.offer("bob@example.com", "hs_aud", "true", P0 + 1)
    await core.checkpoint()


async def _future_format(redis: aioredis.Redis, keys: Keys) -> None:
    await _save_current(redis, keys)
    snap = await SnapshotStore(redis, keys).load("activation:a1")
    assert snap is not None
    future = msgspec.structs.replace(snap, format=3)
    await redis.set(keys.snapshot("activation:a1"), msgspec.msgpack.encode(future))


async def _future_coalescer(redis: aioredis.Redis, keys: Keys) -> None:
    store = SnapshotStore(redis, keys)
    await _save_current(redis, keys)
    snap = await store.load("activation:a1")
    assert snap is not None
    pieces = await store.pieces(snap)
    header = msgspec.msgpack.decode(pieces[1])
    header["version"] = 3
    await store.save_pieces(
        "activation:a1",
        [pieces[0], msgspec.msgpack.encode(header), *pieces[2:]],
        {"inbox": 0},
        parts_prefix=keys.activation_snapshot_parts("a1"),
    )


async def _pieces_gone(redis: aioredis.Redis, keys: Keys) -> None:
    await _save_current(redis, keys)
    snap = await SnapshotStore(redis, keys).load("activation:a1")
    assert snap is not None
    await redis.delete(snap.parts)


@pytest.mark.parametrize(
    "spoil, why",
    [
        (_future_format, "unknown snapshot format 3"),
        (_future_coalescer, "unknown Coalescer snapshot version 3"),
        (_pieces_gone, "0 of its 3 pieces"),
    ],
)
async def test_a_snapshot_that_does_not_load_is_rebuilt_from_the_inbox_never_retried_forever(
    redis: aioredis.Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
    spoil: Callable[[aioredis.Redis, Keys], Awaitable[None]],
    why: str,
) -> None:
    await ensure_partitions(redis, keys, 1)
    await spoil(redis, keys)
    entry = await _inbox_entry(redis, keys)
    core = ActivationCore(RedisStorage(redis, keys), "a1", _no_governor)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="hubsync.activation"):
        await core.recover()  # returns: no retry loop
    assert "activation a1: its snapshot does not load (" in caplog.text and why in caplog.text
    assert "rebuilding its state from the inbox and the projections" in caplog.text
    # Rebuilt: nothing of the snapshot, the whole inbox replayed (the projections are read by
    # the backfills the next reconcile starts, every property's backfill being unknown now).
    assert core.state.names == {} and core.state.backfills == {}
    assert core.state.inbox_id == entry and core.state.counters.changes_in == 1
    assert core.coalescer.pending_values("bob@example.com") == {}
    # and the next checkpoint replaces the snapshot with one this code reads
    await core.checkpoint()
    again = ActivationCore(RedisStorage(redis, keys), "a1", _no_governor)  # type: ignore[arg-type]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hubsync.activation"):
        await again.recover()
    assert "does not load" not in caplog.text and again.state.inbox_id == entry
