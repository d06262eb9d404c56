"""HubSpot's numbers, in one place: each plan's API limits, the rolling window, the batch size,
the request timeout hubsync allows, the API versions (sources: docs/hubspot-api.md, section 3.1).

A leaf module: everything else that needs one of these numbers imports it from here (the
emulator, the RateGovernor, the CLI's choices, the HTTP API's schema, the dry-run plan).
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "API_VERSIONS",
    "BATCH_SIZE",
    "DEFAULT_API_VERSION",
    "PLANS",
    "REQUEST_TIMEOUT_S",
    "WINDOW_S",
    "ApiVersion",
    "Plan",
]

WINDOW_S = 10.0
"""HubSpot's rolling window: a token's calls are counted over ANY 10 seconds."""

BATCH_SIZE = 100
"""Inputs per batch call (batch upsert, update, read): HubSpot refuses more."""

REQUEST_TIMEOUT_S = 30.0
"""How long one HubSpot call may take before hubsync counts it as a timeout."""

ApiVersion = Literal["v3", "2026-03"]
API_VERSIONS: tuple[ApiVersion, ...] = ("v3", "2026-03")
DEFAULT_API_VERSION: ApiVersion = "2026-03"


class Plan(msgspec.Struct, frozen=True):
    name: str
    per_window: int
    """Calls per rolling 10-second window, per token (app)."""
    daily: int
    """Calls per day, per account."""


PLANS: dict[str, Plan] = {
    "free": Plan("free", 100, 250_000),
    "starter": Plan("starter", 100, 250_000),
    "professional": Plan("professional", 190, 625_000),
    "enterprise": Plan("enterprise", 190, 1_000_000),
    # Enterprise with one API limit increase: 250 per 10 s and +1M per day.
    "addon": Plan("addon", 250, 2_000_000),
}
