"""The HTTP API's handlers and its route table, served under `/api/v1` by `create_app`.

One table (`ROUTES`) lists every operation with its method, path, request and response types;
the Starlette routes and the OpenAPI document are both built from it, so they cannot drift.
Every handler validates its input where it enters (msgspec types, path and query checks) before
anything reaches Redis, and answers errors as `{error, message, field?}`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from crm.client import HubSpotClient
from crm.errors import HubSpotError, TransportError
from crm.properties import format_value
from events.activations import Activations, ActivationSpec, CommandRejected
from events.catalog import Catalog as CatalogState
from events.model import (
    ActivationDeleted,
    ActivationPaused,
    ActivationResumed,
    AttributeAdded,
    AttributeRemoved,
    AudienceAdded,
    AudienceRemoved,
    ControlEvent,
    InvalidEvent,
    ResyncRequested,
    Value,
    normalise_email,
)
from events.projections import Projections
from events.secrets import Sealer, SecretError
from events.streams import Keys, ensure_partitions, partition_of
from hubsync import activations_service as service
from hubsync.api import schemas as s
from hubsync.api.auth import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, Authenticator
from hubsync.api.deadletters import read_dead_letters
from hubsync.api.jobs import Jobs
from hubsync.api.openapi import openapi
from hubsync.config import Config, ConfigError
from hubsync.status import read_status
from hubsync.token_check import check_token

__all__ = ["PREFIX", "ROUTES", "ApiProblem", "Operation", "create_app"]

log = logging.getLogger("hubsync.api")

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_VALUE = msgspec.msgpack.Decoder(tuple[int, Value])
_encode = msgspec.json.Encoder().encode


class ApiProblem(Exception):
    """Raised by a handler to answer with an error body; the message says what to do."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, s.ApiError(error=error, message=message, field=field)


@dataclass
class Context:
    """What the handlers share: configuration, Redis, the key layout, auth and jobs."""

    config: Config
    redis: aioredis.Redis
    auth: Authenticator
    jobs: Jobs = field(default_factory=Jobs)
    clock: Callable[[], float] = time.time
    poll_interval: float = 1.0

    @property
    def keys(self) -> Keys:
        return self.config.keys

    def secret_key(self) -> str:
        try:
            return service.resolve_secret_key(self.config)
        except ConfigError as exc:
            raise ApiProblem(503, "not_configured", str(exc)) from None


Handler = Callable[[Context, Request], Awaitable[Response]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type | None = None
    responses: dict[int, type | None] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    public: bool = False
    stream: bool = False


# --- helpers -----------------------------------------------------------------------------------


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encode(body), status_code=status, headers=headers, media_type="application/json"
    )


def error_response(status: int, error: str, message: str, field: str | None = None) -> Response:
    return json_response(s.ApiError(error=error, message=message, field=field), status)


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]+)`")


def _field_of(message: str) -> str | None:
    path = (m.group("path") if (m := _AT.search(message)) else "") or ""
    for pattern in (_MISSING, _UNKNOWN):
        if m := pattern.search(message):
            return f"{path}.{m.group('name')}" if path else m.group("name")
    return path or None


async def decode_body(request: Request, type_: type, *, optional: bool = False) -> Any:
    """The request's JSON body as ``type_``, or an ApiProblem naming the field at fault."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiProblem(413, "too_large", f"the body is over {MAX_BODY // 1024} KiB")
    if not raw.strip():
        if optional:
            raw = b"{}"
        else:
            raise ApiProblem(400, "invalid_body", "a JSON object body is required")
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        text = str(exc)
        where = _field_of(text)
        message = _AT.sub("", text)
        raise ApiProblem(
            400,
            "invalid_body",
            f"{where}: {message}" if where else message,
            field=where,
        ) from None
    except msgspec.DecodeError as exc:
        raise ApiProblem(400, "invalid_json", f"the body is not valid JSON ({exc})") from None


def query_flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw.lower() in ("", "false", "0", "no"):
        return False
    if raw.lower() in ("true", "1", "yes"):
        return True
    raise ApiProblem(400, "invalid_query", f"{name} must be true or false", field=name)


def query_id(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not _ID.match(raw):
        raise ApiProblem(
            400, "invalid_query", f"{name}: letters, digits, '_', '.', ':' or '-'", field=name
        )
    return raw


def path_id(request: Request, name: str, what: str) -> str:
    raw = request.path_params[name]
    if not _ID.match(raw):
        raise ApiProblem(404, "not_found", f"no {what} {raw[:80]!r}")
    return raw


async def find_activation(ctx: Context, request: Request) -> tuple[Activations, ActivationSpec]:
    activation_id = path_id(request, "id", "activation")
    state = Activations()
    await state.refresh(ctx.redis, ctx.keys)
    spec = state.by_id.get(activation_id)
    if spec is None:
        raise ApiProblem(
            404,
            "not_found",
            f"no activation {activation_id!r}; GET /api/v1/activations lists them",
        )
    return state, spec


async def activation_view(
    ctx: Context, spec: ActivationSpec, notes: Sequence[str] = ()
) -> s.Activation:
    raw = await read_status(ctx.redis, ctx.keys, spec.activation_id)
    return s.Activation(
        id=spec.activation_id,
        name=spec.name,
        token_fingerprint=spec.token_fingerprint,
        plan=spec.plan,
        audiences=sorted(spec.audiences),
        attributes=sorted(spec.attributes),
        update_only=spec.mode == "update_only",
        mode=spec.mode,
        base_url=spec.base_url,
        api_version=spec.api_version,
        paused=spec.paused,
        pause_reason=spec.pause_reason,
        status=service.live_status(spec, raw, ctx.clock()),
        budget=await service.read_governor_status(ctx.redis, ctx.keys, spec.token_fingerprint),
        notes=list(notes),
    )


async def all_activations(ctx: Context) -> list[s.Activation]:
    state = Activations()
    await state.refresh(ctx.redis, ctx.keys)
    return [await activation_view(ctx, spec) for spec in state.by_id.values()]


# --- handlers: health, session, openapi ------------------------------------------------------------


async def health(ctx: Context, request: Request) -> Response:
    from importlib.metadata import version

    try:
        await asyncio.wait_for(ctx.redis.ping(), 2.0)
        reachable = True
    except Exception:
        reachable = False
    body = s.Health(ok=reachable, version=version("hubsync"), redis=reachable)
    return json_response(body, 200 if reachable else 503)


async def sign_in(ctx: Context, request: Request) -> Response:
    body: s.SignIn = await decode_body(request, s.SignIn)
    if not ctx.auth.key_matches(body.api_key):
        raise ApiProblem(
            401, "unauthorized", "that is not the API key; `hubsync api-key` shows it", "api_key"
        )
    cookie, csrf, expires = ctx.auth.new_session()
    response = json_response(s.SessionCreated(csrf_token=csrf, expires_at=expires))
    secure = request.url.scheme == "https"
    max_age = ctx.auth.session_seconds
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=max_age, path="/", samesite="strict", secure=secure
    )
    return response


async def sign_out(ctx: Context, request: Request) -> Response:
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")
    return response


async def openapi_document(ctx: Context, request: Request) -> Response:
    return json_response(openapi(ROUTES, PREFIX))


# --- catalog and connections ---------------------------------------------------------------------


async def catalog(ctx: Context, request: Request) -> Response:
    state = CatalogState()
    await state.refresh(ctx.redis, ctx.keys)
    partitions = await ensure_partitions(ctx.redis, ctx.keys, ctx.config.partitions)
    projections = Projections(ctx.redis, ctx.keys)
    audiences = [
        s.AudienceEntry(
            id=a.audience_id,
            name=a.name,
            members=await projections.count_members(a.audience_id, partitions),
        )
        for a in sorted(state.audiences.values(), key=lambda a: a.name.lower())
    ]
    attributes = [
        s.AttributeEntry(
            id=t.attribute_id,
            name=t.name,
            value_type=t.value_type,
            options=t.options,
            contacts=await projections.count_values(t.attribute_id, partitions),
        )
        for t in sorted(state.attributes.values(), key=lambda t: t.name.lower())
    ]
    return json_response(s.Catalog(audiences=audiences, attributes=attributes))


async def connections_test(ctx: Context, request: Request) -> Response:
    body: s.ConnectionTest = await decode_body(request, s.ConnectionTest)
    try:
        result = await check_token(body.token, base_url=body.base_url, api_version=body.api_version)
    except TransportError as exc:
        raise ApiProblem(
            502,
            "hubspot_unreachable",
            f"could not reach HubSpot at {body.base_url}: {exc.args[0] if exc.args else exc}",
            field="base_url",
        ) from None
    except HubSpotError as exc:
        raise ApiProblem(502, "hubspot_error", f"HubSpot failed the check: {exc}") from None
    return json_response(result)


# --- activations -------------------------------------------------------------------------------------


def _unknown_problem(unknown: list[tuple[str, int, str]], field_name: str | None = None) -> None:
    if not unknown:
        return
    where, index, why = unknown[0]
    raise ApiProblem(
        422,
        "unknown_audience" if where == "audiences" else "unknown_attribute",
        why,
        field=field_name or f"{where}[{index}]",
    )


async def list_activations(ctx: Context, request: Request) -> Response:
    return json_response(s.ActivationList(activations=await all_activations(ctx), at=ctx.clock()))


async def create_activation(ctx: Context, request: Request) -> Response:
    if query_flag(request, "dry_run"):
        return await dry_run(ctx, request)
    body: s.CreateActivation = await decode_body(request, s.CreateActivation)
    _unknown_problem(
        await service.unknown_subscriptions(ctx.redis, ctx.keys, body.audiences, body.attributes)
    )
    event = service.new_activation(
        ctx.secret_key(),
        name=body.name,
        token=body.token,
        base_url=body.base_url,
        api_version=body.api_version,
        plan=body.plan,
        update_only=body.update_only,
        audiences=body.audiences,
        attributes=body.attributes,
    )
    try:
        notes = await service.create_activation(ctx.redis, ctx.keys, event)
    except CommandRejected as exc:
        raise ApiProblem(409, "name_taken", str(exc), field="name") from None
    state = Activations()
    await state.refresh(ctx.redis, ctx.keys)
    view = await activation_view(ctx, state.by_id[event.activation_id], notes)
    return json_response(view, 201, {"Location": f"{PREFIX}/activations/{view.id}"})


async def dry_run(ctx: Context, request: Request) -> Response:
    from hubsync.operations import plan_activation

    body: s.ActivationDraft = await decode_body(request, s.ActivationDraft)
    plan = await plan_activation(
        ctx.redis,
        ctx.keys,
        plan=body.plan,
        audiences=tuple(dict.fromkeys(body.audiences)),
        attributes=tuple(dict.fromkeys(body.attributes)),
    )
    return json_response(
        s.ActivationPlan(
            dry_run=True,
            properties=[
                s.PlannedProperty(**p, contacts=plan.contacts[p["key"]]) for p in plan.properties
            ],
            calls=plan.calls,
            seconds_at_limits=plan.seconds_at_limits,
            share_of_daily_budget=plan.share_of_daily_budget,
            unknown=plan.unknown,
        )
    )


async def get_activation(ctx: Context, request: Request) -> Response:
    _, spec = await find_activation(ctx, request)
    return json_response(await activation_view(ctx, spec))


async def _command(
    ctx: Context,
    request: Request,
    make: Callable[[ActivationSpec], ControlEvent],
    done: str,
    *,
    gone: bool = False,
) -> Response:
    _, spec = await find_activation(ctx, request)
    try:
        after, appended = await service.change_activation(
            ctx.redis, ctx.keys, spec.activation_id, make
        )
    except CommandRejected as exc:
        raise ApiProblem(409, "rejected", str(exc)) from None
    return json_response(
        s.ActionResult(
            id=spec.activation_id,
            changed=bool(appended),
            message=done if appended else "nothing to change",
            activation=None if gone else await activation_view(ctx, after),
        )
    )


async def delete_activation(ctx: Context, request: Request) -> Response:
    return await _command(
        ctx,
        request,
        lambda spec: ActivationDeleted(activation_id=spec.activation_id),
        "deleted; what it wrote to HubSpot, properties included, stays there",
        gone=True,
    )


async def pause(ctx: Context, request: Request) -> Response:
    body: s.PauseRequest = await decode_body(request, s.PauseRequest, optional=True)
    return await _command(
        ctx,
        request,
        lambda spec: ActivationPaused(activation_id=spec.activation_id, reason=body.reason),
        "paused: changes keep being recorded and go out on resume",
    )


async def resume(ctx: Context, request: Request) -> Response:
    return await _command(
        ctx, request, lambda spec: ActivationResumed(activation_id=spec.activation_id), "resumed"
    )


async def resync(ctx: Context, request: Request) -> Response:
    return await _command(
        ctx,
        request,
        lambda spec: ResyncRequested(activation_id=spec.activation_id),
        "resync requested: every current value is sent again",
    )


async def verify(ctx: Context, request: Request) -> Response:
    body: s.VerifyRequest = await decode_body(request, s.VerifyRequest, optional=True)
    _, spec = await find_activation(ctx, request)
    status = await read_status(ctx.redis, ctx.keys, spec.activation_id)
    if not status or not status.get("properties"):
        raise ApiProblem(
            409,
            "not_synced",
            "this activation has not synced anything yet: wait until its status shows properties",
        )
    key = ctx.secret_key()

    async def work(progress: Callable[[int, int], None]) -> dict[str, Any]:
        return await service.verify_activation(
            ctx.redis, ctx.keys, spec, key, rate=body.rate, fix=body.fix, on_progress=progress
        )

    job = ctx.jobs.start("verify", spec.activation_id, work)
    return json_response(job, 202, {"Location": f"{PREFIX}/jobs/{job.id}"})


async def get_job(ctx: Context, request: Request) -> Response:
    job = ctx.jobs.get(request.path_params["job_id"])
    if job is None:
        raise ApiProblem(
            404, "not_found", "no such job (jobs are kept in memory, the last 200, until restart)"
        )
    return json_response(job)


def _subscription(kind: str) -> tuple[Handler, Handler]:
    """Add and remove handlers for `audiences` or `attributes`."""
    audience = kind == "audiences"

    async def add(ctx: Context, request: Request) -> Response:
        body: s.AddSubscription = await decode_body(request, s.AddSubscription)
        await find_activation(ctx, request)
        unknown = await service.unknown_subscriptions(
            ctx.redis, ctx.keys, [body.id] if audience else [], [] if audience else [body.id]
        )
        _unknown_problem(unknown, "id")
        return await _command(
            ctx,
            request,
            (lambda sp: AudienceAdded(activation_id=sp.activation_id, audience_id=body.id))
            if audience
            else (lambda sp: AttributeAdded(activation_id=sp.activation_id, attribute_id=body.id)),
            "added; its current members are backfilled"
            if audience
            else "added; its current values are backfilled",
        )

    async def remove(ctx: Context, request: Request) -> Response:
        _, spec = await find_activation(ctx, request)
        param = "audience_id" if audience else "attribute_id"
        ident = path_id(request, param, kind[:-1])
        if ident not in (spec.audiences if audience else spec.attributes):
            raise ApiProblem(
                404, "not_found", f"activation {spec.name!r} does not sync {kind[:-1]} {ident!r}"
            )
        return await _command(
            ctx,
            request,
            (lambda sp: AudienceRemoved(activation_id=sp.activation_id, audience_id=ident))
            if audience
            else (lambda sp: AttributeRemoved(activation_id=sp.activation_id, attribute_id=ident)),
            "removed; its HubSpot property stays",
        )

    add.__name__, remove.__name__ = f"add_{kind[:-1]}", f"remove_{kind[:-1]}"
    return add, remove


add_audience, remove_audience = _subscription("audiences")
add_attribute, remove_attribute = _subscription("attributes")


# --- dead letters and contacts ---------------------------------------------------------------------


def _limit(request: Request, default: int = 50, most: int = 500) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ApiProblem(
            400, "invalid_query", f"limit must be a whole number from 1 to {most}", "limit"
        )
    return int(raw)


async def dead_letters(ctx: Context, request: Request) -> Response:
    limit = _limit(request)
    before = request.query_params.get("before") or None
    if before is not None and not _STREAM_ID.match(before):
        raise ApiProblem(
            400, "invalid_query", "before must be a dead_id like 1764489600000-0", "before"
        )
    audience_id = query_id(request, "audience_id")
    attribute_id = query_id(request, "attribute_id")

    def match(letter: s.DeadLetter, raw: bytes) -> bool:
        if audience_id is not None and letter.audience_id != audience_id:
            return False
        return attribute_id is None or letter.attribute_id == attribute_id

    letters, next_before, _ = await read_dead_letters(
        ctx.redis,
        ctx.keys,
        limit=limit,
        before=before,
        match=None if audience_id is None and attribute_id is None else match,
    )
    total = int(await ctx.redis.xlen(ctx.keys.dead))
    return json_response(
        s.DeadLetterPage(dead_letters=letters, next_before=next_before, total=total)
    )


async def contact(ctx: Context, request: Request) -> Response:
    try:
        email = normalise_email(request.path_params["email"])
    except InvalidEvent as exc:
        raise ApiProblem(400, "invalid_email", exc.reason, field="email") from None
    read_hubspot = query_flag(request, "hubspot")
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
        f"a:{aid}": "true" if member[aid] else None for aid in member
    }
    for tid in attribute_ids:
        definition = cat.attributes.get(tid)
        value = values.get(tid)
        expected[f"t:{tid}"] = (
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
    return json_response(
        s.ContactLookup(
            email=email,
            partition=p,
            audiences=audiences,
            attributes=attributes,
            activations=per_activation,
            dead_letters=letters,
            dead_letters_scanned=scanned,
        )
    )


async def _contact_activation(
    ctx: Context,
    spec: ActivationSpec,
    email: str,
    expected: dict[str, str | None],
    read_hubspot: bool,
) -> s.ContactActivation:
    raw = await read_status(ctx.redis, ctx.keys, spec.activation_id)
    status = service.live_status(spec, raw, ctx.clock())
    names: dict[str, str] = (raw or {}).get("properties") or {}
    properties = [
        s.ContactProperty(key=key, property=names.get(key), cdp=expected.get(key))
        for key in sorted(spec.subscribes())
    ]
    pending = (raw or {}).get("pending")
    view = s.ContactActivation(
        id=spec.activation_id,
        name=spec.name,
        state=status["state"],
        properties=properties,
        pending=pending,
        in_flight=(raw or {}).get("in_flight"),
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
    """One read of the contact with the activation's token, unless its window is full now."""
    names = [p.property for p in view.properties if p.property]
    if not names:
        view.hubspot_error = "the activation has not created its HubSpot properties yet"
        return
    budget = await service.read_governor_status(ctx.redis, ctx.keys, spec.token_fingerprint)
    if budget and budget.get("window_left") == 0:
        view.hubspot_error = "the token's 10-second window is full; ask again in a few seconds"
        return
    try:
        token = Sealer(ctx.secret_key()).unseal(spec.token_sealed)
    except SecretError as exc:
        view.hubspot_error = str(exc)
        return
    try:
        async with HubSpotClient(
            token,
            base_url=spec.base_url,
            api_version=spec.api_version,  # type: ignore[arg-type]
            timeout=10.0,
        ) as client:
            record = await client.get_contact_by_email(email, names)
    except (HubSpotError, ValueError) as exc:
        view.hubspot_error = str(exc)[:500]
        return
    view.hubspot_read = True
    view.hubspot_found = record is not None
    if record is None:
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
        held = (record.properties.get(prop.property) if record else None) or None
        prop.hubspot = held
        cdp = prop.cdp
        prop.in_step = held == cdp or (cdp is None and held in (None, "false"))
        if record is not None and not prop.in_step:
            view.differences.append(
                f"{prop.property}: the CDP says {cdp if cdp is not None else 'no value'}, "
                f"HubSpot holds {held if held is not None else 'nothing'}"
            )


# --- events (Server-Sent Events) -------------------------------------------------------------------


def _comparable(view: s.Activation) -> bytes:
    """The view without what changes every second by itself (publication times)."""
    data = msgspec.to_builtins(view)
    data["status"].pop("updated_at", None)
    if data.get("budget"):
        data["budget"].pop("updated_at", None)
    return _encode(data)


async def events(ctx: Context, request: Request) -> Response:
    async def stream() -> AsyncIterator[bytes]:
        seen: dict[str, bytes] = {}
        counter = 0
        quiet_since = ctx.clock()
        yield b"retry: 3000\n\n"
        while True:
            views = await all_activations(ctx)
            current = {v.id for v in views}
            for view in views:
                marker = _comparable(view)
                if seen.get(view.id) != marker:
                    seen[view.id] = marker
                    counter += 1
                    yield b"event: activation\nid: %d\ndata: %s\n\n" % (counter, _encode(view))
                    quiet_since = ctx.clock()
            for gone in sorted(set(seen) - current):
                del seen[gone]
                counter += 1
                yield b"event: deleted\nid: %d\ndata: %s\n\n" % (counter, _encode({"id": gone}))
            if ctx.clock() - quiet_since > 15:
                yield b": keep-alive\n\n"
                quiet_since = ctx.clock()
            if await request.is_disconnected():
                return
            await asyncio.sleep(ctx.poll_interval)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- the route table ---------------------------------------------------------------------------------

_ACTIVATION_ID = Param("id", "path", {"type": "string"}, "the activation's id", True)
_ERRORS: dict[int, type | None] = {400: s.ApiError, 401: s.ApiError, 404: s.ApiError}

ROUTES: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/health",
        health,
        "Liveness and Redis reachability (no authentication)",
        responses={200: s.Health, 503: s.Health},
        public=True,
    ),
    Operation(
        "POST",
        "/session",
        sign_in,
        "Sign in with the API key: sets the session cookie, answers the CSRF token",
        body=s.SignIn,
        responses={200: s.SessionCreated, 400: s.ApiError, 401: s.ApiError},
        public=True,
    ),
    Operation(
        "DELETE",
        "/session",
        sign_out,
        "Sign out (clears the cookies)",
        responses={204: None},
        public=True,
    ),
    Operation(
        "GET",
        "/openapi.json",
        openapi_document,
        "This document",
        responses={200: None, 401: s.ApiError},
    ),
    Operation(
        "GET",
        "/catalog",
        catalog,
        "Audiences and attributes the CDP defines, with member counts",
        responses={200: s.Catalog, 401: s.ApiError},
    ),
    Operation(
        "POST",
        "/connections/test",
        connections_test,
        "Check a HubSpot token (scopes, account, limits) before anything is saved",
        body=s.ConnectionTest,
        responses={200: s.TokenCheck, 400: s.ApiError, 401: s.ApiError, 502: s.ApiError},
    ),
    Operation(
        "GET",
        "/activations",
        list_activations,
        "Every activation with its live status",
        responses={200: s.ActivationList, 401: s.ApiError},
    ),
    Operation(
        "POST",
        "/activations",
        create_activation,
        "Create an activation (201), or with dry_run=true the plan it would follow (200)",
        body=s.CreateActivation,
        responses={
            201: s.Activation,
            200: s.ActivationPlan,
            400: s.ApiError,
            401: s.ApiError,
            409: s.ApiError,
            422: s.ApiError,
        },
        params=(
            Param(
                "dry_run",
                "query",
                {"type": "boolean"},
                "preview the properties and the backfill; save nothing (the token may be left out)",
            ),
        ),
    ),
    Operation(
        "GET",
        "/activations/{id}",
        get_activation,
        "One activation: its definition and live status",
        responses={200: s.Activation, **_ERRORS},
        params=(_ACTIVATION_ID,),
    ),
    Operation(
        "DELETE",
        "/activations/{id}",
        delete_activation,
        "Delete an activation (its HubSpot properties stay)",
        responses={200: s.ActionResult, **_ERRORS},
        params=(_ACTIVATION_ID,),
    ),
    Operation(
        "POST",
        "/activations/{id}/pause",
        pause,
        "Stop writing to HubSpot; changes are kept and go out on resume",
        body=s.PauseRequest,
        responses={200: s.ActionResult, **_ERRORS},
        params=(_ACTIVATION_ID,),
    ),
    Operation(
        "POST",
        "/activations/{id}/resume",
        resume,
        "Resume a paused activation",
        responses={200: s.ActionResult, **_ERRORS},
        params=(_ACTIVATION_ID,),
    ),
    Operation(
        "POST",
        "/activations/{id}/resync",
        resync,
        "Send every current value again",
        responses={200: s.ActionResult, **_ERRORS},
        params=(_ACTIVATION_ID,),
    ),
    Operation(
        "POST",
        "/activations/{id}/verify",
        verify,
        "Read the values back from HubSpot and report drift, as a job",
        body=s.VerifyRequest,
        responses={202: s.Job, 409: s.ApiError, **_ERRORS},
        params=(_ACTIVATION_ID,),
    ),
    Operation(
        "GET",
        "/jobs/{job_id}",
        get_job,
        "A job's progress and result",
        responses={200: s.Job, 401: s.ApiError, 404: s.ApiError},
        params=(Param("job_id", "path", {"type": "string"}, "from the 202 answer", True),),
    ),
    Operation(
        "POST",
        "/activations/{id}/audiences",
        add_audience,
        "Sync one more audience (its members are backfilled)",
        body=s.AddSubscription,
        responses={200: s.ActionResult, 422: s.ApiError, 409: s.ApiError, **_ERRORS},
        params=(_ACTIVATION_ID,),
    ),
    Operation(
        "DELETE",
        "/activations/{id}/audiences/{audience_id}",
        remove_audience,
        "Stop syncing an audience (its HubSpot property stays)",
        responses={200: s.ActionResult, **_ERRORS},
        params=(_ACTIVATION_ID, Param("audience_id", "path", {"type": "string"}, "", True)),
    ),
    Operation(
        "POST",
        "/activations/{id}/attributes",
        add_attribute,
        "Sync one more attribute (its values are backfilled)",
        body=s.AddSubscription,
        responses={200: s.ActionResult, 422: s.ApiError, 409: s.ApiError, **_ERRORS},
        params=(_ACTIVATION_ID,),
    ),
    Operation(
        "DELETE",
        "/activations/{id}/attributes/{attribute_id}",
        remove_attribute,
        "Stop syncing an attribute (its HubSpot property stays)",
        responses={200: s.ActionResult, **_ERRORS},
        params=(_ACTIVATION_ID, Param("attribute_id", "path", {"type": "string"}, "", True)),
    ),
    Operation(
        "GET",
        "/dead-letters",
        dead_letters,
        "Entries that could not be used, newest first, with reasons",
        responses={200: s.DeadLetterPage, 400: s.ApiError, 401: s.ApiError},
        params=(
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 500},
                "page size (50)",
            ),
            Param("before", "query", {"type": "string"}, "next_before of the previous page"),
            Param("audience_id", "query", {"type": "string"}, "only entries naming this audience"),
            Param(
                "attribute_id", "query", {"type": "string"}, "only entries naming this attribute"
            ),
        ),
    ),
    Operation(
        "GET",
        "/contacts/{email}",
        contact,
        "Why is this person (not) in HubSpot as the CDP says? CDP state, pending, HubSpot, dead letters",
        responses={200: s.ContactLookup, 400: s.ApiError, 401: s.ApiError},
        params=(
            Param("email", "path", {"type": "string"}, "the contact's email", True),
            Param(
                "hubspot",
                "query",
                {"type": "boolean"},
                "also read HubSpot's values (one call per activation)",
            ),
        ),
    ),
    Operation(
        "GET",
        "/events",
        events,
        "Server-Sent Events: `activation` (an activation's view changed) and `deleted`",
        responses={200: None, 401: s.ApiError},
        stream=True,
    ),
)


# --- the app --------------------------------------------------------------------------------------------


def _authenticate(ctx: Context, request: Request) -> Response | None:
    """None when the request may go on; else the 401/403 answer."""
    authorization = request.headers.get("authorization")
    if authorization:
        if ctx.auth.bearer_matches(authorization):
            return None
        return _unauthorized("the API key is wrong; `hubsync api-key` shows the right one")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and ctx.auth.session_valid(cookie):
        if request.method in _SAFE_METHODS:
            return None
        token = request.headers.get(CSRF_HEADER, "")
        if token and ctx.auth.csrf_valid(cookie, token):
            return None
        return error_response(
            403,
            "csrf",
            "a request made with the session cookie must send the X-CSRF-Token header the sign-in gave",
        )
    if cookie:
        return _unauthorized("the session has expired: sign in again")
    return _unauthorized(
        "send Authorization: Bearer <API key> (`hubsync api-key` shows it), or sign in"
    )


def _unauthorized(message: str) -> Response:
    response = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="hubsync"'
    return response


def _endpoint(ctx: Context, op: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if not op.public and (refused := _authenticate(ctx, request)) is not None:
            return refused
        try:
            return await op.handler(ctx, request)
        except ApiProblem as problem:
            return json_response(problem.body, problem.status)
        except CommandRejected as exc:
            return error_response(409, "rejected", str(exc))
        except Exception:
            # Never echo an exception (it could quote a request body): log its type and where.
            log.exception("API %s %s failed", op.method, op.path)
            return error_response(500, "internal", "hubsync failed to answer; its log says why")

    endpoint.__name__ = op.handler.__name__
    return endpoint


def create_app(
    config: Config,
    redis: aioredis.Redis,
    *,
    api_key: str,
    clock: Callable[[], float] = time.time,
    poll_interval: float = 1.0,
    close_redis: bool = False,
) -> Starlette:
    """The API as a Starlette app over ``redis``; ``close_redis`` closes it on shutdown."""
    ctx = Context(
        config=config,
        redis=redis,
        auth=Authenticator(api_key, clock=clock),
        jobs=Jobs(clock=clock),
        clock=clock,
        poll_interval=poll_interval,
    )
    by_path: dict[str, dict[str, Operation]] = {}
    for op in ROUTES:
        by_path.setdefault(op.path, {})[op.method] = op
    routes = [
        Route(
            PREFIX + path,
            _by_method({m: _endpoint(ctx, op) for m, op in ops.items()}),
            methods=list(ops),
        )
        for path, ops in by_path.items()
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "not_found", f"no such endpoint: {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(405, "method_not_allowed", f"{request.method} is not served here")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await ctx.jobs.cancel_all()
        if close_redis:
            await redis.aclose()

    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_allowed},
        lifespan=lifespan,
    )
    app.state.context = ctx
    return app


def _by_method(
    endpoints: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        handler = endpoints.get(request.method) or endpoints["GET"]  # HEAD is served as GET
        return await handler(request)

    return endpoint
