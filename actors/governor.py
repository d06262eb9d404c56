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

Its interface and errors are `actors.governor_port`. Permits are decided by the pure
`scheduler.dispatch.Dispatcher`; this class is the async shell around it: it hands permits to the
callers waiting for them (futures), and every HTTP request of a call goes out on a permit: the one
the call carried (``turn`` first, so the activation forms its batch just in time), else one it
waits for. Each call gets its own hooks on the HTTP client (`HubSpotClient.with_hooks`), so a
request knows whose call it is without any shared state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import httpx
import msgspec

from actors.governor_port import ActivationGone, CallFailed, CallRefused, TokenRejected
from actors.messages import Outcome, OutcomeStatus, WriteReport
from actors.status import GovernorStatus, encode_status
from crm import schema
from crm.client import HubSpotClient
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
from crm.results import ContactUpdate, ContactUpsert, PropertyError, WriteStatus
from crm.tokens import token_fingerprint
from events.activations import Activations, ActivationSpec
from events.model import ActivationPaused, encode
from events.ports import Storage
from events.secrets import Sealer, SecretError
from scheduler import BatchSplitter, Clock, Lane, SystemClock, TokenBudget, backoff
from scheduler.dispatch import WINDOW_MARGIN, Dispatcher, Grant, Permit

__all__ = ["GRANT_INTERVAL_S", "HTTP_TIMEOUT", "GovernorCore", "governor_status"]

log = logging.getLogger("hubsync.governor")
T = TypeVar("T")

GRANT_INTERVAL_S = WINDOW_S + WINDOW_MARGIN  # how long a grant counts in our own window
MAX_ATTEMPTS = 8
STATUS_TTL_S = 120  # a governor that stops publishing its status is gone from `hubsync status`
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


class CallMetrics(Protocol):
    """Where the governor counts HubSpot's answers (the shell passes Ray's metrics)."""

    def call(self, activation_id: str, status: int) -> None:
        """One answer (status 0: no response), for this activation's call."""

    def rate_limited(self, activation_id: str, policy: str | None) -> None:
        """One 429, under HubSpot's policy name (None: it named none)."""


class NoMetrics:
    """Counts nothing."""

    def call(self, activation_id: str, status: int) -> None:
        pass

    def rate_limited(self, activation_id: str, policy: str | None) -> None:
        pass


class GovernorCore:
    """One token's governor, without Ray: `storage` holds the control stream it folds (and
    appends pauses to) and the status board it publishes on; `secret_key` opens the sealed token
    (the shell reads HUBSYNC_SECRET_KEY); `clock` and `sleep` are the only time it knows (pass
    both, or neither for the wall clock); `metrics` counts HubSpot's answers; `http` is the
    transport (tests pass the emulator's ASGI app)."""

    def __init__(
        self,
        storage: Storage,
        fingerprint: str,
        *,
        secret_key: str | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        metrics: CallMetrics | None = None,
        http: httpx.AsyncClient | None = None,
        http_timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.fingerprint = fingerprint
        self._storage = storage
        if clock is not None and sleep is None:
            raise TypeError("a clock of your own needs its sleep: waits must move that clock")
        self._clock = clock or SystemClock()
        self._sleep = sleep or asyncio.sleep
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(http_timeout, connect=min(5.0, http_timeout)),
            limits=httpx.Limits(max_connections=32),
        )
        self._secret_key = secret_key  # the shell reads HUBSYNC_SECRET_KEY where it runs
        self._metrics: CallMetrics = metrics or NoMetrics()
        self._activations = Activations()
        self._fold_lock = asyncio.Lock()
        self._spec: ActivationSpec | None = None
        self._client: HubSpotClient | None = None
        starter = PLANS["starter"]
        self._dispatch = Dispatcher(
            TokenBudget.for_plan(starter.per_window, starter.daily, interval=GRANT_INTERVAL_S)
        )
        self._waiters: dict[int, asyncio.Future[Permit]] = {}  # ticket -> its caller
        self._wake = asyncio.Event()
        self.rejected: str | None = None  # why HubSpot refused the token, until a resume
        self.problem: str | None = None  # why the governor cannot work (configuration)
        self.calls: Counter[str] = Counter()
        self.rate_limited = 0
        self._dispatcher: asyncio.Task[None] | None = None

    @property
    def budget(self) -> TokenBudget:
        """The token's window and daily quota, as the dispatcher spends them."""
        return self._dispatch.budget

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
            self._dispatch.budget = TokenBudget.for_plan(
                plan.per_window, plan.daily, interval=GRANT_INTERVAL_S
            )
        try:
            self._client = HubSpotClient(
                token,
                base_url=spec.base_url,
                api_version=spec.api_version,
                http=self._http,
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
            await self._activations.fold(self._storage.activations)

    # --- permits -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_loop())

    async def _dispatch_loop(self) -> None:
        """Hand out permits in the dispatcher's order, as fast as the budget allows and no faster."""
        while True:
            if not self._dispatch.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = self._clock.now()
            decision = self._dispatch.next_grant(now)
            if decision is None:
                continue
            if not isinstance(decision, Grant):
                await self._sleep(min(decision, 1.0))
                continue
            future = self._waiters.pop(decision.ticket, None)
            if future is None or future.done():  # its caller went away: give the slot back
                self._dispatch.release(decision.permit, now)
                continue
            future.set_result(decision.permit)

    async def _permit(self, activation_id: str, lane: Lane, *, data: bool = False) -> Permit:
        """Wait for this activation's fair turn and a slot in the budget."""
        self._check_usable()
        ticket = self._dispatch.request(activation_id, lane, self._clock.now(), data=data)
        future: asyncio.Future[Permit] = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = future
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            if self._waiters.pop(ticket, None) is not None:
                self._dispatch.withdraw(ticket)
            raise

    async def turn(self, activation_id: str, lane: Lane) -> Permit:
        """A permit for the activation's next write, so it forms the batch just in time; the
        write carries it (or `release` gives it back)."""
        return await self._permit(activation_id, Lane(lane), data=True)

    async def release(self, permit: Permit) -> None:
        """Give back a permit the activation did not use."""
        self._dispatch.release(permit, self._clock.now())

    async def _check_live(self, activation_id: str) -> None:
        """Refuse a request of an activation deleted while it waited for its permit: once
        `activation delete` has appended its event, HubSpot sees no new call for it."""
        if not activation_id:
            return
        await self._fold()
        if activation_id not in self._activations.by_id:
            raise ActivationGone(f"activation {activation_id} was deleted: no more HubSpot calls")

    def _answered(
        self,
        activation_id: str,
        info: RateLimitInfo,
        status: int,
        permit: Permit | None = None,
    ) -> None:
        """A request of a call, sent on `permit`, got its answer (status 0: none came)."""
        now = self._clock.now()
        self.calls[str(status)] += 1
        self._metrics.call(activation_id, status)
        self._dispatch.answered(now, permit, reply=bool(status))
        if info.known:
            self._dispatch.observe(
                now,
                max=info.max,
                remaining=info.remaining,
                interval_ms=info.interval_ms,
                daily=info.daily,
                daily_remaining=info.daily_remaining,
            )

    def _check_usable(self) -> None:
        if self.rejected:
            raise TokenRejected(self.rejected)
        if self.problem:
            raise CallFailed(self.problem)

    # --- calls ---------------------------------------------------------------------------------

    async def _call(
        self,
        activation_id: str,
        lane: Lane,
        op: Callable[[HubSpotClient], Awaitable[T]],
        permit: Permit | None = None,
    ) -> T:
        """Run one HubSpot operation with the retry policy; 400s and 413s are the caller's. Its
        first request goes out on `permit` (the caller's turn), every other on a permit of its own."""
        if permit is not None and permit.activation != activation_id:
            raise ValueError(
                f"a permit of activation {permit.activation!r} cannot carry a call of {activation_id!r}"
            )
        requests = _Requests(self, activation_id, Lane(lane), permit)
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
                client = self._client.with_hooks(
                    before_request=requests.before, after_response=requests.after
                )
                try:
                    return await op(client)
                except RateLimitedError as exc:
                    self.rate_limited += 1
                    self._metrics.rate_limited(activation_id, exc.policy)
                    self._dispatch.refused(self._clock.now(), exc.policy, exc.retry_after)
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
            if requests.carried is not None:  # no request went out on it: give it back
                self._dispatch.release(requests.carried, self._clock.now())

    async def _reject(self, exc: HubSpotError) -> None:
        """Stop the token: pause every activation using it, with HubSpot's reason in words."""
        self.rejected = str(exc)
        for ticket in self._dispatch.withdraw_all():
            future = self._waiters.pop(ticket, None)
            if future is not None and not future.done():
                future.set_exception(TokenRejected(self.rejected))
        for spec in list(self._activations.by_id.values()):
            if spec.token_fingerprint == self.fingerprint and not spec.paused:
                paused = ActivationPaused(
                    activation_id=spec.activation_id,
                    reason=f"HubSpot refused the token: {self.rejected}",
                )
                await self._storage.activations.append(encode(paused))

    async def upsert(
        self,
        activation_id: str,
        lane: Lane,
        contacts: Sequence[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        """Create-or-update contacts by email; one outcome per contact, bad inputs isolated."""
        inputs = [ContactUpsert(email, props) for email, props in contacts]
        return await self._write(activation_id, Lane(lane), inputs, _upsert, permit=permit)

    async def update(
        self,
        activation_id: str,
        lane: Lane,
        records: Sequence[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        """Update existing contacts by record id."""
        inputs = [ContactUpdate(cid, props) for cid, props in records]
        return await self._write(activation_id, Lane(lane), inputs, _update, permit=permit)

    async def _write(
        self,
        activation_id: str,
        lane: Lane,
        inputs: list[Any],
        send: Callable[[HubSpotClient, list[Any]], Awaitable[Any]],
        *,
        may_split: bool = True,
        problems: dict[str, str] | None = None,
        permit: Permit | None = None,
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
                    _key(item), OutcomeStatus.RETRY, reason="only properties HubSpot refused"
                )
            pending = [i for i in pending if i.properties]
            if not pending:
                break
            part = pending
            try:
                result = await self._call(activation_id, lane, _sending(send, part), permit)
                permit = None  # spent by that call's first request
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
                        _key(i): Outcome(_key(i), OutcomeStatus.FAILED, reason=_refusal(exc))
                        for i in part
                    }
                pending = []
                break
            except CallRefused as refused:
                outcomes |= {
                    _key(i): Outcome(_key(i), OutcomeStatus.FAILED, reason=str(refused))
                    for i in part
                }
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
                _key(item),
                OutcomeStatus.RETRY,
                reason="HubSpot did not write it yet (transient failure)",
            )
        return WriteReport([outcomes[_key(i)] for i in inputs if _key(i) in outcomes], problems)

    async def _isolate(
        self,
        activation_id: str,
        lane: Lane,
        inputs: list[Any],
        send: Callable[[HubSpotClient, list[Any]], Awaitable[Any]],
        rejected: ValidationError,
    ) -> list[Outcome]:
        """HubSpot refused the batch as a whole and named no property: halve it until the bad
        inputs stand alone."""
        if len(inputs) == 1:
            return [Outcome(_key(inputs[0]), OutcomeStatus.FAILED, reason=_reason(rejected))]

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
            Outcome(
                _key(i),
                OutcomeStatus.FAILED,
                reason=reasons.get(_key(i), "HubSpot rejected this input"),
            )
            for i in splitter.bad
        ]
        return outcomes

    async def read_ids(
        self,
        activation_id: str,
        lane: Lane,
        emails: Sequence[str],
        permit: Permit | None = None,
    ) -> dict[str, str]:
        """Record ids of the contacts that exist, by lower-cased email (one batch read)."""
        result = await self._call(
            activation_id, Lane(lane), lambda c: c.read_contacts_by_email(list(emails)), permit
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
            Lane.REALTIME,
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
            group = asyncio.ensure_future(schema.ensure_property_group(client))
            try:
                problems = await properties(client, group)
                await group  # its error, if it failed after the properties needed nothing of it
                return problems
            finally:
                if not group.done():
                    group.cancel()
                # Retrieved here when the properties' error is the one raised (else asyncio logs
                # "Task exception was never retrieved" for the group's).
                await asyncio.gather(group, return_exceptions=True)

        async def properties(client: HubSpotClient, group: Awaitable[object]) -> dict[str, str]:
            problems: dict[str, str] = {}
            todo = list(specs)
            while todo:
                try:
                    results = await schema.ensure_properties(
                        client, todo, on_archived="report", before_writes=group
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

        return await self._call(activation_id, Lane.REALTIME, op)

    async def archive(self, activation_id: str, name: str) -> bool:
        return await self._call(activation_id, Lane.REALTIME, lambda c: c.archive_property(name))

    # --- status --------------------------------------------------------------------------------

    def status(self) -> GovernorStatus:
        now = self._clock.now()
        return governor_status(
            self.fingerprint,
            self._spec.plan if self._spec else None,
            self.budget,
            now,
            waiting_for=self._waiting_for(now),
            waiting=self._dispatch.waiting,
            calls=self.calls,
            rate_limited=self.rate_limited,
            rejected=self.rejected,
            problem=self.problem,
            wall=now,
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
        await self._storage.status.put(
            self._storage.keys.governor_status(self.fingerprint),
            encode_status(self.status()),
            ttl_s=STATUS_TTL_S,
        )

    async def aclose(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        await self._http.aclose()


class _Requests:
    """One governed call's hooks on the HTTP client: each request goes out on a permit (the one
    the call carried, first), and each answer teaches the dispatcher what HubSpot said."""

    def __init__(
        self, core: GovernorCore, activation_id: str, lane: Lane, carried: Permit | None
    ) -> None:
        self._core = core
        self._activation_id = activation_id
        self._lane = lane
        self.carried = carried  # the caller's permit, until a request spends it
        # The permit each request in flight went out on, by the task sending it: the requests of
        # one call may be in flight together (the schema's), each awaits its answer in its task.
        self._sent_on: dict[asyncio.Task[Any] | None, Permit] = {}

    async def before(self) -> None:
        """Wait until this request may go: a valid permit checked at the last moment (a permit
        granted before a 429, or used too late for a full window, is replaced by a new one)."""
        core = self._core
        permit, self.carried = self.carried, None
        while True:
            if permit is None:
                permit = await core._permit(self._activation_id, self._lane)
            try:
                await core._check_live(self._activation_id)
            except BaseException:
                core._dispatch.release(permit, core._clock.now())  # no request goes out on it
                raise
            if core._dispatch.use(permit, core._clock.now()):
                self._sent_on[asyncio.current_task()] = permit
                return
            permit = None

    def after(self, info: RateLimitInfo, status: int) -> None:
        permit = self._sent_on.pop(asyncio.current_task(), None)
        self._core._answered(self._activation_id, info, status, permit)


def _upsert(client: HubSpotClient, part: list[Any]) -> Awaitable[Any]:
    return client.upsert_contacts(part)


def _update(client: HubSpotClient, part: list[Any]) -> Awaitable[Any]:
    return client.update_contacts(part)


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
        status = (
            OutcomeStatus.MISSING if result.category == "OBJECT_NOT_FOUND" else OutcomeStatus.FAILED
        )
        return Outcome(
            result.key, status, result.contact_id, f"{result.category}: {result.message}"
        )
    return Outcome(result.key, OutcomeStatus(result.status.value), result.contact_id)
