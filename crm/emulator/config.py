"""The emulator's run-time settings: the plan and its limits, and how to answer where HubSpot's
documentation leaves a choice open.

Behaviours that docs/hubspot-api.md marks UNVERIFIED are settings here, defaulting to the
documented reading.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from crm.emulator.limits import PLANS

__all__ = ["EmulatorConfig"]


class EmulatorConfig(msgspec.Struct, kw_only=True):
    """Run-time settings (`POST /_emulator/config` takes any subset as JSON)."""

    plan: str = "starter"
    rate: int | None = None
    """Calls per rolling 10 s per token; None = the plan's figure."""
    daily: int | None = None
    """Calls per day for the account; None = the plan's figure."""
    count_rejected_calls: bool = False
    """Whether a 429 itself counts against the rolling window (UNVERIFIED; default no)."""
    search_per_second: int = 5
    search_policy_name: str = "SECONDLY"
    """policyName of a search 429 (UNVERIFIED)."""
    send_retry_after: bool = False
    """Send `Retry-After` on 429s (HubSpot does not document one; default off)."""
    archived_name_conflict: bool = True
    """Creating a property whose name is archived answers 409 (UNVERIFIED; default yes).
    When False the archived property is restored with the new definition."""
    email_upsert_errors: Literal["multi_status", "whole_batch"] = "multi_status"
    """How upsert by email reports a bad input: per-input 207 (with trace ids), or the whole
    request fails with 400 ("partial upserts are not supported when using email", UNVERIFIED)."""
    max_batch_inputs: int = 100
    max_property_name_length: int = 100
    bool_requires_options: bool = False
    open_auth: bool = False
    """Accept any bearer token with every scope (unless it was registered with fewer)."""
    hub_id: int = 46_000_001
    """The account's id (hubId), as `access-token-info` reports it."""
    token_info: bool = True
    """Whether `POST /oauth/v2/private-apps/get/access-token-info` answers. HubSpot documents it
    for private-app tokens; whether it covers service keys is UNVERIFIED, so False emulates a
    token it does not cover (404, as for an unknown endpoint)."""

    @property
    def per_window(self) -> int:
        return self.rate if self.rate is not None else PLANS[self.plan].per_window

    @property
    def per_day(self) -> int:
        return self.daily if self.daily is not None else PLANS[self.plan].daily
