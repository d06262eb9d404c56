"""The end-to-end flow on a 3-master Redis Cluster: the documented streams keep their names,
and every multi-key operation stays inside one hash slot."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import ray

from crm.emulator import EmulatorServer
from tests.integration.conftest import SECRET_KEY
from tests.integration.harness import Hubsync, scenario
from tests.integration.test_restarts import converge, define

pytestmark = pytest.mark.integration


@pytest.fixture
async def on_cluster(
    ray_session: None, redis_cluster_url: str, emulator: EmulatorServer
) -> AsyncIterator[Hubsync]:
    emulator.admin.reset()
    running = Hubsync(redis_cluster_url, emulator, SECRET_KEY, partitions=4)
    await running.start()
    yield running
    await running.stop()


async def test_the_pipeline_runs_on_a_redis_cluster_and_survives_a_router_crash(
    on_cluster: Hubsync,
) -> None:
    hubsync = on_cluster
    seed = 31
    await define(hubsync)
    events, expected = scenario(seed, contacts=300, events=3_000)
    rng = random.Random(seed)
    for n in range(0, len(events), 500):
        await hubsync.publish(events[n : n + 500])
        if n == 1_000:
            ray.kill(await hubsync.wait_actor("router", rng.randrange(4)), no_restart=False)
    await converge(hubsync, expected, seed)
    streams = {
        k.decode() async for k in hubsync.redis.scan_iter(match=f"{hubsync.namespace}:changes:*")
    }
    assert streams == {f"{hubsync.namespace}:changes:{p}" for p in range(4)}
    assert (
        await hubsync.redis.exists(
            f"{hubsync.namespace}:catalog", f"{hubsync.namespace}:activations"
        )
        == 2
    )
