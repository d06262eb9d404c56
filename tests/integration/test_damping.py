"""Flap damping end to end: contacts flipping in rounds are written once, as they settled, and
contacts that end where they started are not written at all (real Redis, Ray, emulator)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from crm.emulator import EmulatorServer
from events.model import AudienceDefined, AudienceEntered, AudienceLeft
from scheduler import DampingPolicy
from tests.integration.conftest import SECRET_KEY
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration

CONTACTS = 100
ROUNDS = 4


@pytest.fixture
async def damped(
    ray_session: None, redis_url: str, emulator: EmulatorServer
) -> AsyncIterator[Hubsync]:
    emulator.admin.reset()
    running = Hubsync(redis_url, emulator, SECRET_KEY, linger_ms=250, damping=DampingPolicy())
    await running.start()
    yield running
    await running.stop()


async def test_contacts_flipping_in_rounds_are_written_once_settled(damped: Hubsync) -> None:
    hubsync = damped
    await hubsync.publish([AudienceDefined(audience_id="vip", name="VIP")])
    activation = await hubsync.create_activation("pat-damp", audiences=["vip"])
    emails = [f"d{i}@example.com" for i in range(CONTACTS)]
    await hubsync.publish([AudienceEntered(audience_id="vip", email=e) for e in emails])
    await hubsync.until(
        lambda: all(hubsync.hubspot().get(e, {}).get("raptor_vip") == "true" for e in emails),
        timeout=30,
        what="the baseline in HubSpot",
    )
    await asyncio.sleep(1.0)
    actor = hubsync.actor("activation", activation)
    written_before = (await actor.status.remote())["written"]
    stamps_before = _write_times(hubsync)

    # rounds 300 ms apart (longer than the linger): even contacts flip in every round (net
    # unchanged), odd ones skip the last (net: they left)
    for r in range(ROUNDS):
        kind = AudienceLeft if r % 2 == 0 else AudienceEntered
        await hubsync.publish(
            [
                kind(audience_id="vip", email=e)
                for i, e in enumerate(emails)
                if i % 2 == 0 or r < ROUNDS - 1
            ]
        )
        await asyncio.sleep(0.3)

    def settled() -> bool:
        c = hubsync.hubspot()
        return all(
            c.get(e, {}).get("raptor_vip") == ("true" if i % 2 == 0 else "false")
            for i, e in enumerate(emails)
        )

    await hubsync.until(settled, timeout=40, what="the settled state of every contact")
    for _ in range(200):  # nothing pending, held or in flight any more
        status = await actor.status.remote()
        if status["pending"] == 0:
            break
        await asyncio.sleep(0.2)
    assert status["pending"] == 0, status
    assert status["written"] - written_before <= CONTACTS // 2 * 1.2
    stamps_after = _write_times(hubsync)
    rewritten = [
        e for i, e in enumerate(emails) if i % 2 == 0 and stamps_after[e] != stamps_before[e]
    ]
    assert len(rewritten) <= CONTACTS // 2 * 0.05, rewritten


def _write_times(hubsync: Hubsync) -> dict[str, float]:
    """email -> when the emulator last wrote its audience property."""
    return {
        c["properties"]["email"]: c["written_at"]["raptor_vip"]
        for c in hubsync.emulator.admin.contacts(with_timestamps=True)
        if "raptor_vip" in c.get("written_at", {})
    }


async def test_a_killed_activation_with_held_contacts_loses_nothing(damped: Hubsync) -> None:
    # random flips (many contacts held at any moment), the activation actor killed mid-stream
    # three times: after every restart (snapshot + inbox) HubSpot still ends right
    import random

    import ray

    from events.model import AttributeDefined
    from tests.integration.harness import scenario
    from tests.integration.test_restarts import converge

    hubsync = damped
    await hubsync.publish(
        [
            AudienceDefined(audience_id="aud", name="Audience"),
            AttributeDefined(attribute_id="score", name="Score", value_type="number"),
        ]
    )
    activation = await hubsync.create_activation(
        "pat-dkill", audiences=["aud"], attributes=["score"]
    )
    events, expected = scenario(31, contacts=300, events=3_000)
    rng = random.Random(31)
    for n in range(0, len(events), 300):
        await hubsync.publish(events[n : n + 300])
        await asyncio.sleep(0.1)
        if n // 300 in (2, 5, 8):
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            ray.kill(await hubsync.wait_actor("activation", activation), no_restart=False)
    await converge(hubsync, expected, 31)
