"""Snapshots of actor state: msgpack bytes plus the stream positions they cover.

A snapshot is only an optimisation: state = the latest snapshot + the log entries after the
positions it records. Two formats, both loaded:

- format 1 (`save`): the state is in the snapshot key itself, replaced atomically (one SET);
- format 2 (`save_pieces`): a large state is written in pieces, as they are produced, to a list
  of its own (one RPUSH per piece, so the writer's event loop runs between them), under a key
  unique to this snapshot that expires unless the snapshot completes. Then the snapshot key is
  made to point to it (one SET, atomic: a reader sees the old snapshot or the new one, never a
  mix) and the previous list is deleted. A crash half-way leaves the previous snapshot current
  and the partial list to expire.

Any other format (a newer hubsync's, read by an older one after a rollback) is refused with a
`SnapshotError`, as are pieces gone missing; the owner then rebuilds its state from its log
(the ActivationActor: from its inbox and the projections) instead of retrying forever. What the
state bytes hold is the owner's to version (`actors.activation.State`, then the Coalescer's
`scheduler.coalescer.SnapshotHeader` and pieces).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterable, Iterable
from typing import cast

import msgspec
import redis.asyncio as aioredis

from events.streams import Keys

__all__ = ["Snapshot", "SnapshotError", "SnapshotStore"]

PARTS_TTL = 3600  # seconds a snapshot being written may take before its pieces expire
_READ_PIECES = 16  # pieces per LRANGE when loading


class SnapshotError(RuntimeError):
    """A snapshot points to pieces that are missing or incomplete."""


class Snapshot(msgspec.Struct, frozen=True):
    state: bytes
    positions: dict[str, int]  # stream key -> last position the state covers
    saved_at: float
    format: int = 1
    """1: `state` is the whole state; 2: the state is the `count` pieces in list `parts`."""
    parts: str = ""
    count: int = 0


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Snapshot).decode


def _parts_of(raw: bytes) -> str:
    """The list of pieces a stored snapshot names ("": none). One this code does not read (a
    newer hubsync's) is read loosely, so that replacing it still deletes its pieces."""
    try:
        return _decode(raw).parts
    except msgspec.DecodeError:
        pass
    try:
        loose = msgspec.msgpack.decode(raw)
    except msgspec.DecodeError:
        return ""
    parts = loose.get("parts") if isinstance(loose, dict) else None
    return parts if isinstance(parts, str) else ""


class SnapshotStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def save(
        self, name: str, state: bytes, positions: dict[str, int], *, saved_at: float | None = None
    ) -> None:
        snap = Snapshot(state, positions, time.time() if saved_at is None else saved_at)
        await self._replace(name, snap)

    async def save_pieces(
        self,
        name: str,
        pieces: Iterable[bytes] | AsyncIterable[bytes],
        positions: dict[str, int],
        *,
        parts_prefix: str,
        saved_at: float | None = None,
    ) -> None:
        """Write `pieces` in order as one snapshot (format 2), then make it current. The list
        of pieces is `parts_prefix` + a random id (keep the prefix among the owner's keys, so
        that deleting the owner deletes it)."""
        saved_at = time.time() if saved_at is None else saved_at
        parts = f"{parts_prefix}{secrets.token_hex(8)}"
        count = 0  # on any failure before the end, the pieces written so far expire
        if isinstance(pieces, AsyncIterable):
            async for piece in pieces:
                count = await self._push(parts, piece, count)
        else:
            for piece in pieces:
                count = await self._push(parts, piece, count)
        if count:
            await self._redis.persist(parts)
        await self._replace(name, Snapshot(b"", positions, saved_at, 2, parts, count))

    async def _push(self, parts: str, piece: bytes, count: int) -> int:
        await self._redis.rpush(parts, piece)
        if not count:
            await self._redis.expire(parts, PARTS_TTL)
        return count + 1

    async def _replace(self, name: str, snap: Snapshot) -> None:
        old: bytes | None = await self._redis.set(  # type: ignore[assignment]
            self._keys.snapshot(name), _encode(snap), get=True
        )  # the value it replaced, atomically
        if old is not None:
            parts = _parts_of(old)
            if parts and parts != snap.parts:
                await self._redis.delete(parts)

    async def load(self, name: str) -> Snapshot | None:
        # GET over RESP2 without decoding (events.connection): the bytes, or None
        raw = cast("bytes | None", await self._redis.get(self._keys.snapshot(name)))
        return None if raw is None else _decode(raw)

    async def pieces(self, snap: Snapshot) -> list[bytes]:
        """The state of `snap` as pieces: [state] for format 1, the stored pieces for 2."""
        if snap.format == 1:
            return [snap.state]
        if snap.format != 2:
            raise SnapshotError(f"unknown snapshot format {snap.format}")
        out: list[bytes] = []
        while len(out) < snap.count:
            got: list[bytes] = await self._redis.lrange(  # type: ignore[assignment]
                snap.parts, len(out), len(out) + _READ_PIECES - 1
            )  # bytes: the client does not decode responses
            if not got:
                break
            out.extend(got)
        if len(out) != snap.count:
            raise SnapshotError(
                f"snapshot {snap.parts} has {len(out)} of its {snap.count} pieces (deleted or "
                "evicted): its owner rebuilds its state from its log instead"
            )
        return out

    async def delete(self, name: str) -> None:
        snap = await self.load(name)
        if snap is not None and snap.parts:
            await self._redis.delete(snap.parts)
        await self._redis.delete(self._keys.snapshot(name))
