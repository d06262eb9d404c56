"""`GET /api/v1/contacts/{email}`: "why is this person not in HubSpot as the CDP says?"

Answered live, in one place, without a per-contact history: the contact's CDP state per audience
and attribute (the projections), per activation what its status says is pending, HubSpot's values
on request (one read with the activation's token), and the dead letters naming the email."""

from __future__ import annotations

import asyncio

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from crm.properties import format_value
from events.activations import Activations, ActivationSpec
from events.catalog import Catalog as CatalogState
from events.model import (
    InvalidEvent,
    Value,
    normalise_email,
)
from events.property_keys import attribute_key, audience_key
from events.streams import ensure_partitions, partition_of
from hubsync import views
from hubsync.api import schemas as s
from hubsync.api.deadletters import read_dead_letters
from hubsync.api.protocol import (
    ApiProblem,
    Context,
    json_response,
    query_flag,
)
from hubsync.views import read_status

READ_TIMEOUT_S = 20.0  # the governor may wait for a slot in the token's window first

__all__ = ["contact", "lookup_contact"]

_VALUE = msgspec.msgpack.Decoder(tuple[int, Value])


async def contact(ctx: Context, request: Request) -> Response:
    try:
        email = normalise_email(request.path_params["email"])
    except InvalidEvent as exc:
        raise ApiProblem(400, "invalid_email", exc.reason, field="email") from None
    return json_response(await lookup_contact(ctx, email, query_flag(request, "hubspot")))


async def lookup_contact(ctx: Context, email: str, read_hubspot: bool) -> s.ContactLookup:
    """The lookup for a normalised ``email``; the API answers it as JSON, the console as a page."""
    partitions = await ensure_partitions(ctx.redis, ctx.keys, ctx.config.partitions)
    p = partition_of(email, partitions)
    cat = CatalogState()
    await cat.refresh(ctx.redis, ctx.keys)
    state = Activations()
    await state.refresh(ctx.redis, ctx.keys)
    audience_ids = sorted(
        set(cat.audiences) | {a for sp in state.by_id.values() for a in sp.audiences}
    )
    attribute_ids = sorted(
        set(cat.attributes) | {t for sp in state.by_id.values() for t in sp.attributes}
    )
    pipe = ctx.redis.pipeline(transaction=False)
    for aid in audience_ids:
        pipe.hexists(ctx.keys.members(p, aid), email)
    for tid in attribute_ids:
        pipe.hget(ctx.keys.values(p, tid), email)
    answers = await pipe.execute() if audience_ids or attribute_ids else []
    member = dict(zip(audience_ids, (bool(a) for a in answers[: len(audience_ids)]), strict=True))
    values: dict[str, Value] = {}
    for tid, raw in zip(attribute_ids, answers[len(audience_ids) :], strict=True):
        if raw is not None:
            values[tid] = _VALUE.decode(raw)[1]
    audiences = [
        s.ContactAudience(
            id=aid, name=cat.audiences[aid].name if aid in cat.audiences else "", member=member[aid]
        )
        for aid in audience_ids
    ]
    attributes = [
        s.ContactAttribute(
            id=tid,
            name=cat.attributes[tid].name if tid in cat.attributes else "",
            value_type=cat.attributes[tid].value_type if tid in cat.attributes else "",
            value=values.get(tid),
        )
        for tid in attribute_ids
    ]
    expected: dict[str, str | None] = {
        audience_key(aid): "true" if member[aid] else None for aid in member
    }
    for tid in attribute_ids:
        definition = cat.attributes.get(tid)
        value = values.get(tid)
        expected[attribute_key(tid)] = (
            None
            if value is None or definition is None
            else format_value(definition.value_type, value, options=definition.options)
        )
    per_activation = [
        await _contact_activation(ctx, spec, email, expected, read_hubspot)
        for spec in state.by_id.values()
    ]
    email_bytes = email.encode()
    letters, _, scanned = await read_dead_letters(
        ctx.redis,
        ctx.keys,
        limit=20,
        match=lambda letter, raw: letter.email == email or email_bytes in raw.lower(),
        max_scan=5000,
    )
    return s.ContactLookup(
        email=email,
        partition=p,
        audiences=audiences,
        attributes=attributes,
        activations=per_activation,
        dead_letters=letters,
        dead_letters_scanned=scanned,
    )


async def _contact_activation(
    ctx: Context,
    spec: ActivationSpec,
    email: str,
    expected: dict[str, str | None],
    read_hubspot: bool,
) -> s.ContactActivation:
    raw = await read_status(ctx.redis, ctx.keys, spec.activation_id)
    status = views.live_status(spec, raw, ctx.clock())
    names = raw.properties if raw is not None else {}
    properties = [
        s.ContactProperty(key=key, property=names.get(key), cdp=expected.get(key))
        for key in sorted(spec.subscribes())
    ]
    pending = raw.pending if raw is not None else None
    view = s.ContactActivation(
        id=spec.activation_id,
        name=spec.name,
        state=status["state"],
        properties=properties,
        pending=pending,
        in_flight=raw.in_flight if raw is not None else None,
        # The status counts pending contacts, it does not list them: only "none at all" is
        # known per contact, and only from a fresh status.
        contact_pending=False if pending == 0 and not status["stale"] else None,
    )
    if read_hubspot:
        await _read_hubspot(ctx, spec, email, view)
    return view


async def _read_hubspot(
    ctx: Context, spec: ActivationSpec, email: str, view: s.ContactActivation
) -> None:
    """One read of the contact through the token's RateGovernor: a call in its window like any
    other, never one beside it."""
    names = [p.property for p in view.properties if p.property]
    if not names:
        view.hubspot_error = "the activation has not created its HubSpot properties yet"
        return
    try:
        held_values = await _read_through_governor(ctx, spec, email, names)
    except GovernorUnavailable as exc:
        view.hubspot_error = str(exc)
        return
    except Exception as exc:  # what the governor raised: its text never holds the token
        view.hubspot_error = f"{type(exc).__name__}: {str(exc)[:500]}"
        return
    view.hubspot_read = True
    view.hubspot_found = held_values is not None
    if held_values is None:
        view.differences.append(
            "the contact is not in HubSpot"
            + (
                " (this activation only updates contacts HubSpot has)"
                if spec.mode == "update_only"
                else ""
            )
        )
    for prop in view.properties:
        if prop.property is None:
            continue
        held = (held_values.get(prop.property) if held_values is not None else None) or None
        prop.hubspot = held
        cdp = prop.cdp
        prop.in_step = held == cdp or (cdp is None and held in (None, "false"))
        if held_values is not None and not prop.in_step:
            view.differences.append(
                f"{prop.property}: the CDP says {cdp if cdp is not None else 'no value'}, "
                f"HubSpot holds {held if held is not None else 'nothing'}"
            )


class GovernorUnavailable(Exception):
    """No RateGovernor to read through here (hubsync is not running, or not in this process)."""


async def _read_through_governor(
    ctx: Context, spec: ActivationSpec, email: str, names: list[str]
) -> dict[str, str | None] | None:
    """HubSpot's values of ``names`` for the contact, read by the governor of the activation's
    token (`hubsync up` serves the API from its Ray driver, so the actor is one call away)."""
    import ray

    from actors.naming import actor_name

    if not ray.is_initialized():
        raise GovernorUnavailable(
            "HubSpot is read through the token's RateGovernor, and none runs here: "
            "start `hubsync up` (it serves this API)"
        )
    name = actor_name("governor", spec.token_fingerprint)
    try:
        handle = await asyncio.to_thread(ray.get_actor, name, namespace=ctx.config.namespace)
    except ValueError:
        raise GovernorUnavailable(
            "the token's RateGovernor is not running yet; ask again in a few seconds"
        ) from None
    try:
        return await asyncio.wait_for(
            handle.read_contact.remote(spec.activation_id, email, names), READ_TIMEOUT_S
        )
    except TimeoutError:
        raise GovernorUnavailable(
            f"the token's RateGovernor did not answer within {READ_TIMEOUT_S:.0f} s "
            "(its window may be full, or HubSpot slow); ask again"
        ) from None
