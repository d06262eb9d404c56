"""Actors die, Redis dies; nothing is lost. Each scenario is random (its seed is in the test id
and in any failure), kills things at random moments mid-stream, and compares HubSpot with the
expected state computed independently from the published events."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import ray

from events.model import (
    AttributeDefined,
    AudienceDefined,
)
from events.redis_server import RedisServer
from tests.integration.conftest import SECRET_KEY
from tests.integration.harness import Hubsync, scenario

pytestmark = pytest.mark.integration


async def converge(
    hubsync: Hubsync, expected: dict[str, dict[str, str]], seed: int, timeout: float = 90
) -> None:
    def converged() -> bool:
        hubspot = hubsync.hubspot()
        return all(
            hubspot.get(e, {}).get(p) == v
            for e, props in expected.items()
            for p, v in props.items()
        )

    try:
        await hubsync.until(
            converged, timeout=timeout, every=0.5, what="HubSpot to equal the expected state"
        )
    except AssertionError:
        hubspot = hubsync.hubspot()
        wrong = [
            (e, p, v, hubspot.get(e, {}).get(p))
            for e, ps in expected.items()
            for p, v in ps.items()
            if hubspot.get(e, {}).get(p) != v
        ]
        raise AssertionError(f"seed {seed}: {len(wrong)} values differ, e.g. {wrong[:5]}") from None


async def define(hubsync: Hubsync) -> str:
    await hubsync.publish(
        [
            AudienceDefined(audience_id="aud", name="Audience"),
            AttributeDefined(attribute_id="score", name="Score", value_type="number"),
        ]
    )
    return await hubsync.create_activation("pat-crash", audiences=["aud"], attributes=["score"])


async def target(hubsync: Hubsync, kind: str, activation: str, rng: random.Random) -> object:
    from crm.tokens import token_fingerprint

    ident: str | int = {
        "activation": activation,
        "router": rng.randrange(hubsync.settings.partitions),
        "governor": token_fingerprint("pat-crash"),
        "supervisor": "",
    }[kind]
    return await hubsync.wait_actor(kind, ident)


@pytest.mark.parametrize(
    ("kind", "seed"), [("activation", 11), ("router", 12), ("governor", 13), ("supervisor", 14)]
)
async def test_killed_actors_restart_and_lose_nothing(
    hubsync: Hubsync, kind: str, seed: int
) -> None:
    activation = await define(hubsync)
    events, expected = scenario(seed, contacts=400, events=4_000)
    rng = random.Random(seed)
    for n in range(0, len(events), 400):
        await hubsync.publish(events[n : n + 400])
        if n // 400 in (2, 5, 8):
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            ray.kill(
                await target(hubsync, kind, activation, rng), no_restart=False
            )  # a crash: Ray restarts it
    await converge(hubsync, expected, seed)


@pytest.mark.parametrize("seed", [21])
async def test_redis_killed_mid_stream_restarts_from_its_aof_and_loses_nothing(
    ray_session: None, emulator: object, tmp_path: Path, seed: int
) -> None:
    server = RedisServer(tmp_path / "redis").start()  # AOF on, appendfsync everysec
    hubsync = Hubsync(server.url, emulator, SECRET_KEY)  # type: ignore[arg-type]
    emulator.admin.reset()  # type: ignore[attr-defined]
    await hubsync.start()
    try:
        await define(hubsync)
        events, expected = scenario(seed, contacts=300, events=3_000)
        half = len(events) // 2
        await hubsync.publish(events[:half])
        await asyncio.sleep(
            random.Random(seed).uniform(1.2, 2.5)
        )  # past the AOF's one-second fsync
        server.kill()  # SIGKILL mid-stream: whatever hubsync had not fsynced is gone
        await asyncio.sleep(0.5)
        server = RedisServer(
            tmp_path / "redis", port=server.port
        ).start()  # same data dir: replays the AOF
        await hubsync.redis.ping()
        await hubsync.publish(events[half:])
        await converge(hubsync, expected, seed, timeout=120)
    finally:
        await hubsync.stop()
        server.stop()
