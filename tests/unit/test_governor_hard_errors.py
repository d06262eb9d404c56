"""HubSpot's hard errors, on a fake clock against the emulator's ASGI app (see
test_governor_refusals for the rig): a property HubSpot refuses for every contact, inputs it
fails for now, 4xx answers resending cannot fix, 413, 423, and calls of a deleted activation."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from actors.governor import REFUSED_ATTEMPTS, GovernorCore
from actors.governor_port import ActivationGone
from actors.messages import WriteReport
from crm.emulator import EmulatorConfig
from crm.properties import PropertySpec, attribute_property, audience_property
from events.model import ActivationDeleted, encode
from scheduler import Lane
from tests.unit.test_governor_refusals import Rig

VIP = audience_property("vip", "VIP")
GONE = audience_property("gone", "Gone")
TIER = attribute_property("tier", "Tier", "enumeration", ("gold", "silver"))
SCORE = attribute_property("score", "Score", "number")
WHOLE_BATCH = EmulatorConfig(open_auth=True, email_upsert_errors="whole_batch")


@pytest.fixture
async def make() -> Any:
    made: list[Rig] = []

    async def build(*specs: PropertySpec, config: EmulatorConfig | None = None) -> Rig:
        r = Rig(config=config)
        made.append(r)
        await r.create()
        assert await r.core.ensure_schema("act1", list(specs)) == {}
        r.state.request_log.clear()
        return r

    yield build
    for r in made:
        await r.close()


def writes(r: Rig) -> list[str]:
    return [status for _, op, status in r.log() if op == "contacts_batch_upsert"]


async def upsert(r: Rig, contacts: list[tuple[str, dict[str, str]]]) -> WriteReport:
    return await r.core.upsert("act1", Lane.BACKFILL, contacts)


def hubspot(r: Rig) -> dict[str, dict[str, str]]:
    return {c["properties"]["email"]: c["properties"] for c in r.state.dump_contacts()}


@pytest.mark.parametrize("config", [None, WHOLE_BATCH], ids=["207", "400"])
async def test_a_property_archived_in_hubspot_is_reported_and_the_rest_written_in_two_calls(
    make: Any, config: EmulatorConfig | None
) -> None:
    r = await make(VIP, GONE, config=config)
    r.state.properties[GONE.name]["archived"] = True  # someone archived it in HubSpot
    contacts = [(f"c{i}@example.com", {VIP.name: "true", GONE.name: "true"}) for i in range(100)]
    report = await upsert(r, contacts)
    assert list(report.property_problems) == [GONE.name]
    assert "PROPERTY_DOESNT_EXIST" in report.property_problems[GONE.name]
    assert [o.status for o in report.outcomes] == ["created"] * 100
    assert len(writes(r)) == 2  # the refusal, then the batch without the property: no splitting
    assert all(p[VIP.name] == "true" and GONE.name not in p for p in hubspot(r).values())


async def test_options_changed_in_hubspot_make_the_property_a_problem_not_the_contacts(
    make: Any,
) -> None:
    r = await make(VIP, TIER, config=WHOLE_BATCH)
    r.state.properties[TIER.name]["options"] = [{"label": "Bronze", "value": "bronze"}]
    contacts = [(f"t{i}@example.com", {VIP.name: "true", TIER.name: "gold"}) for i in range(10)]
    report = await upsert(r, contacts)
    assert "INVALID_OPTION" in report.property_problems[TIER.name]
    assert {o.status for o in report.outcomes} == {"created"} and len(writes(r)) == 2


async def test_a_contact_with_only_the_refused_property_is_put_back_not_parked(make: Any) -> None:
    r = await make(VIP, GONE)
    r.state.properties[GONE.name]["archived"] = True
    report = await upsert(r, [("a@example.com", {GONE.name: "true"})])
    assert list(report.property_problems) == [GONE.name]
    assert [(o.key, o.status) for o in report.outcomes] == [("a@example.com", "retry")]
    assert len(writes(r)) == 1


async def test_one_bad_value_is_still_the_contacts_fault_not_the_propertys(make: Any) -> None:
    r = await make(VIP, SCORE, config=WHOLE_BATCH)
    contacts = [(f"s{i}@example.com", {VIP.name: "true", SCORE.name: str(i)}) for i in range(20)]
    contacts[7] = ("s7@example.com", {VIP.name: "true", SCORE.name: "seven"})
    report = await upsert(r, contacts)
    assert report.property_problems == {}
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert [o.key for o in failed] == ["s7@example.com"] and "INVALID_NUMBER" in failed[0].reason


async def test_an_input_hubspot_left_out_of_its_answer_is_sent_again_not_parked(
    make: Any,
) -> None:
    r = await make(VIP)
    r.faults(omit_emails=["m3@example.com"])
    contacts = [(f"m{i}@example.com", {VIP.name: "true"}) for i in range(5)]
    report = await upsert(r, contacts)
    assert [o.status for o in report.outcomes] == ["created"] * 5
    assert len(writes(r)) == 2 and "m3@example.com" in hubspot(r)


@pytest.mark.parametrize("status", [404, 409, 418])
async def test_an_unexpected_4xx_is_tried_a_few_times_then_parked_with_hubspots_answer(
    make: Any, status: int
) -> None:
    r = await make(VIP)
    r.faults(next_n={"count": 50, "status": status})
    report = await upsert(r, [(f"u{i}@example.com", {VIP.name: "true"}) for i in range(3)])
    assert {o.status for o in report.outcomes} == {"failed"}
    assert all(f"HubSpot answered {status}" in o.reason for o in report.outcomes)
    assert writes(r) == [str(status)] * REFUSED_ATTEMPTS


async def test_a_413_splits_the_batch_once_then_parks_what_is_still_too_large(make: Any) -> None:
    r = await make(VIP)
    r.faults(next_n={"count": 1, "status": 413})
    first = await upsert(r, [(f"l{i}@example.com", {VIP.name: "true"}) for i in range(10)])
    assert [o.status for o in first.outcomes] == ["created"] * 10
    assert writes(r) == ["413", "200", "200"]

    r.state.request_log.clear()
    r.faults(next_n={"count": 3, "status": 413})
    second = await upsert(r, [(f"x{i}@example.com", {VIP.name: "true"}) for i in range(10)])
    assert {o.status for o in second.outcomes} == {"failed"}
    assert "413" in second.outcomes[0].reason
    assert writes(r) == ["413", "413", "413"]  # the whole, then each half once: no more


async def test_a_423_waits_at_least_two_seconds(make: Any) -> None:
    r = await make(VIP)
    r.faults(next_n={"count": 2, "status": 423})
    report = await upsert(r, [("k@example.com", {VIP.name: "true"})])
    assert [o.status for o in report.outcomes] == ["created"]
    times = [t for t, op, _ in r.log() if op == "contacts_batch_upsert"]
    assert len(times) == 3 and all(b - a >= 2.0 for a, b in itertools.pairwise(times))


async def test_a_call_of_a_deleted_activation_never_reaches_hubspot(make: Any) -> None:
    r = await make(VIP)
    core: GovernorCore = r.core
    await upsert(r, [("w@example.com", {VIP.name: "true"})])  # warm: the budget is known
    window = core.budget.window
    while window.reserve(r.clock.now()) == 0.0:
        pass  # the window is full: the next call waits for a permit
    waiting = asyncio.get_running_loop().create_task(
        upsert(r, [("late@example.com", {VIP.name: "true"})])
    )
    for _ in range(3):
        await asyncio.sleep(0)
    await r.storage.activations.append(encode(ActivationDeleted(activation_id="act1")))
    with pytest.raises(ActivationGone):
        await waiting
    with pytest.raises(ActivationGone):  # and any later call is refused before its permit
        await upsert(r, [("later@example.com", {VIP.name: "true"})])
    assert writes(r) == ["200"] and "late@example.com" not in hubspot(r)
