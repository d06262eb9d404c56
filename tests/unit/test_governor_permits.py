"""The RateGovernor's permits as an activation uses them: take a turn, form the batch, send it on
the permit (or give it back). On the in-memory storage, the fake clock and the emulator's ASGI
app (see test_governor_refusals for the rig)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.governor import _Requests
from actors.governor_port import ActivationGone, TokenRejected
from crm.plans import WINDOW_S
from crm.ratelimit import RateLimitInfo
from events.model import ActivationDeleted, encode
from scheduler import Lane
from tests.unit.test_governor_refusals import Rig

CONTACT = [("ada@example.com", {"firstname": "Ada"})]


@pytest.fixture
async def rig() -> Any:
    made: list[Rig] = []

    async def make(*, warm: bool = True, **kwargs: Any) -> Rig:
        r = Rig(**kwargs)
        made.append(r)
        await r.create()
        await r.create("act2")
        if warm:
            await r.upsert(prefix="warm")  # the first call tells the governor what is left
        return r

    yield make
    for r in made:
        await r.close()


async def test_a_write_on_its_permit_goes_out_at_once_and_spends_it(rig: Any) -> None:
    r = await rig()
    permit = await r.core.turn("act1", Lane.REALTIME)
    assert (permit.activation, permit.lane, permit.granted_at) == (
        "act1",
        Lane.REALTIME,
        r.clock.now(),
    )
    used = len(r.core.budget.window.grants())
    report = await r.core.upsert("act1", Lane.REALTIME, CONTACT, permit)
    assert [o.status for o in report.outcomes] == ["created"]
    assert len(r.core.budget.window.grants()) == used  # no second slot for the call
    # Spent: the same permit carried again buys nothing, the call waits for its own turn.
    await r.core.upsert("act1", Lane.REALTIME, CONTACT, permit)
    assert len(r.core.budget.window.grants()) == used + 1


async def test_a_permit_given_back_frees_its_slot(rig: Any) -> None:
    r = await rig()
    before = r.core.budget.window.remaining(r.clock.now())
    permit = await r.core.turn("act1", Lane.BACKFILL)
    assert r.core.budget.window.remaining(r.clock.now()) == before - 1
    await r.core.release(permit)  # nothing was due when it came
    assert r.core.budget.window.remaining(r.clock.now()) == before


async def test_a_permit_carries_only_its_own_activations_call(rig: Any) -> None:
    r = await rig()
    permit = await r.core.turn("act1", Lane.REALTIME)
    with pytest.raises(ValueError, match="act1"):
        await r.core.upsert("act2", Lane.REALTIME, CONTACT, permit)


async def test_a_lane_typo_is_refused_not_taken_for_backfill(rig: Any) -> None:
    r = await rig()
    with pytest.raises(ValueError):
        await r.core.turn("act1", "realtme")
    with pytest.raises(ValueError):
        await r.core.upsert("act1", "backfil", CONTACT)


async def test_the_permit_of_an_activation_deleted_meanwhile_is_given_back_unused(
    rig: Any,
) -> None:
    r = await rig()
    permit = await r.core.turn("act1", Lane.REALTIME)
    calls = len(r.log())
    await r.storage.activations.append(encode(ActivationDeleted(activation_id="act1")))
    before = r.core.budget.window.remaining(r.clock.now())
    with pytest.raises(ActivationGone):
        await r.core.upsert("act1", Lane.REALTIME, CONTACT, permit)
    assert len(r.log()) == calls  # HubSpot saw nothing
    assert r.core.budget.window.remaining(r.clock.now()) == before + 1


async def test_a_refused_token_refuses_every_turn_and_pauses_each_of_its_activations(
    rig: Any,
) -> None:
    r = await rig(warm=False, token="pat-revoked", tokens={"pat-other": frozenset()})
    with pytest.raises(TokenRejected):
        await r.upsert()  # HubSpot answers 401
    with pytest.raises(TokenRejected):
        await r.core.turn("act1", Lane.REALTIME)
    assert len(r.log()) == 1
    assert [type(e).__name__ for e in await r.control()][-2:] == [
        "ActivationPaused",
        "ActivationPaused",
    ]


async def test_update_only_mode_reads_ids_on_the_permit_then_updates_on_a_turn_of_its_own(
    rig: Any,
) -> None:
    r = await rig()
    permit = await r.core.turn("act1", Lane.BACKFILL)
    grants = len(r.core.budget.window.grants())
    ids = await r.core.read_ids("act1", Lane.BACKFILL, ["warm0@example.com"], permit)
    assert list(ids) == ["warm0@example.com"]
    assert len(r.core.budget.window.grants()) == grants  # the read went on the permit
    report = await r.core.update(
        "act1", Lane.BACKFILL, [(ids["warm0@example.com"], {"firstname": "Grace"})]
    )
    assert [o.status for o in report.outcomes] == ["written"]
    assert len(r.core.budget.window.grants()) == grants + 1


def test_the_governors_errors_cross_a_process_as_themselves() -> None:
    """Ray pickles what an actor raises: the activation must catch a CallRefused as one (it
    parks the batch), not a deserialisation failure (it would retry it forever)."""
    import pickle

    from actors.governor_port import CallFailed, CallRefused
    from crm.errors import NotFoundError

    refused = CallRefused(NotFoundError("HubSpot found nothing there (404).", status=404))
    back = pickle.loads(pickle.dumps(refused))
    assert isinstance(back, CallRefused) and back.status == 404 and str(back) == str(refused)
    for error in (TokenRejected("401"), CallFailed("502"), ActivationGone("deleted")):
        assert type(pickle.loads(pickle.dumps(error))) is type(error)


async def test_requests_of_one_call_in_flight_together_each_hold_their_slot_until_their_answer(
    rig: Any,
) -> None:
    # The schema's calls send several requests together, on one call's hooks (`_Requests`):
    # each request's answer must re-time its own grant, whatever the order the answers come in.
    r = await rig()
    window = r.core.budget.window
    before = len(window.grants())
    hooks = _Requests(r.core, "act1", Lane.REALTIME, None)
    sent = asyncio.Event()
    answers: list[float] = []

    async def request(answer_after: float) -> None:
        await hooks.before()
        await sent.wait()  # both are in flight
        r.clock.advance(answer_after)
        answers.append(r.clock.now())
        hooks.after(RateLimitInfo(), 200)

    slow = asyncio.create_task(request(2.0))
    await asyncio.sleep(0)
    fast = asyncio.create_task(request(0.5))
    for _ in range(5):
        await asyncio.sleep(0)
    sent.set()
    await asyncio.gather(slow, fast)
    ends = sorted(g + window.interval for g in window.grants()[before:])
    assert ends == pytest.approx(sorted(a + WINDOW_S for a in answers), abs=1e-6)
