"""The API's request and response bodies: msgspec Structs, checked where they enter.

These types are the contract: handlers decode requests into them and encode responses from them,
and the OpenAPI document is generated from the same types. Field names are kept exactly as
issue #13 lists them; new fields get defaults, none is renamed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from crm.client import DEFAULT_BASE_URL
from crm.plans import DEFAULT_API_VERSION, ApiVersion
from events.model import Id, Name, Plan, ValueType
from hubsync.console.history import HistoryPoint
from hubsync.token_check import Limits, TokenCheck

__all__ = [
    "ActionResult",
    "Activation",
    "ActivationDraft",
    "ActivationHistory",
    "ActivationList",
    "ActivationPlan",
    "AddSubscription",
    "ApiError",
    "AttributeEntry",
    "AudienceEntry",
    "Catalog",
    "ConnectionTest",
    "ContactActivation",
    "ContactLookup",
    "ContactProperty",
    "CreateActivation",
    "DeadLetter",
    "DeadLetterPage",
    "Health",
    "HistoryPoint",
    "Job",
    "Limits",
    "PauseRequest",
    "PlannedProperty",
    "SessionCreated",
    "SignIn",
    "TokenCheck",
    "VerifyRequest",
]

# A HubSpot token: one printable word (no spaces, quotes or control characters).
Token = Annotated[str, msgspec.Meta(min_length=8, max_length=1024, pattern=r"^[!#-~]+$")]
BaseUrl = Annotated[
    str,
    msgspec.Meta(
        max_length=300,
        pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/\-]*)?$",
        description="HubSpot's API (default), or the emulator's URL",
    ),
]


class ApiError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Every 4xx/5xx body: a stable code, a sentence a person can act on, the field at fault."""

    error: str
    message: str
    field: str | None = None


class Health(msgspec.Struct, kw_only=True):
    ok: bool
    version: str
    redis: bool


class SignIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    api_key: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class SessionCreated(msgspec.Struct, kw_only=True):
    csrf_token: str
    """Send it as X-CSRF-Token on every state-changing request made with the session cookie."""
    expires_at: int


# --- catalog ----------------------------------------------------------------------------------


class AudienceEntry(msgspec.Struct, kw_only=True):
    id: str
    name: str
    members: int


class AttributeEntry(msgspec.Struct, kw_only=True):
    id: str
    name: str
    value_type: ValueType
    options: list[str] | None
    contacts: int = 0
    """Contacts with a value now."""


class Catalog(msgspec.Struct, kw_only=True):
    audiences: list[AudienceEntry]
    attributes: list[AttributeEntry]


# --- connections -------------------------------------------------------------------------------


class ConnectionTest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: Token
    base_url: BaseUrl = DEFAULT_BASE_URL
    api_version: ApiVersion = DEFAULT_API_VERSION


# --- activations ------------------------------------------------------------------------------


class CreateActivation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The create body. The token is write-only: no endpoint ever returns it."""

    name: Name
    token: Token
    plan: Plan = "starter"
    audiences: list[Id] = []
    attributes: list[Id] = []
    update_only: bool = False
    base_url: BaseUrl = DEFAULT_BASE_URL
    api_version: ApiVersion = DEFAULT_API_VERSION


class ActivationDraft(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The create body as a dry run reads it: the token may be left out (nothing is saved)."""

    name: Name | None = None
    token: Token | None = None
    plan: Plan = "starter"
    audiences: list[Id] = []
    attributes: list[Id] = []
    update_only: bool = False
    base_url: BaseUrl = DEFAULT_BASE_URL
    api_version: ApiVersion = DEFAULT_API_VERSION


class Activation(msgspec.Struct, kw_only=True):
    id: str
    name: str
    token_fingerprint: str
    """Names the token (first 12 hex digits of its SHA-256); never the token."""
    plan: str
    audiences: list[str]
    attributes: list[str]
    update_only: bool
    mode: str
    base_url: str
    api_version: str
    paused: bool
    pause_reason: str
    status: dict[str, Any]
    """The live status as `hubsync status --json` has it, with `state` computed (paused,
    stale, starting, running, degraded, ...), `stale` and the actor's own `reported_state`."""
    budget: dict[str, Any] | None = None
    """The token's RateGovernor status (calls left in the window and today), if running."""
    notes: list[str] = []


class ActivationHistory(msgspec.Struct, kw_only=True):
    """The last minutes of an activation's calls per 10-second window and lag, oldest first,
    sampled by this server every few seconds since it started (in memory only)."""

    id: str
    every_s: float
    points: list[HistoryPoint]


class ActivationList(msgspec.Struct, kw_only=True):
    activations: list[Activation]
    at: float


class PlannedProperty(msgspec.Struct, kw_only=True):
    key: str
    name: str
    label: str
    type: str
    fieldType: str
    contacts: int


class ActivationPlan(msgspec.Struct, kw_only=True):
    dry_run: bool
    properties: list[PlannedProperty]
    calls: int
    seconds_at_limits: float
    share_of_daily_budget: float
    unknown: list[str]


class ActionResult(msgspec.Struct, kw_only=True):
    id: str
    changed: bool
    """False when the command changed nothing (already paused, already synced, ...)."""
    message: str
    activation: Activation | None = None


class PauseRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = "paused by an operator"


class AddSubscription(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: Id


class VerifyRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    rate: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    """Calls per 10 s the verify may use (the running service keeps the rest)."""
    fix: bool = False


class Job(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    activation_id: str
    state: Literal["running", "done", "failed"]
    progress: float | None = None
    """Share done, 0 to 1 (null: the total is not known yet)."""
    done: int = 0
    total: int | None = None
    result: dict[str, Any] | None = None
    error: ApiError | None = None
    created_at: float = 0.0
    finished_at: float | None = None


# --- dead letters --------------------------------------------------------------------------------


class DeadLetter(msgspec.Struct, kw_only=True):
    dead_id: str
    """The entry's id on the dead-letter stream (time-ordered); page with `before=`."""
    stream: str
    id: str
    reason: str
    raw: str
    audience_id: str | None = None
    attribute_id: str | None = None
    email: str | None = None
    at: float


class DeadLetterPage(msgspec.Struct, kw_only=True):
    dead_letters: list[DeadLetter]
    next_before: str | None
    """Pass as `before=` for the next (older) page; null: no more."""
    total: int
    """Entries on the dead-letter stream (unfiltered)."""


# --- contacts -------------------------------------------------------------------------------------


class ContactAudience(msgspec.Struct, kw_only=True):
    id: str
    name: str
    member: bool


class ContactAttribute(msgspec.Struct, kw_only=True):
    id: str
    name: str
    value_type: str
    value: Any = None


class ContactProperty(msgspec.Struct, kw_only=True):
    key: str
    """`a:<audience id>` or `t:<attribute id>`."""
    property: str | None
    """HubSpot's internal name (null: the activation has not created it yet)."""
    cdp: str | None
    """The value the CDP says HubSpot should hold ("true"/"false" for audiences)."""
    hubspot: str | None = None
    in_step: bool | None = None
    """Whether HubSpot holds the CDP's value (null: HubSpot was not read)."""


class ContactActivation(msgspec.Struct, kw_only=True):
    id: str
    name: str
    state: str
    properties: list[ContactProperty]
    pending: int | None
    """Contacts this activation has waiting (its status counts, not per contact)."""
    in_flight: int | None
    contact_pending: bool | None
    """Whether a change for this contact is pending or in flight; null where the status does
    not say per contact (it counts, it does not list)."""
    hubspot_read: bool = False
    hubspot_found: bool | None = None
    hubspot_error: str | None = None
    differences: list[str] = []
    """In words: what differs between the CDP and HubSpot."""


class ContactLookup(msgspec.Struct, kw_only=True):
    email: str
    partition: int
    audiences: list[ContactAudience]
    attributes: list[ContactAttribute]
    activations: list[ContactActivation]
    dead_letters: list[DeadLetter]
    dead_letters_scanned: int
