"""hubsync's metrics, exported by Ray (``ray.util.metrics``) on each node's metrics endpoint.

Names appear there prefixed ``ray_``. Tags carry activation ids, partitions and token
fingerprints; never a token.
"""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

__all__ = ["metrics"]


class _Metrics:
    def __init__(self) -> None:
        self.events_in = Counter(
            "hubsync_events_in", "CDP change events read from the streams", tag_keys=("partition",)
        )
        self.dead_letters = Counter(
            "hubsync_dead_letters",
            "Entries parked on the dead-letter stream",
            tag_keys=("partition",),
        )
        self.changes_received = Counter(
            "hubsync_changes_received", "Changes routed to an activation", tag_keys=("activation",)
        )
        self.coalesced = Counter(
            "hubsync_changes_coalesced",
            "Changes made moot before they were sent (flips, repeats)",
            tag_keys=("activation",),
        )
        self.pending = Gauge(
            "hubsync_pending_contacts",
            "Contacts waiting to be written",
            tag_keys=("activation", "lane"),
        )
        self.written = Counter(
            "hubsync_contacts_written", "Contact writes HubSpot accepted", tag_keys=("activation",)
        )
        self.calls = Counter(
            "hubsync_hubspot_calls",
            "HubSpot API calls by HTTP status (0: no response)",
            tag_keys=("activation", "status"),
        )
        self.rate_limited = Counter(
            "hubsync_hubspot_429",
            "HubSpot calls refused with 429",
            tag_keys=("activation", "policy"),
        )
        self.window_left = Gauge(
            "hubsync_calls_left_window",
            "Calls left in the token's rolling window",
            tag_keys=("token",),
        )
        self.daily_left = Gauge(
            "hubsync_calls_left_day",
            "Calls left in the account's daily budget",
            tag_keys=("token",),
        )
        self.lag = Histogram(
            "hubsync_sync_lag_seconds",
            "From the event's XADD to HubSpot accepting the write",
            boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
            tag_keys=("activation",),
        )
        self.backfill_done = Gauge(
            "hubsync_backfill_done",
            "Backfill contacts written",
            tag_keys=("activation", "property"),
        )
        self.backfill_total = Gauge(
            "hubsync_backfill_total",
            "Backfill contacts to write",
            tag_keys=("activation", "property"),
        )


@cache
def metrics() -> _Metrics:
    """The metrics, created once per process (Ray registers each name once)."""
    return _Metrics()
