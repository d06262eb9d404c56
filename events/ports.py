"""The storage the cores need, as small ports: each a ``typing.Protocol``, written once here.

Two backends implement every port: Redis (``events.redis_backend``: one Redis or a Redis
Cluster, the classes of ``events.streams``, ``events.projections`` and ``events.snapshots``) and
memory (``events.memory``: plain dicts, one process, the clock injected). One contract test class
(``tests/integration/test_event_log.py::TestEventLog``) runs against all three, so a core
unit-tested on memory behaves the same on Redis.

A core gets ONE argument, a ``Storage``: the ports of one namespace (``Keys``).

=================  ==========================================================================
port               what it holds
=================  ==========================================================================
``ChangeLog``      the change streams, one per partition: publish, consumer groups
                   (``GroupReader``: at-least-once, own pending first, a dead consumer's
                   entries claimed), trim of acknowledged entries, a group's backlog
``Inboxes``        one stream per activation: a Router delivers, the activation reads after
                   the last entry it took, its snapshots trim it
``ProjectionStore``  audience members and attribute values per partition, with the position
                   they reflect (``events.projections``)
``Snapshots``      actor state + the positions it covers, whole or in pieces
                   (``events.snapshots``)
``DeadLetterStore``  entries that could not be used, with the reason; bounded in count
``EventStream``    a small stream folded by everyone: the control stream (activations) and
                   the catalog; ``Activations.fold`` and ``Catalog.fold`` read it
``StatusBoard``    small JSON status values with a time to live (activation, governor)
``ConfigStore``    the namespace's fixed settings: the partition count
=================  ==========================================================================

Stream ids are Redis's everywhere (``"<ms>-<seq>"``, totally ordered, ``events.streams.position``
makes them one int): positions decide order, whatever the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Protocol

from events.model import CdpEvent
from events.projections import Member, ValueRow
from events.snapshots import Snapshot
from events.streams import DeadLetter, Entry, Keys

__all__ = [
    "ChangeLog",
    "ConfigStore",
    "DeadLetterStore",
    "EventStream",
    "GroupReader",
    "Inboxes",
    "ProjectionStore",
    "Snapshots",
    "StatusBoard",
    "Storage",
]


class GroupReader(Protocol):
    """One consumer of a consumer group on one change stream: at-least-once, with takeover.

    ``read()`` returns, in this order: this consumer's own unacknowledged entries (after a
    restart, or after ``reread_pending``), entries idle longer than the claim time in other
    consumers' pending lists (a dead consumer's), then new entries. Nothing is acknowledged
    until ``ack()``. Reading never raises because of what one entry holds (``Entry.problem``).
    """

    @property
    def stream(self) -> str: ...

    async def ensure_group(self, start: str = "0") -> None:
        """Create the group (and the stream) if missing; ``start`` "0": from the beginning."""
        ...

    async def read(self, *, block: bool = True) -> list[Entry]: ...

    def reread_pending(self) -> None:
        """The next ``read()`` starts again with this consumer's own unacknowledged entries."""
        ...

    async def ack(self, ids: Sequence[str]) -> int:
        """Acknowledge entries of this group; returns how many were pending."""
        ...


class ChangeLog(Protocol):
    """The change streams ``<ns>:changes:<p>`` (and, for catalog events, the catalog stream)."""

    async def publish(self, events: Iterable[CdpEvent], partitions: int) -> list[str]:
        """Append events in order, each to its partition (catalog events to the catalog
        stream); returns their stream ids. Per-contact order is kept."""
        ...

    async def append_raw(self, partition: int, fields: Mapping[bytes, bytes]) -> str:
        """Append one entry as any producer may write it (any fields, valid or not)."""
        ...

    def reader(
        self,
        partition: int,
        group: str,
        consumer: str,
        *,
        count: int = 1000,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
    ) -> GroupReader: ...

    async def trim_acknowledged(self, partition: int, *, retention_s: float = 0.0) -> int:
        """Drop the entries every group acknowledged (and, with ``retention_s``, older than
        that); returns how many went. A backend that may not trim logs it and returns 0."""
        ...

    async def backlog(self, partition: int, group: str) -> int:
        """Entries ``group`` has not acknowledged: pending plus not yet delivered."""
        ...

    async def length(self, partition: int) -> int: ...


class Inboxes(Protocol):
    """Each activation's inbox stream ``<ns>:act:{<id>}:inbox``: entries of one field, a payload
    (``actors.messages.encode_changes``) appended by the Routers."""

    async def deliver(
        self,
        payloads: Mapping[str, bytes],
        *,
        letters: Sequence[DeadLetter] = (),
        drop: Iterable[str] = (),
    ) -> None:
        """One Router step's writes, in one round trip: append each activation's payload to
        its inbox, park ``letters`` on the dead-letter stream, delete the inboxes of ``drop``
        (activations deleted since). Raises if any of it failed (the step is redone)."""
        ...

    async def read(
        self, activation_id: str, after: str, *, count: int, block_ms: int = 0
    ) -> list[tuple[str, bytes | None]]:
        """Up to ``count`` entries after id ``after``, as (id, payload); waits up to
        ``block_ms`` for one when there is none (0: does not wait)."""
        ...

    def read_after(self, activation_id: str, after: str) -> AsyncIterator[tuple[str, bytes | None]]:
        """Every entry after ``after``, in order, a page at a time (replay after a restart)."""
        ...

    async def trim(self, activation_id: str, upto: str) -> int:
        """Drop the entries before id ``upto`` (exactly); returns how many went."""
        ...

    async def length(self, activation_id: str) -> int: ...


class ProjectionStore(Protocol):
    """Audience members and attribute values per partition, with the position they reflect
    (written together: a redelivered entry is recognised as applied)."""

    async def position(self, p: int) -> int: ...

    async def apply(
        self, p: int, changes: Sequence[tuple[int, CdpEvent]], *, after: int | None = None
    ) -> int:
        """Apply (position, event) pairs of partition p in order, skipping those at or below
        the recorded position; returns the new position."""
        ...

    async def drop_audience(self, audience_id: str, partitions: int) -> None: ...
    async def drop_attribute(self, attribute_id: str, partitions: int) -> None: ...
    async def count_members(self, audience_id: str, partitions: int) -> int: ...
    async def count_values(self, attribute_id: str, partitions: int) -> int: ...

    def members(
        self, audience_id: str, partitions: int, *, page: int = 1000
    ) -> AsyncIterator[list[Member]]: ...

    def values(
        self, attribute_id: str, partitions: int, *, page: int = 1000
    ) -> AsyncIterator[list[ValueRow]]: ...

    async def dump(self, p: int) -> dict[str, dict[str, bytes | None]]:
        """Everything partition p holds, to compare two projections of one backend."""
        ...


class Snapshots(Protocol):
    """Snapshots of actor state (``events.snapshots``: formats 1 and 2 both load)."""

    async def save(
        self, name: str, state: bytes, positions: dict[str, int], *, saved_at: float | None = None
    ) -> None: ...

    async def save_pieces(
        self,
        name: str,
        pieces: Iterable[bytes] | AsyncIterable[bytes],
        positions: dict[str, int],
        *,
        parts_prefix: str,
        saved_at: float | None = None,
    ) -> None: ...

    async def load(self, name: str) -> Snapshot | None: ...

    async def pieces(self, snap: Snapshot) -> list[bytes]:
        """The state of ``snap`` as pieces; raises SnapshotError if some are missing."""
        ...

    async def delete(self, name: str) -> None: ...


class DeadLetterStore(Protocol):
    """The dead-letter stream: bad entries parked with the reason, never dropped silently;
    bounded (about ``maxlen`` letters, the oldest going first)."""

    async def park(self, letters: Sequence[DeadLetter]) -> None: ...

    async def list(self, count: int = 100) -> list[DeadLetter]:
        """The newest ``count`` letters, newest first."""
        ...

    async def count(self) -> int: ...


class EventStream(Protocol):
    """A small stream every process folds from where it stood: the control stream of
    activations, the catalog. Entries have one field holding one encoded event."""

    @property
    def name(self) -> str: ...

    async def append(self, raw: bytes) -> str: ...

    def read_after(self, last_id: str) -> AsyncIterator[tuple[str, bytes | None]]:
        """Every entry after ``last_id``, in order, as (id, the event's raw bytes)."""
        ...

    async def delete(self, ids: Sequence[str]) -> int:
        """Remove these entries (compaction); returns how many were there."""
        ...

    async def wait(self, after: str, timeout_s: float) -> bool:
        """Wait until the stream holds an entry after ``after`` (True) or ``timeout_s`` passed."""
        ...


class StatusBoard(Protocol):
    """Small values that expire unless written again: the actors' published status, under
    ``Keys.activation_status`` and ``Keys.governor_status``."""

    async def put(self, key: str, value: bytes, *, ttl_s: int) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def delete(self, key: str) -> None: ...


class ConfigStore(Protocol):
    """The namespace's settings fixed once (``events.streams.ensure_partitions``)."""

    async def partitions(self, default: int | None = None) -> int:
        """P; written first from ``default`` if given and nothing was; raises NotStarted if
        there is none."""
        ...

    async def stored_partitions(self) -> int | None:
        """P if it was fixed, else None (never writes)."""
        ...


class Storage(Protocol):
    """Every port of one namespace: what a core is given instead of a Redis connection."""

    @property
    def keys(self) -> Keys: ...
    @property
    def changes(self) -> ChangeLog: ...
    @property
    def inboxes(self) -> Inboxes: ...
    @property
    def projections(self) -> ProjectionStore: ...
    @property
    def snapshots(self) -> Snapshots: ...
    @property
    def dead(self) -> DeadLetterStore: ...
    @property
    def activations(self) -> EventStream: ...
    @property
    def catalog(self) -> EventStream: ...
    @property
    def status(self) -> StatusBoard: ...
    @property
    def config(self) -> ConfigStore: ...

    async def forget_activation(self, activation_id: str) -> None:
        """Delete every key of the activation: its snapshot (and pieces), inbox, status and
        anything else under ``<ns>:act:{<id>}:``."""
        ...
