"""Check a HubSpot token before anything is saved: valid or not, which scopes it lacks, its account.

HubSpot answers the scopes of a private-app token at `access-token-info`. Where it does not answer
(a service key may not be covered), harmless calls check what they can: reading a property
(schemas read), reading a contact by email (objects read), ensuring the property group hubsync
creates anyway (schemas write, when the group is not there yet). A scope no call could check is
listed as unverified, never as granted. Every response's `X-HubSpot-RateLimit-*` headers tell the
plan's limits.
"""

from __future__ import annotations

import msgspec

from crm.client import ApiVersion, HubSpotClient
from crm.errors import AuthenticationError, HubSpotError, MissingScopesError, TransportError
from crm.ratelimit import RateLimitInfo
from crm.results import TokenInfo
from crm.schema import ensure_property_group

__all__ = ["REQUIRED_SCOPES", "TokenCheck", "check_token", "plan_for_limits"]

SCHEMA_READ = "crm.schemas.contacts.read"
SCHEMA_WRITE = "crm.schemas.contacts.write"
OBJECTS_READ = "crm.objects.contacts.read"
OBJECTS_WRITE = "crm.objects.contacts.write"
ALL_SCOPES = frozenset({SCHEMA_READ, SCHEMA_WRITE, OBJECTS_READ, OBJECTS_WRITE})
REQUIRED_SCOPES = tuple(sorted(ALL_SCOPES))
PROBE_EMAIL = "hubsync-connection-test@example.com"


class Limits(msgspec.Struct, kw_only=True):
    """What HubSpot's rate-limit headers said (None: not sent)."""

    per_window: int | None = None
    window_ms: int | None = None
    daily: int | None = None
    daily_remaining: int | None = None
    plan: str | None = None
    """The hubsync plan these limits match, if any."""


class TokenCheck(msgspec.Struct, kw_only=True):
    ok: bool
    """HubSpot accepted the token and it lacks none of the four scopes (unverified ones aside)."""
    missing_scopes: list[str]
    unverified_scopes: list[str]
    """Scopes no harmless call could check: neither granted nor missing as far as we know."""
    granted_scopes: list[str]
    hub_id: int | None = None
    app_id: int | None = None
    checked_with: str = "token_info"
    """"token_info" (HubSpot listed the scopes) or "probes" (harmless calls checked them)."""
    limits: Limits = msgspec.field(default_factory=Limits)
    error: str | None = None
    message: str = ""


def plan_for_limits(per_window: int | None, daily: int | None) -> str | None:
    """The hubsync plan whose limits the headers show (None: they match none, or are unknown)."""
    if per_window is None:
        return None
    if per_window == 100:
        return "starter"
    if per_window == 250:
        return "addon"
    if per_window == 190:
        return {625_000: "professional", 1_000_000: "enterprise"}.get(daily or 0)
    return None


async def check_token(token: str, *, base_url: str, api_version: ApiVersion) -> TokenCheck:
    """Ask HubSpot about ``token``; raises TransportError when HubSpot cannot be reached."""
    seen: list[RateLimitInfo] = []

    def remember(info: RateLimitInfo, status: int) -> None:
        if info.max is not None or info.daily is not None:
            seen.append(info)

    async with HubSpotClient(
        token,
        base_url=base_url,
        api_version=api_version,
        after_response=remember,
        timeout=15.0,
    ) as client:
        info: TokenInfo | None = None
        try:
            info = await client.token_info()
        except TransportError:
            raise
        except HubSpotError:
            info = None  # not covered, or refused: the probes below tell which
        granted: set[str] = set(info.scopes) & ALL_SCOPES if info else set()
        missing: set[str] = set(ALL_SCOPES - granted) if info else set()
        unknown: set[str] = set() if info else set(ALL_SCOPES)
        try:
            await _probe(client, unknown, granted, missing)
        except AuthenticationError as exc:
            return TokenCheck(
                ok=False,
                missing_scopes=[],
                unverified_scopes=sorted(ALL_SCOPES),
                granted_scopes=[],
                checked_with="probes",
                error="token_refused",
                message=(
                    "HubSpot refused the token (401): it is wrong, expired or revoked; copy it "
                    f"again from HubSpot. {exc.hubspot_message or ''}"
                ).strip(),
            )
    limits = _limits(seen)
    result = TokenCheck(
        ok=not missing,
        missing_scopes=sorted(missing),
        unverified_scopes=sorted(unknown - granted - missing),
        granted_scopes=sorted(granted),
        hub_id=info.hub_id if info else None,
        app_id=info.app_id if info else None,
        checked_with="token_info" if info else "probes",
        limits=limits,
    )
    if missing:
        result.error = "missing_scopes"
        result.message = (
            f"the token lacks {', '.join(sorted(missing))}: add them to the service key or private "
            "app in HubSpot, then test again"
        )
    elif result.unverified_scopes:
        result.message = (
            f"HubSpot accepted the token; {', '.join(result.unverified_scopes)} could not be "
            "checked without writing to HubSpot: make sure they are ticked"
        )
    else:
        result.message = "HubSpot accepted the token with the four scopes hubsync needs"
    return result


async def _probe(
    client: HubSpotClient, unknown: set[str], granted: set[str], missing: set[str]
) -> None:
    """Harmless calls: always one property read (it tells whether HubSpot accepts the token, and
    the limits); then, for the scopes token-info did not settle, what each call proves.

    HubSpot lets a property read through with either schemas read or objects read, so its
    success proves neither alone; a contact read proves objects read; creating the property
    group (hubsync creates it anyway) proves schemas write. Objects write has no harmless call.
    """
    try:
        await client.read_property("email")
        readable = True
    except MissingScopesError:
        readable = False
    if not unknown:
        return
    if not readable:
        for scope in (SCHEMA_READ, OBJECTS_READ):
            unknown.discard(scope)
            missing.add(scope)
    else:
        try:
            await client.get_contact_by_email(PROBE_EMAIL)
            unknown.discard(OBJECTS_READ)
            granted.add(OBJECTS_READ)
        except MissingScopesError:
            # The property read went through without objects read: schemas read did it.
            unknown.difference_update({OBJECTS_READ, SCHEMA_READ})
            missing.add(OBJECTS_READ)
            granted.add(SCHEMA_READ)
        try:
            outcome = await ensure_property_group(client)
        except MissingScopesError:
            unknown.discard(SCHEMA_WRITE)
            missing.add(SCHEMA_WRITE)
        else:
            if outcome.outcome.value != "unchanged":  # it wrote: the scope is there
                unknown.discard(SCHEMA_WRITE)
                granted.add(SCHEMA_WRITE)


def _limits(seen: list[RateLimitInfo]) -> Limits:
    if not seen:
        return Limits()
    last = seen[-1]
    return Limits(
        per_window=last.max,
        window_ms=last.interval_ms,
        daily=last.daily,
        daily_remaining=last.daily_remaining,
        plan=plan_for_limits(last.max, last.daily),
    )
