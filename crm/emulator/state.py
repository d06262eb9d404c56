"""An in-memory HubSpot account: property groups, contact properties, contacts, tokens, limits.

`HubSpotState.handle(ApiRequest) -> ApiResponse` is the whole API without HTTP. It is
synchronous and clock-injected, so unit tests drive it directly with a fake clock;
`crm.emulator.app` only translates HTTP to and from it. Not thread-safe: one event loop owns it.

The account is composed of parts, one module each, which a reader can take one at a time:

    pipeline.py  RequestPipeline: auth (auth.py), rate limits, scopes, faults (faults.py), then
                 the operation; counts and logs every call and hands it to the observers
    schema.py    Schema: property groups and property definitions
    contacts.py  Contacts: contact records, batch writes and reads, search
    values.py    property values checked and normalised as HubSpot stores them
    wire.py      the request and answer types, HubSpot's error bodies and batch envelopes
    config.py    EmulatorConfig: the plan and the UNVERIFIED behaviours (docs/hubspot-api.md)

`OPERATIONS` below is the table that ties them: each API operation, the scopes it needs and the
part that answers it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from crm.emulator.auth import (
    ALL_SCOPES,
    OBJECTS_READ,
    OBJECTS_WRITE,
    SCHEMA_READ,
    SCHEMA_WRITE,
    Tokens,
)
from crm.emulator.config import EmulatorConfig
from crm.emulator.contacts import Contacts, WriteObserver
from crm.emulator.faults import FaultInjector, FaultSettings
from crm.emulator.limits import PLANS, DailyBudget
from crm.emulator.pipeline import (
    WINDOW_SECONDS,
    Handled,
    Observer,
    Operation,
    RequestPipeline,
)
from crm.emulator.schema import Schema
from crm.emulator.wire import ApiRequest, ApiResponse
from crm.tokens import token_fingerprint

__all__ = [
    "ALL_SCOPES",
    "ApiRequest",
    "ApiResponse",
    "EmulatorConfig",
    "Handled",
    "HubSpotState",
    "Observer",
    "WriteObserver",
]

Clock = Callable[[], float]

_SCHEMA_READS = frozenset({SCHEMA_READ, OBJECTS_READ})
_SCHEMA_WRITE = frozenset({SCHEMA_WRITE})
_OBJECTS_READ = frozenset({OBJECTS_READ})
_OBJECTS_WRITE = frozenset({OBJECTS_WRITE})


def operations(schema: Schema, contacts: Contacts) -> dict[str, Operation]:
    """Every API operation: the scopes of which it needs one, and the method that answers it."""
    return {
        "groups_list": Operation(_SCHEMA_READS, schema.op_groups_list),
        "group_create": Operation(_SCHEMA_WRITE, schema.op_group_create),
        "group_get": Operation(_SCHEMA_READS, schema.op_group_get),
        "group_update": Operation(_SCHEMA_WRITE, schema.op_group_update),
        "group_archive": Operation(_SCHEMA_WRITE, schema.op_group_archive),
        "properties_list": Operation(_SCHEMA_READS, schema.op_properties_list),
        "property_create": Operation(_SCHEMA_WRITE, schema.op_property_create),
        "property_get": Operation(_SCHEMA_READS, schema.op_property_get),
        "property_update": Operation(_SCHEMA_WRITE, schema.op_property_update),
        "property_archive": Operation(_SCHEMA_WRITE, schema.op_property_archive),
        "properties_batch_create": Operation(_SCHEMA_WRITE, schema.op_properties_batch_create),
        "properties_batch_read": Operation(_SCHEMA_READS, schema.op_properties_batch_read),
        "properties_batch_archive": Operation(_SCHEMA_WRITE, schema.op_properties_batch_archive),
        "contacts_batch_upsert": Operation(_OBJECTS_WRITE, contacts.op_batch_upsert),
        "contacts_batch_update": Operation(_OBJECTS_WRITE, contacts.op_batch_update),
        "contacts_batch_create": Operation(_OBJECTS_WRITE, contacts.op_batch_create),
        "contacts_batch_read": Operation(_OBJECTS_READ, contacts.op_batch_read),
        "contacts_batch_archive": Operation(_OBJECTS_WRITE, contacts.op_batch_archive),
        "contacts_search": Operation(_OBJECTS_READ, contacts.op_search, search=True),
        "contact_get": Operation(_OBJECTS_READ, contacts.op_contact_get),
        "contact_patch": Operation(_OBJECTS_WRITE, contacts.op_contact_patch),
        "contact_archive": Operation(_OBJECTS_WRITE, contacts.op_contact_archive),
    }


class HubSpotState:
    """One emulated HubSpot account."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        tokens: Mapping[str, Iterable[str]] | None = None,
        clock: Clock = time.time,
        seed: int = 0,
    ) -> None:
        self.clock = clock
        self.seed = seed
        self._initial_config = config or EmulatorConfig(open_auth=not tokens)
        self._initial_tokens = {t: frozenset(s) for t, s in (tokens or {}).items()}
        self.faults = FaultInjector(seed)
        self.observers: list[Observer] = []
        """Called with a `Handled` after each API call (kept across `reset`)."""
        self.write_observers: list[WriteObserver] = []
        """Called with (contact id, time) on each write of a contact (kept across `reset`)."""
        self.reset()

    # ---- lifecycle and administration -------------------------------------------------

    def reset(self) -> None:
        """Forget every contact, custom property, counter and fault; back to the start config."""
        self.config = msgspec.structs.replace(self._initial_config)
        self.auth = Tokens(self._initial_tokens, self._settings)
        self.faults.clear(self.seed)
        self.schema = Schema(self._settings, self.clock())
        self.contacts = Contacts(
            self._settings, self.schema, self.faults, write_observers=self.write_observers
        )
        self.pipeline = RequestPipeline(
            operations(self.schema, self.contacts),
            settings=self._settings,
            tokens=self.auth,
            faults=self.faults,
            clock=self.clock,
            observers=self.observers,
        )

    def _settings(self) -> EmulatorConfig:
        return self.config

    def observe(self, observer: Observer) -> None:
        """Call `observer` after each API call with what was asked and answered."""
        self.observers.append(observer)

    def observe_writes(self, observer: WriteObserver) -> None:
        """Call `observer` on each write of a contact, also one that a failing batch made before
        it failed (which an answer's results do not show)."""
        self.write_observers.append(observer)

    def register_token(self, token: str, scopes: Iterable[str] = ALL_SCOPES) -> str:
        self.auth.register(token, scopes)
        return token_fingerprint(token)

    def revoke_token(self, token: str) -> None:
        self.auth.revoke(token)

    def configure(self, changes: Mapping[str, Any]) -> None:
        merged = msgspec.structs.asdict(self.config) | dict(changes)
        config = msgspec.convert(merged, EmulatorConfig)
        if config.plan not in PLANS:
            raise ValueError(f"unknown plan {config.plan!r}; one of {sorted(PLANS)}")
        self.config = config

    def set_faults(self, settings: FaultSettings) -> None:
        self.faults.configure(settings)

    def restore_property(self, name: str) -> bool:
        """What HubSpot's UI does from the recycle bin."""
        return self.schema.restore_property(name, self.clock())

    # ---- what tests and the admin endpoints read ---------------------------------------

    @property
    def tokens(self) -> dict[str, frozenset[str]]:
        return self.auth.scopes

    @property
    def properties(self) -> dict[str, dict[str, Any]]:
        return self.schema.properties

    @property
    def groups(self) -> dict[str, dict[str, Any]]:
        return self.schema.groups

    @property
    def request_log(self) -> deque[tuple[float, str, str, str]]:
        """(arrival time, token fingerprint or "-", operation, status or fault kind), oldest first."""
        return self.pipeline.request_log

    @property
    def daily(self) -> DailyBudget:
        return self.pipeline.limits.daily

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        pipeline, limits = self.pipeline, self.pipeline.limits
        tokens = {}
        for fp, st in limits.token_stats.items():
            window = limits.windows.get(fp)
            tokens[fp] = {
                "requests": st.requests,
                "accepted": st.accepted,
                "rate_limited": st.rate_limited,
                "max_calls_in_any_window": window.peak if window else 0,
                "calls_in_window_now": window.count(now) if window else 0,
            }
        return {
            "requests": pipeline.requests,
            "by_status": dict(pipeline.by_status),
            "rate_limited": sum(limits.rate_limited.values()),
            "rate_limited_by_policy": dict(limits.rate_limited),
            "inputs_written": self.contacts.inputs_written,
            "contacts": self.contacts.live(),
            "max_calls_in_any_window": max((w.peak for w in limits.windows.values()), default=0),
            "daily_used": limits.daily.used,
            "faults": dict(pipeline.faults_injected),
            "limits": {
                "per_window": self.config.per_window,
                "window_seconds": WINDOW_SECONDS,
                "daily": self.config.per_day,
                "plan": self.config.plan,
            },
            "tokens": tokens,
        }

    def dump_contacts(self, *, with_timestamps: bool = False) -> list[dict[str, Any]]:
        return self.contacts.dump(with_timestamps=with_timestamps)

    def dump_properties(self) -> dict[str, Any]:
        return self.schema.dump()

    def requests_seen(self) -> list[dict[str, Any]]:
        """The request log (newest 100,000), for tests that check timing."""
        return self.pipeline.requests_seen()

    # ---- the API -------------------------------------------------------------------------

    def handle(self, request: ApiRequest) -> ApiResponse:
        return self.pipeline.handle(request)

    def token_info(self, body: bytes) -> ApiResponse:
        """`POST /oauth/v2/private-apps/get/access-token-info` (see `RequestPipeline.token_info`)."""
        return self.pipeline.token_info(body)
