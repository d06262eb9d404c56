"""The road every API call takes, in HubSpot's order: the operation is known (else 404), the
bearer token is accepted (401), the rate limits admit the call (429: the token's rolling 10 s
window, or the account's search limit, and the daily budget), the token has a scope the
operation needs (403), no fault is injected (5xx, 423, a forced 429, a dropped connection or a
hang), the body is JSON (400); only then does the operation run.

Every call is counted and logged (`request_log`: time, token fingerprint, operation, status)
and handed to the observers as a `Handled`: the public hook for instrumentation (a benchmark's
emulator counts writes per contact with it), so nobody needs to patch the emulator's insides.
"""

from __future__ import annotations

import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from crm.emulator.auth import Tokens, bearer
from crm.emulator.config import EmulatorConfig
from crm.emulator.faults import FaultInjector
from crm.emulator.limits import DailyBudget, RollingWindow
from crm.emulator.wire import ApiRequest, ApiResponse, Reply, error
from crm.tokens import token_fingerprint

__all__ = [
    "REQUEST_LOG_SIZE",
    "WINDOW_SECONDS",
    "Handled",
    "Observer",
    "Operation",
    "RateLimits",
    "RequestPipeline",
    "TokenStats",
]

WINDOW_SECONDS = 10.0
SEARCH_WINDOW_SECONDS = 1.0
REQUEST_LOG_SIZE = 100_000

Handler = Callable[[ApiRequest, Any, float], tuple[int, Any]]
"""An operation: (the request, its decoded JSON body, now) -> (status, body)."""


class Operation(NamedTuple):
    scopes: frozenset[str]
    """One of these is required."""
    handler: Handler
    search: bool = False
    """Limited by the search limit instead of the token's rolling window."""


class Handled(msgspec.Struct, frozen=True, kw_only=True):
    """One API call the emulator answered, as its observers see it."""

    at: float
    """When it was answered (the time `request_log` records)."""
    token: str
    """The token's fingerprint, "-" without one: never the token."""
    method: str
    operation: str
    params: dict[str, str]
    """The path's parameters (a property's name, a contact's id)."""
    payload: Any
    """The decoded JSON body; None when there was none or the call stopped before decoding it."""
    outcome: str
    """The status ("200", "207", "429", ...) or the fault ("drop", "hang")."""
    response: ApiResponse


Observer = Callable[[Handled], None]


@dataclass(slots=True)
class TokenStats:
    requests: int = 0
    accepted: int = 0
    rate_limited: int = 0


class RateLimits:
    """The rolling window per token, the account's search limit and daily budget, and the 429
    answer with HubSpot's `X-HubSpot-RateLimit-*` headers."""

    def __init__(self, settings: Callable[[], EmulatorConfig]) -> None:
        self._settings = settings
        self.windows: dict[str, RollingWindow] = {}
        self.token_stats: dict[str, TokenStats] = {}
        self.daily = DailyBudget()
        self.search_window = RollingWindow(SEARCH_WINDOW_SECONDS)
        self.rate_limited: Counter[str] = Counter()
        """429s by policy name."""

    def admit(self, fp: str, now: float) -> ApiResponse | None:
        """None when the token's window and the daily budget take one more call, else the 429."""
        cfg = self._settings()
        window = self.windows.get(fp)
        if window is None:
            window = self.windows[fp] = RollingWindow(WINDOW_SECONDS)
        if self.daily.remaining(now, cfg.per_day) <= 0:
            self.rate_limited["DAILY"] += 1
            return self.refusal("DAILY", "You have reached your daily limit.", None)
        if window.count(now) >= cfg.per_window:
            if cfg.count_rejected_calls:
                window.record(now)
            self.rate_limited["TEN_SECONDLY_ROLLING"] += 1
            return self.refusal(
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
                window.seconds_until_free(now, cfg.per_window),
            )
        window.record(now)
        self.daily.record(now)
        return None

    def admit_search(self, now: float) -> ApiResponse | None:
        cfg = self._settings()
        if self.search_window.count(now) >= cfg.search_per_second:
            policy = cfg.search_policy_name
            self.rate_limited[policy] += 1
            return self.refusal(
                policy,
                "You have reached your secondly limit.",
                self.search_window.seconds_until_free(now, cfg.search_per_second),
            )
        self.search_window.record(now)
        self.daily.record(now)
        return None

    def refusal(self, policy: str, message: str, wait: float | None) -> ApiResponse:
        """HubSpot's 429 (`Retry-After` only when configured: HubSpot documents none)."""
        headers = {}
        if self._settings().send_retry_after and wait is not None:
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

    def headers(self, fp: str, now: float) -> dict[str, str]:
        cfg = self._settings()
        window = self.windows[fp]
        return {
            "X-HubSpot-RateLimit-Max": str(cfg.per_window),
            "X-HubSpot-RateLimit-Remaining": str(max(0, cfg.per_window - window.count(now))),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(WINDOW_SECONDS * 1000)),
            "X-HubSpot-RateLimit-Daily": str(cfg.per_day),
            "X-HubSpot-RateLimit-Daily-Remaining": str(self.daily.remaining(now, cfg.per_day)),
        }


class RequestPipeline:
    """Authentication, limits, scopes and faults in front of the operations, and the counts."""

    def __init__(
        self,
        operations: dict[str, Operation],
        *,
        settings: Callable[[], EmulatorConfig],
        tokens: Tokens,
        faults: FaultInjector,
        clock: Callable[[], float],
        observers: Sequence[Observer] = (),
    ) -> None:
        self._operations = operations
        self._settings = settings
        self._tokens = tokens
        self._faults = faults
        self._clock = clock
        self._observers = observers
        self.limits = RateLimits(settings)
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.request_log: deque[tuple[float, str, str, str]] = deque(maxlen=REQUEST_LOG_SIZE)
        """(arrival time, token fingerprint or "-", operation, status or fault kind), oldest first."""

    def handle(self, request: ApiRequest) -> ApiResponse:
        self.requests += 1
        correlation_id = str(uuid.uuid4())
        response, payload = self._answer(request)
        response.headers["X-HubSpot-Correlation-Id"] = correlation_id
        if isinstance(response.body, dict) and response.body.get("status") == "error":
            response.body.setdefault("correlationId", correlation_id)
        if response.fault is None or response.fault.kind == "status":
            outcome = str(response.status)
        else:
            outcome = response.fault.kind
        self.by_status[outcome] += 1
        token = bearer(request.authorization)
        fp = token_fingerprint(token) if token else "-"
        at = self._clock()
        self.request_log.append((at, fp, request.operation, outcome))
        if self._observers:
            seen = Handled(
                at=at,
                token=fp,
                method=request.method,
                operation=request.operation,
                params=request.params,
                payload=payload,
                outcome=outcome,
                response=response,
            )
            for observer in self._observers:
                observer(seen)
        return response

    def token_info(self, body: bytes) -> ApiResponse:
        """`POST /oauth/v2/private-apps/get/access-token-info` `{"tokenKey": ...}`: the token's
        account (hubId), app (appId), user (userId) and scopes. The token travels in the body;
        the Authorization header is optional here (HubSpot requires it for EU tokens only).
        Not rate limited and not faulted (UNVERIFIED): it is a lookup, not a CRM call."""
        self.requests += 1
        settings = self._settings()
        if not settings.token_info:
            self.by_status["404"] += 1
            return ApiResponse(status=404, body=error("OBJECT_NOT_FOUND", "Unknown endpoint"))
        try:
            payload = msgspec.json.decode(body) if body else None
        except msgspec.DecodeError as exc:
            payload, problem = None, f"Invalid JSON input: {exc}"
        else:
            problem = "tokenKey (a string) is required"
        token = payload.get("tokenKey") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            self.by_status["400"] += 1
            return ApiResponse(status=400, body=error("VALIDATION_ERROR", problem))
        scopes = self._tokens.scopes_of(token)
        fp = token_fingerprint(token)
        self.request_log.append(
            (self._clock(), fp, "token_info", "401" if scopes is None else "200")
        )
        if scopes is None:
            self.by_status["401"] += 1
            return ApiResponse(
                status=401,
                body=error("INVALID_AUTHENTICATION", "The access token is invalid or expired."),
            )
        self.by_status["200"] += 1
        return ApiResponse(
            status=200,
            body={
                "userId": 7_000_001,
                "hubId": settings.hub_id,
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

    def _answer(self, request: ApiRequest) -> tuple[ApiResponse, Any]:
        """The answer, and the decoded body when the call got as far as decoding it."""
        spec = self._operations.get(request.operation)
        if spec is None:
            return ApiResponse(status=404, body=error("OBJECT_NOT_FOUND", "Unknown endpoint")), None
        token = bearer(request.authorization)
        scopes = self._tokens.scopes_of(token)
        if token is None or scopes is None:
            return ApiResponse(
                status=401,
                headers={"X-HubSpot-Auth-Failure": "401 Unauthorized"},
                body=error(
                    "INVALID_AUTHENTICATION",
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                ),
            ), None
        fp = token_fingerprint(token)
        limits = self.limits
        stats = limits.token_stats.setdefault(fp, TokenStats())
        stats.requests += 1
        now = self._clock()

        limited = limits.admit_search(now) if spec.search else limits.admit(fp, now)
        headers = {} if spec.search else limits.headers(fp, now)
        if limited is not None:
            stats.rate_limited += 1
            limited.headers.update(headers)
            return limited, None
        stats.accepted += 1

        if not scopes & spec.scopes:
            return ApiResponse(
                status=403,
                headers=headers,
                body=error(
                    "MISSING_SCOPES",
                    "This app hasn't been granted all required scopes to make this call. "
                    "Read more about required scopes here: https://developers.hubspot.com/scopes.",
                    errors=[
                        {
                            "message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": sorted(spec.scopes)},
                        }
                    ],
                    links={"scopes": "https://developers.hubspot.com/scopes"},
                ),
            ), None

        fault = self._faults.decide()
        latency = self._faults.latency_seconds
        if fault is not None:
            self.faults_injected[fault.kind if fault.kind != "status" else str(fault.status)] += 1
            body = None
            if fault.status == 429:  # a forced refusal looks like HubSpot's burst-limit 429
                limits.rate_limited["TEN_SECONDLY_ROLLING"] += 1
                forced = limits.refusal(
                    "TEN_SECONDLY_ROLLING",
                    "You have reached your ten_secondly_rolling limit.",
                    None,
                )
                forced.headers.update(headers)
                return msgspec.structs.replace(forced, fault=fault, latency=latency), None
            if fault.kind == "status":
                body = (
                    error("LOCKED", "Records are locked by a concurrent request; retry later.")
                    if fault.status == 423
                    else error("INTERNAL_ERROR", "Emulated HubSpot failure")
                )
            return ApiResponse(
                status=fault.status or 0, body=body, headers=headers, fault=fault, latency=latency
            ), None

        try:
            payload = msgspec.json.decode(request.body) if request.body else None
        except msgspec.DecodeError as exc:
            return ApiResponse(
                status=400,
                headers=headers,
                latency=latency,
                body=error("VALIDATION_ERROR", f"Invalid JSON input: {exc}"),
            ), None
        try:
            status, body = spec.handler(request, payload, now)
        except Reply as reply:
            status, body = reply.status, reply.body
        return ApiResponse(status=status, body=body, headers=headers, latency=latency), payload
