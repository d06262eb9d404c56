"""The status the actors publish in Redis, as typed messages.

Each ActivationActor and RateGovernor writes its status as JSON about once a second
(`Keys.activation_status`, `Keys.governor_status`, with a TTL); `hubsync status`, the HTTP API,
the console and Grafana read it. The JSON is these Structs' encoding, field for field what the
actors wrote as dicts before (a reader of the old JSON reads the new one, and `read_*` below read
both): change it only as msgspec's schema evolution allows (new fields get defaults, no field
changes type).

The Structs are built by pure functions of a core's state (`actors.activation.activation_status`,
`actors.governor.governor_status`), unit-tested without Ray or Redis.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = [
    "ActivationState",
    "ActivationStatus",
    "BackfillProgress",
    "GovernorStatus",
    "decode_activation_status",
    "decode_governor_status",
    "encode_status",
]


class ActivationState(enum.StrEnum):
    """What an ActivationActor says it is doing (readers add "stale": `hubsync.views`)."""

    STARTING = "starting"  # no configuration folded yet
    RUNNING = "running"
    PAUSED = "paused"
    DEGRADED = "degraded"  # some properties have a problem; the others sync
    DELETED = "deleted"


class BackfillProgress(msgspec.Struct, frozen=True, omit_defaults=True):
    """One audience's or attribute's backfill. While its members load, `loading` is true and
    `done` 0; once loaded, `elapsed_s` counts from its start to its end (or now)."""

    done: int
    total: int
    eta_s: float | None  # written as null when unknown (always present)
    elapsed_s: float | None = None
    loading: bool = False


class ActivationStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One activation as its actor last published it. Defaults let a partial document (an
    older writer's, a test's) read as well."""

    state: ActivationState = ActivationState.STARTING
    pending: int = 0  # realtime + backfill + in flight
    pending_realtime: int = 0
    pending_backfill: int = 0
    in_flight: int = 0
    held: int = 0  # flapping contacts held back by damping (counted in pending)
    changes_in: int = 0
    coalesced: int = 0
    written: int = 0
    written_today: int = 0
    created: int = 0
    parked: int = 0
    not_in_hubspot: int = 0
    calls: int = 0
    lag_s: float | None = None
    backfills: dict[str, BackfillProgress] = {}  # by property key (a:<id> / t:<id>)
    properties: dict[str, str] = {}  # property key -> HubSpot internal name
    problems: dict[str, str] = {}  # property key -> why it does not sync
    last_error: str = ""
    updated_at: float = 0.0  # epoch seconds (wall clock): readers judge staleness by it


class GovernorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One token's budget as its RateGovernor last published it."""

    fingerprint: str
    plan: str | None = None
    window_limit: int = 0
    window_left: int = 0
    daily_limit: int | None = None
    daily_left: int | None = None
    daily_resets_at: float | None = None
    blocked_until: float | None = None
    waiting_for: str | None = None  # why calls are held back beyond the usual pacing, in words
    waiting: int = 0  # activations waiting for a permit
    calls: dict[str, int] = {}  # HubSpot calls by HTTP status
    rate_limited: int = 0
    rejected: str | None = None
    problem: str | None = None
    updated_at: float = 0.0


encode_status = msgspec.json.Encoder().encode
decode_activation_status = msgspec.json.Decoder(ActivationStatus).decode
decode_governor_status = msgspec.json.Decoder(GovernorStatus).decode
