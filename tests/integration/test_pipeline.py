"""End to end: CDP events in Redis Streams end as property values on HubSpot contacts."""

from __future__ import annotations

import pytest

from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
)
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration


async def test_membership_and_attributes_reach_hubspot(hubsync: Hubsync) -> None:
    await hubsync.publish(
        [
            AudienceDefined(audience_id="a17", name="Abandon Basket"),
            AttributeDefined(attribute_id="ltv", name="Lifetime value", value_type="number"),
            AttributeDefined(
                attribute_id="tier",
                name="Tier",
                value_type="enumeration",
                options=["gold", "silver"],
            ),
        ]
    )
    await hubsync.create_activation("pat-1", audiences=["a17"], attributes=["ltv", "tier"])
    await hubsync.publish(
        [
            AudienceEntered(audience_id="a17", email="Ada@Example.com"),
            AudienceEntered(audience_id="a17", email="bob@example.com"),
            AttributeChanged(attribute_id="ltv", email="ada@example.com", value=1234.5),
            AttributeChanged(attribute_id="tier", email="bob@example.com", value="gold"),
            AudienceLeft(audience_id="a17", email="bob@example.com"),
        ]
    )

    def synced() -> bool:
        c = hubsync.hubspot()
        return (
            c.get("ada@example.com", {}).get("raptor_abandon_basket") == "true"
            and c.get("ada@example.com", {}).get("raptor_lifetime_value") == "1234.5"
            and c.get("bob@example.com", {}).get("raptor_abandon_basket") == "false"
            and c.get("bob@example.com", {}).get("raptor_tier") == "gold"
        )

    await hubsync.until(synced, timeout=30, what="the contacts in HubSpot")
    props = hubsync.emulator.admin.properties()
    assert "raptor_smart_advisor_cdp" in str(props)


async def test_flips_end_in_the_last_state_and_are_coalesced(hubsync: Hubsync) -> None:
    await hubsync.publish([AudienceDefined(audience_id="vip", name="VIP")])
    activation = await hubsync.create_activation("pat-flip", audiences=["vip"])
    events = []
    for i in range(300):
        email = f"u{i}@example.com"
        flips = 1 + i % 7  # odd: ends in; even: ends out
        for f in range(flips):
            events.append(
                (AudienceEntered if f % 2 == 0 else AudienceLeft)(audience_id="vip", email=email)
            )
    await hubsync.publish(events)

    def expected(i: int) -> str:
        return "true" if (1 + i % 7) % 2 == 1 else "false"

    def synced() -> bool:
        c = hubsync.hubspot()
        return all(
            c.get(f"u{i}@example.com", {}).get("raptor_vip") == expected(i) for i in range(300)
        )

    await hubsync.until(synced, timeout=30, what="the last state of every contact")
    status = await hubsync.actor("activation", activation).status.remote()
    assert status["changes_in"] == len(events)
    assert status["written"] <= 300 + 50  # a contact is written about once, not once per flip
    stats = hubsync.emulator.admin.stats()
    assert stats["rate_limited"] == 0


async def test_deleting_an_audience_archives_its_property(hubsync: Hubsync) -> None:
    from events.model import AudienceDeleted

    await hubsync.publish([AudienceDefined(audience_id="gone", name="Gone Soon")])
    await hubsync.create_activation("pat-del", audiences=["gone"])
    await hubsync.publish([AudienceEntered(audience_id="gone", email="x@example.com")])
    await hubsync.until(
        lambda: hubsync.hubspot().get("x@example.com", {}).get("raptor_gone_soon") == "true",
        timeout=30,
    )
    await hubsync.publish([AudienceDeleted(audience_id="gone")])

    def archived() -> bool:
        props = hubsync.emulator.admin.properties()
        return any(
            p["name"] == "raptor_gone_soon" and p.get("archived")
            for p in props.get("properties", props.get("results", []))
        )

    await hubsync.until(archived, timeout=30, what="the property archived")


async def _members(hubsync: Hubsync, audience: str, n: int, prefix: str = "m") -> None:
    await hubsync.publish(
        [AudienceEntered(audience_id=audience, email=f"{prefix}{i}@example.com") for i in range(n)]
    )
    await hubsync.members_projected(audience, n)


async def test_a_backfill_of_20000_contacts_runs_at_the_plans_rate_and_never_exceeds_it(
    hubsync: Hubsync,
) -> None:
    await hubsync.publish([AudienceDefined(audience_id="big", name="Big Audience")])
    await _members(hubsync, "big", 20_000)
    activation = await hubsync.create_activation("pat-backfill", audiences=["big"], plan="starter")

    async def status() -> dict:
        return await hubsync.actor("activation", activation).status.remote()

    import asyncio

    for _ in range(600):
        try:
            s = await status()
            if s["backfills"].get("a:big", {}).get("done") == 20_000 and s["pending"] == 0:
                break
        except ValueError:
            pass  # the actor is not there yet
        await asyncio.sleep(0.2)
    contacts = hubsync.emulator.admin.contacts(with_timestamps=True)
    members = [c for c in contacts if c["properties"].get("raptor_big_audience") == "true"]
    assert len(members) == 20_000
    stats = hubsync.emulator.admin.stats()
    assert stats["rate_limited"] == 0
    assert stats["max_calls_in_any_window"] <= 100
    written = sorted(c["written_at"]["raptor_big_audience"] for c in members)
    # From the first write to the last: 205 calls (5 to create the property group and property)
    # need three 10-second windows; the plan's ceiling is 100 contacts x 100 calls per 10 s.
    span = written[-1] - written[0]
    rate = 20_000 / span
    print(
        f"backfill 20,000: {span:.1f}s first to last write, {rate:.0f} contacts/s, "
        f"{rate / 1000:.2f} of the starter ceiling, calls {stats['requests']}, "
        f"max calls in a window {stats['max_calls_in_any_window']}, 429s {stats['rate_limited']}"
    )
    assert rate >= 0.95 * 1000 * (200 / 205)  # schema calls carry no contacts


async def test_two_activations_on_one_token_share_it_fairly(hubsync: Hubsync) -> None:
    await hubsync.publish(
        [
            AudienceDefined(audience_id="one", name="One"),
            AudienceDefined(audience_id="two", name="Two"),
        ]
    )
    await _members(hubsync, "one", 8_000, prefix="one")
    await _members(hubsync, "two", 8_000, prefix="two")
    await hubsync.create_activation("pat-shared", audiences=["one"], name="first")
    await hubsync.create_activation("pat-shared", audiences=["two"], name="second")

    def written() -> tuple[int, int]:
        c = hubsync.hubspot()
        one = sum(1 for p in c.values() if p.get("raptor_one") == "true")
        two = sum(1 for p in c.values() if p.get("raptor_two") == "true")
        return one, two

    # Fair sharing is measured while both write: the Supervisor places each activation as soon
    # as it is created, and Ray starts worker processes a few at a time, so under load one
    # actor may start seconds before the other (a head start, not an unfair share).
    both = await hubsync.until(
        lambda: (w := written())[0] and w[1] and w, timeout=60, every=0.1, what="both writing"
    )
    one, two = await hubsync.until(
        lambda: (w := written())[0] + w[1] >= sum(both) + 4_000 and w,
        timeout=60,
        every=0.1,
        what="4,000 more contacts",
    )
    shares = (one - both[0], two - both[1])
    assert abs(shares[0] - shares[1]) <= 1_200, (both, shares)  # each got about half the calls
    await hubsync.until(
        lambda: sum(1 for p in hubsync.hubspot().values() if "true" in p.values()) == 16_000,
        timeout=60,
    )
    stats = hubsync.emulator.admin.stats()
    assert stats["max_calls_in_any_window"] <= 100
    assert stats["rate_limited"] == 0


async def test_update_only_mode_updates_existing_contacts_and_creates_none(
    hubsync: Hubsync,
) -> None:
    import httpx

    async with httpx.AsyncClient(
        base_url=hubsync.emulator.url, headers={"Authorization": "Bearer pat-upd"}
    ) as http:
        response = await http.post(
            "/crm/v3/objects/contacts/batch/create",
            json={
                "inputs": [
                    {"properties": {"email": f"known{i}@example.com"}, "associations": []}
                    for i in range(5)
                ]
            },
        )
        assert response.status_code in (200, 201), response.text
    await hubsync.publish([AudienceDefined(audience_id="upd", name="Updated Only")])
    activation = await hubsync.create_activation("pat-upd", audiences=["upd"], mode="update_only")
    await hubsync.publish(
        [AudienceEntered(audience_id="upd", email=f"known{i}@example.com") for i in range(5)]
        + [AudienceEntered(audience_id="upd", email=f"stranger{i}@example.com") for i in range(3)]
    )

    def synced() -> bool:
        c = hubsync.hubspot()
        return all(
            c.get(f"known{i}@example.com", {}).get("raptor_updated_only") == "true"
            for i in range(5)
        )

    await hubsync.until(synced, timeout=30, what="the existing contacts updated")
    status = await hubsync.actor("activation", activation).status.remote()
    assert status["not_in_hubspot"] == 3
    assert not any(email.startswith("stranger") for email in hubsync.hubspot())


async def test_metrics_reach_the_ray_metrics_endpoint(hubsync: Hubsync) -> None:
    import httpx
    import ray

    await hubsync.publish([AudienceDefined(audience_id="m", name="Measured")])
    activation = await hubsync.create_activation("pat-metrics", audiences=["m"])
    await hubsync.publish(
        [AudienceEntered(audience_id="m", email=f"q{i}@example.com") for i in range(50)]
    )
    await hubsync.until(lambda: len(hubsync.hubspot()) >= 50, timeout=30)
    port = ray._private.worker.global_worker.node.metrics_export_port
    wanted = [
        "ray_hubsync_events_in",
        "ray_hubsync_contacts_written",
        "ray_hubsync_hubspot_calls",
        "ray_hubsync_pending_contacts",
        "ray_hubsync_calls_left_window",
        "ray_hubsync_sync_lag_seconds",
    ]

    def exported() -> list[str] | None:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        missing = [name for name in wanted if name not in text]
        return None if missing or f'activation="{activation}"' not in text else wanted

    await hubsync.until(exported, timeout=60, every=2, what=f"metrics {wanted} on port {port}")
