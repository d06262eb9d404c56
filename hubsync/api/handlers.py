"""The API's handlers for sessions, the catalog, connections, activations, jobs and dead letters.

Each takes the shared `Context` and the request, validates what it reads before Redis sees it,
and calls the same functions as the CLI (hubsync.activations_service, hubsync.operations)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from crm.errors import HubSpotError, TransportError
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
    ResyncRequested,
)
from events.projections import Projections
from events.secrets import TokenError
from events.streams import ensure_partitions
from hubsync import activations_service as service
from hubsync.api import schemas as s
from hubsync.api.auth import CSRF_COOKIE, SESSION_COOKIE
from hubsync.api.deadletters import read_dead_letters
from hubsync.api.openapi import openapi
from hubsync.api.protocol import (
    PREFIX,
    ApiProblem,
    Context,
    Handler,
    activation_view,
    all_activations,
    decode_body,
    find_activation,
    json_response,
    limit_param,
    path_id,
    query_flag,
    query_id,
)
from hubsync.token_check import check_token
from hubsync.views import read_status

# --- handlers: health, session, openapi ------------------------------------------------------------

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


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
    return json_response(openapi(ctx.routes, PREFIX))


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
    try:
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
    except TokenError as exc:  # the message names the problem, never the token
        raise ApiProblem(422, "invalid_token", str(exc), field="token") from None
    except CommandRejected as exc:
        raise ApiProblem(422, "invalid_base_url", str(exc), field="base_url") from None
    try:
        notes = await service.create_activation(ctx.redis, ctx.keys, event)
    except CommandRejected as exc:
        # a taken name, or a token another activation uses with other settings
        code, field = ("name_taken", "name") if "named" in str(exc) else ("conflict", None)
        raise ApiProblem(409, code, str(exc), field=field) from None
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


async def activation_history(ctx: Context, request: Request) -> Response:
    from hubsync.console.history import SAMPLE_EVERY_S

    _, spec = await find_activation(ctx, request)
    return json_response(
        s.ActivationHistory(
            id=spec.activation_id,
            every_s=SAMPLE_EVERY_S,
            points=ctx.history.points(spec.activation_id),
        )
    )


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
    if status is None or not status.properties:
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


async def dead_letters(ctx: Context, request: Request) -> Response:
    limit = limit_param(request)
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
