"""The route table: every operation's method, path, handler, request and response types.

The Starlette routes and the OpenAPI document are both built from it, so they cannot drift."""

from __future__ import annotations

from hubsync.api import schemas as s
from hubsync.api.contacts import contact
from hubsync.api.events import events
from hubsync.api.handlers import (
    activation_history,
    add_attribute,
    add_audience,
    catalog,
    connections_test,
    create_activation,
    dead_letters,
    delete_activation,
    get_activation,
    get_job,
    health,
    list_activations,
    openapi_document,
    pause,
    remove_attribute,
    remove_audience,
    resume,
    resync,
    sign_in,
    sign_out,
    verify,
)
from hubsync.api.protocol import (
    Operation,
    Param,
)

__all__ = ["ROUTES"]

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
        "GET",
        "/activations/{id}/history",
        activation_history,
        "The last minutes of calls per 10-second window and lag (the console's charts)",
        responses={200: s.ActivationHistory, **_ERRORS},
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
