"""hubsync's metrics, exported by Ray (``ray.util.metrics``) on each node's metrics endpoint.

Names appear there prefixed ``ray_``. Tags carry activation ids, partitions and token
fingerprints; never a token.
"""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

__all__ = ["HISTOGRAMS", "METRICS", "RayCallMetrics", "call_tags", "metric_names", "metrics"]

METRICS = (
    "hubsync_events_in",
    "hubsync_dead_letters",
    "hubsync_changes_received",
    "hubsync_changes_coalesced",
    "hubsync_pending_contacts",
    "hubsync_contacts_written",
    "hubsync_hubspot_calls",
    "hubsync_hubspot_429",
    "hubsync_calls_left_window",
    "hubsync_calls_left_day",
    "hubsync_sync_lag_seconds",
    "hubsync_backfill_done",
    "hubsync_backfill_total",
)
"""Every metric `_Metrics` defines (a unit test keeps the two in step)."""
HISTOGRAMS = frozenset({"hubsync_sync_lag_seconds"})


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
            "HubSpot API calls by HTTP status (0: no response) and token fingerprint",
            tag_keys=("activation", "status", "token"),
        )
        self.rate_limited = Counter(
            "hubsync_hubspot_429",
            "HubSpot calls refused with 429, by policy (window or daily) and token fingerprint",
            tag_keys=("activation", "policy", "token"),
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


def metric_names() -> frozenset[str]:
    """Every metric name hubsync defines, as Prometheus shows them (``ray_`` prefix; histograms
    also as ``_bucket``, ``_sum`` and ``_count``). The Grafana dashboard may use only these."""
    names: set[str] = set()
    for spec in METRICS:
        base = f"ray_{spec}"
        names.add(base)
        if spec in HISTOGRAMS:
            names.update(f"{base}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return frozenset(names)


@cache
def metrics() -> _Metrics:
    """The metrics, created once per process (Ray registers each name once)."""
    return _Metrics()


def call_tags(activation_id: str, fingerprint: str, **more: str) -> dict[str, str]:
    """A HubSpot call's metric tags: the activation and the token's fingerprint (never the token)."""
    return {"activation": activation_id or "-", "token": fingerprint, **more}


class RayCallMetrics:
    """A RateGovernor's HubSpot answers, counted in Ray's metrics (GovernorCore's sink)."""

    def __init__(self, fingerprint: str) -> None:
        self._fingerprint = fingerprint

    def call(self, activation_id: str, status: int) -> None:
        tags = call_tags(activation_id, self._fingerprint, status=str(status))
        metrics().calls.inc(tags=tags)

    def rate_limited(self, activation_id: str, policy: str | None) -> None:
        tags = call_tags(activation_id, self._fingerprint, policy=policy or "unknown")
        metrics().rate_limited.inc(tags=tags)
