"""The RateGovernor: one per HubSpot access token, named by the token's fingerprint.

It owns the token's HTTP client and budget (rolling 10-second window + daily quota), shares calls
fairly between the activations using the token (deficit round robin, realtime before backfill),
executes the HubSpot calls, learns the limits from every response's headers and handles refusals:
a 429 blocks the window that refused it (or waits for the daily reset), 5xx/423/timeouts back off
with jitter, a batch rejected whole (400) is split until its bad inputs stand alone, and a 401 or
403 stops the token: its activations are paused with the reason, no retry storm.

Every HTTP request waits for a permit (the client's ``before_request`` hook). An activation may
take its permit first (``turn``) and form its batch only then, just in time.

Errors raised to callers::

    TokenRejected      401/403: the token is wrong, revoked or lacks scopes; its activations pause
    CallFailed         retries exhausted on a retryable failure; the caller puts its batch back
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import msgspec
import redis.asyncio as aioredis

from crm.client import ContactUpdate, ContactUpsert, HubSpotClient, WriteStatus
from crm.errors import (
    AuthenticationError,
    HubSpotError,
    MissingScopesError,
    RateLimitedError,
    ValidationError,
)
from crm.properties import PropertySpec
from crm.ratelimit import RateLimitInfo
from crm.tokens import token_fingerprint
from events.activations import Activations, ActivationSpec
from events.model import ActivationPaused
from events.secrets import Sealer, SecretError
from events.streams import Keys, append_control
from scheduler import BatchSplitter, FairQueue, Lane, SystemClock, TokenBudget, backoff

__all__ = ["PLANS", "CallFailed", "GovernorCore", "Outcome", "TokenRejected"]

log = logging.getLogger("hubsync.governor")
T = TypeVar("T")

PLANS: dict[str, tuple[int, int]] = {
    "free": (100, 250_000),
    "starter": (100, 250_000),
    "professional": (190, 625_000),
    "enterprise": (190, 1_000_000),
    "addon": (250, 2_000_000),
}
# A call counts in HubSpot's window when HubSpot receives it, some time after we grant it; a
# grant also waits this long beyond the window so a slow request never lands in a full window.
WINDOW_MARGIN = 0.25
MAX_ATTEMPTS = 8
REALTIME_RESERVE = 0.1  # share of the window backfills leave free while realtime traffic flows
REALTIME_MEMORY = 60.0  # seconds after the last realtime call that the reserve still applies
PROBE_TIMEOUT = 5.0  # a probing call not answered by then (its caller died): let another go
HTTP_TIMEOUT = 30.0  # seconds HubSpot may take to answer one call before it counts as a timeout

_caller: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("caller")


class TokenRejected(Exception):
    """HubSpot refused the token (401) or its scopes (403); the message says what to do."""


class CallFailed(Exception):
    """A call still failed after its retries; it is safe to try again later."""


class Outcome(msgspec.Struct, array_like=True, frozen=True):
    """One input's fate: status is written | created | failed | missing."""

    key: str
    status: str
    contact_id: str | None = None
    reason: str = ""


class GovernorCore:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        fingerprint: str,
        *,
        secret_key: str | None = None,
        clock: SystemClock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        http: httpx.AsyncClient | None = None,
        http_timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.fingerprint = fingerprint
        self._redis = redis
        self._keys = keys
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(http_timeout, connect=min(5.0, http_timeout)),
            limits=httpx.Limits(max_connections=32),
        )
        self._secret_key = (
            secret_key if secret_key is not None else os.environ.get("HUBSYNC_SECRET_KEY")
        )
        self._activations = Activations()
        self._spec: ActivationSpec | None = None
        self._client: HubSpotClient | None = None
        self.budget = TokenBudget.for_plan(*PLANS["starter"], interval=10.0 + WINDOW_MARGIN)
        self._queue = FairQueue()
        self._wake = asyncio.Event()
        self._held: dict[str, deque[float]] = {}
        # When HubSpot last refused a call (429): a permit granted before it is void, so neither
        # a retry nor a batch formed on an old permit lands in the window that refused it.
        self._refused_at = float("-inf")
        # A (re)started governor knows nothing of the calls made in the last window: one call
        # goes alone until HubSpot's headers say what is left, then the budget takes over.
        self._warm = False
        self._probe_at = float("-inf")  # when the probing call was granted
        self.rejected: str | None = None  # why HubSpot refused the token, until a resume
        self.problem: str | None = None  # why the governor cannot work (configuration)
        self.calls: Counter[str] = Counter()
        self.rate_limited = 0
        self._dispatcher: asyncio.Task[None] | None = None
        self._realtime_seen_at = float("-inf")

    # --- configuration, folded from the control stream ----------------------------------------

    async def refresh(self) -> None:
        """Take the token, base URL and plan from the live activations that use this token."""
        before = self._activations.last_id
        await self._activations.refresh(self._redis, self._keys)
        if self._activations.last_id == before and self._client is not None:
            return
        mine = [
            s for s in self._activations.by_id.values() if s.token_fingerprint == self.fingerprint
        ]
        if not mine:
            return
        if self.rejected and any(not s.paused for s in mine):
            self.rejected = None  # an operator resumed: try the token again
        spec = mine[0]
        if self._spec is not None and (
            spec.token_sealed,
            spec.base_url,
            spec.api_version,
            spec.plan,
        ) == (
            self._spec.token_sealed,
            self._spec.base_url,
            self._spec.api_version,
            self._spec.plan,
        ):
            return
        if not self._secret_key:
            self.problem = "HUBSYNC_SECRET_KEY is not set where the RateGovernor runs: set it on every Ray node"
            return
        try:
            # Opens only for this activation id, base URL and fingerprint (and only over https
            # or to loopback): an edited entry cannot send this token anywhere else.
            token = spec.open_token(Sealer(self._secret_key))
            if token_fingerprint(token) != self.fingerprint:
                raise SecretError(f"the token of {spec.activation_id!r} is not this governor's")
        except SecretError as exc:
            self.problem = str(exc)
            return
        self.problem = None
        per_interval, per_day = PLANS.get(spec.plan, PLANS["starter"])
        if self._spec is None or self._spec.plan != spec.plan:
            self.budget = TokenBudget.for_plan(per_interval, per_day, interval=10.0 + WINDOW_MARGIN)
        self._client = HubSpotClient(
            token,
            base_url=spec.base_url,
            api_version=spec.api_version,  # type: ignore[arg-type]
            http=self._http,
            before_request=self._before_request,
            after_response=self._after_response,
            trace_prefix=self.fingerprint[:6],
        )
        self._spec = spec

    # --- permits -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def _dispatch(self) -> None:
        """Grant permits in fair order, as fast as the budget allows and no faster."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = self._clock.now()
            if not self._warm and now - self._probe_at < PROBE_TIMEOUT:
                await self._sleep(0.02)
                continue
            wait = self._backfill_wait(now)
            if wait > 0:
                await self._sleep(min(wait, 1.0))
                continue
            wait = self.budget.reserve(now)
            if wait > 0:
                await self._sleep(min(wait, 1.0))
                continue
            popped = self._queue.pop()
            assert popped is not None
            _, _, future = popped
            if future.done():  # its caller went away: give the slot back
                self.budget.release(now, now)
                continue
            if not self._warm:
                self._probe_at = now
            future.set_result(now)

    def _backfill_wait(self, now: float) -> float:
        """While some activation of this token has realtime traffic, backfills leave the last
        slots of the window to it, so a huge backfill never makes realtime changes wait a window."""
        if now - self._realtime_seen_at > REALTIME_MEMORY:
            return 0.0
        if any(self._queue.pending(a, Lane.REALTIME) for a in self._queue.activations()):
            return 0.0
        window = self.budget.window
        reserve = max(1, int(window.capacity * REALTIME_RESERVE))
        grants = window.grants()
        excess = len(grants) - (window.capacity - reserve)
        if excess < 0:
            return 0.0
        return max(grants[excess] + window.interval - now, 0.0) or 1e-3

    async def permit(self, activation_id: str, lane: str) -> float:
        """Wait for this activation's fair turn and a slot in the budget; returns the grant time."""
        self._check_usable()
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queue.push(activation_id, Lane(lane), future)
        self._wake.set()
        return await future

    async def turn(self, activation_id: str, lane: str) -> None:
        """Hold one permit for the activation's next call (so it forms the batch just in time)."""
        if lane == Lane.REALTIME.value:
            self._realtime_seen_at = self._clock.now()
        granted = await self.permit(activation_id, lane)
        self._held.setdefault(activation_id, deque()).append(granted)

    def release(self, activation_id: str) -> None:
        """Give back a held permit the activation did not use."""
        held = self._held.get(activation_id)
        if held:
            self.budget.release(held.pop(), self._clock.now())
            self._probe_at = float("-inf")

    async def _before_request(self) -> None:
        activation_id, lane = _caller.get(("", Lane.REALTIME.value))
        held = self._held.get(activation_id)
        if held:
            granted = held.popleft()
            now = self._clock.now()
            if granted > self._refused_at and (
                now - granted < WINDOW_MARGIN / 2 or self._restamp(granted, now)
            ):
                return
        await self.permit(activation_id, lane)

    def _restamp(self, granted: float, now: float) -> bool:
        """A held permit used late (its activation was busy): HubSpot counts the call when it
        arrives, so move it in our window to now, or give it up if the window has no room now."""
        window = self.budget.window
        window.release(granted)
        return window.reserve(now) == 0.0

    def _after_response(self, info: RateLimitInfo, status: int) -> None:
        activation_id, _ = _caller.get(("", ""))
        self.calls[str(status)] += 1
        self._metric_call(activation_id, status)
        self._probe_at = float("-inf")
        if info.known:
            self._warm = True
            self.budget.observe(
                now=self._clock.now(),
                max=info.max,
                remaining=info.remaining,
                interval_ms=None
                if info.interval_ms is None
                else info.interval_ms + int(WINDOW_MARGIN * 1000),
                daily=info.daily,
                daily_remaining=info.daily_remaining,
            )

    def _metric_call(self, activation_id: str, status: int) -> None:
        try:
            from actors.metrics import metrics

            metrics().calls.inc(tags=call_tags(activation_id, self.fingerprint, status=str(status)))
        except Exception:  # metrics are best effort: outside Ray they are not available
            pass

    def _metric_429(self, activation_id: str, policy: str | None) -> None:
        try:
            from actors.metrics import metrics

            metrics().rate_limited.inc(
                tags=call_tags(activation_id, self.fingerprint, policy=policy or "unknown")
            )
        except Exception:  # best effort, as above
            pass

    def _check_usable(self) -> None:
        if self.rejected:
            raise TokenRejected(self.rejected)
        if self.problem:
            raise CallFailed(self.problem)

    # --- calls ---------------------------------------------------------------------------------

    async def _call(
        self, activation_id: str, lane: str, op: Callable[[HubSpotClient], Awaitable[T]]
    ) -> T:
        """Run one HubSpot operation with the retry policy; 400s are the caller's to handle."""
        token = _caller.set((activation_id, lane))
        try:
            attempt = 0
            while True:
                await self.refresh()
                self._check_usable()
                if self._client is None:
                    raise CallFailed("no activation uses this token any more")
                try:
                    return await op(self._client)
                except RateLimitedError as exc:
                    self.rate_limited += 1
                    self._metric_429(activation_id, exc.policy)
                    self._refused_at = self._clock.now()
                    self.budget.refused(self._refused_at, exc.policy, exc.retry_after)
                    log.warning(
                        "429 %s from HubSpot for token %s; waiting it out",
                        exc.policy,
                        self.fingerprint,
                    )
                    attempt += 1
                    if attempt >= MAX_ATTEMPTS * 4:
                        raise CallFailed(str(exc)) from None
                except (AuthenticationError, MissingScopesError) as exc:
                    await self._reject(exc)
                    raise TokenRejected(str(exc)) from None
                except ValidationError:
                    raise
                except HubSpotError as exc:
                    if not exc.retryable:
                        raise
                    attempt += 1
                    if attempt >= MAX_ATTEMPTS:
                        raise CallFailed(str(exc)) from None
                    await self._sleep(backoff(attempt, getattr(exc, "retry_after", None)))
        finally:
            _caller.reset(token)

    async def _reject(self, exc: HubSpotError) -> None:
        """Stop the token: pause every activation using it, with HubSpot's reason in words."""
        self.rejected = str(exc)
        for waiting in list(self._queue.activations()):
            for _, future in self._queue.remove(waiting):
                if not future.done():
                    future.set_exception(TokenRejected(self.rejected))
        for spec in list(self._activations.by_id.values()):
            if spec.token_fingerprint == self.fingerprint and not spec.paused:
                await append_control(
                    self._redis,
                    self._keys,
                    ActivationPaused(
                        activation_id=spec.activation_id,
                        reason=f"HubSpot refused the token: {self.rejected}",
                    ),
                )

    async def upsert(
        self, activation_id: str, lane: str, contacts: Sequence[tuple[str, dict[str, str]]]
    ) -> list[Outcome]:
        """Create-or-update contacts by email; one outcome per contact, bad inputs isolated."""
        inputs = [ContactUpsert(email, props) for email, props in contacts]
        return await self._write(
            activation_id, lane, inputs, lambda c, part: c.upsert_contacts(part)
        )

    async def update(
        self, activation_id: str, lane: str, records: Sequence[tuple[str, dict[str, str]]]
    ) -> list[Outcome]:
        """Update existing contacts by record id."""
        inputs = [ContactUpdate(cid, props) for cid, props in records]
        return await self._write(
            activation_id, lane, inputs, lambda c, part: c.update_contacts(part)
        )

    async def _write(
        self,
        activation_id: str,
        lane: str,
        inputs: list[Any],
        send: Callable[[HubSpotClient, list[Any]], Awaitable[Any]],
    ) -> list[Outcome]:
        async def once(part: list[Any]) -> list[Outcome]:
            result = await self._call(activation_id, lane, lambda c: send(c, part))
            return [_outcome(r) for r in result.results]

        try:
            return await once(inputs)
        except ValidationError as rejected:
            if len(inputs) == 1:
                return [Outcome(_key(inputs[0]), "failed", reason=_reason(rejected))]
        # HubSpot refused the batch as a whole: halve it until the bad inputs stand alone.
        splitter: BatchSplitter[Any] = BatchSplitter(inputs)
        outcomes: list[Outcome] = []
        reasons: dict[str, str] = {}
        while (part := splitter.next_part()) is not None:
            try:
                outcomes += await once(part)
                splitter.report(True)
            except ValidationError as exc:
                if len(part) == 1:
                    reasons[_key(part[0])] = _reason(exc)
                splitter.report(False)
        outcomes += [
            Outcome(_key(i), "failed", reason=reasons.get(_key(i), "HubSpot rejected this input"))
            for i in splitter.bad
        ]
        return outcomes

    async def read_ids(
        self, activation_id: str, lane: str, emails: Sequence[str]
    ) -> dict[str, str]:
        """Record ids of the contacts that exist, by lower-cased email (one batch read)."""
        result = await self._call(
            activation_id, lane, lambda c: c.read_contacts_by_email(list(emails))
        )
        return {email: record.id for email, record in result.found.items()}

    async def ensure_schema(self, activation_id: str, specs: Sequence[PropertySpec]) -> list[str]:
        """Ensure the group and properties exist and match; returns problems in words (none: [])."""

        async def op(client: HubSpotClient) -> list[str]:
            await client.ensure_property_group()
            results = await client.ensure_properties(list(specs), on_archived="report")
            return [
                f"property {r.name} is archived in HubSpot: restore it in HubSpot (Settings > Properties > Archived) to sync it"
                for r in results
                if r.outcome == "archived"
            ]

        return await self._call(activation_id, Lane.REALTIME.value, op)

    async def archive(self, activation_id: str, name: str) -> bool:
        return await self._call(
            activation_id, Lane.REALTIME.value, lambda c: c.archive_property(name)
        )

    # --- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self._clock.now()
        window, daily = self.budget.window, self.budget.daily
        return {
            "fingerprint": self.fingerprint,
            "plan": self._spec.plan if self._spec else None,
            "window_limit": window.limit,
            "window_left": window.remaining(now),
            "daily_limit": daily.limit if daily else None,
            "daily_left": daily.remaining(now) if daily else None,
            "daily_resets_at": daily.resets_at(now) if daily else None,
            "blocked_until": window.blocked_until,
            "waiting_for": self._waiting_for(now),
            "waiting": len(self._queue),
            "calls": dict(self.calls),
            "rate_limited": self.rate_limited,
            "rejected": self.rejected,
            "problem": self.problem,
            "updated_at": time.time(),
        }

    def _waiting_for(self, now: float) -> str | None:
        """Why calls are held back beyond the usual pacing, in words (None: they are not)."""
        daily = self.budget.daily
        if daily is not None and daily.wait_time(now) > 0:
            until = dt.datetime.fromtimestamp(now + daily.wait_time(now), dt.UTC)
            return f"waiting for HubSpot's daily limit to reset at {until.isoformat(timespec='seconds').replace('+00:00', 'Z')}"
        blocked = self.budget.window.blocked_until
        if blocked is not None and blocked > now:
            return f"HubSpot refused a call (429): waiting {blocked - now:.0f} s for its 10-second window to pass"
        return None

    async def publish_status(self) -> None:
        await self._redis.set(
            self._keys.governor_status(self.fingerprint), msgspec.json.encode(self.status()), ex=120
        )

    async def aclose(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        await self._http.aclose()


def call_tags(activation_id: str, fingerprint: str, **more: str) -> dict[str, str]:
    """A HubSpot call's metric tags: the activation and the token's fingerprint (never the token)."""
    return {"activation": activation_id or "-", "token": fingerprint, **more}


def _key(item: Any) -> str:
    return item.email if isinstance(item, ContactUpsert) else item.id


def _reason(exc: HubSpotError) -> str:
    return f"{exc.category or 'VALIDATION_ERROR'}: {exc.hubspot_message or exc}"


def _outcome(result: Any) -> Outcome:
    if result.status == WriteStatus.FAILED:
        status = "missing" if result.category == "OBJECT_NOT_FOUND" else "failed"
        return Outcome(
            result.key, status, result.contact_id, f"{result.category}: {result.message}"
        )
    return Outcome(result.key, result.status.value, result.contact_id)
