"""The RateGovernor's interface, written once: what an activation (or the API) asks of its token's
governor, and the errors it answers with.

`GovernorCore` implements it in-process (unit and integration tests hand the core itself to an
ActivationCore); `actors.shells.RayGovernor` implements it over a Ray actor handle.

A write goes with a permit: `turn` waits for the activation's fair turn and a slot in the token's
budget and returns a `Permit`; the activation forms its batch only then (just in time) and hands
the permit to the write (`upsert`, `update`, `read_ids`), whose first HTTP request uses it. A call
without a permit, and every further request of a call (a resend, a split, a retry), waits for its
own turn. A permit not used is given back with `release`, or expires (`scheduler.dispatch`).

Errors raised to callers::

    TokenRejected      401/403: the token is wrong, revoked or lacks scopes; its activations pause
    CallFailed         retries exhausted on a retryable failure; the caller puts its batch back
    └── ActivationGone the activation was deleted: no call is made for it any more
    CallRefused        HubSpot kept answering a 4xx that resending cannot fix (404, 409, 413, ...)
"""

from __future__ import annotations

from typing import Protocol

from actors.messages import WriteReport
from crm.errors import HubSpotError
from crm.properties import PropertySpec
from scheduler.dispatch import Permit
from scheduler.lanes import Lane

__all__ = [
    "ActivationGone",
    "CallFailed",
    "CallRefused",
    "GovernorPort",
    "Permit",
    "TokenRejected",
]


class TokenRejected(Exception):
    """HubSpot refused the token (401) or its scopes (403); the message says what to do."""


class CallFailed(Exception):
    """A call still failed after its retries; it is safe to try again later."""


class ActivationGone(CallFailed):
    """The activation was deleted: the governor makes no call for it any more."""


class CallRefused(Exception):
    """HubSpot kept refusing a call with a 4xx that resending will not fix (404, 409, 413, or
    one hubsync does not expect); the message says which status and what HubSpot said."""

    def __init__(self, error: HubSpotError) -> None:
        self.status = error.status
        said = error.hubspot_message or error.what
        super().__init__(f"HubSpot answered {error.status}: {said}")

    def __reduce__(self) -> tuple[object, ...]:
        # Crosses Ray as its message (the HubSpotError it was made from stays here).
        return (_refused, (self.status, str(self)))


def _refused(status: int | None, message: str) -> CallRefused:
    refused = CallRefused.__new__(CallRefused)
    Exception.__init__(refused, message)
    refused.status = status
    return refused


class GovernorPort(Protocol):
    """What an activation asks of its token's RateGovernor. Every call names its activation (a
    deleted one gets ActivationGone, its calls never reach HubSpot) and its `Lane`."""

    async def turn(self, activation_id: str, lane: Lane) -> Permit:
        """Wait for the activation's fair turn and a slot in the budget."""
        ...

    async def release(self, permit: Permit) -> None:
        """Give back a permit that will not be used (nothing was due when it came)."""
        ...

    async def upsert(
        self,
        activation_id: str,
        lane: Lane,
        contacts: list[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        """Create or update contacts by email: one outcome per contact, bad inputs isolated."""
        ...

    async def update(
        self,
        activation_id: str,
        lane: Lane,
        records: list[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        """Update existing contacts by HubSpot record id."""
        ...

    async def read_ids(
        self, activation_id: str, lane: Lane, emails: list[str], permit: Permit | None = None
    ) -> dict[str, str]:
        """Record ids of the contacts that exist, by lower-cased email (one batch read)."""
        ...

    async def read_contact(
        self, activation_id: str, email: str, properties: list[str]
    ) -> dict[str, str | None] | None:
        """One contact's values as HubSpot holds them now (None: no such contact)."""
        ...

    async def ensure_schema(self, activation_id: str, specs: list[PropertySpec]) -> dict[str, str]:
        """Ensure the group and properties; returns, per property name, why it cannot be used."""
        ...

    async def archive(self, activation_id: str, name: str) -> bool:
        """Archive a property in HubSpot; False if it was not there."""
        ...
