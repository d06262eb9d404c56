"""Every way a HubSpot call can fail, as types.

    HubSpotError                    anything that went wrong talking to HubSpot
    ├── AuthenticationError         401: the token is wrong, expired or revoked
    ├── MissingScopesError          403: the token lacks scopes (`.scopes` names them)
    ├── RateLimitedError            429: a limit was hit (`.policy`, `.retry_after`)   retryable
    ├── ValidationError             400: HubSpot refused the request's content (`.ids`)
    ├── NotFoundError               404: the named object or property does not exist
    ├── ConflictError               409: it already exists
    ├── PayloadTooLargeError        413: the request body is too large for HubSpot
    ├── LockedError                 423: HubSpot locked the records; slow down     retryable
    ├── ServerError                 5xx: HubSpot failed                             retryable
    ├── UnexpectedResponseError     a status or body the client cannot interpret,
    │                               e.g. a 2xx with neither results nor errors      retryable
    ├── TransportError              timeout, refused or dropped connection          retryable
    └── ArchivedPropertyError       ensure found the property in HubSpot's recycle bin

    InvalidTokenError (a ValueError) a token that cannot be sent in a header (whitespace, control
                                    or non-ASCII characters); raised before any request is made

Every error carries what HubSpot said (`.status`, `.category`, `.hubspot_message`,
`.correlation_id`) and the rate-limit headers of its response (`.rate_limit`, all None when
absent). `str(error)` says what happened and what to do. No error ever holds the access token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crm.ratelimit import UNKNOWN, RateLimitInfo

__all__ = [
    "ArchivedPropertyError",
    "AuthenticationError",
    "ConflictError",
    "HubSpotError",
    "InvalidTokenError",
    "LockedError",
    "MissingScopesError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
]


class HubSpotError(Exception):
    """Base of every HubSpot failure. `retryable` tells whether the same call may succeed later."""

    retryable: bool = False

    def __init__(
        self,
        what: str,
        *,
        status: int | None = None,
        category: str | None = None,
        hubspot_message: str | None = None,
        correlation_id: str | None = None,
        rate_limit: RateLimitInfo = UNKNOWN,
        operation: str | None = None,
        body: Any = None,
    ) -> None:
        self.what = what
        self.status = status
        self.category = category
        self.hubspot_message = hubspot_message
        self.correlation_id = correlation_id
        self.rate_limit = rate_limit
        self.operation = operation
        self.body = body
        super().__init__(self._render())

    @property
    def advice(self) -> str:
        """What to do about it. Read-only: a subclass sets a plain class attribute, or a property
        when the advice depends on the error (a writable attribute could not be overridden so)."""
        return "Check the request and HubSpot's message."

    def _render(self) -> str:
        parts = [self.what]
        if self.operation:
            parts.insert(0, f"{self.operation}:")
        if self.hubspot_message and self.hubspot_message not in self.what:
            parts.append(f"HubSpot says: {self.hubspot_message}")
        parts.append(self.advice)
        if self.correlation_id:
            parts.append(f"(correlation id {self.correlation_id})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, category={self.category!r}, "
            f"correlation_id={self.correlation_id!r})"
        )


class AuthenticationError(HubSpotError):
    advice = (
        "The access token is wrong, expired or revoked: paste a valid private-app token or "
        "service key into the activation. Retrying will not help."
    )


class MissingScopesError(HubSpotError):
    def __init__(self, what: str, *, scopes: Sequence[str] = (), **kwargs: Any) -> None:
        self.scopes = tuple(scopes)
        super().__init__(what, **kwargs)

    @property
    def advice(self) -> str:
        named = ", ".join(self.scopes) if self.scopes else "the scopes HubSpot names"
        return (
            f"Grant the token these scopes in HubSpot (private app or service key settings): "
            f"{named}. Retrying will not help."
        )


class RateLimitedError(HubSpotError):
    retryable = True

    def __init__(
        self,
        what: str,
        *,
        policy: str | None = None,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.policy = policy
        self.retry_after = retry_after
        super().__init__(what, **kwargs)

    @property
    def is_daily(self) -> bool:
        return self.policy == "DAILY"

    @property
    def advice(self) -> str:
        if self.is_daily:
            return (
                "The account's daily API budget is spent; calls resume after midnight in the "
                "account's time zone (or buy the API limit increase)."
            )
        if self.retry_after is not None:
            return f"Wait {self.retry_after:g} s before the next call; lower the request rate."
        return "Wait and retry with backoff; lower the request rate."


class ValidationError(HubSpotError):
    advice = (
        "Fix the offending inputs (or split the batch to isolate them); resending the same "
        "request will fail again."
    )

    def __init__(
        self,
        what: str,
        *,
        ids: Sequence[str] = (),
        details: Sequence[Any] = (),
        property_errors: Sequence[Any] = (),
        **kwargs: Any,
    ) -> None:
        self.ids = tuple(ids)
        self.details = tuple(details)
        self.property_errors = tuple(property_errors)
        """`crm.client.PropertyError`s: the properties HubSpot named as the cause."""
        super().__init__(what, **kwargs)


class NotFoundError(HubSpotError):
    advice = "Check the name or id; it may have been archived or never created."


class ConflictError(HubSpotError):
    advice = "It already exists; read it instead of creating it."


class PayloadTooLargeError(HubSpotError):
    advice = "Send fewer inputs (or shorter values) per request; the same request will fail again."


class LockedError(HubSpotError):
    retryable = True
    advice = (
        "HubSpot locked the records for a concurrent write; retry after a short pause (>= 2 s)."
    )


class ServerError(HubSpotError):
    retryable = True
    advice = "HubSpot failed on its side; retry with backoff."


class UnexpectedResponseError(HubSpotError):
    retryable = True
    advice = "Treat the call as failed and retry with backoff; report it if it persists."


class TransportError(HubSpotError):
    retryable = True
    advice = (
        "No answer from HubSpot (timeout or dropped connection); the write may or may not "
        "have happened. Writes are idempotent: retry with backoff."
    )


class ArchivedPropertyError(HubSpotError):
    def __init__(self, what: str, *, names: Sequence[str] = (), **kwargs: Any) -> None:
        self.names = tuple(names)
        super().__init__(what, **kwargs)

    advice = (
        "Restore it in HubSpot (Settings > Properties > Archived properties > Restore), then "
        "retry; or give the audience/attribute a different property name."
    )


class InvalidTokenError(ValueError):
    """The access token cannot be a bearer token: HubSpot's tokens are printable ASCII without
    spaces. The message names the problem (and where in the token), never the token itself:
    an HTTP library would otherwise put the whole header, token included, in its error text."""
