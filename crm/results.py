"""What the HubSpot client takes and returns: inputs of a batch write and results of each call.

Frozen msgspec Structs; `crm.client.HubSpotClient` builds them from HubSpot's answers
(`crm.wire`), the RateGovernor and the CLI read them.
"""

from __future__ import annotations

import enum

import msgspec

from crm.ratelimit import RateLimitInfo

__all__ = [
    "BatchWriteResult",
    "ContactRecord",
    "ContactUpdate",
    "ContactUpsert",
    "EnsureOutcome",
    "EnsureResult",
    "PropertiesCreated",
    "PropertyError",
    "ReadResult",
    "TokenInfo",
    "WriteResult",
    "WriteStatus",
]


class ContactUpsert(msgspec.Struct, frozen=True):
    """Set these properties on the contact with this email, creating it if needed."""

    email: str
    properties: dict[str, str]


class ContactUpdate(msgspec.Struct, frozen=True):
    """Set these properties on the contact with this HubSpot record id."""

    id: str
    properties: dict[str, str]


class PropertyError(msgspec.Struct, frozen=True, kw_only=True):
    """One property HubSpot named in an error: its internal name, HubSpot's code (e.g.
    PROPERTY_DOESNT_EXIST, INVALID_OPTION, INVALID_NUMBER; None when HubSpot gave none) and
    message."""

    name: str
    code: str | None = None
    message: str = ""


class WriteStatus(enum.StrEnum):
    CREATED = "created"
    WRITTEN = "written"
    FAILED = "failed"


class WriteResult(msgspec.Struct, frozen=True, kw_only=True):
    """The fate of one input: `key` is the lower-cased email (upsert) or the record id (update)."""

    key: str
    status: WriteStatus
    trace_id: str
    contact_id: str | None = None
    category: str | None = None
    message: str | None = None
    property_errors: tuple[PropertyError, ...] = ()
    """The properties HubSpot named as the cause of a failure, with its code for each."""

    @property
    def ok(self) -> bool:
        return self.status is not WriteStatus.FAILED


class BatchWriteResult(msgspec.Struct, frozen=True, kw_only=True):
    results: tuple[WriteResult, ...]
    status_code: int
    rate_limit: RateLimitInfo
    correlation_id: str | None = None

    @property
    def by_key(self) -> dict[str, WriteResult]:
        return {r.key: r for r in self.results}

    @property
    def failed(self) -> tuple[WriteResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def succeeded(self) -> tuple[WriteResult, ...]:
        return tuple(r for r in self.results if r.ok)


class ContactRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str | None
    properties: dict[str, str | None]


class ReadResult(msgspec.Struct, frozen=True, kw_only=True):
    found: dict[str, ContactRecord]
    """Lower-cased email -> contact."""
    missing: tuple[str, ...]
    """Lower-cased emails HubSpot has no contact for."""
    rate_limit: RateLimitInfo


class EnsureOutcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    ARCHIVED = "archived"
    """The name is in HubSpot's recycle bin; restore it in HubSpot (only with on_archived="report")."""


class EnsureResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    outcome: EnsureOutcome
    changed: tuple[str, ...] = ()
    """The fields a PATCH brought back to the wanted definition."""


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What `access-token-info` says of a private-app token: its account, app and scopes."""

    hub_id: int | None
    app_id: int | None
    user_id: int | None
    scopes: tuple[str, ...]


class PropertiesCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A batch create's answer: the names created, and those HubSpot says exist already (live,
    or archived in its recycle bin: the caller reads which)."""

    created: tuple[str, ...]
    conflicts: tuple[str, ...] = ()
