"""The RateGovernor: one per HubSpot access token, named by the token's fingerprint.

It owns the token's HTTP client and budget (rolling 10-second window + daily quota), shares calls
fairly between the activations using the token (deficit round robin, realtime before backfill),
executes the HubSpot calls, learns the limits from every response's headers and handles refusals:
a 429 blocks the window that refused it (or waits for the daily reset), 5xx/423/timeouts back off
with jitter (>= 2 s after a 423), a 400 or 207 that names properties of the batch (archived,
deleted or redefined in HubSpot) reports those properties to the activation and the rest of the
batch is sent again without them, a batch rejected whole for no named property is split until
its bad inputs stand alone, inputs failed for now (MISSING_RESULT, HubSpot's transient
categories) are sent again, any other 4xx (404, 409, 413, ...) is tried a few times and then
parked with HubSpot's answer (a 413 first splits the batch once), and a 401 or 403 stops the
token: its activations are paused with the reason, no retry storm. A call for an activation that
was deleted is refused before it reaches HubSpot.

Every HTTP request waits for a permit (the client's ``before_request`` hook). An activation may
take its permit first (``turn``) and form its batch only then, just in time.

Errors raised to callers::

    TokenRejected      401/403: the token is wrong, revoked or lacks scopes; its activations pause
    CallFailed         retries exhausted on a retryable failure; the caller puts its batch back
    └── ActivationGone the activation was deleted: no call is made for it any more
    CallRefused        HubSpot kept answering a 4xx that resending cannot fix (404, 409, 413, ...)
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import msgspec
import redis.asyncio as aioredis

from actors.status import GovernorStatus, encode_status
from crm.client import ContactUpdate, ContactUpsert, HubSpotClient, PropertyError, WriteStatus
from crm.errors import (
    AuthenticationError,
    HubSpotError,
    InvalidTokenError,
    LockedError,
    MissingScopesError,
    PayloadTooLargeError,
    RateLimitedError,
    ValidationError,
)
from crm.plans import PLANS, REQUEST_TIMEOUT_S, WINDOW_S
from crm.properties import PropertySpec
from crm.ratelimit import RateLimitInfo
from crm.tokens import token_fingerprint
from events.activations import Activations, ActivationSpec
from events.model import ActivationPaused
from events.secrets import Sealer, SecretError
from events.streams import Keys, append_control
from scheduler import BatchSplitter, FairQueue, Lane, SystemClock, TokenBudget, backoff

__all__ = [
    "GRANT_INTERVAL_S",
    "ActivationGone",
    "CallFailed",
    "CallRefused",
    "GovernorCore",
    "Outcome",
    "TokenRejected",
    "WriteReport",
    "governor_status",
]

log = logging.getLogger("hubsync.governor")
T = TypeVar("T")

# A call counts in HubSpot's window when HubSpot receives it, some time after we grant it; a
# grant also waits this long beyond the window so a slow request never lands in a full window.
WINDOW_MARGIN = 0.25
GRANT_INTERVAL_S = WINDOW_S + WINDOW_MARGIN  # how long a grant counts in our own window
MAX_ATTEMPTS = 8
REALTIME_RESERVE = 0.1  # share of the window backfills leave free while realtime traffic flows
REALTIME_MEMORY = 60.0  # seconds after the last realtime call that the reserve still applies
PROBE_TIMEOUT = 5.0  # a probing call not answered by then (its caller died): let another go
HTTP_TIMEOUT = REQUEST_TIMEOUT_S
REFUSED_ATTEMPTS = 3  # tries of a call HubSpot answers with an unexpected 4xx before giving up
LOCKED_PAUSE = 2.0  # HubSpot asks for >= 2 s between batch writes after a 423 Locked
WRITE_ROUNDS = 4  # sends of one batch: the first, then after dropping named properties or retrying
# Per-input failures that say "not now" rather than "never": MISSING_RESULT is the client's own
# (HubSpot left the input out of its answer); the others are HubSpot's error categories for
# limits, locks and failures on its side.
TRANSIENT_CATEGORIES = frozenset(
    {
        "MISSING_RESULT",
        "RATE_LIMITS",
        "RATE_LIMIT",
        "LOCKED",
        "INTERNAL_ERROR",
        "SERVICE_UNAVAILABLE",
        "GATEWAY_TIMEOUT",
        "TIMEOUT",
    }
)
# Codes HubSpot gives when a property, not a value, is wrong: the property was archived or
# deleted, made read-only, or its options were changed in HubSpot. Every value of it fails.
PROPERTY_CODES = frozenset(
    {"PROPERTY_DOESNT_EXIST", "PROPERTY_NOT_FOUND", "READ_ONLY_VALUE", "INVALID_OPTION"}
)

_caller: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("caller")


class TokenRejected(Exception):
    """HubSpot refused the token (401) or its scopes (403); the message says what to do."""


class CallFailed(Exception):
    """A call still failed after its retries; it is safe to try again later."""


class ActivationGone(CallFailed):
    """The activation was deleted: the governor makes no call for it any more."""


class CallRefused(Exception):
    """HubSpot kept refusing a call with a 4xx that resending will not fix (404, 409, 413, or
    one hubsync does not expect); the message says which status and what HubSpot said."""

    def __init__(self, error: HubSpotError) -> None:
        self.status = error.status
        said = error.hubspot_message or error.what
        super().__init__(f"HubSpot answered {error.status}: {said}")


class Outcome(msgspec.Struct, array_like=True, frozen=True):
    """One input's fate: status is written | created | failed | missing | retry (not written
    now, e.g. HubSpot left it out of its answer: the caller sends it again later)."""

    key: str
    status: str
    contact_id: str | None = None
    reason: str = ""


class WriteReport(msgspec.Struct, frozen=True):
    """A batch write's result: one outcome per input, and the properties HubSpot refused for
    every input (internal name -> HubSpot's reason). Those were dropped from the inputs before
    the rest was sent again: the caller stops syncing them and records the problem."""

    outcomes: list[Outcome]
    property_problems: dict[str, str] = {}


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
        self._fold_lock = asyncio.Lock()
        self._spec: ActivationSpec | None = None
        self._client: HubSpotClient | None = None
        starter = PLANS["starter"]
        self.budget = TokenBudget.for_plan(
            starter.per_window, starter.daily, interval=GRANT_INTERVAL_S
        )
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
        await self._fold()
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
        plan = PLANS.get(spec.plan, PLANS["starter"])
        if self._spec is None or self._spec.plan != spec.plan:
            self.budget = TokenBudget.for_plan(
                plan.per_window, plan.daily, interval=GRANT_INTERVAL_S
            )
        try:
            self._client = HubSpotClient(
                token,
                base_url=spec.base_url,
                api_version=spec.api_version,
                http=self._http,
                before_request=self._before_request,
                after_response=self._after_response,
                trace_prefix=self.fingerprint[:6],
            )
        except InvalidTokenError as exc:  # says what is wrong and where, never the token
            self._client = None
            self.problem = f"token {self.fingerprint}: {exc}"
            return
        self._spec = spec

    async def _fold(self) -> None:
        """Fold the control stream, one fold at a time: two concurrent folds could apply a page
        read before a deletion after the page that holds it, and bring the activation back."""
        async with self._fold_lock:
            await self._activations.refresh(self._redis, self._keys)

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
                return await self._check_live(activation_id)
        await self.permit(activation_id, lane)
        await self._check_live(activation_id)

    async def _check_live(self, activation_id: str) -> None:
        """Refuse a request of an activation deleted while it waited for its permit: once
        `activation delete` has appended its event, HubSpot sees no new call for it."""
        if not activation_id:
            return
        await self._fold()
        if activation_id not in self._activations.by_id:
            raise ActivationGone(f"activation {activation_id} was deleted: no more HubSpot calls")

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
        """Run one HubSpot operation with the retry policy; 400s and 413s are the caller's."""
        token = _caller.set((activation_id, lane))
        try:
            attempt = 0
            while True:
                await self.refresh()
                self._check_usable()
                if activation_id and activation_id not in self._activations.by_id:
                    raise ActivationGone(
                        f"activation {activation_id} was deleted: no more HubSpot calls"
                    )
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
                except (ValidationError, PayloadTooLargeError):
                    raise
                except HubSpotError as exc:
                    attempt += 1
                    if _refused(exc):
                        # Not transient, yet not the input's fault either (a 404, a 409, an
                        # unknown 4xx): a few tries, then the caller parks it with HubSpot's answer.
                        if attempt >= REFUSED_ATTEMPTS:
                            raise CallRefused(exc) from None
                    elif not exc.retryable:
                        raise
                    elif attempt >= MAX_ATTEMPTS:
                        raise CallFailed(str(exc)) from None
                    await self._sleep(_pause(exc, attempt))
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
    ) -> WriteReport:
        """Create-or-update contacts by email; one outcome per contact, bad inputs isolated."""
        inputs = [ContactUpsert(email, props) for email, props in contacts]
        return await self._write(
            activation_id, lane, inputs, lambda c, part: c.upsert_contacts(part)
        )

    async def update(
        self, activation_id: str, lane: str, records: Sequence[tuple[str, dict[str, str]]]
    ) -> WriteReport:
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
        *,
        may_split: bool = True,
        problems: dict[str, str] | None = None,
    ) -> WriteReport:
        """Send a batch, using what HubSpot names before splitting blindly: properties it
        refuses for every input are dropped and the rest sent again (within WRITE_ROUNDS);
        inputs it failed for now are sent again; a 400 naming no property is split."""
        problems = {} if problems is None else problems
        outcomes: dict[str, Outcome] = {}
        pending = list(inputs)
        transient = 0  # rounds that resent inputs HubSpot failed for now
        for _ in range(WRITE_ROUNDS):
            pending = [_without(i, problems) for i in pending]
            for item in [i for i in pending if not i.properties]:
                outcomes[_key(item)] = Outcome(
                    _key(item), "retry", reason="only properties HubSpot refused"
                )
            pending = [i for i in pending if i.properties]
            if not pending:
                break
            part = pending
            try:
                result = await self._call(activation_id, lane, _sending(send, part))
            except ValidationError as rejected:
                named = _named_property_problems(rejected, part)
                if named:
                    problems |= named
                    continue
                outcomes |= {
                    o.key: o for o in await self._isolate(activation_id, lane, part, send, rejected)
                }
                pending = []
                break
            except PayloadTooLargeError as exc:
                if may_split and len(part) > 1:  # once: two halves, each sent on its own
                    half = len(part) // 2
                    for piece in (part[:half], part[half:]):
                        report = await self._write(
                            activation_id, lane, piece, send, may_split=False, problems=problems
                        )
                        outcomes |= {o.key: o for o in report.outcomes}
                else:
                    outcomes |= {
                        _key(i): Outcome(_key(i), "failed", reason=_refusal(exc)) for i in part
                    }
                pending = []
                break
            except CallRefused as refused:
                outcomes |= {_key(i): Outcome(_key(i), "failed", reason=str(refused)) for i in part}
                pending = []
                break
            pending = []
            for_now = False
            named = _failed_property_problems(result.results, part)
            problems |= named
            for item, written in zip(part, result.results, strict=True):
                if written.status != WriteStatus.FAILED:
                    outcomes[_key(item)] = _outcome(written)
                elif named and {e.name for e in written.property_errors} & set(named):
                    pending.append(item)  # failed for a property now dropped: send the rest
                elif written.category in TRANSIENT_CATEGORIES:
                    pending.append(item)  # failed for now, not for good: send it again
                    for_now = True
                else:
                    outcomes[_key(item)] = _outcome(written)
            if for_now:
                transient += 1
                await self._sleep(backoff(transient))
        for item in pending:  # still failing for now: the caller puts it back
            outcomes[_key(item)] = Outcome(
                _key(item), "retry", reason="HubSpot did not write it yet (transient failure)"
            )
        return WriteReport([outcomes[_key(i)] for i in inputs if _key(i) in outcomes], problems)

    async def _isolate(
        self,
        activation_id: str,
        lane: str,
        inputs: list[Any],
        send: Callable[[HubSpotClient, list[Any]], Awaitable[Any]],
        rejected: ValidationError,
    ) -> list[Outcome]:
        """HubSpot refused the batch as a whole and named no property: halve it until the bad
        inputs stand alone."""
        if len(inputs) == 1:
            return [Outcome(_key(inputs[0]), "failed", reason=_reason(rejected))]

        async def once(part: list[Any]) -> list[Outcome]:
            result = await self._call(activation_id, lane, lambda c: send(c, part))
            return [_outcome(r) for r in result.results]

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

    async def read_contact(
        self, activation_id: str, email: str, properties: Sequence[str]
    ) -> dict[str, str | None] | None:
        """One contact's values of ``properties`` as HubSpot holds them now (None: HubSpot has no
        such contact): ONE call, on the realtime lane, within the token's window like any other
        (the console's and the API's contact lookup)."""
        record = await self._call(
            activation_id,
            Lane.REALTIME.value,
            lambda c: c.get_contact_by_email(email, list(properties)),
        )
        return None if record is None else dict(record.properties)

    async def ensure_schema(
        self, activation_id: str, specs: Sequence[PropertySpec]
    ) -> dict[str, str]:
        """Ensure the group and properties exist and match; returns, per property name, why it
        cannot be used (none: {}). Keyed by exact name, so ``raptor_vip`` never takes the
        problem of ``raptor_vip_gold``. A definition HubSpot refuses is reported for that
        property alone, and the others are ensured all the same."""

        async def op(client: HubSpotClient) -> dict[str, str]:
            # The group and the properties' reads go out together; creating a property waits
            # for its group (`before_writes`). Each request still takes its own permit.
            group = asyncio.ensure_future(client.ensure_property_group())
            try:
                problems = await properties(client, group)
                await group  # its error, if it failed after the properties needed nothing of it
                return problems
            finally:
                if not group.done():
                    group.cancel()
                    await asyncio.gather(group, return_exceptions=True)

        async def properties(client: HubSpotClient, group: Awaitable[object]) -> dict[str, str]:
            problems: dict[str, str] = {}
            todo = list(specs)
            while todo:
                try:
                    results = await client.ensure_properties(
                        todo, on_archived="report", before_writes=group
                    )
                except ValidationError as exc:
                    refused = {s.name for s in todo} & set(exc.ids)
                    if not refused:
                        raise  # not about a named definition: the caller isolates it
                    for name in sorted(refused):
                        problems[name] = (
                            f"HubSpot refused the definition of property {name}: "
                            f"{exc.hubspot_message or exc}"
                        )
                    todo = [s for s in todo if s.name not in refused]
                    continue
                for r in results:
                    if r.outcome == "archived":
                        problems[r.name] = (
                            f"property {r.name} is archived in HubSpot: restore it in HubSpot "
                            "(Settings > Properties > Archived) to sync it"
                        )
                break
            return problems

        return await self._call(activation_id, Lane.REALTIME.value, op)

    async def archive(self, activation_id: str, name: str) -> bool:
        return await self._call(
            activation_id, Lane.REALTIME.value, lambda c: c.archive_property(name)
        )

    # --- status --------------------------------------------------------------------------------

    def status(self) -> GovernorStatus:
        now = self._clock.now()
        return governor_status(
            self.fingerprint,
            self._spec.plan if self._spec else None,
            self.budget,
            now,
            waiting_for=self._waiting_for(now),
            waiting=len(self._queue),
            calls=self.calls,
            rate_limited=self.rate_limited,
            rejected=self.rejected,
            problem=self.problem,
            wall=time.time(),
        )

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
            self._keys.governor_status(self.fingerprint), encode_status(self.status()), ex=120
        )

    async def aclose(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        await self._http.aclose()


def governor_status(
    fingerprint: str,
    plan: str | None,
    budget: TokenBudget,
    now: float,
    *,
    waiting_for: str | None,
    waiting: int,
    calls: Mapping[str, int],
    rate_limited: int,
    rejected: str | None,
    problem: str | None,
    wall: float,
) -> GovernorStatus:
    """What a RateGovernor publishes: a pure function of its token's budget at `now` and its
    counts (`wall`: epoch seconds for `updated_at`)."""
    window, daily = budget.window, budget.daily
    return GovernorStatus(
        fingerprint=fingerprint,
        plan=plan,
        window_limit=window.limit,
        window_left=window.remaining(now),
        daily_limit=daily.limit if daily else None,
        daily_left=daily.remaining(now) if daily else None,
        daily_resets_at=daily.resets_at(now) if daily else None,
        blocked_until=window.blocked_until,
        waiting_for=waiting_for,
        waiting=waiting,
        calls=dict(calls),
        rate_limited=rate_limited,
        rejected=rejected,
        problem=problem,
        updated_at=wall,
    )


def call_tags(activation_id: str, fingerprint: str, **more: str) -> dict[str, str]:
    """A HubSpot call's metric tags: the activation and the token's fingerprint (never the token)."""
    return {"activation": activation_id or "-", "token": fingerprint, **more}


def _key(item: Any) -> str:
    return item.email if isinstance(item, ContactUpsert) else item.id


def _sending(
    send: Callable[[HubSpotClient, list[Any]], Awaitable[Any]], part: list[Any]
) -> Callable[[HubSpotClient], Awaitable[Any]]:
    """``send`` with its inputs fixed: one operation for ``_call`` to retry, bound to this part
    (a closure in the loop would see the loop's later ``part``)."""
    return lambda c: send(c, part)


def _without(item: Any, names: dict[str, str]) -> Any:
    if not names or not set(item.properties) & set(names):
        return item
    kept = {k: v for k, v in item.properties.items() if k not in names}
    return msgspec.structs.replace(item, properties=kept)


def _refused(exc: HubSpotError) -> bool:
    """A 4xx that is neither transient (408, 423, 429) nor handled on its own (400, 401, 403,
    413): 404, 409 and whatever else HubSpot may answer."""
    status = exc.status or 0
    return 400 <= status < 500 and status not in (408, 423, 429)


def _pause(exc: HubSpotError, attempt: int) -> float:
    wait = backoff(attempt, getattr(exc, "retry_after", None))
    if isinstance(exc, LockedError):
        return max(wait, LOCKED_PAUSE)
    return wait


def _refusal(exc: HubSpotError) -> str:
    return f"HubSpot answered {exc.status}: {exc.hubspot_message or exc.what}"


def _describe(error: PropertyError) -> str:
    code = error.code or "VALIDATION_ERROR"
    return f"HubSpot refuses property {error.name} ({code}: {error.message or 'no message'})"


def _named_property_problems(rejected: ValidationError, inputs: list[Any]) -> dict[str, str]:
    """The properties a 400 blames for the whole batch. A property-level code (the property was
    archived, deleted, made read-only, or its options changed) condemns the property; a value
    code (INVALID_NUMBER, ...) does only when HubSpot's ids cover every input that sets it,
    i.e. every value of it fails: its type was changed in HubSpot. Otherwise the named values
    are those of a few bad inputs, which splitting isolates."""
    carrying: dict[str, set[str]] = {}
    for item in inputs:
        for name in item.properties:
            carrying.setdefault(name, set()).add(_key(item).lower())
    ids = {i.lower() for i in rejected.ids}
    problems: dict[str, str] = {}
    for error in rejected.property_errors:
        holders = carrying.get(error.name)
        if not holders:
            continue  # not a property of ours (e.g. email): not a property problem
        if error.code in PROPERTY_CODES or (len(holders) >= 2 and (not ids or holders <= ids)):
            problems[error.name] = _describe(error)
    return problems


def _failed_property_problems(results: Sequence[Any], inputs: list[Any]) -> dict[str, str]:
    """The properties a 207 blames: a property-level code on any input, or a value code on
    every input (two or more) that sets the property."""
    carrying: dict[str, int] = {}
    for item in inputs:
        for name in item.properties:
            carrying[name] = carrying.get(name, 0) + 1
    failing: dict[str, list[PropertyError]] = {}
    for result in results:
        if result.status == WriteStatus.FAILED:
            for error in result.property_errors:
                failing.setdefault(error.name, []).append(error)
    problems: dict[str, str] = {}
    for name, errors in failing.items():
        if name not in carrying:
            continue
        if any(e.code in PROPERTY_CODES for e in errors) or (
            carrying[name] >= 2 and len(errors) == carrying[name]
        ):
            problems[name] = _describe(errors[0])
    return problems


def _reason(exc: HubSpotError) -> str:
    return f"{exc.category or 'VALIDATION_ERROR'}: {exc.hubspot_message or exc}"


def _outcome(result: Any) -> Outcome:
    if result.status == WriteStatus.FAILED:
        status = "missing" if result.category == "OBJECT_NOT_FOUND" else "failed"
        return Outcome(
            result.key, status, result.contact_id, f"{result.category}: {result.message}"
        )
    return Outcome(result.key, result.status.value, result.contact_id)
