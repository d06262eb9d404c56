"""Operators' repairs and previews: verify HubSpot against the CDP, plan an activation's backfill.

``verify`` reads values back from HubSpot with the activation's token, at a small share of the
token's window (its own RollingWindow, default 10 calls per 10 s) so the running service keeps
the rest, and compares them with the projections (what the CDP says now).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from actors.governor import GRANT_INTERVAL_S
from crm.client import HubSpotClient
from crm.plans import BATCH_SIZE, PLANS
from crm.properties import attribute_property, audience_property, format_value
from events.activations import ActivationSpec
from events.catalog import Catalog
from events.projections import Projections
from events.property_keys import attribute_key, audience_key
from events.secrets import Sealer
from events.streams import Keys, NotStarted, ensure_partitions
from scheduler import RollingWindow, SystemClock

__all__ = ["Drift", "Plan", "expected_values", "plan_activation", "verify"]


@dataclass
class Drift:
    checked: int = 0
    differing: list[dict[str, Any]] = field(default_factory=list)
    missing_in_hubspot: int = 0
    calls: int = 0


async def expected_values(
    redis: aioredis.Redis, keys: Keys, spec: ActivationSpec, catalog: Catalog, names: dict[str, str]
) -> dict[str, dict[str, str]]:
    """email -> {property: value} as the CDP says now (members "true", attribute values)."""
    partitions = await ensure_partitions(redis, keys)
    projections = Projections(redis, keys)
    expected: dict[str, dict[str, str]] = {}
    for audience_id in spec.audiences:
        name = names.get(audience_key(audience_id))
        if name is None:
            continue
        async for page in projections.members(audience_id, partitions):
            for member in page:
                expected.setdefault(member.email, {})[name] = "true"
    for attribute_id in spec.attributes:
        name = names.get(attribute_key(attribute_id))
        definition = catalog.attributes.get(attribute_id)
        if name is None or definition is None:
            continue
        async for rows in projections.values(attribute_id, partitions):
            for row in rows:
                text = format_value(definition.value_type, row.value, options=definition.options)
                expected.setdefault(row.email, {})[name] = text
    return expected


async def verify(
    spec: ActivationSpec,
    secret_key: str,
    expected: dict[str, dict[str, str]],
    *,
    calls_per_window: int = 10,
    on_progress: Callable[[int, int], None] | None = None,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> Drift:
    """Read every expected contact back from HubSpot, 100 per call, and list the differences."""
    token = spec.open_token(Sealer(secret_key))
    window = RollingWindow(calls_per_window, GRANT_INTERVAL_S)
    clock = SystemClock()

    async def paced() -> None:
        while (wait := window.reserve(clock.now())) > 0:
            await sleep(wait)

    drift = Drift()
    emails = sorted(expected)
    properties = sorted({p for values in expected.values() for p in values})
    async with HubSpotClient(
        token,
        base_url=spec.base_url,
        api_version=spec.api_version,
        before_request=paced,
    ) as client:
        for start in range(0, len(emails), 100):
            chunk = emails[start : start + 100]
            result = await client.read_contacts_by_email(chunk, properties)
            drift.calls += 1
            for email in chunk:
                record = result.found.get(email)
                if record is None:
                    drift.missing_in_hubspot += 1
                    drift.differing.append(
                        {"email": email, "hubspot": None, "cdp": expected[email]}
                    )
                    continue
                wrong = {
                    p: v
                    for p, v in expected[email].items()
                    if (record.properties.get(p) or "") != v
                }
                if wrong:
                    drift.differing.append(
                        {
                            "email": email,
                            "hubspot": {p: record.properties.get(p) for p in wrong},
                            "cdp": wrong,
                        }
                    )
            drift.checked += len(chunk)
            if on_progress is not None:
                on_progress(drift.checked, len(emails))
    return drift


@dataclass
class Plan:
    properties: list[dict[str, str]]
    contacts: dict[str, int]
    calls: int
    seconds_at_limits: float
    share_of_daily_budget: float
    unknown: list[str]

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


async def plan_activation(
    redis: aioredis.Redis,
    keys: Keys,
    *,
    plan: str,
    audiences: tuple[str, ...],
    attributes: tuple[str, ...],
) -> Plan:
    """What creating this activation would do: the properties, and the backfill at the plan's limits."""
    catalog = Catalog()
    await catalog.refresh(redis, keys)
    try:
        partitions = await ensure_partitions(redis, keys)
    except NotStarted:
        partitions = 0  # before the first `hubsync up` nothing is projected: no contacts yet
    projections = Projections(redis, keys)
    taken: set[str] = set()
    properties, contacts, unknown = [], {}, []
    for audience_id in audiences:
        definition = catalog.audiences.get(audience_id)
        if definition is None:
            unknown.append(f"audience {audience_id}")
            continue
        spec = audience_property(audience_id, definition.name, taken)
        taken.add(spec.name)
        properties.append(
            {
                "key": audience_key(audience_id),
                "name": spec.name,
                "label": spec.label,
                "type": spec.type,
                "fieldType": spec.field_type,
            }
        )
        contacts[audience_key(audience_id)] = await projections.count_members(
            audience_id, partitions
        )
    for attribute_id in attributes:
        attribute = catalog.attributes.get(attribute_id)
        if attribute is None:
            unknown.append(f"attribute {attribute_id}")
            continue
        spec = attribute_property(
            attribute_id, attribute.name, attribute.value_type, attribute.options or (), taken
        )
        taken.add(spec.name)
        properties.append(
            {
                "key": attribute_key(attribute_id),
                "name": spec.name,
                "label": spec.label,
                "type": spec.type,
                "fieldType": spec.field_type,
            }
        )
        contacts[attribute_key(attribute_id)] = await projections.count_values(
            attribute_id, partitions
        )
    per_window, per_day = PLANS[plan].per_window, PLANS[plan].daily
    # Upper bound: a contact in several audiences/attributes rides in one input when they coalesce.
    calls = (
        math.ceil(sum(contacts.values()) / BATCH_SIZE) + 2 + math.ceil(len(properties) / BATCH_SIZE)
    )
    seconds = (
        max(0.0, (calls - per_window) / per_window * GRANT_INTERVAL_S)
        if calls > per_window
        else calls * 0.05
    )
    return Plan(properties, contacts, calls, round(seconds, 1), round(calls / per_day, 6), unknown)
