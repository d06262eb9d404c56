"""FairQueue: activations sharing a token share its calls; realtime first, backfill never starves."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import FairQueue, Lane, LaneSelector


def test_one_huge_backfill_never_stalls_another_activations_realtime() -> None:
    q = FairQueue(backfill_every=5)
    for i in range(10_000):
        q.push("big", Lane.BACKFILL, i)
    q.push("small", Lane.REALTIME, "now")
    assert q.pop() == ("small", Lane.REALTIME, "now")


def test_backfill_gets_every_kth_grant_when_both_wait() -> None:
    q = FairQueue(backfill_every=4)
    for i in range(100):
        q.push("a", Lane.REALTIME, i)
        q.push("b", Lane.BACKFILL, i)
    lanes = [q.pop()[1] for _ in range(12)]
    assert lanes.count(Lane.BACKFILL) == 3


def test_remove_drops_an_activation() -> None:
    q = FairQueue()
    q.push("a", Lane.REALTIME, 1)
    q.push("a", Lane.BACKFILL, 2)
    q.push("b", Lane.REALTIME, 3)
    assert sorted(q.remove("a")) == [(Lane.BACKFILL, 2), (Lane.REALTIME, 1)]
    assert len(q) == 1 and q.pop() == ("b", Lane.REALTIME, 3) and q.pop() is None


def test_weights_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FairQueue().set_weight("a", 0)
    with pytest.raises(ValueError):
        LaneSelector(0)


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    pops=st.integers(1, 200),
    lane=st.sampled_from(list(Lane)),
)
def test_each_busy_activation_gets_its_share_within_one_round(weights, pops, lane) -> None:
    q = FairQueue()
    for aid, w in enumerate(weights):
        q.set_weight(aid, w)
        for i in range(400):  # busy throughout
            q.push(aid, lane, i)
    served: Counter[int] = Counter()
    round_size = sum(weights)
    for n in range(1, pops + 1):
        aid, got_lane, _ = q.pop()
        assert got_lane == lane
        served[aid] += 1
        rounds = n // round_size
        for a, w in enumerate(weights):
            # after `rounds` full rounds each has had w per round, and never more than one
            # round ahead of that
            assert w * rounds <= served[a] <= w * (rounds + 1)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(list(Lane))), max_size=60))
def test_every_item_comes_out_once_in_per_activation_order(items) -> None:
    q = FairQueue(backfill_every=3)
    for n, (aid, lane) in enumerate(items):
        q.push(aid, lane, n)
    out = []
    while (got := q.pop()) is not None:
        out.append(got)
    assert sorted(n for _, _, n in out) == list(range(len(items)))
    for aid in "abc":
        for lane in Lane:
            mine = [n for a, ln, n in out if a == aid and ln == lane]
            assert mine == sorted(mine)
