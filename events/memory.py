"""The in-memory backend of the storage ports (events.ports): one process, no threads, no I/O.

It keeps Redis's semantics where the cores rely on them, so a core unit-tested here behaves the
same on Redis (the contract class in tests/integration/test_event_log.py runs on both):

- stream ids ``"<ms>-<seq>"`` from the injected clock, strictly increasing per stream even when
  the clock stands still or steps back;
- consumer groups: each entry delivered once to one consumer and pending there until acked; a
  consumer reading with id "0" gets its own pending entries again (after a restart, with the
  same consumer name); entries idle longer than a claim time move to the consumer that claims
  them; pending entries whose entry was deleted are forgotten;
- trims by MINID (exact), the dead-letter stream bounded in count, values with a time to live
  measured by the injected clock.

Everything lives in one ``Keyspace``: named values, as Redis has them, under the same key names
(``events.streams.Keys``), so deleting an activation's keys by prefix works the same way.
Blocking reads wait (on the event loop, up to their timeout) for the next append.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from events.model import (
    AttributeChanged,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
    Value,
    encode,
)
from events.ports import Storage
from events.projections import Member, ValueRow
from events.snapshots import PARTS_TTL, Snapshot, SnapshotError
from events.streams import (
    DEAD_LETTERS_MAX,
    EVENT_FIELD,
    INBOX_FIELD,
    DeadLetter,
    Entry,
    GroupState,
    Keys,
    NotStarted,
    _entry,
    _letter,
    partition_of,
    trim_floor,
)

__all__ = [
    "Keyspace",
    "MemoryChangeLog",
    "MemoryConfig",
    "MemoryDeadLetters",
    "MemoryEventStream",
    "MemoryGroupReader",
    "MemoryInboxes",
    "MemoryProjections",
    "MemorySnapshots",
    "MemoryStatusBoard",
    "MemoryStorage",
]

Fields = dict[bytes, bytes]
Clock = Callable[[], float]  # epoch seconds, like scheduler.Clock.now
T = TypeVar("T")

_pack = msgspec.msgpack.Encoder().encode
_unpack_value = msgspec.msgpack.Decoder(tuple[int, Value]).decode
_encode_snapshot = msgspec.msgpack.Encoder().encode
_decode_snapshot = msgspec.msgpack.Decoder(Snapshot).decode


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


# --- the keyspace and its streams ---------------------------------------------------------------


@dataclass
class _Pending:
    consumer: str
    delivered_ms: int


@dataclass
class _Group:
    last_delivered: str = "0-0"
    pending: dict[str, _Pending] = field(default_factory=dict)  # id -> who holds it, since when


@dataclass
class _Stream:
    entries: dict[str, Fields] = field(default_factory=dict)  # id -> fields, in id order
    last: tuple[int, int] = (0, 0)
    groups: dict[str, _Group] = field(default_factory=dict)

    def add(self, fields: Mapping[bytes, bytes], now_ms: int) -> str:
        ms, seq = self.last
        if now_ms > ms:
            ms, seq = now_ms, 0
        else:
            seq += 1
        if (ms, seq) == (0, 0):
            seq = 1  # 0-0 is not a valid id, as in Redis
        self.last = (ms, seq)
        entry_id = f"{ms}-{seq}"
        self.entries[entry_id] = dict(fields)
        return entry_id

    def after(self, last_id: str, count: int | None = None) -> list[tuple[str, Fields]]:
        floor = _id_key(last_id)
        out = []
        for entry_id, fields in self.entries.items():
            if _id_key(entry_id) > floor:
                out.append((entry_id, fields))
                if count is not None and len(out) >= count:
                    break
        return out

    def trim_before(self, minid: str) -> int:
        floor = _id_key(minid)
        gone = [i for i in self.entries if _id_key(i) < floor]
        for entry_id in gone:
            del self.entries[entry_id]
        return len(gone)

    def trim_to(self, maxlen: int) -> None:
        for entry_id in list(self.entries)[: max(0, len(self.entries) - maxlen)]:
            del self.entries[entry_id]


class Keyspace:
    """Named values with optional expiry by the injected clock, like a Redis database."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._data: dict[str, object] = {}
        self._expires: dict[str, float] = {}
        self._appended = asyncio.Event()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _live(self, key: str) -> bool:
        until = self._expires.get(key)
        if until is not None and self.clock() >= until:
            self.delete(key)
        return key in self._data

    def get(self, key: str, kind: type[T]) -> T | None:
        if not self._live(key):
            return None
        value = self._data[key]
        if not isinstance(value, kind):
            raise TypeError(
                f"WRONGTYPE: {key} holds a {type(value).__name__}, not a {kind.__name__}"
            )
        return value

    def make(self, key: str, kind: type[T]) -> T:
        value = self.get(key, kind)
        if value is None:
            value = kind()
            self._data[key] = value
        return value

    def put(self, key: str, value: object, *, ttl_s: float | None = None) -> None:
        self._data[key] = value
        if ttl_s is None:
            self._expires.pop(key, None)
        else:
            self._expires[key] = self.clock() + ttl_s

    def expire(self, key: str, ttl_s: float | None) -> None:
        if key in self._data:
            if ttl_s is None:
                self._expires.pop(key, None)
            else:
                self._expires[key] = self.clock() + ttl_s

    def delete(self, key: str) -> bool:
        self._expires.pop(key, None)
        return self._data.pop(key, None) is not None

    def names(self, prefix: str = "") -> list[str]:
        """Live key names starting with ``prefix``, sorted."""
        return sorted(k for k in list(self._data) if k.startswith(prefix) and self._live(k))

    # streams

    def append(self, key: str, fields: Mapping[bytes, bytes]) -> str:
        entry_id = self.make(key, _Stream).add(fields, self.now_ms())
        self._appended.set()
        self._appended = asyncio.Event()
        return entry_id

    async def wait_append(self, timeout_s: float) -> None:
        """Wait for the next append to any stream, up to ``timeout_s``."""
        if timeout_s <= 0:
            return
        try:
            await asyncio.wait_for(self._appended.wait(), timeout_s)
        except TimeoutError:
            pass


# --- the ports --------------------------------------------------------------------------------


class MemoryGroupReader:
    """``events.streams.StreamConsumer``'s semantics on a memory stream."""

    def __init__(
        self,
        space: Keyspace,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 1000,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._space = space
        self._count = count
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._backlog_done = False
        self._claim_cursor = "0-0"

    async def ensure_group(self, start: str = "0") -> None:
        stream = self._space.make(self.stream, _Stream)
        if self.group not in stream.groups:
            last = "0-0" if start == "0" else (f"{stream.last[0]}-{stream.last[1]}")
            stream.groups[self.group] = _Group(last_delivered=last)

    def _group(self) -> tuple[_Stream, _Group] | None:
        stream = self._space.get(self.stream, _Stream)
        if stream is None or self.group not in stream.groups:
            return None
        return stream, stream.groups[self.group]

    async def read(self, *, block: bool = True) -> list[Entry]:
        if not self._backlog_done:
            own = await self._own()
            if own:
                return own
            self._backlog_done = True
        claimed = self._claim()
        if claimed:
            return claimed
        got = await self._new()
        if not got and block:
            await self._space.wait_append(self._block_ms / 1000)
            got = await self._new()
        return got

    async def _own(self) -> list[Entry]:
        found = self._group()
        if found is None:
            await self.ensure_group()  # the stream was deleted under us: start again
            return []
        stream, group = found
        now = self._space.now_ms()
        mine = sorted(
            (i for i, p in group.pending.items() if p.consumer == self.consumer), key=_id_key
        )[: self._count]
        out = []
        for entry_id in mine:
            fields = stream.entries.get(entry_id)
            if fields is None:  # deleted under us: nothing to do but forget it
                del group.pending[entry_id]
                continue
            group.pending[entry_id].delivered_ms = now
            out.append(_entry(self.stream, entry_id, fields))
        return out

    async def _new(self) -> list[Entry]:
        found = self._group()
        if found is None:
            await self.ensure_group()
            return []
        stream, group = found
        now = self._space.now_ms()
        rows = stream.after(group.last_delivered, self._count)
        for entry_id, _ in rows:
            group.pending[entry_id] = _Pending(self.consumer, now)
        if rows:
            group.last_delivered = rows[-1][0]
        return [_entry(self.stream, i, f) for i, f in rows]

    def _claim(self) -> list[Entry]:
        found = self._group()
        if found is None:
            return []
        stream, group = found
        now = self._space.now_ms()
        start = _id_key(self._claim_cursor)
        candidates = sorted((i for i in group.pending if _id_key(i) >= start), key=_id_key)
        out: list[Entry] = []
        self._claim_cursor = "0-0"
        for n, entry_id in enumerate(candidates):
            if len(out) >= self._count:
                self._claim_cursor = candidates[n]
                break
            pending = group.pending[entry_id]
            if now - pending.delivered_ms < self._claim_idle_ms:
                continue
            fields = stream.entries.get(entry_id)
            if fields is None:
                del group.pending[entry_id]
                continue
            group.pending[entry_id] = _Pending(self.consumer, now)
            out.append(_entry(self.stream, entry_id, fields))
        return out

    def reread_pending(self) -> None:
        self._backlog_done = False

    async def ack(self, ids: Sequence[str]) -> int:
        found = self._group()
        if found is None or not ids:
            return 0
        _, group = found
        return sum(group.pending.pop(i, None) is not None for i in ids)


class MemoryChangeLog:
    def __init__(self, space: Keyspace, keys: Keys) -> None:
        self._space = space
        self._keys = keys

    async def publish(self, events: Iterable[CdpEvent], partitions: int) -> list[str]:
        ids = []
        for event in events:
            email = getattr(event, "email", None)
            key = (
                self._keys.catalog
                if email is None
                else self._keys.changes(partition_of(email, partitions))
            )
            ids.append(self._space.append(key, {EVENT_FIELD: encode(event)}))
        return ids

    async def append_raw(self, partition: int, fields: Mapping[bytes, bytes]) -> str:
        return self._space.append(self._keys.changes(partition), fields)

    def reader(
        self,
        partition: int,
        group: str,
        consumer: str,
        *,
        count: int = 1000,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
    ) -> MemoryGroupReader:
        return MemoryGroupReader(
            self._space,
            self._keys.changes(partition),
            group,
            consumer,
            count=count,
            block_ms=block_ms,
            claim_idle_ms=claim_idle_ms,
        )

    async def trim_acknowledged(self, partition: int, *, retention_s: float = 0.0) -> int:
        stream = self._space.get(self._keys.changes(partition), _Stream)
        if stream is None:
            return 0
        groups = [
            GroupState(g.last_delivered, min(g.pending, key=_id_key) if g.pending else None)
            for g in stream.groups.values()
        ]
        floor = trim_floor(
            groups, now_ms=self._space.now_ms(), retention_ms=int(retention_s * 1000)
        )
        return 0 if floor is None else stream.trim_before(floor)

    async def backlog(self, partition: int, group: str) -> int:
        stream = self._space.get(self._keys.changes(partition), _Stream)
        if stream is None or group not in stream.groups:
            return 0
        g = stream.groups[group]
        return len(g.pending) + len(stream.after(g.last_delivered))

    async def length(self, partition: int) -> int:
        stream = self._space.get(self._keys.changes(partition), _Stream)
        return 0 if stream is None else len(stream.entries)


class MemoryDeadLetters:
    """Parked as ``events.streams.DeadLetters`` parks them; bounded to exactly ``maxlen``."""

    def __init__(self, space: Keyspace, keys: Keys, *, maxlen: int = DEAD_LETTERS_MAX) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._space = space
        self._keys = keys
        self._maxlen = maxlen

    def park_now(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            letter = letter.bounded()
            self._space.append(
                self._keys.dead,
                {
                    b"stream": letter.stream.encode(),
                    b"id": letter.id.encode(),
                    b"reason": letter.reason.encode(),
                    b"raw": letter.raw,
                    b"raw_bytes": str(letter.raw_bytes).encode(),
                    b"raw_sha256": letter.raw_sha256.encode(),
                    b"audience_id": letter.audience_id.encode(),
                    b"attribute_id": letter.attribute_id.encode(),
                    b"email": letter.email.encode(),
                },
            )
        stream = self._space.get(self._keys.dead, _Stream)
        if stream is not None:
            stream.trim_to(self._maxlen)

    async def park(self, letters: Sequence[DeadLetter]) -> None:
        self.park_now(letters)

    async def list(self, count: int = 100) -> list[DeadLetter]:
        stream = self._space.get(self._keys.dead, _Stream)
        if stream is None:
            return []
        newest = list(stream.entries.items())[::-1][:count]
        return [_letter(i, f) for i, f in newest]

    async def count(self) -> int:
        stream = self._space.get(self._keys.dead, _Stream)
        return 0 if stream is None else len(stream.entries)


class MemoryInboxes:
    def __init__(self, space: Keyspace, keys: Keys, dead: MemoryDeadLetters) -> None:
        self._space = space
        self._keys = keys
        self._dead = dead

    async def deliver(
        self,
        payloads: Mapping[str, bytes],
        *,
        letters: Sequence[DeadLetter] = (),
        drop: Iterable[str] = (),
    ) -> None:
        for activation_id in payloads:  # a key of another type fails before any write
            self._space.get(self._keys.inbox(activation_id), _Stream)
        self._dead.park_now(letters)
        for activation_id, payload in payloads.items():
            self._space.append(self._keys.inbox(activation_id), {INBOX_FIELD: payload})
        for activation_id in drop:
            self._space.delete(self._keys.inbox(activation_id))

    def _rows(self, activation_id: str, after: str, count: int) -> list[tuple[str, bytes | None]]:
        stream = self._space.get(self._keys.inbox(activation_id), _Stream)
        if stream is None:
            return []
        return [(i, f.get(INBOX_FIELD)) for i, f in stream.after(after, count)]

    async def read(
        self, activation_id: str, after: str, *, count: int, block_ms: int = 0
    ) -> list[tuple[str, bytes | None]]:
        rows = self._rows(activation_id, after, count)
        if not rows and block_ms > 0:
            await self._space.wait_append(block_ms / 1000)
            rows = self._rows(activation_id, after, count)
        return rows

    async def read_after(
        self, activation_id: str, after: str
    ) -> AsyncIterator[tuple[str, bytes | None]]:
        while rows := self._rows(activation_id, after, 1000):
            for entry_id, payload in rows:
                after = entry_id
                yield entry_id, payload

    async def trim(self, activation_id: str, upto: str) -> int:
        stream = self._space.get(self._keys.inbox(activation_id), _Stream)
        return 0 if stream is None else stream.trim_before(upto)

    async def length(self, activation_id: str) -> int:
        stream = self._space.get(self._keys.inbox(activation_id), _Stream)
        return 0 if stream is None else len(stream.entries)


class _Hash(dict[str, bytes]):
    """A hash: field -> value."""


class _Text(bytes):
    """A string value."""


class MemoryProjections:
    """``events.projections.Projections`` on memory hashes, under the same keys and encodings."""

    def __init__(self, space: Keyspace, keys: Keys) -> None:
        self._space = space
        self._keys = keys

    async def position(self, p: int) -> int:
        raw = self._space.get(self._keys.projection_position(p), _Text)
        return int(raw) if raw else 0

    async def apply(
        self, p: int, changes: Sequence[tuple[int, CdpEvent]], *, after: int | None = None
    ) -> int:
        applied = await self.position(p) if after is None else after
        fresh = [(pos, e) for pos, e in changes if pos > applied]
        if not fresh:
            return applied
        k = self._keys
        for pos, event in fresh:
            match event:
                case AudienceEntered(audience_id=aid, email=email):
                    self._space.make(k.members(p, aid), _Hash)[email] = str(pos).encode()
                case AudienceLeft(audience_id=aid, email=email):
                    self._hdel(k.members(p, aid), email)
                case AttributeChanged(attribute_id=attr, email=email, value=None):
                    self._hdel(k.values(p, attr), email)
                case AttributeChanged(attribute_id=attr, email=email, value=value):
                    self._space.make(k.values(p, attr), _Hash)[email] = _pack((pos, value))
        last = fresh[-1][0]
        self._space.put(k.projection_position(p), _Text(str(last).encode()))
        return last

    def _hdel(self, key: str, email: str) -> None:
        rows = self._space.get(key, _Hash)
        if rows is not None:
            rows.pop(email, None)
            if not rows:  # Redis deletes an emptied hash
                self._space.delete(key)

    async def drop_audience(self, audience_id: str, partitions: int) -> None:
        for p in range(partitions):
            self._space.delete(self._keys.members(p, audience_id))

    async def drop_attribute(self, attribute_id: str, partitions: int) -> None:
        for p in range(partitions):
            self._space.delete(self._keys.values(p, attribute_id))

    def _count(self, keys: Iterable[str]) -> int:
        return sum(len(self._space.get(key, _Hash) or ()) for key in keys)

    async def count_members(self, audience_id: str, partitions: int) -> int:
        return self._count(self._keys.members(p, audience_id) for p in range(partitions))

    async def count_values(self, attribute_id: str, partitions: int) -> int:
        return self._count(self._keys.values(p, attribute_id) for p in range(partitions))

    async def members(
        self, audience_id: str, partitions: int, *, page: int = 1000
    ) -> AsyncIterator[list[Member]]:
        for p in range(partitions):
            rows = list((self._space.get(self._keys.members(p, audience_id), _Hash) or {}).items())
            for start in range(0, len(rows), page):
                yield [Member(e, int(v)) for e, v in rows[start : start + page]]

    async def values(
        self, attribute_id: str, partitions: int, *, page: int = 1000
    ) -> AsyncIterator[list[ValueRow]]:
        for p in range(partitions):
            rows = list((self._space.get(self._keys.values(p, attribute_id), _Hash) or {}).items())
            for start in range(0, len(rows), page):
                yield [ValueRow(e, *_unpack_value(v)) for e, v in rows[start : start + page]]

    async def dump(self, p: int) -> dict[str, dict[str, bytes | None]]:
        prefix = self._keys.members(p, "")[: -len("members:")]
        out: dict[str, dict[str, bytes | None]] = {}
        for key in self._space.names(prefix):
            value = self._space.get(key, object)
            name = key[len(prefix) :]
            if isinstance(value, _Hash):
                out[name] = dict(value)
            elif isinstance(value, bytes):
                out[name] = {"": bytes(value)}
        return out


class _Pieces(list[bytes]):
    """A snapshot's list of pieces."""


class MemorySnapshots:
    """``events.snapshots.SnapshotStore`` in memory: the same formats, pieces that expire
    after PARTS_TTL unless their snapshot completes, the previous pieces deleted on replace."""

    def __init__(self, space: Keyspace, keys: Keys) -> None:
        self._space = space
        self._keys = keys

    async def save(
        self, name: str, state: bytes, positions: dict[str, int], *, saved_at: float | None = None
    ) -> None:
        saved = self._space.clock() if saved_at is None else saved_at
        self._replace(name, Snapshot(state, positions, saved))

    async def save_pieces(
        self,
        name: str,
        pieces: Iterable[bytes] | AsyncIterable[bytes],
        positions: dict[str, int],
        *,
        parts_prefix: str,
        saved_at: float | None = None,
    ) -> None:
        saved = self._space.clock() if saved_at is None else saved_at
        parts = f"{parts_prefix}{secrets.token_hex(8)}"
        count = 0
        if isinstance(pieces, AsyncIterable):
            async for piece in pieces:
                count = self._push(parts, piece, count)
        else:
            for piece in pieces:
                count = self._push(parts, piece, count)
                await asyncio.sleep(0)  # one piece at a time, the loop running between them
        if count:
            self._space.expire(parts, None)
        self._replace(name, Snapshot(b"", positions, saved, 2, parts, count))

    def _push(self, parts: str, piece: bytes, count: int) -> int:
        self._space.make(parts, _Pieces).append(bytes(piece))
        if not count:
            self._space.expire(parts, PARTS_TTL)
        return count + 1

    def _replace(self, name: str, snap: Snapshot) -> None:
        key = self._keys.snapshot(name)
        old = self._space.get(key, _Text)
        self._space.put(key, _Text(_encode_snapshot(snap)))
        if old is not None:
            previous = _decode_snapshot(old)
            if previous.parts and previous.parts != snap.parts:
                self._space.delete(previous.parts)

    async def load(self, name: str) -> Snapshot | None:
        raw = self._space.get(self._keys.snapshot(name), _Text)
        return None if raw is None else _decode_snapshot(raw)

    async def pieces(self, snap: Snapshot) -> list[bytes]:
        if snap.format == 1:
            return [snap.state]
        if snap.format != 2:
            raise SnapshotError(f"unknown snapshot format {snap.format}")
        out = list(self._space.get(snap.parts, _Pieces) or ())
        if len(out) != snap.count:
            raise SnapshotError(
                f"snapshot {snap.parts} has {len(out)} of its {snap.count} pieces (deleted or "
                "evicted); delete the snapshot key to rebuild the state from the inbox and "
                "projections"
            )
        return out

    async def delete(self, name: str) -> None:
        snap = await self.load(name)
        if snap is not None and snap.parts:
            self._space.delete(snap.parts)
        self._space.delete(self._keys.snapshot(name))


class MemoryEventStream:
    def __init__(self, space: Keyspace, name: str) -> None:
        self._space = space
        self.name = name

    async def append(self, raw: bytes) -> str:
        return self._space.append(self.name, {EVENT_FIELD: raw})

    def _rows(self, last_id: str, count: int) -> list[tuple[str, Fields]]:
        stream = self._space.get(self.name, _Stream)
        return [] if stream is None else stream.after(last_id, count)

    async def read_after(self, last_id: str) -> AsyncIterator[tuple[str, bytes | None]]:
        while rows := self._rows(last_id, 1000):
            for entry_id, fields in rows:
                last_id = entry_id
                yield entry_id, fields.get(EVENT_FIELD)

    async def delete(self, ids: Sequence[str]) -> int:
        stream = self._space.get(self.name, _Stream)
        if stream is None:
            return 0
        return sum(stream.entries.pop(i, None) is not None for i in ids)

    async def wait(self, after: str, timeout_s: float) -> bool:
        if not self._rows(after, 1):
            await self._space.wait_append(timeout_s)
        return bool(self._rows(after, 1))


class MemoryStatusBoard:
    def __init__(self, space: Keyspace) -> None:
        self._space = space

    async def put(self, key: str, value: bytes, *, ttl_s: int) -> None:
        self._space.put(key, _Text(value), ttl_s=ttl_s)

    async def get(self, key: str) -> bytes | None:
        value = self._space.get(key, _Text)
        return None if value is None else bytes(value)

    async def delete(self, key: str) -> None:
        self._space.delete(key)


class MemoryConfig:
    def __init__(self, space: Keyspace, keys: Keys) -> None:
        self._space = space
        self._keys = keys

    async def partitions(self, default: int | None = None) -> int:
        config = self._space.make(self._keys.config, _Hash)
        if default is not None:
            if default < 1:
                raise ValueError("partitions must be at least 1")
            config.setdefault("partitions", str(default).encode())
        stored = await self.stored_partitions()
        if stored is None:
            raise NotStarted(
                f"hubsync has not been started against this Redis (namespace "
                f"{self._keys.namespace!r}): run hubsync up first, which fixes the partition count"
            )
        return stored

    async def stored_partitions(self) -> int | None:
        config = self._space.get(self._keys.config, _Hash)
        raw = None if config is None else config.get("partitions")
        return None if raw is None else int(raw)


class MemoryStorage:
    """Every port of one namespace, in memory. ``clock``: epoch seconds (``FakeClock.now`` in
    tests), for stream ids, claim idle times and times to live."""

    def __init__(
        self,
        keys: Keys | None = None,
        *,
        clock: Clock = time.time,
        dead_letters_max: int = DEAD_LETTERS_MAX,
        space: Keyspace | None = None,
    ) -> None:
        """``space``: share one keyspace between several storages (two namespaces of one
        "Redis"), or between the views of a test and a core."""
        self._keys = keys or Keys()
        self.space = space or Keyspace(clock)
        self._dead = MemoryDeadLetters(self.space, self._keys, maxlen=dead_letters_max)
        self._changes = MemoryChangeLog(self.space, self._keys)
        self._inboxes = MemoryInboxes(self.space, self._keys, self._dead)
        self._projections = MemoryProjections(self.space, self._keys)
        self._snapshots = MemorySnapshots(self.space, self._keys)
        self._activations = MemoryEventStream(self.space, self._keys.activations)
        self._catalog = MemoryEventStream(self.space, self._keys.catalog)
        self._status = MemoryStatusBoard(self.space)
        self._config = MemoryConfig(self.space, self._keys)

    @property
    def keys(self) -> Keys:
        return self._keys

    @property
    def changes(self) -> MemoryChangeLog:
        return self._changes

    @property
    def inboxes(self) -> MemoryInboxes:
        return self._inboxes

    @property
    def projections(self) -> MemoryProjections:
        return self._projections

    @property
    def snapshots(self) -> MemorySnapshots:
        return self._snapshots

    @property
    def dead(self) -> MemoryDeadLetters:
        return self._dead

    @property
    def activations(self) -> MemoryEventStream:
        return self._activations

    @property
    def catalog(self) -> MemoryEventStream:
        return self._catalog

    @property
    def status(self) -> MemoryStatusBoard:
        return self._status

    @property
    def config(self) -> MemoryConfig:
        return self._config

    async def forget_activation(self, activation_id: str) -> None:
        self.space.delete(self._keys.snapshot(f"activation:{activation_id}"))
        for key in self.space.names(self._keys.inbox(activation_id).removesuffix("inbox")):
            self.space.delete(key)


def _conforms(storage: MemoryStorage) -> Storage:
    """Never called: mypy checks here that MemoryStorage implements every port."""
    return storage
