"""A running hubsync for integration tests: the real actors on the shared Ray, a fresh namespace
(Redis keys and Ray namespace) per test, the emulator over HTTP, and helpers to drive it."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ray

from actors.shells import Settings, supervisor_actor
from crm.emulator import EmulatorServer
from crm.tokens import token_fingerprint
from events.activations import Activations
from events.connection import connect
from events.model import (
    ActivationCreated,
    AttributeChanged,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
    ControlEvent,
)
from events.secrets import Sealer
from events.streams import Keys, Publisher, ensure_partitions
from scheduler import DampingPolicy


def redis_servers_in(directory: Path) -> list[int]:
    """Pids of redis-server processes working in ``directory`` (Redis chdirs to its --dir and
    rewrites its command line, so the working directory is what tells)."""
    import psutil

    found = []
    for process in psutil.process_iter(["name"]):
        try:
            if process.info["name"] == "redis-server" and process.cwd() == str(directory.resolve()):
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def scenario(
    seed: int, contacts: int, events: int, prefix: str = "p"
) -> tuple[list[CdpEvent], dict[str, dict[str, str]]]:
    """Random flips of audience "aud" and values of the number attribute "score", and what
    HubSpot must hold at the end, computed independently of hubsync."""
    rng = random.Random(seed)
    out: list[CdpEvent] = []
    expected: dict[str, dict[str, str]] = {}
    for _ in range(events):
        email = f"{prefix}{rng.randrange(contacts)}@example.com"
        if rng.random() < 0.7:
            entered = rng.random() < 0.5
            out.append(
                (AudienceEntered if entered else AudienceLeft)(audience_id="aud", email=email)
            )
            expected.setdefault(email, {})["raptor_audience"] = "true" if entered else "false"
        else:
            score = rng.randrange(1000)
            out.append(AttributeChanged(attribute_id="score", email=email, value=score))
            expected.setdefault(email, {})["raptor_score"] = str(score)
    return out, expected


class Hubsync:
    def __init__(
        self,
        redis_url: str,
        emulator: EmulatorServer,
        secret_key: str,
        *,
        partitions: int = 2,
        linger_ms: int = 100,
        actor_resource: str | None = None,
        damping: DampingPolicy | None = None,
    ) -> None:
        self.namespace = f"t{uuid.uuid4().hex[:10]}"
        self.settings = Settings(
            redis_url,
            self.namespace,
            partitions,
            linger_ms,
            actor_resource=actor_resource,
            damping=damping,
        )
        self.keys = Keys(self.namespace)
        self.emulator = emulator
        self.redis = connect(redis_url)
        self.sealer = Sealer(secret_key)
        self.supervisor: Any = None

    async def start(self) -> None:
        # The explicit step `hubsync up` takes: fix the count before anything publishes.
        await ensure_partitions(self.redis, self.keys, self.settings.partitions)
        self.supervisor = supervisor_actor(self.settings)
        await self.supervisor.ready.remote()

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.shutdown.remote()
            ray.kill(self.supervisor, no_restart=True)
        await self.redis.aclose()

    async def publish(self, events: Iterable[CdpEvent]) -> list[str]:
        p = await ensure_partitions(self.redis, self.keys)  # fixed by start(), as `hubsync up` does
        return await Publisher(self.redis, self.keys, p).publish(events)

    async def members_projected(self, audience_id: str, count: int, timeout: float = 60.0) -> None:
        """Wait until the routers have projected ``count`` members of the audience."""
        from events.projections import Projections

        projections = Projections(self.redis, self.keys)
        deadline = time.monotonic() + timeout
        while await projections.count_members(audience_id, self.settings.partitions) != count:
            assert time.monotonic() < deadline, (
                f"the routers did not project {count} members of {audience_id}"
            )
            await asyncio.sleep(0.1)

    async def control(self, event: ControlEvent) -> None:
        await Activations().execute(self.redis, self.keys, event)

    async def create_activation(
        self,
        token: str,
        *,
        audiences: Iterable[str] = (),
        attributes: Iterable[str] = (),
        plan: str = "starter",
        mode: str = "upsert",
        name: str | None = None,
        api_version: str = "2026-03",
    ) -> str:
        activation_id = f"act{uuid.uuid4().hex[:8]}"
        await self.control(
            ActivationCreated(
                activation_id=activation_id,
                name=name or activation_id,
                token_sealed=self.sealer.seal(
                    token, activation_id=activation_id, base_url=self.emulator.url
                ),
                token_fingerprint=token_fingerprint(token),
                base_url=self.emulator.url,
                api_version=api_version,  # type: ignore[arg-type]
                plan=plan,
                mode=mode,
                audiences=tuple(audiences),
                attributes=tuple(attributes),  # type: ignore[arg-type]
            )
        )
        return activation_id

    def actor(self, kind: str, ident: str | int = "") -> Any:
        return ray.get_actor(
            kind if kind == "supervisor" else f"{kind}:{ident}", namespace=self.namespace
        )

    async def wait_actor(self, kind: str, ident: str | int = "", timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.actor(kind, ident)
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def hubspot(self) -> dict[str, dict[str, str]]:
        """email -> properties, as the emulator holds them now."""
        return self.emulator.admin.contact_properties()

    async def until(
        self,
        check: Callable[[], Any],
        *,
        timeout: float = 60.0,
        every: float = 0.25,
        what: str = "",
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await asyncio.to_thread(check)
            if last:
                return last
            await asyncio.sleep(every)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what or check}; last: {str(last)[:500]}"
        )
