"""What operators do to activations, as plain async functions: the CLI and the HTTP API share them.

Each function takes a Redis client and the key layout and returns plain values or raises
`CommandRejected` (the message says what to do); nothing here prints, prompts or exits, so the
click commands (hubsync.activation_cmd) and the API handlers (hubsync.api) are thin wrappers.

Errors::

    CommandRejected           a command that does not fit the current state (events.activations)
    ConfigError               no key to seal tokens with (hubsync.config)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from events.activations import Activations, ActivationSpec, CommandRejected
from events.activations import new_activation as events_new_activation
from events.catalog import Catalog
from events.model import ActivationCreated, ControlEvent, ResyncRequested
from events.secrets import Sealer, SecretError
from events.streams import Keys

__all__ = [
    "change_activation",
    "create_activation",
    "new_activation",
    "unknown_subscriptions",
    "verify_activation",
]

"""An activation publishes its status every second; older than this, its actor is not running."""


def new_activation(
    secret_key: str,
    *,
    name: str,
    token: str,
    base_url: str,
    api_version: str,
    plan: str,
    update_only: bool,
    audiences: Sequence[str],
    attributes: Sequence[str],
) -> ActivationCreated:
    """The creation event: a fresh id, the token checked and sealed for this activation (never
    stored in clear), ids deduplicated. Raises TokenError or CommandRejected with the reason."""
    return events_new_activation(
        Sealer(secret_key),
        name=name,
        token=token,
        base_url=base_url,
        api_version=api_version,
        plan=plan,
        mode="update_only" if update_only else "upsert",
        audiences=tuple(dict.fromkeys(audiences)),
        attributes=tuple(dict.fromkeys(attributes)),
    )


async def unknown_subscriptions(
    redis: aioredis.Redis, keys: Keys, audiences: Sequence[str], attributes: Sequence[str]
) -> list[tuple[str, int, str]]:
    """(field, index, why) for every audience or attribute id the catalog does not define now."""
    catalog = Catalog()
    await catalog.refresh(redis, keys)
    out = []
    for i, audience_id in enumerate(audiences):
        if problem := catalog.audience_problem(audience_id):
            out.append(("audiences", i, problem))
    for i, attribute_id in enumerate(attributes):
        if problem := catalog.attribute_problem(attribute_id):
            out.append(("attributes", i, problem))
    return out


async def create_activation(
    redis: aioredis.Redis, keys: Keys, event: ActivationCreated
) -> list[str]:
    """Append the creation (the name must be unique); returns notes on ids not defined yet."""
    unknown = await unknown_subscriptions(redis, keys, event.audiences, event.attributes)
    await Activations().execute(redis, keys, event)
    return [why for _, _, why in unknown]


async def change_activation(
    redis: aioredis.Redis, keys: Keys, ref: str, make: Callable[[ActivationSpec], ControlEvent]
) -> tuple[ActivationSpec, list[ControlEvent]]:
    """Decide and append one command for the activation ``ref`` (id, or a unique name);
    returns the activation as it is afterwards and what was appended (nothing: a no-op)."""
    state = Activations()
    await state.refresh(redis, keys)
    spec = state.find(ref)
    appended = await state.execute(redis, keys, make(spec))
    return state.by_id.get(spec.activation_id, spec), appended


async def verify_activation(
    redis: aioredis.Redis,
    keys: Keys,
    spec: ActivationSpec,
    secret_key: str,
    *,
    rate: int = 10,
    fix: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Read the activation's values back from HubSpot at ``rate`` calls per 10 s and report the
    drift from the CDP; with ``fix``, request a resync when anything differs."""
    from hubsync.operations import expected_values, verify
    from hubsync.views import read_status

    try:
        spec.open_token(Sealer(secret_key))  # the one check the governor makes, before any call
    except SecretError as exc:
        raise CommandRejected(str(exc)) from None
    status = await read_status(redis, keys, spec.activation_id)
    if status is None or not status.properties:
        raise CommandRejected(
            "this activation has not synced anything yet: start `hubsync up` and wait for it"
        )
    catalog = Catalog()
    await catalog.refresh(redis, keys)
    expected = await expected_values(redis, keys, spec, catalog, status.properties)
    if on_progress is not None:
        on_progress(0, len(expected))
    drift = await verify(spec, secret_key, expected, calls_per_window=rate, on_progress=on_progress)
    fixed = False
    if fix and drift.differing:
        await Activations().execute(redis, keys, ResyncRequested(activation_id=spec.activation_id))
        fixed = True
    return {
        "activation_id": spec.activation_id,
        "checked": drift.checked,
        "differing": len(drift.differing),
        "missing_in_hubspot": drift.missing_in_hubspot,
        "calls": drift.calls,
        "examples": drift.differing[:20],
        "resync_requested": fixed,
    }
