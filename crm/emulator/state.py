"""An in-memory HubSpot account: property groups, contact properties, contacts, tokens, limits.

`HubSpotState.handle(ApiRequest) -> ApiResponse` is the whole API without HTTP: authentication,
rate limiting, faults, validation and the operations, in that order. It is synchronous and
clock-injected, so unit tests drive it directly with a fake clock; `crm.emulator.app` only
translates HTTP to and from it. Not thread-safe: one event loop owns it.

Behaviours that hubspot-api.md marks UNVERIFIED are settings of `EmulatorConfig`, defaulting to
the documented reading.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from crm.emulator.faults import FaultAction, FaultInjector, FaultSettings
from crm.emulator.limits import PLANS, DailyBudget, RollingWindow
from crm.tokens import token_fingerprint

__all__ = [
    "ALL_SCOPES",
    "ApiRequest",
    "ApiResponse",
    "EmulatorConfig",
    "HubSpotState",
]

Clock = Callable[[], float]

SCHEMA_READ = "crm.schemas.contacts.read"
SCHEMA_WRITE = "crm.schemas.contacts.write"
OBJECTS_READ = "crm.objects.contacts.read"
OBJECTS_WRITE = "crm.objects.contacts.write"
ALL_SCOPES = frozenset({SCHEMA_READ, SCHEMA_WRITE, OBJECTS_READ, OBJECTS_WRITE})

WINDOW_SECONDS = 10.0
SEARCH_WINDOW_SECONDS = 1.0
SEARCH_MAX_LIMIT = 200

PROPERTY_TYPES: dict[str, frozenset[str]] = {
    "bool": frozenset({"booleancheckbox", "calculation_equation"}),
    "enumeration": frozenset(
        {"booleancheckbox", "checkbox", "radio", "select", "calculation_equation"}
    ),
    "date": frozenset({"date"}),
    "datetime": frozenset({"date"}),
    "string": frozenset(
        {"text", "textarea", "html", "phonenumber", "file", "calculation_equation"}
    ),
    "number": frozenset({"number", "calculation_equation"}),
    "phone_number": frozenset({"phonenumber"}),
}
FIELD_TYPES = frozenset().union(*PROPERTY_TYPES.values())
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH_MS_RE = re.compile(r"^-?\d+$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MAX_STRING = 65_536
REQUEST_LOG_SIZE = 100_000


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


class ApiRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One API call, as the HTTP layer saw it."""

    operation: str
    method: str = "GET"
    params: dict[str, str] = {}
    query: dict[str, str] = {}
    body: bytes = b""
    authorization: str | None = None


class ApiResponse(msgspec.Struct, kw_only=True):
    status: int
    body: Any = None
    headers: dict[str, str] = {}
    fault: FaultAction | None = None
    latency: float = 0.0


class _Reply(Exception):
    """Raised inside an operation to answer with an error response."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body


@dataclass(slots=True)
class Contact:
    id: str
    properties: dict[str, str]
    created_at: float
    updated_at: float
    written_at: dict[str, float] = field(default_factory=dict)
    archived: bool = False


@dataclass(slots=True)
class TokenStats:
    requests: int = 0
    accepted: int = 0
    rate_limited: int = 0


@functools.lru_cache(maxsize=4096)  # one `now` per call: records repeat the same instants
def iso(ts: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _error(category: str, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "error", "message": message, "category": category}
    body.update(extra)
    return body


def _standard_error(error: dict[str, Any]) -> dict[str, Any]:
    """An element of a batch's `errors[]` as HubSpot's `StandardError` schema requires it:
    status, category, message, context, errors and links all present (a top-level error body
    may leave the last three out, an element of a 207 may not)."""
    return {"context": {}, "errors": [], "links": {}} | error


_BUILTIN_PROPERTIES: tuple[tuple[str, str, str, str, bool], ...] = (
    # name, label, type, fieldType, readOnlyValue
    ("email", "Email", "string", "text", False),
    ("firstname", "First Name", "string", "text", False),
    ("lastname", "Last Name", "string", "text", False),
    ("phone", "Phone Number", "string", "phonenumber", False),
    ("hs_object_id", "Record ID", "number", "number", True),
    ("createdate", "Create Date", "datetime", "date", True),
    ("lastmodifieddate", "Last Modified Date", "datetime", "date", True),
)
_DEFAULT_READ_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "lastname",
    "hs_object_id",
    "lastmodifieddate",
)


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
        self.reset()

    # ---- lifecycle and administration -------------------------------------------------

    def reset(self) -> None:
        """Forget every contact, custom property, counter and fault; back to the start config."""
        self.config = msgspec.structs.replace(self._initial_config)
        self.tokens: dict[str, frozenset[str]] = dict(self._initial_tokens)
        self.faults.clear(self.seed)
        now = self.clock()
        self.groups: dict[str, dict[str, Any]] = {
            "contactinformation": {
                "name": "contactinformation",
                "label": "Contact information",
                "displayOrder": 0,
                "archived": False,
            }
        }
        self.properties: dict[str, dict[str, Any]] = {}
        for name, label, type_, field_type, read_only in _BUILTIN_PROPERTIES:
            self.properties[name] = self._property_json(
                {
                    "name": name,
                    "label": label,
                    "type": type_,
                    "fieldType": field_type,
                    "groupName": "contactinformation",
                },
                now,
                hubspot_defined=True,
                read_only_value=read_only,
            )
        self.contacts: dict[str, Contact] = {}
        self.by_email: dict[str, str] = {}
        self._next_id = 1001
        self.windows: dict[str, RollingWindow] = {}
        self.token_stats: dict[str, TokenStats] = {}
        self.daily = DailyBudget()
        self.search_window = RollingWindow(SEARCH_WINDOW_SECONDS)
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.inputs_written = 0
        self.faults_injected: Counter[str] = Counter()
        self.request_log: deque[tuple[float, str, str, str]] = deque(maxlen=REQUEST_LOG_SIZE)
        """(arrival time, token fingerprint or "-", operation, status or fault kind), oldest first."""

    def register_token(self, token: str, scopes: Iterable[str] = ALL_SCOPES) -> str:
        self.tokens[token] = frozenset(scopes)
        return token_fingerprint(token)

    def revoke_token(self, token: str) -> None:
        self.tokens.pop(token, None)

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
        prop = self.properties.get(name)
        if prop is None or not prop["archived"]:
            return False
        prop["archived"] = False
        prop.pop("archivedAt", None)
        prop["updatedAt"] = iso(self.clock())
        return True

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        tokens = {}
        for fp, st in self.token_stats.items():
            window = self.windows.get(fp)
            tokens[fp] = {
                "requests": st.requests,
                "accepted": st.accepted,
                "rate_limited": st.rate_limited,
                "max_calls_in_any_window": window.peak if window else 0,
                "calls_in_window_now": window.count(now) if window else 0,
            }
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "rate_limited": sum(self.rate_limited.values()),
            "rate_limited_by_policy": dict(self.rate_limited),
            "inputs_written": self.inputs_written,
            "contacts": sum(1 for c in self.contacts.values() if not c.archived),
            "max_calls_in_any_window": max((w.peak for w in self.windows.values()), default=0),
            "daily_used": self.daily.used,
            "faults": dict(self.faults_injected),
            "limits": {
                "per_window": self.config.per_window,
                "window_seconds": WINDOW_SECONDS,
                "daily": self.config.per_day,
                "plan": self.config.plan,
            },
            "tokens": tokens,
        }

    def dump_contacts(self, *, with_timestamps: bool = False) -> list[dict[str, Any]]:
        out = []
        for c in self.contacts.values():
            if c.archived:
                continue
            item: dict[str, Any] = {"id": c.id, "properties": dict(c.properties)}
            if with_timestamps:
                item["written_at"] = dict(c.written_at)
            out.append(item)
        return out

    def dump_properties(self) -> dict[str, Any]:
        return {"groups": list(self.groups.values()), "properties": list(self.properties.values())}

    # ---- the request pipeline ------------------------------------------------------------

    def handle(self, request: ApiRequest) -> ApiResponse:
        self.requests += 1
        correlation_id = str(uuid.uuid4())
        response = self._pipeline(request, correlation_id)
        response.headers["X-HubSpot-Correlation-Id"] = correlation_id
        if isinstance(response.body, dict) and response.body.get("status") == "error":
            response.body.setdefault("correlationId", correlation_id)
        if response.fault is None or response.fault.kind == "status":
            outcome = str(response.status)
        else:
            outcome = response.fault.kind
        self.by_status[outcome] += 1
        token = self._bearer(request.authorization)
        self.request_log.append(
            (self.clock(), token_fingerprint(token) if token else "-", request.operation, outcome)
        )
        return response

    def token_info(self, body: bytes) -> ApiResponse:
        """`POST /oauth/v2/private-apps/get/access-token-info` `{"tokenKey": ...}`: the token's
        account (hubId), app (appId), user (userId) and scopes. The token travels in the body;
        the Authorization header is optional here (HubSpot requires it for EU tokens only).
        Not rate limited and not faulted (UNVERIFIED): it is a lookup, not a CRM call."""
        self.requests += 1
        if not self.config.token_info:
            self.by_status["404"] += 1
            return ApiResponse(status=404, body=_error("OBJECT_NOT_FOUND", "Unknown endpoint"))
        try:
            payload = msgspec.json.decode(body) if body else None
        except msgspec.DecodeError as exc:
            payload, problem = None, f"Invalid JSON input: {exc}"
        else:
            problem = "tokenKey (a string) is required"
        token = payload.get("tokenKey") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            self.by_status["400"] += 1
            return ApiResponse(status=400, body=_error("VALIDATION_ERROR", problem))
        scopes = self._scopes_of(token)
        fp = token_fingerprint(token)
        self.request_log.append(
            (self.clock(), fp, "token_info", "401" if scopes is None else "200")
        )
        if scopes is None:
            self.by_status["401"] += 1
            return ApiResponse(
                status=401,
                body=_error("INVALID_AUTHENTICATION", "The access token is invalid or expired."),
            )
        self.by_status["200"] += 1
        return ApiResponse(
            status=200,
            body={
                "userId": 7_000_001,
                "hubId": self.config.hub_id,
                "appId": int(fp[:6], 16),
                "scopes": sorted(scopes),
            },
        )

    def requests_seen(self) -> list[dict[str, Any]]:
        """The request log (newest REQUEST_LOG_SIZE), for tests that check timing."""
        return [
            {"at": t, "token": fp, "operation": op, "status": s}
            for t, fp, op, s in self.request_log
        ]

    def _pipeline(self, request: ApiRequest, correlation_id: str) -> ApiResponse:
        spec = OPERATIONS.get(request.operation)
        if spec is None:
            return ApiResponse(status=404, body=_error("OBJECT_NOT_FOUND", "Unknown endpoint"))
        required, handler, is_search = spec
        token = self._bearer(request.authorization)
        scopes = self._scopes_of(token)
        if token is None or scopes is None:
            return ApiResponse(
                status=401,
                headers={"X-HubSpot-Auth-Failure": "401 Unauthorized"},
                body=_error(
                    "INVALID_AUTHENTICATION",
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                ),
            )
        fp = token_fingerprint(token)
        stats = self.token_stats.setdefault(fp, TokenStats())
        stats.requests += 1
        now = self.clock()

        limited = self._admit_search(now) if is_search else self._admit(fp, now)
        headers = {} if is_search else self._limit_headers(fp, now)
        if limited is not None:
            stats.rate_limited += 1
            limited.headers.update(headers)
            return limited
        stats.accepted += 1

        if not scopes & required:
            return ApiResponse(
                status=403,
                headers=headers,
                body=_error(
                    "MISSING_SCOPES",
                    "This app hasn't been granted all required scopes to make this call. "
                    "Read more about required scopes here: https://developers.hubspot.com/scopes.",
                    errors=[
                        {
                            "message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": sorted(required)},
                        }
                    ],
                    links={"scopes": "https://developers.hubspot.com/scopes"},
                ),
            )

        fault = self.faults.decide()
        latency = self.faults.latency_seconds
        if fault is not None:
            self.faults_injected[fault.kind if fault.kind != "status" else str(fault.status)] += 1
            body = None
            if fault.status == 429:  # a forced refusal looks like HubSpot's burst-limit 429
                self.rate_limited["TEN_SECONDLY_ROLLING"] += 1
                forced = self._rate_limited(
                    "TEN_SECONDLY_ROLLING",
                    "You have reached your ten_secondly_rolling limit.",
                    None,
                )
                forced.headers.update(headers)
                return msgspec.structs.replace(forced, fault=fault, latency=latency)
            if fault.kind == "status":
                body = (
                    _error("LOCKED", "Records are locked by a concurrent request; retry later.")
                    if fault.status == 423
                    else _error("INTERNAL_ERROR", "Emulated HubSpot failure")
                )
            return ApiResponse(
                status=fault.status or 0, body=body, headers=headers, fault=fault, latency=latency
            )

        try:
            payload = msgspec.json.decode(request.body) if request.body else None
        except msgspec.DecodeError as exc:
            return ApiResponse(
                status=400,
                headers=headers,
                latency=latency,
                body=_error("VALIDATION_ERROR", f"Invalid JSON input: {exc}"),
            )
        try:
            status, body = handler(self, request, payload, now)
        except _Reply as reply:
            status, body = reply.status, reply.body
        return ApiResponse(status=status, body=body, headers=headers, latency=latency)

    @staticmethod
    def _bearer(authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return token

    def _scopes_of(self, token: str | None) -> frozenset[str] | None:
        if token is None:
            return None
        scopes = self.tokens.get(token)
        if scopes is None and self.config.open_auth:
            return ALL_SCOPES
        return scopes

    def _admit(self, fp: str, now: float) -> ApiResponse | None:
        cfg = self.config
        window = self.windows.get(fp)
        if window is None:
            window = self.windows[fp] = RollingWindow(WINDOW_SECONDS)
        if self.daily.remaining(now, cfg.per_day) <= 0:
            self.rate_limited["DAILY"] += 1
            return self._rate_limited("DAILY", "You have reached your daily limit.", None)
        if window.count(now) >= cfg.per_window:
            if cfg.count_rejected_calls:
                window.record(now)
            self.rate_limited["TEN_SECONDLY_ROLLING"] += 1
            return self._rate_limited(
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
                window.seconds_until_free(now, cfg.per_window),
            )
        window.record(now)
        self.daily.record(now)
        return None

    def _admit_search(self, now: float) -> ApiResponse | None:
        if self.search_window.count(now) >= self.config.search_per_second:
            policy = self.config.search_policy_name
            self.rate_limited[policy] += 1
            return self._rate_limited(
                policy,
                "You have reached your secondly limit.",
                self.search_window.seconds_until_free(now, self.config.search_per_second),
            )
        self.search_window.record(now)
        self.daily.record(now)
        return None

    def _rate_limited(self, policy: str, message: str, wait: float | None) -> ApiResponse:
        headers = {}
        if self.config.send_retry_after and wait is not None:
            headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        return ApiResponse(
            status=429,
            headers=headers,
            body={
                "status": "error",
                "message": message,
                "errorType": "RATE_LIMIT",
                "policyName": policy,
                "requestId": str(uuid.uuid4()),
            },
        )

    def _limit_headers(self, fp: str, now: float) -> dict[str, str]:
        cfg = self.config
        window = self.windows[fp]
        return {
            "X-HubSpot-RateLimit-Max": str(cfg.per_window),
            "X-HubSpot-RateLimit-Remaining": str(max(0, cfg.per_window - window.count(now))),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(WINDOW_SECONDS * 1000)),
            "X-HubSpot-RateLimit-Daily": str(cfg.per_day),
            "X-HubSpot-RateLimit-Daily-Remaining": str(self.daily.remaining(now, cfg.per_day)),
        }

    # ---- shared validation -------------------------------------------------------------

    def _inputs(self, payload: Any) -> list[dict[str, Any]]:
        if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
            raise _Reply(
                400, _error("VALIDATION_ERROR", "Invalid input JSON: 'inputs' must be a list")
            )
        inputs = payload["inputs"]
        limit = self.config.max_batch_inputs
        if len(inputs) > limit:
            raise _Reply(
                400,
                _error(
                    "VALIDATION_ERROR",
                    f"Batch input size {len(inputs)} is too large. Batch inputs are limited to {limit} items.",
                    context={"size": [str(len(inputs))], "limit": [str(limit)]},
                ),
            )
        for item in inputs:
            if not isinstance(item, dict):
                raise _Reply(
                    400,
                    _error("VALIDATION_ERROR", "Invalid input JSON: every input must be an object"),
                )
        return inputs

    @staticmethod
    def _reject_duplicates(keys: list[str], raw_ids: list[str]) -> None:
        seen: dict[str, str] = {}
        dupes: list[str] = []
        for key, raw in zip(keys, raw_ids, strict=True):
            if key in seen and raw not in dupes:
                dupes.append(raw)
            seen.setdefault(key, raw)
        if dupes:
            raise _Reply(
                400,
                _error(
                    "VALIDATION_ERROR",
                    f"Duplicate IDs found in batch input: [{', '.join(dupes)}]. IDs must be unique",
                    context={"ids": dupes},
                ),
            )

    def _live_property(self, name: str) -> dict[str, Any] | None:
        prop = self.properties.get(name)
        return None if prop is None or prop["archived"] else prop

    def _check_values(self, values: Any) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
        """Normalised values (None = clear) and HubSpot's per-property problems."""
        if not isinstance(values, dict):
            return {}, [
                {
                    "isValid": False,
                    "message": "properties must be an object",
                    "error": "INVALID_INPUT",
                    "name": "properties",
                }
            ]
        clean: dict[str, str | None] = {}
        problems: list[dict[str, Any]] = []

        def bad(name: str, code: str, message: str) -> None:
            problems.append(
                {
                    "isValid": False,
                    "message": message,
                    "error": code,
                    "name": name,
                    "localizedErrorMessage": message,
                }
            )

        for name, raw in values.items():
            prop = self._live_property(name)
            if prop is None:
                bad(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
                continue
            if prop["modificationMetadata"]["readOnlyValue"]:
                bad(name, "READ_ONLY_VALUE", f'Property "{name}" is read-only')
                continue
            if raw is None or raw == "":
                clean[name] = None
                continue
            value = raw if isinstance(raw, str) else msgspec.json.encode(raw).decode()
            normalised = self._normalise(prop, value)
            if isinstance(normalised, tuple):
                bad(name, *normalised)
            else:
                clean[name] = normalised
        return clean, problems

    @staticmethod
    def _normalise(prop: dict[str, Any], value: str) -> str | tuple[str, str]:
        name, type_ = prop["name"], prop["type"]
        if name == "email":
            if not _EMAIL_RE.fullmatch(value):
                return "INVALID_EMAIL", f"Email address {value} is invalid"
            return value.lower()
        if type_ == "bool":
            if value not in ("true", "false"):
                return (
                    "INVALID_BOOLEAN",
                    f'{value} was not a valid boolean option. Valid options: ["true", "false"]',
                )
            return value
        if type_ == "number":
            if not _NUMBER_RE.fullmatch(value):
                return "INVALID_NUMBER", f"{value} was not a valid number"
            return value
        if type_ == "date":
            if _DATE_RE.fullmatch(value):
                try:
                    return dt.date.fromisoformat(value).isoformat()
                except ValueError:
                    pass
            elif _EPOCH_MS_RE.fullmatch(value):
                ms = int(value)
                if ms % 86_400_000 == 0:
                    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).date().isoformat()
                return "INVALID_DATE", f"{value} is not at midnight UTC; date properties hold a day"
            return (
                "INVALID_DATE",
                f"{value} was not a valid date (YYYY-MM-DD or epoch ms at midnight UTC)",
            )
        if type_ == "datetime":
            if _EPOCH_MS_RE.fullmatch(value):
                return iso(int(value) / 1000)
            try:
                moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return (
                    "INVALID_DATETIME",
                    f"{value} was not a valid datetime (ISO-8601 or epoch ms)",
                )
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return iso(moment.timestamp())
        if type_ == "enumeration":
            allowed = {o["value"] for o in prop.get("options") or ()}
            parts = value.split(";") if prop["fieldType"] == "checkbox" else [value]
            for part in parts:
                if part not in allowed:
                    return "INVALID_OPTION", (
                        f"{part} was not one of the allowed options: {sorted(allowed)}"
                    )
            return value
        if len(value) > _MAX_STRING:
            return "INVALID_STRING", f"value of {len(value)} characters exceeds {_MAX_STRING}"
        return value

    @staticmethod
    def _values_error(problems: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        message = "Property values were not valid: " + msgspec.json.encode(problems).decode()
        details = [
            {
                "message": p["message"],
                "code": p["error"],
                "in": p["name"],
                "context": {"propertyName": [p["name"]]},
            }
            for p in problems
        ]
        return _error("VALIDATION_ERROR", message, errors=details, **extra)

    # ---- contacts ------------------------------------------------------------------------

    def _new_contact(self, now: float) -> Contact:
        cid = str(self._next_id)
        self._next_id += 1
        contact = Contact(
            id=cid,
            properties={"hs_object_id": cid, "createdate": iso(now)},
            created_at=now,
            updated_at=now,
        )
        self.contacts[cid] = contact
        return contact

    def _write(self, contact: Contact, values: Mapping[str, str | None], now: float) -> None:
        for name, value in values.items():
            if name == "email":
                old = contact.properties.get("email")
                if old and self.by_email.get(old) == contact.id:
                    del self.by_email[old]
                if value:
                    self.by_email[value] = contact.id
            if value is None:
                contact.properties.pop(name, None)
            else:
                contact.properties[name] = value
            contact.written_at[name] = now
        contact.updated_at = now
        contact.properties["lastmodifieddate"] = iso(now)
        self.inputs_written += 1

    def _record(self, contact: Contact, names: Iterable[str] | None = None) -> dict[str, Any]:
        props = contact.properties
        shown: dict[str, str | None]  # a named property the contact lacks reads as null
        if names is None:
            shown = dict(props)
        else:
            shown = {n: props.get(n) for n in names}
            for n in _DEFAULT_READ_PROPERTIES:
                if n in props:
                    shown.setdefault(n, props[n])
        return {
            "id": contact.id,
            "properties": shown,
            "createdAt": iso(contact.created_at),
            "updatedAt": iso(contact.updated_at),
            "archived": contact.archived,
        }

    def _find(self, key: str, id_property: str | None) -> Contact | None:
        if id_property in (None, "", "hs_object_id"):
            contact = self.contacts.get(key)
        elif id_property == "email":
            cid = self.by_email.get(key.lower())
            contact = self.contacts.get(cid) if cid else None
        else:
            raise _Reply(400, _error("VALIDATION_ERROR", f"Unknown idProperty {id_property}"))
        return None if contact is None or contact.archived else contact

    @staticmethod
    def _batch_body(
        started: float, now: float, results: list[Any], errors: list[Any]
    ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso(started),
            "completedAt": iso(now),
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = [_standard_error(e) for e in errors]
            return 207, body
        return 200, body

    def _write_batch(
        self, payload: Any, now: float, mode: Literal["upsert", "update"]
    ) -> tuple[int, dict[str, Any]]:
        inputs = self._inputs(payload)
        id_props = {i.get("idProperty") or None for i in inputs}
        by_email = "email" in id_props
        if any(p not in (None, "hs_object_id", "email") for p in id_props) or (
            by_email and mode == "update"
        ):
            raise _Reply(
                400,
                _error(
                    "VALIDATION_ERROR",
                    "Unable to perform update/upsert by non-unique 0-1 property",
                ),
            )
        raw_ids = [str(i.get("id", "")) for i in inputs]
        keys = [
            r.lower() if (i.get("idProperty") == "email") else r
            for r, i in zip(raw_ids, inputs, strict=True)
        ]
        self._reject_duplicates(keys, raw_ids)

        trace_all = all(i.get("objectWriteTraceId") for i in inputs)
        multi_status = trace_all and not (
            by_email and self.config.email_upsert_errors == "whole_batch"
        )
        planned: list[tuple[dict[str, Any], Contact | None, dict[str, str | None], str]] = []
        errors: list[dict[str, Any]] = []
        whole: list[tuple[str, dict[str, Any]]] = []
        for item, key, raw in zip(inputs, keys, raw_ids, strict=True):
            if self.faults.omits(key):  # left out of the answer, not written: MISSING_RESULT
                continue
            id_property = item.get("idProperty") or None
            trace = item.get("objectWriteTraceId")
            context: dict[str, Any] = {"ids": [raw]}
            if trace:
                context["objectWriteTraceId"] = [str(trace)]
            values, problems = self._check_values(item.get("properties", {}))
            if id_property == "email" and (
                not _EMAIL_RE.fullmatch(key) or self.faults.rejects(key)
            ):
                problems.insert(
                    0,
                    {
                        "isValid": False,
                        "message": f"Email address {raw} is invalid",
                        "error": "INVALID_EMAIL",
                        "name": "email",
                    },
                )
            if problems:
                err = self._values_error(problems, context=context)
                errors.append(err)
                whole.append((raw, err))
                continue
            contact = self._find(key, id_property)
            if contact is None and (mode == "update" or id_property != "email"):
                err = _error(
                    "OBJECT_NOT_FOUND",
                    f"Could not find a CONTACT with id {raw}; it may be deleted or never existed.",
                    context=context,
                )
                errors.append(err)
                continue
            if id_property == "email":
                values["email"] = key
            planned.append((item, contact, values, key))

        if whole and not multi_status:
            first = whole[0][1]
            ids = [raw for raw, _ in whole]
            whole_context: dict[str, list[str]] = {"ids": ids}
            named = [d["in"] for d in first.get("errors", ()) if d.get("in") != "email"]
            if named:
                whole_context["propertyName"] = list(dict.fromkeys(named))
            raise _Reply(
                400, {k: v for k, v in first.items() if k != "context"} | {"context": whole_context}
            )

        started = now
        results = []
        for item, contact, values, _key in planned:
            created = contact is None
            target = contact if contact is not None else self._new_contact(now)
            self._write(target, values, now)
            record = self._record(target, [n for n in values if n != "email"] + ["email"])
            if mode == "upsert":
                # SimplePublicUpsertObject's values are strings (not nullable, unlike
                # SimplePublicObject's): a cleared property comes back as "".
                record["properties"] = {
                    k: "" if v is None else v for k, v in record["properties"].items()
                }
                record["new"] = created
            if item.get("objectWriteTraceId"):
                record["objectWriteTraceId"] = str(item["objectWriteTraceId"])
            results.append(record)
        return self._batch_body(started, now, results, errors)

    def op_batch_upsert(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return self._write_batch(payload, now, "upsert")

    def op_batch_update(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return self._write_batch(payload, now, "update")

    def op_batch_create(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        inputs = self._inputs(payload)
        multi_status = all(i.get("objectWriteTraceId") for i in inputs)
        results, errors = [], []
        for item in inputs:
            trace = item.get("objectWriteTraceId")
            context = {"objectWriteTraceId": [str(trace)]} if trace else {}
            values, problems = self._check_values(item.get("properties", {}))
            err = None
            if problems:
                err = (400, self._values_error(problems, context=context))
            elif values.get("email") and values["email"] in self.by_email:
                existing = self.by_email[values["email"]]
                err = (
                    409,
                    _error(
                        "CONFLICT",
                        f"Contact already exists. Existing ID: {existing}",
                        context=context,
                    ),
                )
            if err is not None:
                if not multi_status:
                    raise _Reply(*err)
                errors.append(err[1])
                continue
            contact = self._new_contact(now)
            self._write(contact, values, now)
            record = self._record(contact)
            if trace:
                record["objectWriteTraceId"] = str(trace)
            results.append(record)
        status, body = self._batch_body(now, now, results, errors)
        return (201 if status == 200 else status), body

    def op_batch_read(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        inputs = self._inputs(payload)
        id_property = payload.get("idProperty") or None
        names = payload.get("properties") or []
        if id_property not in (None, "hs_object_id", "email"):
            raise _Reply(400, _error("VALIDATION_ERROR", f"Unknown idProperty {id_property}"))
        results, missing = [], []
        seen: set[str] = set()
        for item in inputs:
            raw = str(item.get("id", ""))
            contact = self._find(raw, id_property)
            if contact is None:
                missing.append(raw)
            elif contact.id not in seen:
                seen.add(contact.id)
                results.append(self._record(contact, names))
        errors = []
        if missing:
            errors.append(
                _error(
                    "OBJECT_NOT_FOUND",
                    "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.",
                    context={"ids": missing},
                )
            )
        return self._batch_body(now, now, results, errors)

    def op_batch_archive(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        for item in self._inputs(payload):
            contact = self.contacts.get(str(item.get("id", "")))
            if contact is not None and not contact.archived:
                contact.archived = True
                email = contact.properties.get("email")
                if email and self.by_email.get(email) == contact.id:
                    del self.by_email[email]
        return 204, None

    def _single_target(self, req: ApiRequest) -> Contact:
        contact = self._find(req.params["contact_id"], req.query.get("idProperty"))
        if contact is None:
            raise _Reply(404, _error("OBJECT_NOT_FOUND", "resource not found"))
        return contact

    def op_contact_get(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        contact = self._single_target(req)
        names = [n for n in req.query.get("properties", "").split(",") if n]
        return 200, self._record(contact, names)

    def op_contact_patch(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        contact = self._single_target(req)
        values, problems = self._check_values((payload or {}).get("properties"))
        if problems:
            raise _Reply(400, self._values_error(problems))
        self._write(contact, values, now)
        return 200, self._record(contact)

    def op_contact_archive(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        contact = self._find(req.params["contact_id"], None)
        if contact is not None:
            self.op_batch_archive(req, {"inputs": [{"id": contact.id}]}, now)
        return 204, None

    def op_search(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        payload = payload or {}
        limit = int(payload.get("limit") or 10)
        if limit > SEARCH_MAX_LIMIT:
            raise _Reply(
                400,
                _error(
                    "VALIDATION_ERROR", f"limit {limit} exceeds the maximum of {SEARCH_MAX_LIMIT}"
                ),
            )
        groups = payload.get("filterGroups") or []
        matches = [
            c
            for c in self.contacts.values()
            if not c.archived
            and (
                not groups
                or any(
                    all(self._filter_matches(c, f) for f in g.get("filters") or []) for g in groups
                )
            )
        ]
        after = int(payload.get("after") or 0)
        page = matches[after : after + limit]
        names = payload.get("properties") or []
        body: dict[str, Any] = {
            "total": len(matches),
            "results": [self._record(c, names) for c in page],
        }
        if after + limit < len(matches):
            body["paging"] = {"next": {"after": str(after + limit)}}
        return 200, body

    @staticmethod
    def _filter_matches(contact: Contact, flt: dict[str, Any]) -> bool:
        name = flt.get("propertyName", "")
        value = contact.properties.get(name)
        op = flt.get("operator", "EQ")
        fold = (lambda v: v.lower()) if name == "email" else (lambda v: v)
        if op == "EQ":
            return value is not None and fold(value) == fold(str(flt.get("value", "")))
        if op == "IN":
            return value is not None and fold(value) in {
                fold(str(v)) for v in flt.get("values") or []
            }
        if op == "HAS_PROPERTY":
            return value is not None
        if op == "NOT_HAS_PROPERTY":
            return value is None
        raise _Reply(
            400, _error("VALIDATION_ERROR", f"The emulator does not support the {op} operator")
        )

    # ---- property groups -------------------------------------------------------------------

    def op_groups_list(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return 200, {"results": list(self.groups.values())}

    def _group(self, name: str) -> dict[str, Any]:
        group = self.groups.get(name)
        if group is None:
            raise _Reply(404, _error("OBJECT_NOT_FOUND", f"Unable to find property group {name}"))
        return group

    def op_group_get(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return 200, self._group(req.params["name"])

    def op_group_create(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        payload = payload if isinstance(payload, dict) else {}
        name, label = payload.get("name"), payload.get("label")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise _Reply(
                400,
                _error(
                    "VALIDATION_ERROR",
                    f"Invalid group name {name!r}: use lower-case letters, digits and underscores, starting with a letter",
                    errors=[{"message": "invalid name", "in": "name"}],
                ),
            )
        if not isinstance(label, str) or not label:
            raise _Reply(
                400,
                _error(
                    "VALIDATION_ERROR",
                    "label is required",
                    errors=[{"message": "label is required", "in": "label"}],
                ),
            )
        if name in self.groups:
            raise _Reply(
                409,
                _error("OBJECT_ALREADY_EXISTS", f"A property group named '{name}' already exists."),
            )
        group = {
            "name": name,
            "label": label,
            "displayOrder": int(payload.get("displayOrder", -1)),
            "archived": False,
        }
        self.groups[name] = group
        return 201, group

    def op_group_update(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        group = self._group(req.params["name"])
        payload = payload if isinstance(payload, dict) else {}
        if "label" in payload:
            group["label"] = str(payload["label"])
        if "displayOrder" in payload:
            group["displayOrder"] = int(payload["displayOrder"])
        return 200, group

    def op_group_archive(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        self._group(req.params["name"])
        del self.groups[req.params["name"]]
        return 204, None

    # ---- properties --------------------------------------------------------------------------

    def _property_json(
        self,
        spec: dict[str, Any],
        now: float,
        *,
        hubspot_defined: bool = False,
        read_only_value: bool = False,
    ) -> dict[str, Any]:
        prop = {
            "name": spec["name"],
            "label": spec["label"],
            "type": spec["type"],
            "fieldType": spec["fieldType"],
            "description": spec.get("description", ""),
            "groupName": spec["groupName"],
            "options": [self._option(o, i) for i, o in enumerate(spec.get("options") or [])],
            "displayOrder": int(spec.get("displayOrder", -1)),
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": bool(spec.get("hasUniqueValue", False)),
            "hidden": bool(spec.get("hidden", False)),
            "formField": bool(spec.get("formField", False)),
            "createdAt": iso(now),
            "updatedAt": iso(now),
            "archived": False,
            "modificationMetadata": {
                "archivable": not hubspot_defined,
                "readOnlyDefinition": hubspot_defined,
                "readOnlyValue": read_only_value,
            },
        }
        if hubspot_defined:
            prop["hubspotDefined"] = True
        return prop

    @staticmethod
    def _option(option: dict[str, Any], index: int) -> dict[str, Any]:
        return {
            "label": option["label"],
            "value": option["value"],
            "hidden": bool(option.get("hidden", False)),
            "displayOrder": int(option.get("displayOrder", index)),
            "description": option.get("description", ""),
        }

    def _validate_definition(self, spec: dict[str, Any], *, creating: bool) -> list[dict[str, str]]:
        problems: list[dict[str, str]] = []
        if creating:
            for key in ("name", "label", "type", "fieldType", "groupName"):
                if not isinstance(spec.get(key), str) or not spec.get(key):
                    problems.append({"message": f"{key} is required", "in": key})
            if problems:
                return problems
            name = spec["name"]
            if not _NAME_RE.fullmatch(name):
                problems.append(
                    {
                        "message": f"Property name {name!r} is invalid: use lower-case letters, digits and underscores, starting with a letter",
                        "in": "name",
                    }
                )
            if len(name) > self.config.max_property_name_length:
                problems.append(
                    {
                        "message": f"Property name is longer than {self.config.max_property_name_length} characters",
                        "in": "name",
                    }
                )
        type_, field_type = spec.get("type"), spec.get("fieldType")
        if type_ not in PROPERTY_TYPES:
            problems.append(
                {"message": f"type {type_!r} is not one of {sorted(PROPERTY_TYPES)}", "in": "type"}
            )
        elif field_type not in FIELD_TYPES:
            problems.append(
                {
                    "message": f"fieldType {field_type!r} is not one of {sorted(FIELD_TYPES)}",
                    "in": "fieldType",
                }
            )
        elif field_type not in PROPERTY_TYPES[type_]:
            problems.append(
                {
                    "message": f"fieldType {field_type} is not valid for type {type_}; use one of {sorted(PROPERTY_TYPES[type_])}",
                    "in": "fieldType",
                }
            )
        group = spec.get("groupName")
        if group is not None and group not in self.groups:
            problems.append(
                {"message": f"Property group {group} does not exist", "in": "groupName"}
            )
        options = spec.get("options")
        if options is not None:
            if not isinstance(options, list) or not all(
                isinstance(o, dict)
                and isinstance(o.get("label"), str)
                and isinstance(o.get("value"), str)
                for o in options
            ):
                problems.append(
                    {"message": "every option needs a label and a value", "in": "options"}
                )
            elif len({o["value"] for o in options}) != len(options):
                problems.append({"message": "option values must be unique", "in": "options"})
        needs_options = type_ == "enumeration" or (
            type_ == "bool" and self.config.bool_requires_options
        )
        if creating and needs_options and not options:
            problems.append({"message": f"a {type_} property needs options", "in": "options"})
        return problems

    def _definition_error(self, problems: list[dict[str, str]]) -> _Reply:
        return _Reply(
            400,
            _error(
                "VALIDATION_ERROR",
                "Invalid input: " + "; ".join(p["message"] for p in problems),
                errors=problems,
            ),
        )

    def _create_property(self, spec: Any, now: float) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise _Reply(
                400, _error("VALIDATION_ERROR", "Invalid input JSON: the body must be an object")
            )
        problems = self._validate_definition(spec, creating=True)
        if problems:
            raise self._definition_error(problems)
        existing = self.properties.get(spec["name"])
        if existing is not None:
            if not existing["archived"]:
                raise _Reply(
                    409,
                    _error(
                        "OBJECT_ALREADY_EXISTS",
                        f"A property named '{spec['name']}' already exists.",
                        context={"name": [spec["name"]]},
                    ),
                )
            if self.config.archived_name_conflict:
                raise _Reply(
                    409,
                    _error(
                        "OBJECT_ALREADY_EXISTS",
                        f"A property named '{spec['name']}' already exists in the recycle bin (archived). "
                        "Restore it or choose another name.",
                        context={"name": [spec["name"]], "archived": ["true"]},
                    ),
                )
        prop = self._property_json(spec, now)
        self.properties[spec["name"]] = prop
        return prop

    def op_properties_list(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        archived = req.query.get("archived", "false").lower() == "true"
        return 200, {"results": [p for p in self.properties.values() if p["archived"] == archived]}

    def _property(self, name: str, archived: bool = False) -> dict[str, Any]:
        prop = self.properties.get(name)
        if prop is None or prop["archived"] != archived:
            raise _Reply(404, _error("OBJECT_NOT_FOUND", f"Unable to find property {name}"))
        return prop

    def op_property_get(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        archived = req.query.get("archived", "false").lower() == "true"
        return 200, self._property(req.params["name"], archived)

    def op_property_create(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return 201, self._create_property(payload, now)

    def op_property_update(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        prop = self._property(req.params["name"])
        if prop["modificationMetadata"]["readOnlyDefinition"]:
            raise _Reply(
                400,
                _error(
                    "VALIDATION_ERROR",
                    f"Property {prop['name']} is HubSpot-defined; its definition is read-only",
                ),
            )
        payload = payload if isinstance(payload, dict) else {}
        merged = {"type": prop["type"], "fieldType": prop["fieldType"]} | {
            k: v for k, v in payload.items() if k in ("type", "fieldType", "groupName", "options")
        }
        problems = self._validate_definition(merged, creating=False)
        if problems:
            raise self._definition_error(problems)
        for key in (
            "label",
            "description",
            "groupName",
            "type",
            "fieldType",
            "hidden",
            "formField",
            "displayOrder",
        ):
            if key in payload:
                prop[key] = payload[key]
        if "options" in payload:
            prop["options"] = [self._option(o, i) for i, o in enumerate(payload["options"])]
        prop["updatedAt"] = iso(now)
        return 200, prop

    def op_property_archive(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        prop = self._property(req.params["name"])
        if prop["modificationMetadata"]["readOnlyDefinition"]:
            raise _Reply(
                400,
                _error(
                    "VALIDATION_ERROR",
                    f"Property {prop['name']} is HubSpot-defined and cannot be archived",
                ),
            )
        prop["archived"] = True
        prop["archivedAt"] = iso(now)
        return 204, None

    def op_properties_batch_create(
        self, req: ApiRequest, payload: Any, now: float
    ) -> tuple[int, Any]:
        results, errors = [], []
        for item in self._inputs(payload):
            try:
                results.append(self._create_property(item, now))
            except _Reply as reply:
                err = dict(reply.body)
                err.setdefault("context", {})
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    err["context"] = {**err["context"], "name": [item["name"]]}
                errors.append(err)
        status, body = self._batch_body(now, now, results, errors)
        return (201 if status == 200 else status), body

    def op_properties_batch_read(
        self, req: ApiRequest, payload: Any, now: float
    ) -> tuple[int, Any]:
        inputs = self._inputs(payload)
        archived = bool(payload.get("archived", False))
        results, missing = [], []
        for item in inputs:
            name = str(item.get("name", ""))
            prop = self.properties.get(name)
            if prop is None or prop["archived"] != archived:
                missing.append(name)
            else:
                results.append(prop)
        errors = []
        if missing:
            errors.append(
                _error(
                    "OBJECT_NOT_FOUND",
                    "Could not find some properties.",
                    context={"names": missing},
                )
            )
        return self._batch_body(now, now, results, errors)

    def op_properties_batch_archive(
        self, req: ApiRequest, payload: Any, now: float
    ) -> tuple[int, Any]:
        for item in self._inputs(payload):
            prop = self.properties.get(str(item.get("name", "")))
            if (
                prop is not None
                and not prop["archived"]
                and not prop["modificationMetadata"]["readOnlyDefinition"]
            ):
                prop["archived"] = True
                prop["archivedAt"] = iso(now)
        return 204, None


_SCHEMA_READS = frozenset({SCHEMA_READ, OBJECTS_READ})
Handler = Callable[[HubSpotState, ApiRequest, Any, float], tuple[int, Any]]

OPERATIONS: dict[str, tuple[frozenset[str], Handler, bool]] = {
    # operation: (scopes of which one is required, handler, is a search call)
    "groups_list": (_SCHEMA_READS, HubSpotState.op_groups_list, False),
    "group_create": (frozenset({SCHEMA_WRITE}), HubSpotState.op_group_create, False),
    "group_get": (_SCHEMA_READS, HubSpotState.op_group_get, False),
    "group_update": (frozenset({SCHEMA_WRITE}), HubSpotState.op_group_update, False),
    "group_archive": (frozenset({SCHEMA_WRITE}), HubSpotState.op_group_archive, False),
    "properties_list": (_SCHEMA_READS, HubSpotState.op_properties_list, False),
    "property_create": (frozenset({SCHEMA_WRITE}), HubSpotState.op_property_create, False),
    "property_get": (_SCHEMA_READS, HubSpotState.op_property_get, False),
    "property_update": (frozenset({SCHEMA_WRITE}), HubSpotState.op_property_update, False),
    "property_archive": (frozenset({SCHEMA_WRITE}), HubSpotState.op_property_archive, False),
    "properties_batch_create": (
        frozenset({SCHEMA_WRITE}),
        HubSpotState.op_properties_batch_create,
        False,
    ),
    "properties_batch_read": (_SCHEMA_READS, HubSpotState.op_properties_batch_read, False),
    "properties_batch_archive": (
        frozenset({SCHEMA_WRITE}),
        HubSpotState.op_properties_batch_archive,
        False,
    ),
    "contacts_batch_upsert": (frozenset({OBJECTS_WRITE}), HubSpotState.op_batch_upsert, False),
    "contacts_batch_update": (frozenset({OBJECTS_WRITE}), HubSpotState.op_batch_update, False),
    "contacts_batch_create": (frozenset({OBJECTS_WRITE}), HubSpotState.op_batch_create, False),
    "contacts_batch_read": (frozenset({OBJECTS_READ}), HubSpotState.op_batch_read, False),
    "contacts_batch_archive": (frozenset({OBJECTS_WRITE}), HubSpotState.op_batch_archive, False),
    "contacts_search": (frozenset({OBJECTS_READ}), HubSpotState.op_search, True),
    "contact_get": (frozenset({OBJECTS_READ}), HubSpotState.op_contact_get, False),
    "contact_patch": (frozenset({OBJECTS_WRITE}), HubSpotState.op_contact_patch, False),
    "contact_archive": (frozenset({OBJECTS_WRITE}), HubSpotState.op_contact_archive, False),
}
