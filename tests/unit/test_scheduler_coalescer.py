"""Coalescer: given changes in any order, HubSpot ends up with the last value by position."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import Coalescer, DampingPolicy, FakeClock, FlushPolicy, Lane

T0 = 1_800_000_000.0
P0 = int(T0 * 1000) << 20


def test_enter_then_leave_sends_false_never_true() -> None:
    c = Coalescer(FakeClock(T0))
    c.offer("ada@example.com", "aud_a17", "true", P0 + 1)
    c.offer("ada@example.com", "aud_a17", "false", P0 + 2)
    batch = c.drain(100)
    assert batch is not None
    assert batch.contacts[0].properties == {"aud_a17": "false"}


def test_late_older_change_loses_whatever_the_arrival_order() -> None:
    c = Coalescer(FakeClock(T0))
    c.offer("ada@example.com", "aud_a17", "false", P0 + 2)
    c.offer("ada@example.com", "aud_a17", "true", P0 + 1)
    assert c.pending_values("ada@example.com") == {"aud_a17": ("false", P0 + 2)}
    assert c.stats().coalesced == 1


def test_flip_back_to_known_value_drops_contact_and_blocks_resurrection() -> None:
    c = Coalescer(FakeClock(T0))
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    batch = c.drain(100)
    c.acknowledge(batch)
    c.offer("ada@example.com", "aud", "false", P0 + 2)
    c.offer("ada@example.com", "aud", "true", P0 + 4)  # back to what HubSpot holds
    assert c.pending() == 0
    c.offer("ada@example.com", "aud", "false", P0 + 3)  # late, older than the known position
    assert c.pending() == 0
    assert c.known_value("ada@example.com", "aud") == ("true", P0 + 4)


def test_several_properties_of_one_contact_ride_in_one_input() -> None:
    c = Coalescer(FakeClock(T0))
    c.offer_many("ada@example.com", [("aud", "true", P0 + 1), ("ltv", "1234.5", P0 + 2)])
    c.offer("bob@example.com", "aud", "true", P0 + 3)
    batch = c.drain(100)
    assert [w.email for w in batch.contacts] == ["ada@example.com", "bob@example.com"]
    assert batch.contacts[0].properties == {"aud": "true", "ltv": "1234.5"}


def test_drain_hands_out_oldest_first_and_distinct_contacts() -> None:
    clock = FakeClock(T0)
    c = Coalescer(clock)
    for i in range(250):
        clock.advance(0.1)
        c.offer(f"c{i}@example.com", "aud", "true", P0 + i)
        c.offer(f"c{i}@example.com", "aud", "false", P0 + 1000 + i)
    first = c.drain(100)
    assert [w.email for w in first.contacts] == [f"c{i}@example.com" for i in range(100)]
    assert first.oldest == pytest.approx(T0 + 0.1, abs=1e-6)
    second = c.drain(100)
    assert second.contacts[0].email == "c100@example.com"
    assert c.pending() == 50 and c.in_flight() == 200


def test_failed_batch_goes_back_in_front_without_overwriting_newer() -> None:
    clock = FakeClock(T0)
    c = Coalescer(clock)
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    c.offer("ada@example.com", "ltv", "1", P0 + 2)
    batch = c.drain(100)
    clock.advance(1)
    c.offer("bob@example.com", "aud", "true", P0 + 3)
    c.offer("ada@example.com", "ltv", "2", P0 + 5)  # arrives while ada is in flight
    c.retry(batch)
    again = c.drain(1)
    assert again.contacts[0].email == "ada@example.com"
    assert again.contacts[0].properties == {"aud": "true", "ltv": "2"}
    c.retry(batch)  # stale batch: ignored
    assert c.in_flight() == 1


def test_contact_in_flight_is_not_drained_twice() -> None:
    c = Coalescer(FakeClock(T0))
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    batch = c.drain(100)
    c.offer("ada@example.com", "aud", "false", P0 + 2)
    assert c.drain(100) is None
    c.acknowledge(batch)
    assert c.drain(100).contacts[0].properties == {"aud": "false"}


def test_flush_when_full_or_after_linger() -> None:
    clock = FakeClock(T0)
    c = Coalescer(clock, FlushPolicy(batch_size=3, linger=0.25))
    c.offer("a@example.com", "aud", "true", P0 + 1)
    assert not c.ready()
    assert c.next_flush_at() == pytest.approx(T0 + 0.25, abs=1e-6)
    clock.advance(0.1)
    c.offer("b@example.com", "aud", "true", P0 + 2)
    c.offer("c@example.com", "aud", "true", P0 + 3)
    assert c.ready()  # full
    assert len(c.take()) == 3
    c.offer("d@example.com", "aud", "true", P0 + 4)
    assert c.take() is None
    clock.set(c.next_flush_at())
    assert c.ready() and len(c.take()) == 1


def test_realtime_before_backfill_but_backfill_never_starves() -> None:
    clock = FakeClock(T0)
    c = Coalescer(clock, FlushPolicy(batch_size=1, linger=0.0, backfill_every=3))
    for i in range(10):
        c.offer(f"r{i}@example.com", "aud", "true", P0 + i, Lane.REALTIME)
        c.offer(f"b{i}@example.com", "aud", "true", P0 + i, Lane.BACKFILL)
    lanes = [c.take().lane for _ in range(6)]
    assert lanes == ["realtime", "realtime", "backfill"] * 2


def test_realtime_change_promotes_a_backfill_contact() -> None:
    c = Coalescer(FakeClock(T0))
    c.offer("ada@example.com", "aud", "true", P0 + 1, Lane.BACKFILL)
    c.offer("ada@example.com", "ltv", "7", P0 + 2, Lane.REALTIME)
    assert (c.pending(Lane.REALTIME), c.pending(Lane.BACKFILL)) == (1, 0)
    assert c.drain(100, lane=Lane.BACKFILL) is None


def test_forget_property_drops_it_everywhere() -> None:
    c = Coalescer(FakeClock(T0))
    c.offer_many("ada@example.com", [("aud", "true", P0 + 1), ("ltv", "3", P0 + 2)])
    c.offer("bob@example.com", "aud", "true", P0 + 3)
    c.forget_property("aud")
    assert c.pending() == 1
    assert c.drain(100).contacts[0].properties == {"ltv": "3"}


def test_snapshot_resumes_exactly_and_in_flight_goes_back() -> None:
    clock = FakeClock(T0)
    c = Coalescer(clock)
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    c.acknowledge(c.drain(100))
    c.offer("bob@example.com", "aud", "true", P0 + 2, Lane.BACKFILL)
    c.offer("cy@example.com", "ltv", "ü 1,5", 7)  # general (non-compact) record
    in_flight = c.drain(1)
    restored = Coalescer.from_snapshot(c.snapshot(), clock)
    assert restored.known_value("ada@example.com", "aud") == ("true", P0 + 1)
    assert restored.pending() == 2
    assert restored.pending_values(in_flight.contacts[0].email) != {}
    assert restored.snapshot() == Coalescer.from_snapshot(restored.snapshot(), clock).snapshot()


def test_positions_out_of_range_fail_fast() -> None:
    c = Coalescer(FakeClock(T0))
    with pytest.raises(ValueError):
        c.offer("ada@example.com", "aud", "true", -1)


# --- the property: any arrival order, any interleaving of drains, acks and failures ---------

EMAILS = [f"c{i}@example.com" for i in range(4)]
PROPS = ["aud_a", "aud_b", "ltv"]
VALUES = ["true", "false", "", "12.5", "é"]

change = st.tuples(st.sampled_from(EMAILS), st.sampled_from(PROPS), st.sampled_from(VALUES))
op = st.one_of(
    st.tuples(st.just("offer")),
    st.tuples(st.just("drain"), st.integers(1, 4), st.sampled_from(list(Lane))),
    st.tuples(st.just("ack"), st.integers(0, 5)),
    st.tuples(st.just("fail"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("tick"), st.floats(0, 1)),
    st.tuples(st.just("restart"), st.booleans()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(change, min_size=1, max_size=40),
    positions=st.data(),
    ops=st.lists(op, max_size=120),
    near=st.booleans(),
    damp=st.booleans(),
)
def test_final_values_are_last_by_position(changes, positions, ops, near, damp) -> None:
    # damp: with flap damping (holds, settle) the outcome must be the same
    # near: positions like real stream ids (compact records); else far apart (general records)
    base, step = (P0, 1000) if near else (0, 2**50)
    pos = positions.draw(
        st.permutations(range(len(changes))).map(lambda xs: [base + step * x for x in xs])
    )
    lanes = positions.draw(
        st.lists(st.sampled_from(list(Lane)), min_size=len(changes), max_size=len(changes))
    )
    arrivals = positions.draw(st.permutations(range(len(changes))))
    clock = FakeClock(T0)
    damping = DampingPolicy(max_hold=2.0) if damp else None
    c = Coalescer(clock, FlushPolicy(batch_size=3), damping=damping)
    hubspot: dict[tuple[str, str], str] = {}
    flights = []

    def apply(batch) -> None:
        for w in batch.contacts:
            for prop, value, _ in w.values:
                hubspot[(w.email, prop)] = value

    queue = list(arrivals)
    for o in ops:
        kind = o[0]
        if kind == "offer" and queue:
            i = queue.pop(0)
            c.offer(changes[i][0], changes[i][1], changes[i][2], pos[i], lanes[i])
        elif kind == "drain":
            batch = c.drain(o[1], lane=o[2])
            if batch is not None:
                assert len({w.email for w in batch.contacts}) == len(batch)
                flights.append(batch)
        elif kind == "ack" and flights:
            batch = flights.pop(o[1] % len(flights))
            apply(batch)
            c.acknowledge(batch)
        elif kind == "fail" and flights:
            batch = flights.pop(o[1] % len(flights))
            if o[2]:
                apply(batch)  # the call timed out after HubSpot applied it
            c.retry(batch)
        elif kind == "tick":
            clock.advance(o[1])
        elif kind == "restart":
            for batch in flights:
                if o[1]:
                    apply(batch)
            flights.clear()
            c = Coalescer.from_snapshot(
                c.snapshot(), clock, FlushPolicy(batch_size=3), damping=damping
            )
    for i in queue:
        c.offer(changes[i][0], changes[i][1], changes[i][2], pos[i], lanes[i])
    for batch in flights:
        apply(batch)
        c.acknowledge(batch)
    while (batch := c.take(force=True)) is not None:
        apply(batch)
        c.acknowledge(batch)
    assert c.pending() == 0 and c.in_flight() == 0

    last: dict[tuple[str, str], tuple[int, str]] = {}
    for (email, prop, value), p in zip(changes, pos, strict=True):
        if (email, prop) not in last or last[(email, prop)][0] < p:
            last[(email, prop)] = (p, value)
    for key, (p, value) in last.items():
        assert hubspot.get(key) == value, key
        assert c.known_value(*key) == (value, p)


def test_a_forced_offer_resends_what_hubspot_is_known_to_hold_but_never_an_older_value() -> None:
    c = Coalescer(FakeClock(0.0))
    c.offer("ada@example.com", "raptor_vip", "true", 10)
    batch = c.drain(100)
    assert batch is not None
    c.acknowledge(batch)
    c.offer("ada@example.com", "raptor_vip", "true", 10)
    assert c.pending() == 0  # known: nothing to send
    c.offer_many("ada@example.com", [("raptor_vip", "true", 10)], force=True)
    assert c.pending_values("ada@example.com") == {"raptor_vip": ("true", 10)}
    c.offer_many("ada@example.com", [("raptor_vip", "false", 9)], force=True)
    assert c.pending_values("ada@example.com") == {"raptor_vip": ("true", 10)}


@settings(max_examples=100, deadline=None)
@given(
    changes=st.lists(change, min_size=1, max_size=40),
    order=st.data(),
    lane=st.sampled_from(list(Lane)),
    force=st.booleans(),
)
def test_a_steps_changes_offered_at_once_leave_what_offering_them_one_by_one_leaves(
    changes, order, lane, force
) -> None:
    # What the ActivationActor offers per inbox entry (offer_all) against the one-by-one path,
    # with damping, HubSpot's known values and a contact in flight in play.
    pos = order.draw(st.permutations(range(len(changes))).map(lambda xs: [P0 + x for x in xs]))
    steps = [(email, prop, value, p) for (email, prop, value), p in zip(changes, pos, strict=True)]

    def coalescer() -> Coalescer:
        c = Coalescer(FakeClock(T0), FlushPolicy(batch_size=2), damping=DampingPolicy())
        c.offer_many(EMAILS[0], [("aud_a", "true", P0 - 2)])
        c.offer_many(EMAILS[1], [("ltv", "12.5", P0 - 1)])
        c.acknowledge(c.take(force=True))  # known values
        c.offer_many(EMAILS[2], [("aud_b", "true", P0 - 3)])
        c.take(force=True)  # in flight: changes to it wait aside
        return c

    one_by_one, at_once = coalescer(), coalescer()
    for email, prop, value, p in steps:
        one_by_one.offer_many(email, [(prop, value, p)], lane, force=force)
    at_once.offer_all(steps, lane, force=force)
    assert at_once.snapshot() == one_by_one.snapshot()
    assert at_once.stats() == one_by_one.stats()
