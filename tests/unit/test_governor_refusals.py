"""The RateGovernor's retry loop against HubSpot's refusals, on a fake clock.

GovernorCore runs on the in-memory storage (events.memory) and talks to the emulator's pure
`HubSpotState` through httpx's in-process ASGI transport (no socket, no network), with one
FakeClock for both sides: a test moves time by letting the governor "sleep", it never waits for
real.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from actors.governor import MAX_ATTEMPTS, GovernorCore
from actors.governor_port import CallFailed, TokenRejected
from crm.emulator import ALL_SCOPES, EmulatorConfig, FaultSettings, HubSpotState
from crm.emulator.app import create_app
from crm.plans import WINDOW_S
from crm.tokens import token_fingerprint
from events.memory import MemoryStorage
from events.model import ActivationCreated, ActivationPaused, decode_control_event, encode
from events.secrets import Sealer
from events.streams import Keys
from scheduler import FakeClock, Lane, split_call_bound

BEFORE_MIDNIGHT = dt.datetime(2026, 11, 27, 23, 59, 0, tzinfo=dt.UTC).timestamp()


SECRET_KEY = Fernet.generate_key().decode()
# Loopback, so a token sealed for plain http opens; the ASGI transport answers, no socket.
BASE_URL = "http://127.0.0.1:9"


class Rig:
    """A GovernorCore as the shell makes it, on the in-memory storage and the fake clock, in front
    of the emulator's ASGI app: its activation is created on the control stream with the token
    sealed, as `hubsync activation create` does, and the governor folds it from there."""

    def __init__(
        self,
        *,
        token: str = "pat-unit",
        tokens: dict[str, frozenset[str]] | None = None,
        config: EmulatorConfig | None = None,
        start: float = 1_800_000_000.0,
        metrics: Any = None,
    ) -> None:
        self.clock = FakeClock(start)
        self.state = HubSpotState(config, tokens=tokens, clock=self.clock.now)
        self.storage = MemoryStorage(Keys("unit"), clock=self.clock.now)
        self.token = token

        async def sleep(seconds: float) -> None:
            self.clock.advance(max(seconds, 0.0))
            await asyncio.sleep(0)

        self.core = GovernorCore(
            self.storage,
            token_fingerprint(token),
            secret_key=SECRET_KEY,
            clock=self.clock,
            sleep=sleep,
            metrics=metrics,
            http=httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(self.state))),
        )
        self.core.start()

    async def create(self, activation_id: str = "act1") -> None:
        """`hubsync activation create`: the activation, its token sealed for it, on the stream."""
        created = ActivationCreated(
            activation_id=activation_id,
            name=activation_id,
            token_sealed=Sealer(SECRET_KEY).seal(
                self.token, activation_id=activation_id, base_url=BASE_URL
            ),
            token_fingerprint=token_fingerprint(self.token),
            base_url=BASE_URL,
        )
        await self.storage.activations.append(encode(created))

    async def control(self) -> list[Any]:
        """What the control stream holds, decoded."""
        return [
            decode_control_event(raw)
            async for _, raw in self.storage.activations.read_after("0-0")
            if raw is not None
        ]

    def faults(self, **settings: Any) -> None:
        self.state.set_faults(FaultSettings(**settings))

    def log(self) -> list[tuple[float, str, str]]:
        return [(t, op, status) for t, _, op, status in self.state.request_log]

    async def upsert(
        self, n: int = 1, activation: str = "act1", prefix: str = "c", permit: Any = None
    ) -> list[Any]:
        report = await self.core.upsert(
            activation,
            Lane.REALTIME,
            [(f"{prefix}{i}@example.com", {"firstname": "Ada"}) for i in range(n)],
            permit,
        )
        return report.outcomes

    async def close(self) -> None:
        await self.core.aclose()


@pytest.fixture
async def rig() -> Any:
    made: list[Rig] = []

    async def make(**kwargs: Any) -> Rig:
        made.append(Rig(**kwargs))
        await made[-1].create()
        return made[-1]

    yield make
    for r in made:
        await r.close()


async def test_no_retry_lands_in_the_window_that_refused_it(rig: Any) -> None:
    r = await rig()
    # The activation holds two permits (it took its turn for two batches), then HubSpot says 429.
    first_turn = await r.core.turn("act1", Lane.REALTIME)
    second_turn = await r.core.turn("act1", Lane.REALTIME)
    r.faults(next_n={"count": 1, "status": 429})
    outcomes = await r.upsert(permit=first_turn)
    assert [o.status for o in outcomes] == ["created"]
    (refused_at, _, first), (retried_at, _, second) = r.log()
    assert (first, second) == ("429", "200")
    assert retried_at - refused_at >= 10.0  # the retry waited out the window that refused it
    # The second permit was granted before the refusal: it is void, its batch waits for a new one.
    r.clock.set(refused_at + 1.0)
    await r.upsert(prefix="second", permit=second_turn)
    assert r.log()[-1][0] - refused_at >= 10.0
    assert r.core.rate_limited == 1


async def test_a_storm_of_429s_costs_one_window_each_and_ends_in_callfailed(rig: Any) -> None:
    r = await rig()
    r.faults(next_n={"count": 3, "status": 429})
    assert [o.status for o in await r.upsert()] == ["created"]
    times = [t for t, _, _ in r.log()]
    assert [s for _, _, s in r.log()] == ["429", "429", "429", "200"]
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(times))


async def test_5xx_423_timeouts_are_retried_with_backoff_then_give_up(rig: Any) -> None:
    r = await rig()
    r.faults(next_n={"count": 2, "status": 503})
    r.faults(next_n={"count": 1, "status": 423})
    assert [o.status for o in await r.upsert()] == ["created"]
    assert [s for _, _, s in r.log()] == ["503", "503", "423", "200"]

    r.faults(next_n={"count": MAX_ATTEMPTS, "status": 502})
    with pytest.raises(CallFailed, match="502"):
        await r.upsert(prefix="d")
    assert len(r.log()) == 4 + MAX_ATTEMPTS  # exactly MAX_ATTEMPTS tries, no more


async def test_the_daily_limit_from_the_headers_holds_calls_until_midnight_and_says_so(
    rig: Any,
) -> None:
    r = await rig(start=BEFORE_MIDNIGHT)
    r.state.configure({"daily": 3})
    for i in range(3):
        await r.upsert(prefix=f"day{i}-")
    status = r.core.status()
    assert status.daily_left == 0
    assert (
        status.waiting_for == "waiting for HubSpot's daily limit to reset at 2026-11-28T00:00:00Z"
    )
    assert [o.status for o in await r.upsert(prefix="tomorrow")] == ["created"]
    log = r.log()
    assert len(log) == 4 and all(s == "200" for _, _, s in log)  # not one 429: the headers said it
    assert log[-1][0] >= BEFORE_MIDNIGHT + 60
    assert r.core.status().waiting_for is None


async def test_a_daily_429_waits_for_the_reset_instead_of_retrying(rig: Any) -> None:
    r = await rig(start=BEFORE_MIDNIGHT)
    r.state.configure({"daily": 10})
    r.state.daily.record(BEFORE_MIDNIGHT)
    r.state.daily.used = 10  # other apps of the account spent today's budget
    assert [o.status for o in await r.upsert()] == ["created"]
    assert [s for _, _, s in r.log()] == ["429", "200"]
    assert r.log()[1][0] >= BEFORE_MIDNIGHT + 60


async def test_a_revoked_token_pauses_its_activations_once_and_calls_no_more(rig: Any) -> None:
    r = await rig(token="pat-revoked", tokens={"pat-other": ALL_SCOPES})
    with pytest.raises(TokenRejected, match="401"):
        await r.upsert()
    for _ in range(5):
        with pytest.raises(TokenRejected):
            await r.upsert()
        with pytest.raises(TokenRejected):
            await r.core.turn("act1", Lane.REALTIME)
    assert len(r.log()) == 1  # one 401, then not one more request
    _, paused = await r.control()
    assert isinstance(paused, ActivationPaused) and paused.activation_id == "act1"
    assert "401" in paused.reason and "revoked" in paused.reason
    assert "pat-revoked" not in paused.reason


async def test_a_missing_scope_is_named_in_the_pause_reason(rig: Any) -> None:
    schemas_only = frozenset(
        {"crm.schemas.contacts.read", "crm.schemas.contacts.write", "crm.objects.contacts.read"}
    )
    r = await rig(token="pat-partial", tokens={"pat-partial": schemas_only})
    with pytest.raises(TokenRejected, match=r"crm\.objects\.contacts\.write"):
        await r.upsert()
    _, paused = await r.control()
    assert "403" in paused.reason and "crm.objects.contacts.write" in paused.reason


async def test_one_bad_input_in_a_batch_rejected_whole_is_isolated(rig: Any) -> None:
    r = await rig(config=EmulatorConfig(open_auth=True, email_upsert_errors="whole_batch"))
    r.faults(reject_emails=["c37@example.com"])
    outcomes = await r.upsert(100)
    by_status: dict[str, list[str]] = {}
    for o in outcomes:
        by_status.setdefault(o.status, []).append(o.key)
    assert by_status["failed"] == ["c37@example.com"]
    assert len(by_status["created"]) == 99
    [failed] = [o for o in outcomes if o.status == "failed"]
    assert "VALIDATION_ERROR" in failed.reason and "c37@example.com is invalid" in failed.reason
    assert len(r.log()) <= 1 + split_call_bound(100, 1)
    assert r.state.stats()["contacts"] == 99


async def test_a_permit_used_late_counts_in_the_window_from_when_the_call_really_went(
    rig: Any,
) -> None:
    r = await rig()
    await r.upsert()  # warm: the first call has told the governor what is left
    permit = await r.core.turn("act1", Lane.BACKFILL)
    granted = r.core.budget.window.grants()[-1]
    assert granted == permit.granted_at
    r.clock.advance(2.0)  # the activation was busy (a snapshot) between its turn and its send
    await r.upsert(permit=permit)
    grants = r.core.budget.window.grants()
    assert granted not in grants[1:]  # moved: HubSpot counts the call when it arrives
    # ... and, answered, it holds its slot until HubSpot's interval after its answer.
    assert grants[-1] + r.core.budget.window.interval == pytest.approx(
        r.clock.now() + WINDOW_S, abs=1e-6
    )
    assert len(grants) == 2
