"""The Supervisor's reconcile on MemoryStorage with a recording placement: which actors should
exist (routers per partition, a governor per token before its activations, none for deleted
activations or unused tokens), and what a deletion leaves (nothing: its keys are swept, its
control entries compacted but the deletion itself). On a FakeClock, without Ray or Redis."""

from __future__ import annotations

from actors.supervisor import SWEEP_AGAIN_S, SupervisorCore, leftover_entries
from events.activations import Activations
from events.memory import MemoryStorage
from events.model import (
    ActivationCreated,
    ActivationDeleted,
    AttributeChanged,
    AttributeDefined,
    AttributeDeleted,
    AudienceAdded,
    AudienceDefined,
    AudienceDeleted,
    AudienceEntered,
    ControlEvent,
    decode_control_event,
    encode,
)
from events.streams import Keys
from scheduler import FakeClock


class Placement:
    """The placement port without Ray: what runs, in the order it was asked for."""

    def __init__(self, *, kills_land: bool = True) -> None:
        self.started: list[tuple[str, str]] = []
        self.stopped: list[tuple[str, str]] = []
        self.kills_land = kills_land  # False: a stopped actor is still listed (Ray is slow)
        self._running: dict[str, set[str]] = {
            "router": set(),
            "activation": set(),
            "governor": set(),
        }

    def _ensure(self, kind: str, ident: str) -> None:
        if ident not in self._running[kind]:
            self._running[kind].add(ident)
            self.started.append((kind, ident))

    def ensure_router(self, partition: int) -> None:
        self._ensure("router", str(partition))

    def ensure_activation(self, activation_id: str) -> None:
        self._ensure("activation", activation_id)

    def ensure_governor(self, fingerprint: str) -> None:
        self._ensure("governor", fingerprint)

    def running(self, kind: str) -> set[str]:
        return set(self._running[kind])

    async def stop(self, kind: str, ident: str) -> None:
        self.stopped.append((kind, ident))
        if self.kills_land:
            self._running[kind].discard(ident)


def created(activation_id: str, fingerprint: str = "fp1") -> ActivationCreated:
    return ActivationCreated(
        activation_id=activation_id,
        name=activation_id,
        token_sealed=f"sealed-{activation_id}",
        token_fingerprint=fingerprint,
        base_url="http://127.0.0.1:1",
    )


class Rig:
    def __init__(self, *, kills_land: bool = True) -> None:
        self.clock = FakeClock(1_800_000_000.0)
        self.storage = MemoryStorage(Keys("unit"), clock=self.clock.now)
        self.placement = Placement(kills_land=kills_land)
        self.core = SupervisorCore(self.storage, self.placement, partitions=3, clock=self.clock.now)

    async def control(self, *events: ControlEvent) -> None:
        for event in events:
            await self.storage.activations.append(encode(event))

    async def control_log(self) -> list[tuple[str, str]]:
        return [
            (type(e).__name__, e.activation_id)
            async for _, raw in self.storage.activations.read_after("0-0")
            if (e := decode_control_event(raw or b""))
        ]


async def test_the_partition_count_is_fixed_and_a_router_placed_per_partition() -> None:
    rig = Rig()
    await rig.core.reconcile()
    assert await rig.storage.config.partitions() == 3
    assert rig.placement.running("router") == {"0", "1", "2"}
    later = SupervisorCore(rig.storage, Placement(), partitions=8)  # `hubsync up` again, told 8
    await later.reconcile()
    assert later.partitions == 3 and later._placement.running("router") == {"0", "1", "2"}  # type: ignore[attr-defined]


async def test_a_governor_per_token_is_placed_before_its_activations() -> None:
    rig = Rig()
    await rig.control(created("a1", "fp1"), created("a2", "fp1"), created("b1", "fp2"))
    await rig.core.reconcile()
    order = [s for s in rig.placement.started if s[0] != "router"]
    assert set(order) == {
        ("governor", "fp1"),
        ("governor", "fp2"),
        ("activation", "a1"),
        ("activation", "a2"),
        ("activation", "b1"),
    }
    assert max(order.index(("governor", f)) for f in ("fp1", "fp2")) < min(
        order.index(("activation", a)) for a in ("a1", "a2", "b1")
    )
    await rig.core.reconcile()  # nothing more to do
    assert len(rig.placement.started) == 3 + 5 and rig.placement.stopped == []


async def test_a_deleted_activation_is_stopped_and_its_unused_governor_with_it() -> None:
    rig = Rig()
    await rig.control(created("a1", "fp1"), created("b1", "fp2"))
    await rig.core.reconcile()
    await rig.control(ActivationDeleted(activation_id="b1"))
    await rig.core.reconcile()
    assert rig.placement.stopped == [("activation", "b1"), ("governor", "fp2")]
    assert rig.placement.running("activation") == {"a1"}


async def test_a_deletion_leaves_nothing_once_the_actor_is_gone() -> None:
    rig = Rig(kills_land=False)
    await rig.control(
        created("doomed"),
        created("kept"),
        AudienceAdded(activation_id="doomed", audience_id="a2"),
    )
    await rig.core.reconcile()
    k = rig.storage.keys
    for activation_id in ("doomed", "kept"):
        await rig.storage.inboxes.deliver({activation_id: b"payload"})
        await rig.storage.status.put(k.activation_status(activation_id), b"{}", ttl_s=300)
        await rig.storage.snapshots.save_pieces(
            f"activation:{activation_id}",
            [b"state", b"piece"],
            {"inbox": 0},
            parts_prefix=k.activation_snapshot_parts(activation_id),
        )
    await rig.control(ActivationDeleted(activation_id="doomed"))

    await rig.core.reconcile()
    assert ("activation", "doomed") in rig.placement.stopped
    assert len(await rig.control_log()) == 4, "compacted while the actor still ran"
    assert await rig.storage.inboxes.length("doomed") == 1

    rig.placement.kills_land = True
    rig.placement._running["activation"].discard("doomed")  # Ray reports it gone at last
    await rig.core.reconcile()
    assert await rig.control_log() == [
        ("ActivationCreated", "kept"),
        ("ActivationDeleted", "doomed"),
    ]
    assert await leftover_entries(rig.storage.activations, {"doomed"}) == []
    assert rig.storage.space.names(k.inbox("doomed").removesuffix("inbox")) == []
    assert await rig.storage.snapshots.load("activation:doomed") is None
    assert await rig.storage.inboxes.length("kept") == 1
    assert await rig.storage.snapshots.load("activation:kept") is not None
    fresh = Activations()
    await fresh.fold(rig.storage.activations)  # a process folding from the start
    assert set(fresh.by_id) == {"kept"}

    # A status the dying actor sent before it stopped lands after the sweep: swept again for
    # SWEEP_AGAIN_S, by the Supervisor's clock.
    await rig.storage.status.put(k.activation_status("doomed"), b"{}", ttl_s=300)
    await rig.core.reconcile()
    assert await rig.storage.status.get(k.activation_status("doomed")) is None
    rig.clock.advance(SWEEP_AGAIN_S + 1)
    await rig.core.reconcile()  # the last sweep
    await rig.storage.status.put(k.activation_status("doomed"), b"{}", ttl_s=300)
    await rig.core.reconcile()
    assert await rig.storage.status.get(k.activation_status("doomed")) == b"{}"  # left to expire


async def test_projections_of_deleted_audiences_and_attributes_are_dropped_once() -> None:
    rig = Rig()
    await rig.storage.config.partitions(1)
    await rig.storage.changes.publish(
        [
            AudienceDefined(audience_id="gone", name="Gone"),
            AudienceDefined(audience_id="kept", name="Kept"),
            AttributeDefined(attribute_id="ltv", name="LTV", value_type="number"),
        ],
        1,
    )
    await rig.storage.projections.apply(
        0,
        [
            (1, AudienceEntered(audience_id="gone", email="a@x.com")),
            (2, AudienceEntered(audience_id="kept", email="a@x.com")),
            (3, AttributeChanged(attribute_id="ltv", email="a@x.com", value=1)),
        ],
    )
    await rig.storage.changes.publish(
        [AudienceDeleted(audience_id="gone"), AttributeDeleted(attribute_id="ltv")], 1
    )
    await rig.core.reconcile()
    assert await rig.storage.projections.count_members("gone", 1) == 0
    assert await rig.storage.projections.count_members("kept", 1) == 1
    assert await rig.storage.projections.count_values("ltv", 1) == 0
    assert rig.core._dropped_audiences == {"gone"} and rig.core._dropped_attributes == {"ltv"}


async def test_waiting_for_the_control_stream_returns_as_soon_as_it_gains_an_entry() -> None:
    rig = Rig()
    await rig.core.reconcile()
    await rig.control(created("a1"))
    assert await rig.core.wait_for_control(60.0) is True  # at once: the entry is there
    await rig.core.reconcile()
    assert "a1" in rig.placement.running("activation")
