"""RollingWindow, DailyQuota and TokenBudget: HubSpot's limits are never exceeded on purpose."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import DailyQuota, FakeClock, RollingWindow, TokenBudget

T0 = 1_800_000_000.0


def test_window_grants_n_then_says_how_long_to_wait() -> None:
    w = RollingWindow(3, 10.0)
    assert [w.reserve(T0 + i) for i in range(3)] == [0.0, 0.0, 0.0]
    assert w.reserve(T0 + 5) == pytest.approx(5.0)  # the grant at T0 frees at T0 + 10
    assert w.used(T0 + 5) == 3  # a refused reserve records nothing
    assert w.reserve(T0 + 10) == 0.0


def test_impossible_window_fails_fast() -> None:
    with pytest.raises(ValueError):
        RollingWindow(0)
    with pytest.raises(ValueError):
        RollingWindow(5, headroom=5)
    with pytest.raises(ValueError):
        DailyQuota(0)


def test_headroom_keeps_calls_back() -> None:
    w = RollingWindow(100, headroom=5)
    grants = sum(w.reserve(T0) == 0.0 for _ in range(200))
    assert grants == 95


def test_release_gives_back_an_unused_grant() -> None:
    w = RollingWindow(1)
    assert w.reserve(T0) == 0.0
    w.release(T0)
    assert w.reserve(T0 + 1) == 0.0


def test_server_remaining_lower_than_ours_wins_and_absent_means_unknown() -> None:
    w = RollingWindow(100)
    w.reserve(T0)
    w.observe(now=T0 + 1, limit=None, remaining=None, interval_ms=None)
    assert w.remaining(T0 + 1) == 99
    w.observe(now=T0 + 1, remaining=10)  # another app spent our token's window
    assert w.remaining(T0 + 1) == 10
    w.observe(now=T0 + 1, remaining=50)  # higher than ours: ours stands
    assert w.remaining(T0 + 1) == 10


def test_server_max_and_interval_are_adopted() -> None:
    w = RollingWindow(100)
    w.observe(now=T0, limit=190, interval_ms=10_000)
    assert (w.limit, w.interval) == (190, 10.0)
    w.observe(now=T0, limit=0)  # nonsense: ignored
    assert w.limit == 190


def test_429_ten_secondly_blocks_a_full_interval_from_the_refusal() -> None:
    w = RollingWindow(100)
    w.refused(T0)
    assert w.reserve(T0 + 9.99) > 0
    assert w.reserve(T0 + 10) == 0.0
    w.refused(T0 + 20, retry_after=30)
    assert w.reserve(T0 + 49) == pytest.approx(1.0)


def test_daily_quota_resets_at_midnight_in_the_account_time_zone() -> None:
    tz = ZoneInfo("America/New_York")
    now = dt.datetime(2026, 11, 27, 22, 0, tzinfo=tz).timestamp()
    q = DailyQuota(2, "America/New_York")
    assert q.reserve(now) == 0.0 and q.reserve(now) == 0.0
    assert q.reserve(now) == pytest.approx(2 * 3600)
    assert q.reserve(now + 2 * 3600) == 0.0


def test_daily_observe_and_429() -> None:
    q = DailyQuota(250_000)
    q.observe(now=T0, limit=None, remaining=None)
    assert q.remaining(T0) == 250_000
    q.observe(now=T0, limit=625_000, remaining=1)
    assert (q.limit, q.remaining(T0)) == (625_000, 1)
    q.refused(T0)
    assert q.reserve(T0) == pytest.approx(q.resets_at(T0) - T0)
    q2 = DailyQuota(10)
    q2.refused(T0, retry_after=60)
    assert q2.reserve(T0 + 59) == pytest.approx(1.0) and q2.reserve(T0 + 60) == 0.0


def test_token_budget_needs_both_and_routes_429_by_policy() -> None:
    b = TokenBudget.for_plan(100, 2)
    assert b.reserve(T0) == 0.0 and b.reserve(T0) == 0.0
    assert b.reserve(T0) > 0  # daily exhausted
    assert b.window.used(T0) == 2  # nothing charged on refusal
    b = TokenBudget.for_plan(100, 250_000)
    assert b.refused(T0, "TEN_SECONDLY_ROLLING") == pytest.approx(10.0)
    assert b.refused(T0, "DAILY") == pytest.approx(b.daily.resets_at(T0) - T0)
    b = TokenBudget.for_plan(100, 250_000)
    b.observe(now=T0, max=190, remaining=None, interval_ms=10_000, daily=None, daily_remaining=7)
    assert b.window.limit == 190 and b.daily.remaining(T0) == 7


requests = st.lists(
    st.tuples(
        st.floats(0, 4, allow_nan=False),  # time since the previous request
        st.sampled_from(["reserve", "reserve", "reserve", "release", "observe", "refused"]),
        st.booleans(),  # wait out the answer and ask again
    ),
    max_size=400,
)


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 20), interval=st.sampled_from([1.0, 10.0, 0.3]), reqs=requests)
def test_no_rolling_interval_ever_holds_more_than_n_grants(limit, interval, reqs) -> None:
    clock = FakeClock(T0)
    w = RollingWindow(limit, interval)
    granted: list[float] = []
    for gap, kind, persist in reqs:
        clock.advance(gap)
        if kind == "reserve":
            while (wait := w.reserve(clock.now())) > 0 and persist:
                clock.advance(wait)
            if wait == 0:
                granted.append(clock.now())
        elif kind == "release" and granted:
            w.release(granted.pop())
        elif kind == "observe":
            w.observe(now=clock.now(), remaining=max(0, limit - 3))
        elif kind == "refused":
            w.refused(clock.now())
    granted.sort()
    for i, start in enumerate(granted):
        inside = sum(1 for t in granted[i:] if t < start + interval)
        assert inside <= limit


def test_a_retimed_grant_keeps_the_window_in_order_and_expires_from_its_new_time() -> None:
    w = RollingWindow(limit=3, interval=10.0)
    for t in (0.0, 1.0, 2.0):
        assert w.reserve(t) == 0.0
    w.retime(0.0, 5.0)  # answered late: it holds its slot until 15 s
    w.retime(2.0, 1.5)  # answered fast: until 11.5 s
    assert w.grants() == (1.0, 1.5, 5.0)
    assert w.wait_time(3.0) == pytest.approx(8.0)  # the first to free is the one at 1.0
    w.retime(7.0, 9.0)  # not in the window (expired, or never there): nothing moves
    assert w.grants() == (1.0, 1.5, 5.0)
    assert w.used(12.0) == 1 and w.grants() == (5.0,)
