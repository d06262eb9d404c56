"""The Dispatcher: who of the activations sharing a token makes the next HubSpot call, and when.

Pure: the tests hand it `now` and read its decisions; nothing sleeps.
"""

from __future__ import annotations

import heapq
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm.emulator.limits import RollingWindow as HubSpotWindow
from scheduler import Lane, TokenBudget
from scheduler.dispatch import (
    PROBE_POLL,
    PROBE_TIMEOUT,
    WINDOW_MARGIN,
    Dispatcher,
    Grant,
    Permit,
)

T0 = 1_800_000_000.0


def warm(limit: int = 100, interval: float = 10.0, daily: int | None = None) -> Dispatcher:
    """A dispatcher whose budget HubSpot's headers have already confirmed (no probing call). Its
    window counts a grant for HubSpot's `interval` plus the margin, as the RateGovernor's does."""
    d = Dispatcher(TokenBudget.for_plan(limit, daily, interval=interval + WINDOW_MARGIN))
    d.observe(T0 - 100, max=limit, remaining=limit)
    return d


def grant(d: Dispatcher, now: float) -> Grant:
    decision = d.next_grant(now)
    assert isinstance(decision, Grant), decision
    return decision


def drain(
    d: Dispatcher, now: float, step: float = 0.01, until: float = float("inf")
) -> list[Grant]:
    """Ask for grants, moving time as the dispatcher says, until no ticket waits."""
    grants: list[Grant] = []
    while now < until:
        decision = d.next_grant(now)
        if decision is None:
            break
        if isinstance(decision, Grant):
            grants.append(decision)
            assert d.use(decision.permit, now)
        else:
            now += max(decision, step)
    return grants


def test_a_permit_names_its_activation_lane_and_grant_time_and_crosses_processes() -> None:
    d = warm()
    ticket = d.request("act1", Lane.REALTIME, T0)
    g = grant(d, T0)
    assert g.ticket == ticket
    assert (g.permit.activation, g.permit.lane, g.permit.granted_at) == ("act1", Lane.REALTIME, T0)
    import pickle

    import msgspec

    assert pickle.loads(pickle.dumps(g.permit)) == g.permit
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(g.permit), type=Permit) == g.permit


def test_a_lane_typo_fails_loudly_instead_of_meaning_backfill() -> None:
    with pytest.raises(ValueError):
        warm().request("act1", "realtme", T0)  # type: ignore[arg-type]


def test_nothing_waiting_means_no_decision() -> None:
    assert warm().next_grant(T0) is None


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 30),
    arrivals=st.lists(
        st.tuples(st.floats(0, 40), st.sampled_from(["a", "b", "c"]), st.sampled_from(list(Lane))),
        min_size=1,
        max_size=150,
    ),
)
def test_the_window_is_never_exceeded(limit: int, arrivals: list[tuple[float, str, Lane]]) -> None:
    d = warm(limit=limit, interval=10.0)
    now = T0
    granted: list[float] = []
    for at, activation, lane in sorted(arrivals):
        while now < T0 + at:  # serve what waits until the next arrival
            decision = d.next_grant(now)
            if isinstance(decision, Grant):
                assert d.use(decision.permit, now)
                granted.append(now)
                continue
            now = min(T0 + at, now + (decision if decision else 1.0))
        d.request(activation, lane, now)
    granted += [g.permit.granted_at for g in drain(d, now)]
    assert len(granted) == len(arrivals)
    for i, t in enumerate(granted):  # any 10-second window holds at most `limit` grants
        assert sum(1 for u in granted[i:] if u < t + 10.0) <= limit


def test_the_daily_budget_is_never_exceeded() -> None:
    d = warm(limit=100, daily=5)
    for _ in range(8):
        d.request("a", Lane.BACKFILL, T0)
    grants = drain(d, T0, until=T0 + 3600)
    assert len(grants) == 5  # the rest waits for midnight
    assert isinstance(d.next_grant(T0 + 3600), float)


def test_activations_sharing_a_token_share_it_fairly() -> None:
    d = warm(limit=10)
    for _ in range(300):
        d.request("big", Lane.BACKFILL, T0)
    for _ in range(30):
        d.request("small", Lane.BACKFILL, T0)
    first = [g.permit.activation for g in drain(d, T0)[:60]]
    shares = Counter(first)
    assert shares["small"] == 30 and shares["big"] == 30  # turn about while both wait


def test_realtime_goes_before_a_waiting_backfill_and_backfill_never_starves() -> None:
    d = warm(limit=1000)
    for _ in range(50):
        d.request("a", Lane.BACKFILL, T0)
        d.request("b", Lane.REALTIME, T0)
    lanes = [g.permit.lane for g in drain(d, T0)[:10]]
    assert lanes[0] is Lane.REALTIME
    assert lanes.count(Lane.BACKFILL) == 2  # every fifth grant while both wait


def test_backfill_leaves_the_realtime_reserve_free_while_realtime_traffic_flows() -> None:
    d = warm(limit=100)
    d.request("rt", Lane.REALTIME, T0, data=True)
    assert d.use(grant(d, T0).permit, T0)
    for _ in range(200):
        d.request("bf", Lane.BACKFILL, T0)
    now, backfilled = T0, 0
    while now < T0 + 9.0:
        decision = d.next_grant(now)
        if isinstance(decision, Grant):
            backfilled += 1
            d.use(decision.permit, now)
        else:
            now += 0.05
    assert backfilled == 100 - 1 - 10  # the realtime call, and a tenth of the window kept free
    d.request("rt", Lane.REALTIME, now, data=True)
    assert grant(d, now).permit.activation == "rt"  # realtime gets its slot at once


def test_without_realtime_traffic_a_backfill_takes_the_whole_window() -> None:
    d = warm(limit=100)
    for _ in range(200):
        d.request("bf", Lane.BACKFILL, T0)
    # A schema call or a read on the realtime lane is not realtime traffic (data=False).
    d.request("bf", Lane.REALTIME, T0)
    grants = drain(d, T0, until=T0 + 9.0)
    assert len(grants) == 100


def test_a_permit_granted_before_a_429_is_void() -> None:
    d = warm()
    d.request("a", Lane.REALTIME, T0)
    d.request("a", Lane.REALTIME, T0)
    held, other = grant(d, T0).permit, grant(d, T0).permit
    assert d.use(held, T0)
    d.refused(T0 + 0.05)  # HubSpot refused the call made on `held`
    assert not d.use(other, T0 + 0.06)  # granted before the refusal: it must not carry a call in
    d.request("a", Lane.REALTIME, T0 + 0.06)
    wait = d.next_grant(T0 + 0.06)
    assert isinstance(wait, float) and wait >= 10.0 - 0.02  # the window that refused is waited out
    assert grant(d, T0 + 0.06 + wait).permit.granted_at > T0 + 0.05


def test_a_permit_used_late_moves_to_when_the_call_really_goes() -> None:
    d = warm(limit=100)
    d.request("a", Lane.BACKFILL, T0)
    permit = grant(d, T0).permit
    assert d.use(permit, T0 + 2.0)
    assert d.budget.window.grants() == (T0 + 2.0,)


def test_a_permit_used_late_in_a_full_window_is_refused_and_the_call_asks_again() -> None:
    d = warm(limit=3)
    for _ in range(3):
        d.request("a", Lane.BACKFILL, T0)
    late, *others = (grant(d, T0).permit for _ in range(3))
    for p in others:
        assert d.use(p, T0)
    d.observe(T0 + 1.0, max=2)  # meanwhile HubSpot's headers said the window is smaller
    assert not d.use(late, T0 + 1.0)
    assert len(d.budget.window.grants()) == 2  # its slot given up, no new one taken


def test_a_permit_is_used_once() -> None:
    d = warm()
    d.request("a", Lane.REALTIME, T0)
    permit = grant(d, T0).permit
    assert d.use(permit, T0)
    assert not d.use(permit, T0)


def test_a_permit_of_another_governor_is_not_honoured() -> None:
    d = warm()
    assert not d.use(Permit(1, "a", Lane.REALTIME, T0), T0)


def test_a_released_permit_frees_its_slot_and_cannot_be_used() -> None:
    d = warm(limit=1)
    d.request("a", Lane.REALTIME, T0)
    permit = grant(d, T0).permit
    d.request("b", Lane.REALTIME, T0)
    assert isinstance(d.next_grant(T0), float)  # the window is full
    d.release(permit, T0 + 0.1)
    assert grant(d, T0 + 0.1).permit.activation == "b"
    assert not d.use(permit, T0 + 0.1)
    d.release(permit, T0 + 0.2)  # twice: nothing more is given back
    assert len(d.budget.window.grants()) == 1


def test_a_permit_neither_used_nor_released_expires() -> None:
    d = warm()
    d.request("a", Lane.REALTIME, T0)
    permit = grant(d, T0).permit
    assert d.outstanding() == 1
    assert not d.use(permit, T0 + 11.0)  # too late to carry a call: it takes a new turn
    d.request("a", Lane.REALTIME, T0)
    permit = grant(d, T0).permit
    d.next_grant(T0 + 11.0)
    assert d.outstanding() == 0
    assert not d.use(permit, T0 + 11.0)


def test_a_withdrawn_ticket_is_skipped_and_charges_nothing() -> None:
    d = warm()
    gone = d.request("a", Lane.REALTIME, T0)
    kept = d.request("b", Lane.REALTIME, T0)
    d.withdraw(gone)
    assert grant(d, T0).ticket == kept
    assert len(d.budget.window.grants()) == 1
    alone = d.request("c", Lane.REALTIME, T0)
    d.withdraw(alone)
    assert d.next_grant(T0) is None and len(d.budget.window.grants()) == 1


def test_a_refused_token_fails_every_waiting_ticket() -> None:
    d = warm()
    tickets = {d.request(a, Lane.BACKFILL, T0) for a in ("a", "b", "c")}
    assert set(d.withdraw_all()) == tickets
    assert d.next_grant(T0) is None


def test_a_fresh_governor_sends_one_probing_call_until_hubspot_says_what_is_left() -> None:
    d = Dispatcher(TokenBudget.for_plan(100, None, interval=10.0))
    d.request("a", Lane.REALTIME, T0)
    d.request("a", Lane.REALTIME, T0)
    probe = grant(d, T0).permit
    assert d.next_grant(T0 + 0.5) == PROBE_POLL  # the second waits for the probe's answer
    assert d.use(probe, T0 + 0.01)
    d.answered(T0 + 0.6)
    d.observe(T0 + 0.6, max=100, remaining=40)  # other processes used 59 calls of the window
    assert grant(d, T0 + 0.6).permit.granted_at == T0 + 0.6
    assert d.budget.window.remaining(T0 + 0.6) == 39


def test_a_probe_never_answered_lets_another_call_go_after_the_timeout() -> None:
    d = Dispatcher(TokenBudget.for_plan(100, None, interval=10.0))
    d.request("a", Lane.REALTIME, T0)
    d.request("b", Lane.REALTIME, T0)
    grant(d, T0)  # its caller died with it
    assert d.next_grant(T0 + PROBE_TIMEOUT - 0.1) == PROBE_POLL
    assert grant(d, T0 + PROBE_TIMEOUT).permit.activation == "b"


def test_an_answer_moves_the_grant_to_when_hubspot_counted_the_call_at_the_latest() -> None:
    d = warm(limit=100)
    for _ in range(3):
        d.request("a", Lane.REALTIME, T0)
    fast, slow, lost = (grant(d, T0).permit for _ in range(3))
    for p in (fast, slow, lost):
        assert d.use(p, T0)
    window = d.budget.window
    d.answered(T0 + 0.05, fast)  # HubSpot had it by then: it counts there until T0 + 10.05
    d.answered(T0 + 1.5, slow)  # it may have arrived only just now: until T0 + 11.5
    d.answered(T0 + 2.0, lost, reply=False)  # no answer, it may still arrive: a whole window
    ends = sorted(at + window.interval for at in window.grants())
    assert ends == pytest.approx([T0 + 10.05, T0 + 11.5, T0 + 2.0 + window.interval], abs=1e-6)
    d.answered(T0 + 3.0, fast)  # answered already: nothing moves twice
    assert sorted(at + window.interval for at in window.grants())[0] == pytest.approx(
        T0 + 10.05, abs=1e-6
    )


def _backfill_against_hubspot(
    d: Dispatcher, seconds: float, slow: float, *, report_answers: bool = True
) -> tuple[int, int]:
    """Drive a long backfill through `d` against HubSpot's rolling window, as the governor does:
    each call goes out when granted, arrives at HubSpot 9/10 of its round trip later, and its
    answer comes back to `d`. Round trips take 0.05 s, but `slow` s for 20 calls in a row every
    200 (a busy machine or network). Returns (calls made, HubSpot's 429s)."""
    for _ in range(int(seconds * 12)):
        d.request("bf", Lane.BACKFILL, T0)
    in_flight: list[tuple[float, int, Permit]] = []  # (answered at, call, its permit)
    arrivals: list[float] = []
    now, calls = T0, 0
    while now < T0 + seconds:
        while in_flight and in_flight[0][0] <= now:
            answered_at, _, permit = heapq.heappop(in_flight)
            d.answered(answered_at, permit if report_answers else None)
        decision = d.next_grant(now)
        if isinstance(decision, Grant):
            assert d.use(decision.permit, now)
            round_trip = slow if calls % 200 < 20 else 0.05
            arrivals.append(now + 0.9 * round_trip)  # HubSpot counts it when it arrives
            heapq.heappush(in_flight, (now + round_trip, calls, decision.permit))
            calls += 1
        else:
            now += max(decision or 0.01, 0.001)
    hubspot = HubSpotWindow(10.0)
    refused = 0
    for at in sorted(arrivals):
        if hubspot.count(at) >= 100:
            refused += 1
        else:
            hubspot.record(at)
    return calls, refused


@pytest.mark.parametrize("slow", [0.05, 0.6, 1.2, 3.0])
def test_requests_slowed_unevenly_draw_no_429_and_fast_ones_use_the_whole_window(
    slow: float,
) -> None:
    calls, refused = _backfill_against_hubspot(warm(limit=100), 60.0, slow)
    assert refused == 0
    if slow == 0.05:  # a slot is held for HubSpot's 10 s plus a round trip, not plus a margin
        assert calls >= int(60.0 / 10.05 * 100) - 2
    # Counted only from when they were sent, plus a fixed margin, the slow requests land in
    # HubSpot's full windows as soon as they are slower than the margin.
    _, refused = _backfill_against_hubspot(warm(limit=100), 60.0, slow, report_answers=False)
    assert (refused > 0) == (slow > WINDOW_MARGIN)
