"""The storage ports' contract, run against every backend (memory, Redis, Redis Cluster: the
``storage`` fixture): order, at-least-once, takeover, trims, dead letters, projections,
snapshots, inboxes, the control streams, status values and the partition count."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from events.model import (
    AttributeChanged,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
    decode_cdp_event,
    encode,
)
from events.ports import GroupReader, Storage
from events.snapshots import SnapshotError
from events.streams import (
    EVENT_FIELD,
    DeadLetter,
    Entry,
    NotStarted,
    decode_entries,
    partition_of,
)

pytestmark = pytest.mark.integration


def changes(n: int, contacts: int, seed: int = 7) -> list[CdpEvent]:
    rng = random.Random(seed)
    out: list[CdpEvent] = []
    for i in range(n):
        email = f"c{rng.randrange(contacts)}@example.com"
        kind = rng.randrange(3)
        if kind == 0:
            out.append(AudienceEntered(audience_id="a1", email=email))
        elif kind == 1:
            out.append(AudienceLeft(audience_id="a1", email=email))
        else:
            out.append(AttributeChanged(attribute_id="ltv", email=email, value=i))
    return out


async def drain(consumer: GroupReader, *, ack: bool = True) -> list[Entry]:
    seen: list[Entry] = []
    while True:
        entries = await consumer.read(block=False)
        if not entries:
            return seen
        seen += entries
        if ack:
            await consumer.ack([e.id for e in entries])


class TestEventLog:
    """The contract every backend of the storage ports passes (``storage``: memory, Redis,
    Redis Cluster)."""

    async def test_partitions_are_written_once_and_then_fixed(self, storage: Storage) -> None:
        assert await storage.config.partitions(default=8) == 8
        assert await storage.config.partitions(default=2) == 8
        assert await storage.config.partitions() == 8  # read by everyone else
        assert await storage.config.stored_partitions() == 8

    async def test_only_an_explicit_caller_fixes_the_partition_count(
        self, storage: Storage
    ) -> None:
        """A reader (publisher, CLI, actor) before `hubsync up` fails clearly and writes nothing,
        so the count is the one `hubsync up` was told, not whoever came first's default."""
        with pytest.raises(NotStarted, match="run hubsync up first, which fixes the partition"):
            await storage.config.partitions()
        assert await storage.config.stored_partitions() is None
        assert await storage.config.partitions(8) == 8

    async def test_100k_events_none_lost_none_duplicated_order_kept_per_partition(
        self, storage: Storage
    ) -> None:
        partitions = await storage.config.partitions(4)
        events = changes(100_000, contacts=5_000)
        ids = await storage.changes.publish(events, partitions)
        assert len(ids) == len(events)

        read: dict[int, list[bytes]] = {}
        for p in range(partitions):
            consumer = storage.changes.reader(p, "routers", "r0")
            await consumer.ensure_group()
            entries = await drain(consumer)
            read[p] = [e.raw or b"" for e in entries]
            assert [e.position for e in entries] == sorted({e.position for e in entries})
            assert await drain(consumer) == []  # acked: nothing comes back
            assert await storage.changes.backlog(p, "routers") == 0

        expected: dict[int, list[bytes]] = defaultdict(list)
        for event in events:
            expected[partition_of(event.email, partitions)].append(encode(event))  # type: ignore[attr-defined]
        assert read == dict(expected)
        assert sum(len(v) for v in read.values()) == 100_000

    async def test_unacked_entries_come_back_after_the_consumer_restarts(
        self, storage: Storage
    ) -> None:
        await storage.changes.publish(changes(50, contacts=10), 1)
        first = storage.changes.reader(0, "g", "c1", count=20)
        await first.ensure_group()
        got = await first.read(block=False)
        assert len(got) == 20  # ... and the consumer dies without acking
        assert await storage.changes.backlog(0, "g") == 50

        again = storage.changes.reader(0, "g", "c1", count=100)  # same name, after restart
        redelivered = await again.read(block=False)
        assert [e.id for e in redelivered] == [e.id for e in got]
        assert await again.ack([e.id for e in redelivered]) == 20
        rest = await drain(again)
        assert len(rest) == 30

    async def test_a_failed_step_rereads_its_own_entries_first(self, storage: Storage) -> None:
        await storage.changes.publish(changes(10, contacts=10), 1)
        consumer = storage.changes.reader(0, "g", "c", count=4)
        await consumer.ensure_group()
        first = await consumer.read(block=False)
        consumer.reread_pending()  # the step failed: redo these before anything newer
        assert [e.id for e in await consumer.read(block=False)] == [e.id for e in first]
        await consumer.ack([e.id for e in first])
        newer = await consumer.read(block=False)
        assert newer and newer[0].position > first[-1].position

    async def test_a_dead_consumers_entries_are_taken_over(self, storage: Storage) -> None:
        await storage.changes.publish(changes(30, contacts=10), 1)
        dead = storage.changes.reader(0, "g", "dead", count=30)
        await dead.ensure_group()
        taken = await dead.read(block=False)
        assert len(taken) == 30

        patient = storage.changes.reader(0, "g", "patient")  # claims after 30 s only
        assert await patient.read(block=False) == []
        heir = storage.changes.reader(0, "g", "heir", claim_idle_ms=0)
        claimed = await drain(heir)
        assert sorted(e.id for e in claimed) == sorted(e.id for e in taken)
        assert await storage.changes.backlog(0, "g") == 0

    async def test_acknowledged_entries_are_trimmed_and_unacknowledged_ones_kept(
        self, storage: Storage
    ) -> None:
        assert await storage.changes.trim_acknowledged(0) == 0  # no stream yet: nothing
        await storage.changes.publish(changes(20, contacts=5), 1)
        consumer = storage.changes.reader(0, "routers", "r", count=10)
        await consumer.ensure_group()
        audit = storage.changes.reader(0, "audit", "a", count=5)
        await audit.ensure_group()
        await consumer.ack([e.id for e in await consumer.read(block=False)])
        await audit.read(block=False)  # delivered, not acked: pending from the first entry
        assert await storage.changes.trim_acknowledged(0) == 0
        audit.reread_pending()
        await audit.ack([e.id for e in await audit.read(block=False)])  # its 5 pending
        assert await storage.changes.trim_acknowledged(0) == 5
        assert await storage.changes.length(0) == 15
        assert await storage.changes.backlog(0, "routers") == 10
        # with a retention, entries younger than it stay
        await audit.ack([e.id for e in await drain(audit, ack=False)])
        await consumer.ack([e.id for e in await drain(consumer, ack=False)])
        assert await storage.changes.trim_acknowledged(0, retention_s=3600) == 0
        assert await storage.changes.trim_acknowledged(0) == 15

    async def test_bad_entries_are_dead_lettered_with_the_reason_and_the_rest_goes_on(
        self, storage: Storage
    ) -> None:
        good = encode(AudienceEntered(audience_id="a1", email="ada@example.com"))
        for raw in [
            good,
            b"{oops",
            b'{"type":"audience_entered","audience_id":"a1","email":"nope"}',
            good,
        ]:
            await storage.changes.append_raw(0, {EVENT_FIELD: raw})
        await storage.changes.append_raw(0, {b"other": b"field"})
        consumer = storage.changes.reader(0, "g", "c")
        await consumer.ensure_group()
        entries = await consumer.read(block=False)
        decoded, letters = decode_entries(entries)
        assert len(decoded) == 2
        dead = storage.dead
        await dead.park(letters)
        await consumer.ack([e.id for e in entries])

        parked = await dead.list()
        assert await dead.count() == 3
        reasons = sorted(letter.reason for letter in parked)
        assert "entry has no 'event' field" in reasons
        assert any("not a JSON object" in r for r in reasons)
        assert any("invalid email 'nope'" in r for r in reasons)
        assert {letter.stream for letter in parked} == {storage.keys.changes(0)}
        assert b"{oops" in {letter.raw for letter in parked}
        assert [letter.dead_id for letter in parked] == sorted(
            (letter.dead_id for letter in parked),
            key=lambda i: tuple(map(int, i.split("-"))),
            reverse=True,
        )  # newest first
        assert all(letter.raw_sha256 for letter in parked)  # bounded when parked

    async def test_projection_rebuilt_from_scratch_equals_the_incremental_one(
        self, storage: Storage
    ) -> None:
        await storage.changes.publish(changes(3_000, contacts=200), 1)
        incremental = storage.projections
        consumer = storage.changes.reader(0, "g", "c", count=137)
        await consumer.ensure_group()
        redelivered_once = False
        while entries := await consumer.read(block=False):
            decoded, _ = decode_entries(entries)
            await incremental.apply(0, [(e.position, ev) for e, ev in decoded])
            if (
                not redelivered_once
            ):  # at-least-once: applying the same entries again changes nothing
                await incremental.apply(0, [(e.position, ev) for e, ev in decoded])
                redelivered_once = True
            await consumer.ack([e.id for e in entries])
        live = await incremental.dump(0)

        # the same entries, read again by another group, applied at once to partition 1's keys
        rebuild = storage.changes.reader(0, "rebuild", "r", count=100_000)
        await rebuild.ensure_group()
        everything = await drain(rebuild)
        await incremental.apply(
            1, [(e.position, decode_cdp_event(e.raw or b"")) for e in everything]
        )
        assert await incremental.dump(1) == live
        # dump says field names are str (emails, or "" for a string key): it decodes Redis's bytes
        assert live and all(isinstance(f, str) for fields in live.values() for f in fields)

        members = [m async for page in incremental.members("a1", 1) for m in page]
        assert len(members) == await incremental.count_members("a1", 1) > 0
        values = [v async for page in incremental.values("ltv", 1) for v in page]
        assert len(values) == await incremental.count_values("ltv", 1) > 0
        assert all(isinstance(v.value, int) for v in values)
        await incremental.drop_audience("a1", 2)
        assert await incremental.count_members("a1", 2) == 0
        await incremental.drop_attribute("ltv", 2)
        assert await incremental.count_values("ltv", 2) == 0

    async def test_snapshots_keep_state_and_positions(self, storage: Storage) -> None:
        store = storage.snapshots
        assert await store.load("act1") is None
        await store.save("act1", b"\x01\x02", {"inbox": 42}, saved_at=1.0)
        await store.save("act1", b"\x03", {"inbox": 43}, saved_at=2.0)
        snap = await store.load("act1")
        assert snap is not None
        assert (snap.state, snap.positions, snap.saved_at) == (b"\x03", {"inbox": 43}, 2.0)
        assert await store.pieces(snap) == [b"\x03"]

    async def test_snapshots_in_pieces_replace_the_previous_one_whole(
        self, storage: Storage
    ) -> None:
        store = storage.snapshots
        prefix = storage.keys.activation_snapshot_parts("a1")
        await store.save_pieces(
            "activation:a1", [b"s", b"p1", b"p2"], {"inbox": 1}, parts_prefix=prefix
        )
        first = await store.load("activation:a1")
        assert first is not None and first.format == 2
        assert await store.pieces(first) == [b"s", b"p1", b"p2"]

        async def more() -> AsyncIterator[bytes]:
            for piece in (b"t", b"q1"):
                yield piece

        await store.save_pieces("activation:a1", more(), {"inbox": 2}, parts_prefix=prefix)
        second = await store.load("activation:a1")
        assert second is not None and await store.pieces(second) == [b"t", b"q1"]
        with pytest.raises(SnapshotError, match="has 0 of its 3 pieces"):
            await store.pieces(first)  # the previous pieces are gone
        await store.delete("activation:a1")
        assert await store.load("activation:a1") is None
        with pytest.raises(SnapshotError):
            await store.pieces(second)

    async def test_inboxes_take_a_routers_step_and_are_read_after_a_position(
        self, storage: Storage
    ) -> None:
        inboxes = storage.inboxes
        await inboxes.deliver({"one": b"p1", "two": b"q1"})
        await inboxes.deliver(
            {"one": b"p2"},
            letters=[DeadLetter.of("s", "1-1", "bad", b"{")],
            drop=["two"],
        )
        assert await storage.dead.count() == 1
        assert await inboxes.length("two") == 0
        rows = await inboxes.read("one", "0-0", count=10)
        assert [payload for _, payload in rows] == [b"p1", b"p2"]
        assert await inboxes.read("one", rows[0][0], count=10) == rows[1:]
        assert await inboxes.read("one", rows[1][0], count=10, block_ms=10) == []
        assert [r async for r in inboxes.read_after("one", "0-0")] == rows
        assert await inboxes.trim("one", rows[1][0]) == 1  # drops what comes before
        assert [r async for r in inboxes.read_after("one", "0-0")] == rows[1:]
        assert await inboxes.read("nobody", "0-0", count=10) == []

    async def test_control_streams_fold_after_a_position_and_compact(
        self, storage: Storage
    ) -> None:
        for stream in (storage.activations, storage.catalog):
            assert [r async for r in stream.read_after("0-0")] == []
            first = await stream.append(b"one")
            second = await stream.append(b"two")
            assert tuple(map(int, first.split("-"))) < tuple(map(int, second.split("-")))
            assert [r async for r in stream.read_after("0-0")] == [
                (first, b"one"),
                (second, b"two"),
            ]
            assert [r async for r in stream.read_after(first)] == [(second, b"two")]
            assert await stream.wait(first, 0.01) is True
            assert await stream.wait(second, 0.01) is False
            assert await stream.delete([first, "1-1"]) == 1
            assert [r async for r in stream.read_after("0-0")] == [(second, b"two")]
        await storage.changes.publish([AudienceDefined(audience_id="a", name="A")], 1)
        assert [raw async for _, raw in storage.catalog.read_after(second)] == [
            encode(AudienceDefined(audience_id="a", name="A"))
        ]

    async def test_status_values_are_kept_replaced_and_deleted(self, storage: Storage) -> None:
        key = storage.keys.activation_status("a1")
        assert await storage.status.get(key) is None
        await storage.status.put(key, b'{"state":"running"}', ttl_s=60)
        await storage.status.put(key, b'{"state":"paused"}', ttl_s=60)
        assert await storage.status.get(key) == b'{"state":"paused"}'
        await storage.status.delete(key)
        assert await storage.status.get(key) is None

    async def test_forgetting_an_activation_leaves_nothing_of_it(self, storage: Storage) -> None:
        k = storage.keys
        for activation_id in ("gone", "kept"):
            await storage.inboxes.deliver({activation_id: b"p"})
            await storage.status.put(k.activation_status(activation_id), b"{}", ttl_s=60)
            await storage.snapshots.save_pieces(
                f"activation:{activation_id}",
                [b"s", b"p"],
                {"inbox": 1},
                parts_prefix=k.activation_snapshot_parts(activation_id),
            )
        await storage.forget_activation("gone")
        assert await storage.inboxes.length("gone") == 0
        assert await storage.status.get(k.activation_status("gone")) is None
        assert await storage.snapshots.load("activation:gone") is None
        kept = await storage.snapshots.load("activation:kept")
        assert kept is not None and await storage.snapshots.pieces(kept) == [b"s", b"p"]
        assert await storage.inboxes.length("kept") == 1
