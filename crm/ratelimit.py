"""HubSpot's rate-limit headers, read into a frozen value object.

HubSpot sends `X-HubSpot-RateLimit-*` headers on API responses, except on search responses and
whenever it cannot gather the information; then the headers are missing entirely. A missing
header means "unknown" and is `None` here, never zero.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import msgspec

__all__ = ["RateLimitInfo", "parse_retry_after"]

_MAX = "x-hubspot-ratelimit-max"
_REMAINING = "x-hubspot-ratelimit-remaining"
_INTERVAL = "x-hubspot-ratelimit-interval-milliseconds"
_DAILY = "x-hubspot-ratelimit-daily"
_DAILY_REMAINING = "x-hubspot-ratelimit-daily-remaining"
_SECONDLY = "x-hubspot-ratelimit-secondly"
_SECONDLY_REMAINING = "x-hubspot-ratelimit-secondly-remaining"


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class RateLimitInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What one response said about the token's limits; every field is None when not sent."""

    max: int | None = None
    """Calls allowed in the rolling window (`X-HubSpot-RateLimit-Max`)."""
    remaining: int | None = None
    """Calls left in the rolling window (`X-HubSpot-RateLimit-Remaining`)."""
    interval_ms: int | None = None
    """The rolling window's length (`X-HubSpot-RateLimit-Interval-Milliseconds`)."""
    daily: int | None = None
    """Calls allowed per day for the account (`X-HubSpot-RateLimit-Daily`)."""
    daily_remaining: int | None = None
    """Calls left today (`X-HubSpot-RateLimit-Daily-Remaining`)."""
    secondly: int | None = None
    """Legacy per-second limit (`X-HubSpot-RateLimit-Secondly`); do not depend on it."""
    secondly_remaining: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo:
        """Read the headers of one response (any case-insensitive mapping, e.g. httpx.Headers)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        return cls(
            max=_int_or_none(lowered.get(_MAX)),
            remaining=_int_or_none(lowered.get(_REMAINING)),
            interval_ms=_int_or_none(lowered.get(_INTERVAL)),
            daily=_int_or_none(lowered.get(_DAILY)),
            daily_remaining=_int_or_none(lowered.get(_DAILY_REMAINING)),
            secondly=_int_or_none(lowered.get(_SECONDLY)),
            secondly_remaining=_int_or_none(lowered.get(_SECONDLY_REMAINING)),
        )

    @property
    def known(self) -> bool:
        """True when the response carried the rolling-window headers."""
        return self.max is not None and self.remaining is not None

    @property
    def interval_seconds(self) -> float | None:
        return None if self.interval_ms is None else self.interval_ms / 1000.0


UNKNOWN = RateLimitInfo()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
