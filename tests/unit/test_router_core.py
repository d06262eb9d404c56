"""The RouterCore on MemoryStorage: what one step reads, parks, projects, delivers and
acknowledges, and how it trims, on a FakeClock. (tests/integration/test_router_inbox.py and
test_intake.py run the same core on Redis and Redis Cluster.)"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from actors.messages import decode_changes
from actors.router import GROUP, RouterCore
from events.memory import MemoryInboxes, MemoryStorage
from events.model import (
    ActivationCreated,
    ActivationDeleted,
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
    encode,
)
from events.streams import EVENT_FIELD, DeadLetter, Keys, partition_of
from scheduler import FakeClock

START = 1_800_000_000.0


class Rig:
    def __init__(self, partitions: int = 1, storage: MemoryStorage | None = None) -> None:
        self.clock = FakeClock(START)
        self.partitions = partitions
        self.storage = storage or MemoryStorage(Keys("unit"), clock=self.clock.now)

    async def setup(self, *activations: str) -> None:
        await self.storage.config.partitions(self.partitions)
        await self.publish(
            AudienceDefined(audience_id="vip", name="VIP"),
            AttributeDefined(attribute_id="ltv", name="LTV", value_type="number"),
        )
        for activation_id in activations:
            await self.storage.activations.append(
                encode(
                    ActivationCreated(
                        activation_id=activation_id,
                        name=activation_id,
                        token_sealed="v2:never-opened-here",  # routing reads no token
                        token_fingerprint="fp",
                        audiences=("vip",),
                    )
                )
            )

    async def publish(self, *events: CdpEvent) -> list[str]:
        return await self.storage.changes.publish(events, self.partitions)

    def router(self, partition: int = 0, **options: object) -> RouterCore:
        return RouterCore(self.storage, partition, clock=self.clock.now, **options)  # type: ignore[arg-type]

    async def inbox(self, activation_id: str) -> list[list[tuple[str, str, str]]]:
        return [
            [(c.email, c.key, c.value) for c in decode_changes(payload or b"")]
            async for _, payload in self.storage.inboxes.read_after(activation_id, "0-0")
        ]


async def test_a_step_delivers_one_entry_per_subscribing_activation_then_acknowledges() -> None:
    rig = Rig()
    await rig.setup("one", "two")
    router = rig.router()
    await router.start()
    await rig.publish(
        AudienceEntered(audience_id="vip", email="ada@example.com"),
        AudienceLeft(audience_id="vip", email="ada@example.com"),
        AttributeChanged(attribute_id="ltv", email="ada@example.com", value=3),  # nobody's
    )
    assert await router.step(block=False) == 3
    expected = [[("ada@example.com", "a:vip", "true"), ("ada@example.com", "a:vip", "false")]]
    assert await rig.inbox("one") == expected
    assert await rig.inbox("two") == expected
    assert await rig.storage.changes.backlog(0, GROUP) == 0
    assert (router.stats.events_in, router.stats.routed, router.stats.dead) == (3, 4, 0)
    # projected with the positions they reflect
    assert await rig.storage.projections.count_members("vip", 1) == 0
    assert [v.value async for page in rig.storage.projections.values("ltv", 1) for v in page] == [3]


async def test_a_deleted_activation_gets_nothing_more_and_its_inbox_goes() -> None:
    rig = Rig()
    await rig.setup("one", "two")
    router = rig.router()
    await router.start()
    await rig.publish(AudienceEntered(audience_id="vip", email="ada@example.com"))
    await router.step(block=False)
    await rig.storage.activations.append(encode(ActivationDeleted(activation_id="two")))
    await rig.publish(AudienceEntered(audience_id="vip", email="bob@example.com"))
    assert await router.step(block=False) == 1
    assert len(await rig.inbox("one")) == 2
    assert await rig.storage.inboxes.length("two") == 0
    assert rig.storage.keys.inbox("two") not in rig.storage.space.names()


async def test_whatever_one_entry_holds_parks_that_entry_and_the_rest_is_routed() -> None:
    rig = Rig(partitions=2)
    await rig.setup("one")
    router = rig.router(0)
    await router.start()
    stray = next(f"s{i}@example.com" for i in range(100) if partition_of(f"s{i}@example.com", 2))
    mine = next(f"m{i}@example.com" for i in range(100) if not partition_of(f"m{i}@example.com", 2))
    for raw in [
        b"{oops",
        encode(AudienceEntered(audience_id="nope", email=mine)),
        encode(AudienceEntered(audience_id="vip", email=stray)),  # hashed to partition 1
        encode(AttributeChanged(attribute_id="ltv", email=mine, value="not a number")),
        encode(AudienceEntered(audience_id="vip", email=mine)),
    ]:
        await rig.storage.changes.append_raw(0, {EVENT_FIELD: raw})
    await rig.storage.changes.append_raw(0, {b"x" * 10: b"y" * 70_000})  # oversize: unread
    assert await router.step(block=False) == 6
    assert await rig.inbox("one") == [[(mine, "a:vip", "true")]]
    reasons = sorted(letter.reason for letter in await rig.storage.dead.list())
    assert len(reasons) == 5 and router.stats.dead == 5
    assert any("not a JSON object" in r or "JSON" in r for r in reasons)
    assert any("unknown audience 'nope'" in r for r in reasons)
    assert any("belongs to partition 1, not 0" in r for r in reasons)
    assert any("ltv" in r for r in reasons)
    assert any("parked unread" in r for r in reasons)
    assert await rig.storage.changes.backlog(0, GROUP) == 0


class FlakyInboxes(MemoryInboxes):
    """Inboxes whose next delivery fails, as when Redis goes away for a moment."""

    failures = 1

    async def deliver(
        self,
        payloads: Mapping[str, bytes],
        *,
        letters: Sequence[DeadLetter] = (),
        drop: Iterable[str] = (),
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Redis went away for a moment")
        await super().deliver(payloads, letters=letters, drop=drop)


class FlakyStorage(MemoryStorage):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(Keys("unit"), clock=clock.now)
        self.flaky = FlakyInboxes(self.space, self.keys, self.dead)

    @property
    def inboxes(self) -> FlakyInboxes:
        return self.flaky


async def test_a_failed_delivery_is_redone_first_nothing_lost_nothing_reordered() -> None:
    clock = FakeClock(START)
    rig = Rig(storage=FlakyStorage(clock))
    await rig.setup("one")
    router = rig.router(count=2)
    await router.start()
    await rig.publish(*(AudienceEntered(audience_id="vip", email=f"c{i}@x.com") for i in range(3)))
    try:
        await router.step(block=False)
    except ConnectionError:
        pass
    else:
        raise AssertionError("the failing delivery must fail the step")
    assert await rig.storage.changes.backlog(0, GROUP) == 3  # nothing acknowledged
    await rig.publish(AudienceEntered(audience_id="vip", email="late@x.com"))
    while await router.step(block=False):
        pass
    emails = [c[0] for entry in await rig.inbox("one") for c in entry]
    assert emails == ["c0@x.com", "c1@x.com", "c2@x.com", "late@x.com"]


async def test_acknowledged_entries_are_trimmed_about_once_a_trim_interval() -> None:
    rig = Rig()
    await rig.setup("one")
    router = rig.router(trim_every_s=1.0)
    await router.start()
    await rig.publish(*(AudienceEntered(audience_id="vip", email=f"c{i}@x.com") for i in range(5)))
    await router.step(block=False)  # trims first (nothing acked yet), then routes all five
    assert await rig.storage.changes.length(0) == 5
    await router.step(block=False)  # within the interval: no trim
    assert await rig.storage.changes.length(0) == 5
    rig.clock.advance(1.0)
    await router.step(block=False)
    assert await rig.storage.changes.length(0) == 0 and router.stats.trimmed == 5


async def test_a_retention_keeps_acknowledged_entries_that_long() -> None:
    rig = Rig()
    await rig.setup("one")
    router = rig.router(trim_every_s=0.0, change_retention_s=60.0)
    await router.start()
    await rig.publish(AudienceEntered(audience_id="vip", email="ada@x.com"))
    await router.step(block=False)
    rig.clock.advance(30)
    await router.step(block=False)
    assert await rig.storage.changes.length(0) == 1
    rig.clock.advance(31)
    await router.step(block=False)
    assert await rig.storage.changes.length(0) == 0
