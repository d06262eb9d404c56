"""The event log on Redis Streams: key layout, partitioning, publishing, consuming, dead letters.

Streams (``hubsync`` is the configurable namespace)::

    hubsync:changes:<p>      per-contact CDP events, p = crc32(normalised email) mod P
    hubsync:catalog          definitions and deletions of audiences and attributes
    hubsync:activations      the control plane (events.model.ControlEvent)
    hubsync:dead             entries that could not be decoded or validated, with the reason
    hubsync:config           a hash; field ``partitions`` holds P, written once, never changed

Every entry has one field, ``event``, holding one JSON event. Consumers read through consumer
groups (at-least-once): an entry is acknowledged only once its effect is durable, and the entries
of a consumer that died are taken over with XAUTOCLAIM.

Keys that hubsync derives from a partition carry a hash tag ``{p<p>}`` so that every multi-key
operation on one partition stays inside one Redis Cluster slot.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from events.model import CdpEvent, ControlEvent, InvalidEvent, decode_cdp_event, encode

__all__ = [
    "DEFAULT_PARTITIONS",
    "DeadLetter",
    "DeadLetters",
    "Entry",
    "Keys",
    "NotStarted",
    "Publisher",
    "StreamConsumer",
    "append_control",
    "decode_entries",
    "ensure_partitions",
    "partition_of",
    "position",
    "read_after",
]

DEFAULT_PARTITIONS = 4
EVENT_FIELD = b"event"
SEQ_BITS = 20  # positions pack a stream id's sequence into 20 bits: ids stay totally ordered


def position(stream_id: bytes | str) -> int:
    """A stream id (``"<ms>-<seq>"``) as one int; larger means later in that stream."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    s = int(seq or 0)
    if s >= 1 << SEQ_BITS:
        raise ValueError(f"stream id {text!r}: sequence {s} too large to order by position")
    return (int(ms) << SEQ_BITS) | s


def partition_of(email: str, partitions: int) -> int:
    """The change-stream partition of a normalised email: one contact, one partition."""
    return zlib.crc32(email.encode()) % partitions


@dataclass(frozen=True)
class Keys:
    """Every Redis key hubsync uses, under one namespace."""

    namespace: str = "hubsync"

    def changes(self, p: int) -> str:
        return f"{self.namespace}:changes:{p}"

    @property
    def catalog(self) -> str:
        return f"{self.namespace}:catalog"

    @property
    def activations(self) -> str:
        return f"{self.namespace}:activations"

    @property
    def dead(self) -> str:
        return f"{self.namespace}:dead"

    @property
    def config(self) -> str:
        return f"{self.namespace}:config"

    def members(self, p: int, audience_id: str) -> str:
        return f"{self.namespace}:proj:{{p{p}}}:members:{audience_id}"

    def values(self, p: int, attribute_id: str) -> str:
        return f"{self.namespace}:proj:{{p{p}}}:values:{attribute_id}"

    def projection_position(self, p: int) -> str:
        return f"{self.namespace}:proj:{{p{p}}}:position"

    def inbox(self, activation_id: str) -> str:
        return f"{self.namespace}:act:{{{activation_id}}}:inbox"

    def snapshot(self, name: str) -> str:
        return f"{self.namespace}:snapshot:{{{name}}}"

    def activation_status(self, activation_id: str) -> str:
        return f"{self.namespace}:act:{{{activation_id}}}:status"

    def governor_status(self, fingerprint: str) -> str:
        return f"{self.namespace}:governor:{{{fingerprint}}}:status"


class NotStarted(LookupError):
    """The partition count is not fixed yet: nothing may publish or read partitions before it is."""


async def ensure_partitions(redis: aioredis.Redis, keys: Keys, default: int | None = None) -> int:
    """The number of change-stream partitions, fixed once and then never changed.

    Only ``hubsync up`` (the Supervisor) or an explicit operator step passes ``default``: it is
    written then, if nothing was before. Everyone else (publishers, the CLI, the actors) passes
    nothing and reads it, or gets NotStarted: a process that wrote its own default by being
    first would fix a count nobody chose.
    """
    if default is not None:
        if default < 1:
            raise ValueError("partitions must be at least 1")
        await redis.hsetnx(keys.config, "partitions", default)
    raw = await redis.hget(keys.config, "partitions")
    if raw is None:
        raise NotStarted(
            f"hubsync has not been started against this Redis (namespace {keys.namespace!r}): run "
            "hubsync up first, which fixes the partition count"
        )
    return int(raw)


class Publisher:
    """Writes CDP events to the streams, partitioned by email, pipelined in batches."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, partitions: int, *, batch: int = 500
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._partitions = partitions
        self._batch = batch

    def stream_for(self, event: CdpEvent) -> str:
        email = getattr(event, "email", None)
        if email is None:
            return self._keys.catalog
        return self._keys.changes(partition_of(email, self._partitions))

    async def publish(self, events: Iterable[CdpEvent]) -> list[str]:
        """Append events in order; returns their stream ids. Per-contact order is kept."""
        ids: list[str] = []
        chunk: list[CdpEvent] = []
        for event in events:
            chunk.append(event)
            if len(chunk) >= self._batch:
                ids += await self._send(chunk)
                chunk = []
        if chunk:
            ids += await self._send(chunk)
        return ids

    async def _send(self, chunk: Sequence[CdpEvent]) -> list[str]:
        pipe = self._redis.pipeline(transaction=False)
        for event in chunk:
            pipe.xadd(self.stream_for(event), {EVENT_FIELD: encode(event)})
        return [i.decode() if isinstance(i, bytes) else i for i in await pipe.execute()]


async def append_control(redis: aioredis.Redis, keys: Keys, event: ControlEvent) -> str:
    """Append one event to the control stream."""
    raw = await redis.xadd(keys.activations, {EVENT_FIELD: encode(event)})
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def read_after(
    redis: aioredis.Redis,
    stream: str,
    last_id: str,
    *,
    field: bytes = EVENT_FIELD,
    page: int = 1000,
) -> AsyncIterator[tuple[str, bytes | None]]:
    """Every entry of ``stream`` after ``last_id``, in order, as (id, the field's raw value):
    how a process folds a small stream (control, catalog, an inbox) from where it stood."""
    while rows := await redis.xrange(stream, min=f"({last_id}", count=page):
        for raw_id, fields in rows:
            last_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            yield last_id, fields.get(field)


class Entry(msgspec.Struct, frozen=True):
    """One stream entry as read: where it came from, its id and position, and its raw event."""

    stream: str
    id: str
    position: int
    raw: bytes | None  # None when the entry has no ``event`` field


class StreamConsumer:
    """One consumer of a consumer group on one stream: at-least-once, with takeover.

    ``read()`` returns, in this order: this consumer's own unacknowledged entries (after a
    restart), entries idle longer than ``claim_idle_ms`` in other consumers' pending lists
    (a dead consumer's), then new entries. Nothing is acknowledged until ``ack()``.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
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
        self._redis = redis
        self._count = count
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._backlog_done = False  # own pending entries re-read after a restart
        self._claim_cursor = "0-0"

    async def ensure_group(self, start: str = "0") -> None:
        try:
            await self._redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, *, block: bool = True) -> list[Entry]:
        if not self._backlog_done:
            own = await self._xreadgroup("0", block=False)
            if own:
                return own
            self._backlog_done = True
        claimed = await self._claim()
        if claimed:
            return claimed
        return await self._xreadgroup(">", block=block)

    async def _xreadgroup(self, start: str, *, block: bool) -> list[Entry]:
        try:
            reply = await self._redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: start},
                count=self._count,
                block=self._block_ms if block else None,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # the stream was deleted under us: start again
            return []
        return (
            [self._entry(i, f) for _, rows in reply for i, f in rows if f is not None]
            if reply
            else []
        )

    async def _claim(self) -> list[Entry]:
        cursor, rows, *_ = await self._redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self._claim_idle_ms,
            start_id=self._claim_cursor,
            count=self._count,
        )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
        return [self._entry(i, f) for i, f in rows if f is not None]

    def _entry(self, raw_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
        text = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        return Entry(self.stream, text, position(text), fields.get(EVENT_FIELD))

    async def ack(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(await self._redis.xack(self.stream, self.group, *ids))


class DeadLetter(msgspec.Struct, frozen=True):
    """An entry that could not be used, kept whole with the reason."""

    stream: str
    id: str
    reason: str
    raw: bytes
    dead_id: str = ""


class DeadLetters:
    """The dead-letter stream: bad entries are parked there, never dropped, never blocking."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, maxlen: int = 1_000_000) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen

    def park_in(self, pipe: aioredis.client.Pipeline, letter: DeadLetter) -> None:
        """Add the parking to a pipeline, so it commits together with the rest of a step."""
        pipe.xadd(
            self._keys.dead,
            {
                b"stream": letter.stream,
                b"id": letter.id,
                b"reason": letter.reason,
                b"raw": letter.raw,
            },
            maxlen=self._maxlen,
            approximate=True,
        )

    async def park(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        pipe = self._redis.pipeline(transaction=False)
        for letter in letters:
            self.park_in(pipe, letter)
        await pipe.execute()

    async def list(self, count: int = 100) -> list[DeadLetter]:
        """The newest ``count`` dead letters, newest first."""
        rows = await self._redis.xrevrange(self._keys.dead, count=count)
        return [
            DeadLetter(
                stream=f[b"stream"].decode(),
                id=f[b"id"].decode(),
                reason=f[b"reason"].decode(),
                raw=f[b"raw"],
                dead_id=i.decode() if isinstance(i, bytes) else i,
            )
            for i, f in rows
        ]

    async def count(self) -> int:
        return int(await self._redis.xlen(self._keys.dead))


def decode_entries(
    entries: Sequence[Entry],
) -> tuple[list[tuple[Entry, CdpEvent]], list[DeadLetter]]:
    """Decode CDP entries: the good ones with their event, the bad ones as dead letters."""
    good: list[tuple[Entry, CdpEvent]] = []
    dead: list[DeadLetter] = []
    for entry in entries:
        if entry.raw is None:
            dead.append(DeadLetter(entry.stream, entry.id, "entry has no 'event' field", b""))
            continue
        try:
            good.append((entry, decode_cdp_event(entry.raw)))
        except InvalidEvent as exc:
            dead.append(DeadLetter(entry.stream, entry.id, exc.reason, entry.raw))
    return good, dead
