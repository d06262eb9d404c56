"""Read-only views of hubsync's state, shared by the CLI, the HTTP API and the demo: what a
person or a program may see of an activation (never its token), and the live status the actors
publish in Redis (reading it needs only Redis, not Ray).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from actors.status import (
    ActivationStatus,
    GovernorStatus,
    decode_activation_status,
    decode_governor_status,
)
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

log = logging.getLogger("hubsync.views")

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
    spec: ActivationSpec, raw: ActivationStatus | None, now: float | None = None
) -> dict[str, Any]:
    """The actor's published status with ``state`` computed for a reader: "paused" from the
    control stream (authoritative), "stale" when the status is older than STALE_AFTER_S (its
    actor is not running), "starting" before the first status, else what the actor says.
    ``reported_state`` keeps the actor's own word, ``stale`` says whether it is old."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {} if raw is None else msgspec.to_builtins(raw)
    reported = out.get("state")
    stale = raw is not None and now - raw.updated_at > STALE_AFTER_S
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
) -> GovernorStatus | None:
    """The token's budget as its RateGovernor last published it (None: not running yet)."""
    raw = await redis.get(keys.governor_status(fingerprint))
    if not raw:
        return None
    try:
        return decode_governor_status(raw)
    except msgspec.DecodeError as exc:
        log.warning("the status of the governor of token %s does not read: %s", fingerprint, exc)
        return None


async def read_status(
    redis: aioredis.Redis, keys: Keys, activation_id: str
) -> ActivationStatus | None:
    """The activation's status as its actor last published it (None: not published yet, or
    one that does not read, which the actor replaces within a second)."""
    raw = await redis.get(keys.activation_status(activation_id))
    if raw is None:
        return None
    try:
        return decode_activation_status(raw)
    except msgspec.DecodeError as exc:
        log.warning("the status of activation %s does not read: %s", activation_id, exc)
        return None


async def collect(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """One record per activation: its definition, its live status and its token's budget."""
    state = Activations()
    await state.refresh(redis, keys)
    out = []
    for spec in state.by_id.values():
        live = await read_status(redis, keys, spec.activation_id)
        token = await read_governor_status(redis, keys, spec.token_fingerprint)
        out.append(
            {
                **describe(spec),
                "status": None if live is None else msgspec.to_builtins(live),
                "token": None if token is None else msgspec.to_builtins(token),
            }
        )
    return out
