"""The Redis backend of the storage ports (events.ports): one Redis or a Redis Cluster.

Most ports are the classes that were written for Redis first (StreamConsumer, DeadLetters,
Projections, SnapshotStore, Publisher); this module adds the few small ones the cores used to
write inline (inboxes, the control and catalog streams, the status keys, the config hash) and
bundles them as ``RedisStorage(redis, keys)``. Every multi-key operation stays in one hash slot
(see events.streams.Keys), so all of it works on a Redis Cluster too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from events.model import CdpEvent
from events.ports import Storage
from events.projections import Projections
from events.snapshots import SnapshotStore
from events.streams import (
    DEAD_LETTERS_MAX,
    EVENT_FIELD,
    INBOX_FIELD,
    DeadLetter,
    DeadLetters,
    Keys,
    Publisher,
    StreamConsumer,
    ensure_partitions,
    group_backlog,
    read_after,
    read_rows,
    trim_acknowledged,
)

__all__ = [
    "RedisChangeLog",
    "RedisConfig",
    "RedisEventStream",
    "RedisInboxes",
    "RedisStatusBoard",
    "RedisStorage",
]

log = logging.getLogger("hubsync.storage")


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class RedisChangeLog:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def publish(self, events: Iterable[CdpEvent], partitions: int) -> list[str]:
        return await Publisher(self._redis, self._keys, partitions).publish(events)

    async def append_raw(self, partition: int, fields: Mapping[bytes, bytes]) -> str:
        entry: dict[FieldT, EncodableT] = dict(fields.items())  # redis-py's names for the types
        return _text(await self._redis.xadd(self._keys.changes(partition), entry))

    def reader(
        self,
        partition: int,
        group: str,
        consumer: str,
        *,
        count: int = 1000,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
    ) -> StreamConsumer:
        return StreamConsumer(
            self._redis,
            self._keys.changes(partition),
            group,
            consumer,
            count=count,
            block_ms=block_ms,
            claim_idle_ms=claim_idle_ms,
        )

    async def trim_acknowledged(self, partition: int, *, retention_s: float = 0.0) -> int:
        stream = self._keys.changes(partition)
        try:
            return await trim_acknowledged(self._redis, stream, retention_s=retention_s)
        except ResponseError as exc:  # e.g. an ACL without XINFO: routing matters more
            log.warning("cannot trim %s: %s", stream, exc)
            return 0

    async def backlog(self, partition: int, group: str) -> int:
        return await group_backlog(self._redis, self._keys.changes(partition), group)

    async def length(self, partition: int) -> int:
        return int(await self._redis.xlen(self._keys.changes(partition)))


class RedisInboxes:
    def __init__(self, redis: aioredis.Redis, keys: Keys, dead: DeadLetters) -> None:
        self._redis = redis
        self._keys = keys
        self._dead = dead

    async def deliver(
        self,
        payloads: Mapping[str, bytes],
        *,
        letters: Sequence[DeadLetter] = (),
        drop: Iterable[str] = (),
    ) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for letter in letters:
            self._dead.park_in(pipe, letter)
        for activation_id, payload in payloads.items():
            pipe.xadd(self._keys.inbox(activation_id), {INBOX_FIELD: payload})
        for activation_id in drop:
            pipe.delete(self._keys.inbox(activation_id))
        if len(pipe):
            await pipe.execute()

    async def read(
        self, activation_id: str, after: str, *, count: int, block_ms: int = 0
    ) -> list[tuple[str, bytes | None]]:
        reply = await self._redis.xread(
            {self._keys.inbox(activation_id): after},
            count=count,
            block=block_ms if block_ms > 0 else None,
        )
        return [
            (_text(raw_id), (fields or {}).get(INBOX_FIELD))
            for _, rows in read_rows(reply)
            for raw_id, fields in rows
        ]

    def read_after(self, activation_id: str, after: str) -> AsyncIterator[tuple[str, bytes | None]]:
        return read_after(self._redis, self._keys.inbox(activation_id), after, field=INBOX_FIELD)

    async def trim(self, activation_id: str, upto: str) -> int:
        # Exactly (not ~): once a checkpoint a few seconds, cheap, and the bound is plain.
        return int(
            await self._redis.xtrim(self._keys.inbox(activation_id), minid=upto, approximate=False)
        )

    async def length(self, activation_id: str) -> int:
        return int(await self._redis.xlen(self._keys.inbox(activation_id)))


class RedisEventStream:
    """The control stream or the catalog stream."""

    def __init__(self, redis: aioredis.Redis, name: str) -> None:
        self._redis = redis
        self.name = name

    async def append(self, raw: bytes) -> str:
        return _text(await self._redis.xadd(self.name, {EVENT_FIELD: raw}))

    def read_after(self, last_id: str) -> AsyncIterator[tuple[str, bytes | None]]:
        return read_after(self._redis, self.name, last_id)

    async def delete(self, ids: Sequence[str]) -> int:
        deleted = 0
        for start in range(0, len(ids), 500):
            deleted += int(await self._redis.xdel(self.name, *ids[start : start + 500]))
        return deleted

    async def wait(self, after: str, timeout_s: float) -> bool:
        reply = await self._redis.xread(
            {self.name: after}, count=1, block=max(1, round(timeout_s * 1000))
        )
        return bool(reply)


class RedisStatusBoard:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def put(self, key: str, value: bytes, *, ttl_s: int) -> None:
        await self._redis.set(key, value, ex=ttl_s)

    async def get(self, key: str) -> bytes | None:
        # GET over RESP2 without decoding (events.connection): the bytes, or None
        return cast("bytes | None", await self._redis.get(key))

    async def delete(self, key: str) -> None:
        await self._redis.delete(key)


class RedisConfig:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def partitions(self, default: int | None = None) -> int:
        return await ensure_partitions(self._redis, self._keys, default)

    async def stored_partitions(self) -> int | None:
        raw = await self._redis.hget(self._keys.config, "partitions")
        return None if raw is None else int(raw)


class RedisStorage:
    """Every port of one namespace on one Redis (or Redis Cluster) connection."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, *, dead_letters_max: int = DEAD_LETTERS_MAX
    ) -> None:
        self.redis = redis
        self._keys = keys
        self._dead = DeadLetters(redis, keys, maxlen=dead_letters_max)
        self._changes = RedisChangeLog(redis, keys)
        self._inboxes = RedisInboxes(redis, keys, self._dead)
        self._projections = Projections(redis, keys)
        self._snapshots = SnapshotStore(redis, keys)
        self._activations = RedisEventStream(redis, keys.activations)
        self._catalog = RedisEventStream(redis, keys.catalog)
        self._status = RedisStatusBoard(redis)
        self._config = RedisConfig(redis, keys)

    @property
    def keys(self) -> Keys:
        return self._keys

    @property
    def changes(self) -> RedisChangeLog:
        return self._changes

    @property
    def inboxes(self) -> RedisInboxes:
        return self._inboxes

    @property
    def projections(self) -> Projections:
        return self._projections

    @property
    def snapshots(self) -> SnapshotStore:
        return self._snapshots

    @property
    def dead(self) -> DeadLetters:
        return self._dead

    @property
    def activations(self) -> RedisEventStream:
        return self._activations

    @property
    def catalog(self) -> RedisEventStream:
        return self._catalog

    @property
    def status(self) -> RedisStatusBoard:
        return self._status

    @property
    def config(self) -> RedisConfig:
        return self._config

    async def forget_activation(self, activation_id: str) -> None:
        k = self._keys
        doomed = [k.snapshot(f"activation:{activation_id}")]
        pattern = _glob_escape(k.inbox(activation_id).removesuffix("inbox")) + "*"
        async for key in self.redis.scan_iter(match=pattern, count=1000):
            doomed.append(key)
        for key in doomed:  # one by one: on a Redis Cluster a multi-key DEL must stay in one slot
            await self.redis.delete(key)


def _glob_escape(text: str) -> str:
    """``text`` as a Redis MATCH pattern that matches exactly itself."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _conforms(storage: RedisStorage) -> Storage:
    """Never called: mypy checks here that RedisStorage implements every port."""
    return storage
