"""Operators' commands against a running hubsync: dry run, verify, resync."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from click.testing import CliRunner

from events.model import AudienceDefined, AudienceEntered
from hubsync.cli import main
from tests.integration.conftest import SECRET_KEY
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration


async def cli(hubsync: Hubsync, *args: str) -> tuple[int, str]:
    env = {
        "HUBSYNC_REDIS_URL": hubsync.settings.redis_url,
        "HUBSYNC_NAMESPACE": hubsync.namespace,
        "HUBSYNC_SECRET_KEY": SECRET_KEY,
    }
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)
    return result.exit_code, result.output


async def test_dry_run_verify_and_resync_repair_a_hand_edited_hubspot(hubsync: Hubsync) -> None:
    await hubsync.publish([AudienceDefined(audience_id="ops", name="Ops Audience")])
    await hubsync.publish(
        [AudienceEntered(audience_id="ops", email=f"o{i}@example.com") for i in range(250)]
    )
    await hubsync.members_projected("ops", 250)

    code, out = await cli(
        hubsync,
        "activation",
        "create",
        "--name",
        "x",
        "--token-env",
        "UNUSED",
        "--audience",
        "ops",
        "--audience",
        "nope",
        "--dry-run",
        "--json",
    )
    assert code == 0, out
    plan = json.loads(out)
    assert plan["properties"][0]["name"] == "raptor_ops_audience"
    assert plan["contacts"] == {"a:ops": 250}
    assert plan["unknown"] == ["audience nope"]
    assert 3 <= plan["calls"] <= 6

    activation = await hubsync.create_activation("pat-ops", audiences=["ops"])
    await hubsync.until(
        lambda: (
            sum(1 for p in hubsync.hubspot().values() if p.get("raptor_ops_audience") == "true")
            == 250
        ),
        timeout=30,
    )
    code, out = await cli(hubsync, "activation", "verify", activation, "--json")
    assert code == 0, out
    assert json.loads(out)["differing"] == 0

    # Someone edits HubSpot by hand.
    async with httpx.AsyncClient(
        base_url=hubsync.emulator.url, headers={"Authorization": "Bearer pat-ops"}
    ) as http:
        response = await http.post(
            "/crm/v3/objects/contacts/batch/upsert",
            json={
                "inputs": [
                    {
                        "id": f"o{i}@example.com",
                        "idProperty": "email",
                        "properties": {"raptor_ops_audience": "false"},
                    }
                    for i in range(7)
                ]
            },
        )
        assert response.status_code == 200, response.text
    code, out = await cli(hubsync, "activation", "verify", activation, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["differing"] == 7
    assert report["examples"][0]["hubspot"] == {"raptor_ops_audience": "false"}

    code, out = await cli(hubsync, "activation", "verify", activation, "--fix", "--json")
    assert code == 0 and json.loads(out)["resync_requested"], out
    await hubsync.until(
        lambda: all(
            hubsync.hubspot()[f"o{i}@example.com"]["raptor_ops_audience"] == "true"
            for i in range(7)
        ),
        timeout=30,
        what="the resync to repair HubSpot",
    )
    code, out = await cli(hubsync, "activation", "verify", activation, "--json")
    assert json.loads(out)["differing"] == 0, out


async def test_resync_wait_follows_the_backfill_until_hubspot_is_in_step(hubsync: Hubsync) -> None:
    await hubsync.publish([AudienceDefined(audience_id="w", name="Waited")])
    await hubsync.publish(
        [AudienceEntered(audience_id="w", email=f"w{i}@example.com") for i in range(300)]
    )
    await hubsync.members_projected("w", 300)
    activation = await hubsync.create_activation("pat-wait", audiences=["w"])
    await hubsync.until(lambda: len(hubsync.hubspot()) == 300, timeout=30)
    before = hubsync.emulator.admin.stats()["inputs_written"]
    code, out = await cli(hubsync, "activation", "resync", activation, "--wait")
    assert code == 0, out
    assert "in step: nothing pending" in out
    assert (
        hubsync.emulator.admin.stats()["inputs_written"] - before == 300
    )  # every value re-sent once
