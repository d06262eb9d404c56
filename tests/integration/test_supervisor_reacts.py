"""The Supervisor reacts to the control stream: a created activation gets its governor and then
its actor at once, not at the next reconcile poll (real Redis and Redis Cluster, no Ray: the
placement records what the Supervisor asks for)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from actors.supervisor import SupervisorCore
from events.model import ActivationCreated
from events.redis_backend import RedisStorage
from events.streams import Keys, append_control

pytestmark = pytest.mark.integration

POLL = 10.0  # the fallback reconcile: far longer than any reaction the test accepts
REACTION = 0.3


class RecordingPlacement:
    """The placement port without Ray: every ensure is recorded with when it happened."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def ensure_router(self, partition: int) -> None:
        pass

    def ensure_activation(self, activation_id: str) -> None:
        if activation_id not in self.running("activation"):
            self.calls.append(("activation", activation_id, time.monotonic()))

    def ensure_governor(self, fingerprint: str) -> None:
        if fingerprint not in self.running("governor"):
            self.calls.append(("governor", fingerprint, time.monotonic()))

    def running(self, kind: str) -> set[str]:
        return {ident for k, ident, _ in self.calls if k == kind}

    async def stop(self, kind: str, ident: str) -> None:
        self.calls = [c for c in self.calls if (c[0], c[1]) != (kind, ident)]


def created(activation_id: str, fingerprint: str) -> ActivationCreated:
    return ActivationCreated(
        activation_id=activation_id,
        name=activation_id,
        token_sealed=f"sealed-{activation_id}",
        token_fingerprint=fingerprint,
        base_url="http://127.0.0.1:1",
        api_version="2026-03",
        plan="starter",
        mode="upsert",
    )


async def _placed(placement: RecordingPlacement, activation_id: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while activation_id not in placement.running("activation"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"activation {activation_id} not placed within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic()


async def test_a_creation_is_placed_without_waiting_for_the_poll(
    redis: aioredis.Redis, keys: Keys
) -> None:
    placement = RecordingPlacement()
    core = SupervisorCore(RedisStorage(redis, keys), placement, partitions=1)
    stopping = False
    task = asyncio.create_task(core.run(interval=POLL, stop=lambda: stopping))
    try:
        while not core.partitions:  # the first reconcile passed; the next poll is 10 s away
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the Supervisor now waits on the control stream
        for n, activation_id in enumerate(("first", "second")):
            appended = time.monotonic()
            await append_control(redis, keys, created(activation_id, f"fp{n}"))
            placed = await _placed(placement, activation_id, REACTION)
            assert placed - appended < REACTION
    finally:
        stopping = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # The governor first: the activation's first turn finds its token's governor there.
    kinds = [(kind, ident) for kind, ident, _ in placement.calls]
    assert kinds == [
        ("governor", "fp0"),
        ("activation", "first"),
        ("governor", "fp1"),
        ("activation", "second"),
    ]
