"""Spare workers: with HUBSYNC_SPARE_WORKERS, a new activation and its token's RateGovernor run in
worker processes that were waiting idle before the activation was created, not in processes
started for them (real local Ray, real Redis, the emulator over HTTP)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import psutil
import pytest

from bench.harness import idle_ray_workers
from crm.emulator import EmulatorServer
from crm.tokens import token_fingerprint
from events.model import AudienceDefined, AudienceEntered
from tests.integration.conftest import SECRET_KEY
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration

TOKEN = "pat-na1-spare-workers"


def idle_since(started: float) -> set[int] | None:
    """Two or more idle Ray workers started after `started`: this service's spares (the shared
    session's Ray also keeps idle workers of its own, started before, and earlier tests may have
    left some)."""
    idle = set()
    for pid in idle_ray_workers():
        try:
            if psutil.Process(pid).create_time() > started:
                idle.add(pid)
        except psutil.Error:
            continue
    return idle if len(idle) >= 2 else None


@pytest.fixture
async def with_spares(
    ray_session: None, redis_url: str, emulator: EmulatorServer
) -> AsyncIterator[tuple[Hubsync, float]]:
    emulator.admin.reset()
    running = Hubsync(redis_url, emulator, SECRET_KEY, spare_workers=2)
    started = time.time()
    await running.start()
    yield running, started
    await running.stop()


async def test_a_new_activation_and_its_governor_start_in_spare_workers(
    with_spares: tuple[Hubsync, float],
) -> None:
    hubsync, started = with_spares
    await hubsync.publish(
        [
            AudienceDefined(audience_id="sp", name="Spares"),
            AudienceEntered(audience_id="sp", email="ada@example.com"),
        ]
    )
    spares = await hubsync.until(lambda: idle_since(started), timeout=60, what="two spare workers")

    activation_id = await hubsync.create_activation(TOKEN, audiences=["sp"])
    activation = await hubsync.wait_actor("activation", activation_id)
    governor = await hubsync.wait_actor("governor", token_fingerprint(TOKEN))

    pids = {(await actor.where.remote())["pid"] for actor in (activation, governor)}
    assert len(pids) == 2
    assert pids <= spares, f"started in {pids}, spares were {spares}"
    await hubsync.until(
        lambda: hubsync.hubspot().get("ada@example.com"), what="the member in HubSpot"
    )
