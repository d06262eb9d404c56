"""Snapshots of actor state: msgpack bytes plus the stream positions they cover.

A snapshot is only an optimisation: state = the latest snapshot + the log entries after the
positions it records. Saving replaces the previous snapshot atomically (one HSET).
"""

from __future__ import annotations

import time
from typing import cast

import msgspec
import redis.asyncio as aioredis

from events.streams import Keys

__all__ = ["Snapshot", "SnapshotStore"]


class Snapshot(msgspec.Struct, frozen=True):
    state: bytes
    positions: dict[str, int]  # stream key -> last position the state covers
    saved_at: float


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Snapshot).decode


class SnapshotStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def save(
        self, name: str, state: bytes, positions: dict[str, int], *, saved_at: float | None = None
    ) -> None:
        snap = Snapshot(state, positions, time.time() if saved_at is None else saved_at)
        await self._redis.set(self._keys.snapshot(name), _encode(snap))

    async def load(self, name: str) -> Snapshot | None:
        # GET over RESP2 without decoding (events.connection): the bytes, or None
        raw = cast("bytes | None", await self._redis.get(self._keys.snapshot(name)))
        return None if raw is None else _decode(raw)

    async def delete(self, name: str) -> None:
        await self._redis.delete(self._keys.snapshot(name))
