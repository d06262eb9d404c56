"""The whole path in one process: a change entry, a Router, an ActivationCore and its token's
GovernorCore, HubSpot (the emulator's ASGI app). MemoryStorage and one FakeClock: no Ray, no
Redis, no socket, no sleeping. Crashes and restarts are dropping a core and making a new one
on the same storage, as Ray reruns an actor's constructor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors.activation import ActivationCore
from actors.messages import Change, encode_changes
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
)
from tests.unit.cores import World

VIP, LTV = "raptor_vip", "raptor_lifetime_value"


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    await w.start()
    await w.publish(
        AudienceDefined(audience_id="vip", name="VIP"),
        AttributeDefined(attribute_id="ltv", name="Lifetime value", value_type="number"),
    )
    await w.create("act1", audiences=["vip"], attributes=["ltv"])
    yield w
    await w.close()


def pending(core: ActivationCore, email: str) -> dict[str, str]:
    """What the Coalescer holds to send for one contact: property -> value."""
    return {name: value for name, (value, _) in core.coalescer.pending_values(email).items()}


def entered(email: str) -> AudienceEntered:
    return AudienceEntered(audience_id="vip", email=email)


def left(email: str) -> AudienceLeft:
    return AudienceLeft(audience_id="vip", email=email)


async def test_a_change_goes_from_its_stream_to_hubspot(world: World) -> None:
    router = world.router()
    await router.start()
    core = world.activation("act1")
    await core.recover()
    await world.publish(
        entered("ada@example.com"),
        entered("bob@example.com"),
        left("bob@example.com"),
        AttributeChanged(attribute_id="ltv", email="ada@example.com", value=1234.5),
    )
    assert await world.route(router) == 4
    await world.sync(core)

    assert world.value("ada@example.com", VIP) == "true"
    assert world.value("ada@example.com", LTV) == "1234.5"
    assert world.value("bob@example.com", VIP) == "false"  # an enter then a leave ends "false"
    assert world.hubspot.dump_properties()  # the schema was made before any value went out
    status = core.status()
    assert (status["state"], status["pending"], status["written"]) == ("running", 0, 2)
    assert await world.storage.changes.backlog(0, "routers") == 0


async def test_members_before_the_activation_existed_are_backfilled(world: World) -> None:
    router = world.router()
    await router.start()
    await world.publish(*(entered(f"c{i}@example.com") for i in range(250)))
    await world.route(router)  # routed to act1's inbox and projected
    await world.create("act2", audiences=["vip"])  # created after: its backfill sends them
    late = world.activation("act2")
    await late.recover()
    await world.sync(late)
    assert late.state.backfills["a:vip"].loaded and late.state.backfills["a:vip"].total == 250
    assert sum(1 for p in world.contacts().values() if p.get(VIP) == "true") == 250
    assert late.status()["backfills"]["a:vip"]["done"] == 250


async def test_a_restart_resumes_from_the_snapshot_and_the_inbox_after_it(world: World) -> None:
    router = world.router()
    await router.start()
    first = world.activation("act1")
    await first.recover()
    await world.publish(entered("ada@example.com"))
    await world.route(router)
    await world.sync(first)
    assert world.value("ada@example.com", VIP) == "true"

    # Taken into the Coalescer, not yet sent, then checkpointed: the snapshot holds them.
    await world.publish(left("ada@example.com"), entered("bob@example.com"))
    await world.route(router)
    await first._read_inbox()
    await first.checkpoint()
    assert await world.storage.inboxes.length("act1") == 1  # trimmed to what the snapshot covers
    # Routed after the checkpoint: only the inbox holds it. Then the actor dies.
    await world.publish(entered("cat@example.com"))
    await world.route(router)
    sent_before = list(world.upserted)
    del first

    again = world.activation("act1")
    await again.recover()
    assert pending(again, "ada@example.com") == {VIP: "false"}
    assert pending(again, "bob@example.com") == {VIP: "true"}
    assert pending(again, "cat@example.com") == {VIP: "true"}
    await world.sync(again)
    assert {
        e: world.value(e, VIP) for e in ("ada@example.com", "bob@example.com", "cat@example.com")
    } == {
        "ada@example.com": "false",
        "bob@example.com": "true",
        "cat@example.com": "true",
    }
    # What HubSpot had acknowledged before the checkpoint is not sent again.
    assert sorted(world.upserted[len(sent_before) :]) == [
        "ada@example.com",
        "bob@example.com",
        "cat@example.com",
    ]


async def test_a_restart_before_any_checkpoint_replays_the_inbox_and_hubspot_ends_the_same(
    world: World,
) -> None:
    router = world.router()
    await router.start()
    first = world.activation("act1")
    await first.recover()
    await world.publish(entered("ada@example.com"), entered("bob@example.com"))
    await world.route(router)
    await world.sync(first)
    del first  # dies before its first checkpoint: no snapshot

    await world.publish(left("ada@example.com"))
    await world.route(router)
    again = world.activation("act1")
    await again.recover()  # the whole inbox again: resending is harmless ("set to value")
    await world.sync(again)
    assert world.value("ada@example.com", VIP) == "false"
    assert world.value("bob@example.com", VIP) == "true"
    assert world.upserted.count("bob@example.com") == 2  # at least once, by design


async def test_a_router_that_dies_mid_step_loses_nothing_and_sends_nothing_twice(
    world: World,
) -> None:
    router = world.router(count=2)
    await router.start()
    await world.publish(*(entered(f"c{i}@example.com") for i in range(5)))
    await router.step(block=False)  # two entries delivered to the inbox and acked ...
    await router._consumer.read(block=False)  # ... two more read, never delivered: it dies
    del router

    heir = world.router(count=2)  # the same consumer name after the restart
    await heir.start()
    await world.route(heir)
    core = world.activation("act1")
    await core.recover()
    await world.sync(core)
    assert sorted(world.upserted) == sorted(f"c{i}@example.com" for i in range(5))
    assert await world.storage.changes.backlog(0, "routers") == 0


async def test_an_inbox_entry_that_does_not_decode_is_parked_and_the_rest_goes_on(
    world: World,
) -> None:
    core = world.activation("act1")
    await core.recover()
    good = encode_changes([Change("ada@example.com", "a:vip", "true", 1)])
    await world.storage.inboxes.deliver({"act1": b"\xc1 not msgpack"})
    await world.storage.inboxes.deliver({"act1": good})
    await world.sync(core)
    [letter] = await world.storage.dead.list()
    assert "inbox entry does not decode" in letter.reason
    assert letter.stream == world.storage.keys.inbox("act1")
    assert world.value("ada@example.com", VIP) == "true"


async def test_status_is_published_with_a_time_to_live(world: World) -> None:
    core = world.activation("act1")
    await core.recover()
    await core.publish_status()
    key = world.storage.keys.activation_status("act1")
    assert b'"state":"running"' in (await world.storage.status.get(key) or b"")
    world.clock.advance(301)
    assert await world.storage.status.get(key) is None
