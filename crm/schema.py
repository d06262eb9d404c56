"""The schema workflows: make hubsync's property group and properties exist in HubSpot as wanted.

Each takes a `HubSpotClient` and sends several of its one-request calls, in the order HubSpot
needs (read, then create what is missing, then patch what drifted); every request goes through
the client's hooks like any other, so the RateGovernor paces each one. Idempotent: run again, they
change nothing that already matches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Literal

from crm.client import MAX_BATCH, HubSpotClient
from crm.errors import ArchivedPropertyError, ConflictError
from crm.properties import GROUP_LABEL, GROUP_NAME, PropertySpec, is_valid_property_name
from crm.results import EnsureOutcome, EnsureResult

__all__ = ["ensure_properties", "ensure_property", "ensure_property_group"]


async def ensure_property_group(
    client: HubSpotClient,
    name: str = GROUP_NAME,
    label: str = GROUP_LABEL,
    display_order: int = -1,
) -> EnsureResult:
    """Make the property group exist with this label. 1-3 requests (GET, POST or PATCH)."""
    group = await client.read_property_group(name)
    if group is None:
        try:
            await client.create_property_group(name, label, display_order)
            return EnsureResult(name=name, outcome=EnsureOutcome.CREATED)
        except ConflictError:  # created meanwhile by someone else
            group = await client.read_property_group(name) or {}
    if group.get("label") != label:
        await client.update_property_group(name, label)
        return EnsureResult(name=name, outcome=EnsureOutcome.UPDATED, changed=("label",))
    return EnsureResult(name=name, outcome=EnsureOutcome.UNCHANGED)


async def ensure_properties(
    client: HubSpotClient,
    specs: Sequence[PropertySpec],
    *,
    on_archived: Literal["raise", "report"] = "raise",
    before_writes: Awaitable[object] | None = None,
) -> list[EnsureResult]:
    """Make each property exist and match its spec. Idempotent; several requests: batch read
    (1 per 100), batch read of archived names if some are missing, batch create of the missing,
    one PATCH per drifted property (the PATCHes at once).

    ``before_writes`` (e.g. the task making their property group) is awaited after the reads
    and before the first create or PATCH: the reads overlap it, the writes need it.

    A name found only in HubSpot's recycle bin is not re-created: with on_archived="raise" an
    ArchivedPropertyError names them (after everything else is ensured); with "report" they come
    back as EnsureOutcome.ARCHIVED.
    """
    names = [s.name for s in specs]
    for name in names:
        if not is_valid_property_name(name):
            raise ValueError(
                f"{name!r} is not a valid HubSpot internal name (lower-case letters, digits, "
                "underscores, starting with a letter)"
            )
    if len(set(names)) != len(names):
        raise ValueError("property specs must have unique names")
    by_name = {s.name: s for s in specs}
    existing = await _read(client, names, archived=False)
    missing = [n for n in names if n not in existing]
    archived = await _read(client, missing, archived=True)
    to_create = [n for n in missing if n not in archived]
    if before_writes is not None:
        await before_writes
    created: set[str] = set()
    for start in range(0, len(to_create), MAX_BATCH):
        chunk = to_create[start : start + MAX_BATCH]
        answer = await client.create_properties([by_name[n] for n in chunk])
        created |= set(answer.created)
        for name in answer.conflicts:  # created meanwhile, or archived: read which
            live = await client.read_property(name)
            if live is not None:
                existing[name] = live
            else:
                archived[name] = await client.read_property(name, archived=True) or {}
    results: dict[str, EnsureResult] = {}
    for name in names:
        if name in created:
            results[name] = EnsureResult(name=name, outcome=EnsureOutcome.CREATED)
        elif name in archived:
            results[name] = EnsureResult(name=name, outcome=EnsureOutcome.ARCHIVED)
    # Drifted properties do not depend on each other: their PATCHes go out together.
    kept = [n for n in names if n not in results]
    patched = await asyncio.gather(
        *(_reconcile(client, by_name[n], existing[n]) for n in kept), return_exceptions=True
    )
    for name, result in zip(kept, patched, strict=True):
        if isinstance(result, BaseException):
            raise result
        results[name] = result
    if on_archived == "raise" and archived:
        listed = ", ".join(sorted(archived))
        raise ArchivedPropertyError(
            f"HubSpot holds these properties in its recycle bin (archived): {listed}.",
            names=sorted(archived),
            operation="ensure properties",
        )
    return [results[n] for n in names]


async def ensure_property(client: HubSpotClient, spec: PropertySpec) -> EnsureResult:
    """`ensure_properties` for one spec."""
    return (await ensure_properties(client, [spec]))[0]


async def _read(
    client: HubSpotClient, names: list[str], *, archived: bool
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(names), MAX_BATCH):
        found |= await client.read_properties(names[start : start + MAX_BATCH], archived=archived)
    return found


async def _reconcile(
    client: HubSpotClient, spec: PropertySpec, current: dict[str, Any]
) -> EnsureResult:
    patch = spec.drift(current)
    if not patch:
        return EnsureResult(name=spec.name, outcome=EnsureOutcome.UNCHANGED)
    await client.update_property(spec.name, patch)
    return EnsureResult(name=spec.name, outcome=EnsureOutcome.UPDATED, changed=tuple(sorted(patch)))
