"""Projections kept from the change streams: who is in each audience, each contact's attribute values.

They feed backfills: adding an audience to an activation sends its current members. Each partition's
projection records the stream position it reflects, and is written with it in one transaction, so a
redelivered entry is recognised as already applied and a rebuild from the stream is exact.

Layout per partition p (all keys share the hash tag ``{p<p>}``)::

    hubsync:proj:{p<p>}:members:<audience_id>   hash  email -> position of the entering event
    hubsync:proj:{p<p>}:values:<attribute_id>   hash  email -> msgpack [position, value]
    hubsync:proj:{p<p>}:position                string the last position applied
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import cast

import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from events.model import AttributeChanged, AudienceEntered, AudienceLeft, CdpEvent, Value
from events.streams import Keys

__all__ = ["Member", "Projections", "ValueRow"]

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(tuple[int, Value]).decode


def _hash(reply: object) -> dict[bytes, bytes]:
    """An HGETALL reply or an HSCAN page as Redis gives it over RESP2 without decoding (how
    events.connection connects): field -> value, both bytes."""
    return cast("dict[bytes, bytes]", reply)


class Member(msgspec.Struct, frozen=True):
    email: str
    position: int


class ValueRow(msgspec.Struct, frozen=True):
    email: str
    position: int
    value: Value


class Projections:
    """Audience members and attribute values per partition, with the position they reflect."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def position(self, p: int) -> int:
        """The last change-stream position applied to partition p (0: none)."""
        raw = await self._redis.get(self._keys.projection_position(p))
        return int(raw) if raw else 0

    async def apply(
        self, p: int, changes: Sequence[tuple[int, CdpEvent]], *, after: int | None = None
    ) -> int:
        """Apply (position, event) pairs of partition p in position order; returns the new position.

        Pairs at or below the recorded position are skipped (already applied). ``after`` is the
        caller's cached position, sparing a round trip; it must be the value ``position(p)`` gave.
        """
        applied = await self.position(p) if after is None else after
        fresh = [(pos, e) for pos, e in changes if pos > applied]
        if not fresh:
            return applied
        # Net effect per key and email first (the last by position wins), then one HSET and one
        # HDEL per key: a batch of thousands of changes is a handful of commands.
        k = self._keys
        sets: dict[str, dict[FieldT, EncodableT]] = {}  # redis-py's types: hset takes them as is
        dels: dict[str, set[str]] = {}

        def put(key: str, email: str, value: bytes | int) -> None:
            sets.setdefault(key, {})[email] = value
            if key in dels:
                dels[key].discard(email)

        def drop(key: str, email: str) -> None:
            dels.setdefault(key, set()).add(email)
            if key in sets:
                sets[key].pop(email, None)

        for pos, event in fresh:
            match event:
                case AudienceEntered(audience_id=aid, email=email):
                    put(k.members(p, aid), email, pos)
                case AudienceLeft(audience_id=aid, email=email):
                    drop(k.members(p, aid), email)
                case AttributeChanged(attribute_id=attr, email=email, value=None):
                    drop(k.values(p, attr), email)
                case AttributeChanged(attribute_id=attr, email=email, value=value):
                    put(k.values(p, attr), email, _pack((pos, value)))
        pipe = self._redis.pipeline(transaction=True)
        for key, mapping in sets.items():
            if mapping:
                pipe.hset(key, mapping=mapping)
        for key, emails in dels.items():
            if emails:
                pipe.hdel(key, *emails)
        last = fresh[-1][0]
        pipe.set(k.projection_position(p), last)
        await pipe.execute()
        return last

    async def drop_audience(self, audience_id: str, partitions: int) -> None:
        await self._redis.delete(*(self._keys.members(p, audience_id) for p in range(partitions)))

    async def drop_attribute(self, attribute_id: str, partitions: int) -> None:
        await self._redis.delete(*(self._keys.values(p, attribute_id) for p in range(partitions)))

    async def count_members(self, audience_id: str, partitions: int) -> int:
        pipe = self._redis.pipeline(transaction=False)
        for p in range(partitions):
            pipe.hlen(self._keys.members(p, audience_id))
        return sum(await pipe.execute())

    async def count_values(self, attribute_id: str, partitions: int) -> int:
        pipe = self._redis.pipeline(transaction=False)
        for p in range(partitions):
            pipe.hlen(self._keys.values(p, attribute_id))
        return sum(await pipe.execute())

    async def members(
        self, audience_id: str, partitions: int, *, page: int = 1000
    ) -> AsyncIterator[list[Member]]:
        """The audience's current members, a page at a time (HSCAN: may repeat, never misses)."""
        for p in range(partitions):
            key = self._keys.members(p, audience_id)
            cursor = 0
            while True:
                cursor, reply = await self._redis.hscan(key, cursor, count=page)
                if rows := _hash(reply):
                    yield [Member(e.decode(), int(v)) for e, v in rows.items()]
                if cursor == 0:
                    break

    async def values(
        self, attribute_id: str, partitions: int, *, page: int = 1000
    ) -> AsyncIterator[list[ValueRow]]:
        """The attribute's current values, a page at a time."""
        for p in range(partitions):
            key = self._keys.values(p, attribute_id)
            cursor = 0
            while True:
                cursor, reply = await self._redis.hscan(key, cursor, count=page)
                if rows := _hash(reply):
                    yield [ValueRow(e.decode(), *_unpack(v)) for e, v in rows.items()]
                if cursor == 0:
                    break

    async def dump(self, p: int) -> dict[str, dict[str, bytes | None]]:
        """Everything partition p holds, for comparing two projections (tests, verification):
        per key, its hash's fields, or its string value under ""."""
        out: dict[str, dict[str, bytes | None]] = {}
        prefix = self._keys.members(p, "")[: -len("members:")]
        async for key in self._redis.scan_iter(
            match=prefix.replace("{", "\\{").replace("}", "\\}") + "*"
        ):
            name = key.decode()[len(prefix) :]
            kind = await self._redis.type(key)
            if kind == b"hash":
                out[name] = {
                    f.decode(): v for f, v in _hash(await self._redis.hgetall(key)).items()
                }
            else:  # None if the key went since SCAN saw it
                out[name] = {"": cast("bytes | None", await self._redis.get(key))}
        return out
