"""Actors die; nothing is lost. Kill them mid-stream and compare HubSpot with the expected state
computed independently from the published events."""

from __future__ import annotations

import asyncio
import random

import pytest
import ray

from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
)
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration


def scenario(seed: int, contacts: int, events: int) -> tuple[list[CdpEvent], dict[str, dict[str, str]]]:
    """Random flips and attribute changes, and what HubSpot must hold at the end."""
    rng = random.Random(seed)
    out: list[CdpEvent] = []
    expected: dict[str, dict[str, str]] = {}
    for _ in range(events):
        email = f"p{rng.randrange(contacts)}@example.com"
        if rng.random() < 0.7:
            entered = rng.random() < 0.5
            out.append((AudienceEntered if entered else AudienceLeft)(audience_id="aud", email=email))
            expected.setdefault(email, {})["raptor_audience"] = "true" if entered else "false"
        else:
            score = rng.randrange(1000)
            out.append(AttributeChanged(attribute_id="score", email=email, value=score))
            expected.setdefault(email, {})["raptor_score"] = str(score)
    return out, expected


async def run_with_kills(hubsync: Hubsync, kill: str, seed: int) -> None:
    await hubsync.publish([AudienceDefined(audience_id="aud", name="Audience"),
                           AttributeDefined(attribute_id="score", name="Score", value_type="number")])
    activation = await hubsync.create_activation("pat-crash", audiences=["aud"], attributes=["score"])
    events, expected = scenario(seed, contacts=400, events=4_000)
    rng = random.Random(seed)
    chunks = [events[i:i + 500] for i in range(0, len(events), 500)]
    for n, chunk in enumerate(chunks):
        await hubsync.publish(chunk)
        if n in (2, 5):
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            target = await (hubsync.wait_actor("activation", activation) if kill == "activation" else hubsync.wait_actor("router", rng.randrange(2)))
            ray.kill(target, no_restart=False)  # a crash: Ray restarts it, the constructor recovers

    def converged() -> bool:
        hubspot = hubsync.hubspot()
        return all(
            hubspot.get(email, {}).get(prop) == value
            for email, props in expected.items()
            for prop, value in props.items()
        )

    try:
        await hubsync.until(converged, timeout=90, every=0.5, what="HubSpot to equal the expected state")
    except AssertionError:
        hubspot = hubsync.hubspot()
        wrong = [(e, p, v, hubspot.get(e, {}).get(p)) for e, ps in expected.items() for p, v in ps.items() if hubspot.get(e, {}).get(p) != v]
        raise AssertionError(f"seed {seed}: {len(wrong)} values differ, e.g. {wrong[:5]}") from None


@pytest.mark.parametrize("seed", [11])
async def test_a_killed_activation_actor_loses_nothing(hubsync: Hubsync, seed: int) -> None:
    await run_with_kills(hubsync, "activation", seed)


@pytest.mark.parametrize("seed", [12])
async def test_a_killed_router_loses_nothing(hubsync: Hubsync, seed: int) -> None:
    await run_with_kills(hubsync, "router", seed)
