"""Read-only views of hubsync's state, shared by the CLI, the HTTP API and the demo: what a
person or a program may see of an activation (never its token), and the live status the actors
publish in Redis (reading it needs only Redis, not Ray).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from events.activations import Activations, ActivationSpec
from events.secrets import is_legacy
from events.streams import Keys

__all__ = [
    "STALE_AFTER_S",
    "collect",
    "describe",
    "live_status",
    "read_governor_status",
    "read_status",
]

STALE_AFTER_S = 30.0  # an activation's status older than this: its actor is not running


def describe(spec: ActivationSpec) -> dict[str, Any]:
    """What a person or script may see of an activation: never the token, sealed or not."""
    return {
        "activation_id": spec.activation_id,
        "name": spec.name,
        "token_fingerprint": spec.token_fingerprint,
        "base_url": spec.base_url,
        "api_version": spec.api_version,
        "plan": spec.plan,
        "mode": spec.mode,
        "audiences": sorted(spec.audiences),
        "attributes": sorted(spec.attributes),
        "paused": spec.paused,
        "pause_reason": spec.pause_reason,
        "token_sealing": "legacy: run `hubsync activation reseal`"
        if is_legacy(spec.token_sealed)
        else "bound to this activation",
    }


def live_status(
    spec: ActivationSpec, raw: dict[str, Any] | None, now: float | None = None
) -> dict[str, Any]:
    """The actor's published status with ``state`` computed for a reader: "paused" from the
    control stream (authoritative), "stale" when the status is older than STALE_AFTER_S (its
    actor is not running), "starting" before the first status, else what the actor says.
    ``reported_state`` keeps the actor's own word, ``stale`` says whether it is old."""
    now = time.time() if now is None else now
    out = dict(raw or {})
    reported = out.get("state")
    stale = raw is not None and now - float(raw.get("updated_at") or 0) > STALE_AFTER_S
    if spec.paused:
        state = "paused"
    elif stale:
        state = "stale"
    else:
        state = reported or "starting"
    out.update(state=state, stale=stale, reported_state=reported)
    return out


async def read_governor_status(
    redis: aioredis.Redis, keys: Keys, fingerprint: str
) -> dict[str, Any] | None:
    """The token's budget as its RateGovernor last published it (None: not running yet)."""
    raw = await redis.get(keys.governor_status(fingerprint))
    return json.loads(raw) if raw else None


async def read_status(
    redis: aioredis.Redis, keys: Keys, activation_id: str
) -> dict[str, Any] | None:
    raw = await redis.get(keys.activation_status(activation_id))
    return None if raw is None else json.loads(raw)


async def collect(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """One record per activation: its definition, its live status and its token's budget."""
    state = Activations()
    await state.refresh(redis, keys)
    out = []
    for spec in state.by_id.values():
        live = await read_status(redis, keys, spec.activation_id)
        raw = await redis.get(keys.governor_status(spec.token_fingerprint))
        out.append({**describe(spec), "status": live, "token": json.loads(raw) if raw else None})
    return out
