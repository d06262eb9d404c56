"""Flap damping: a contact that changes once goes out `settle` after it changed, a contact that
flips is held and written once, as it settled; never longer than the hold ceiling."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import Coalescer, Damper, DampingPolicy, FakeClock, FlushPolicy, Lane

T0 = 1_800_000_000.0
P0 = int(T0 * 1000) << 20
DAMPING = DampingPolicy()  # the defaults: penalty 1, half-life 1 s, suppress 2, reuse 0.75
POLICY = FlushPolicy(batch_size=100, linger=0.25)


def damped(clock: FakeClock, damping: DampingPolicy = DAMPING) -> Coalescer:
    return Coalescer(clock, POLICY, damping=damping)


def flush(c: Coalescer, hubspot: dict[tuple[str, str], str], writes: list[str]) -> None:
    """Take and acknowledge every batch due now."""
    while (batch := c.take()) is not None:
        for w in batch.contacts:
            writes.append(w.email)
            for prop, value, _ in w.values:
                hubspot[(w.email, prop)] = value
        c.acknowledge(batch)


def test_a_contact_changed_once_waits_settle_then_goes_and_is_never_held() -> None:
    clock = FakeClock(T0)
    c = damped(clock)
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    assert c.hold_of("ada@example.com") is None
    assert c.take() is None and c.drain(100) is None  # not settled yet
    assert c.next_flush_at() == pytest.approx(T0 + DAMPING.settle + POLICY.linger, abs=1e-6)
    clock.set(T0 + DAMPING.settle + POLICY.linger)
    batch = c.take()
    assert batch is not None and batch.contacts[0].properties == {"aud": "true"}
    assert c.stats().damped == 0


def test_a_full_batch_of_settled_contacts_goes_without_the_linger() -> None:
    clock = FakeClock(T0)
    c = damped(clock)
    for i in range(150):
        c.offer(f"c{i}@example.com", "aud", "true", P0 + i)
    clock.advance(0.1)
    c.offer("late@example.com", "aud", "true", P0 + 500)
    clock.set(T0 + DAMPING.settle)
    first = c.take()
    assert first is not None and len(first) == 100
    second = c.drain(100)  # the 50 settled ones; "late" has not settled
    assert second is not None and len(second) == 50
    assert c.pending() == 1


def test_a_flip_within_settle_holds_the_contact_and_writes_its_settled_state_once() -> None:
    clock = FakeClock(T0)
    c = damped(clock)
    hubspot: dict[tuple[str, str], str] = {}
    writes: list[str] = []
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    clock.advance(0.3)
    c.offer("ada@example.com", "aud", "false", P0 + 2)  # supersedes a waiting value: a flip
    assert c.held() == 1 and c.take() is None
    held = c.hold_of("ada@example.com")
    assert held is not None and held[0] == T0 + 0.3
    clock.advance(0.3)
    c.offer("ada@example.com", "aud", "true", P0 + 3)  # held: waits aside
    assert c.pending() == 1 and c.held() == 1
    while (at := c.next_flush_at()) is not None:
        clock.set(max(at, clock.now()))
        flush(c, hubspot, writes)
    assert writes == ["ada@example.com"]
    assert hubspot == {("ada@example.com", "aud"): "true"}


def test_rounds_of_flips_write_each_net_changed_contact_once_and_no_unchanged_one() -> None:
    # the bench's `rounds` pattern on a fake clock: 6 rounds 300 ms apart, even contacts flip in
    # all six (net unchanged), odd ones skip the last (net changed)
    clock = FakeClock(T0)
    c = damped(clock)
    hubspot: dict[tuple[str, str], str] = {}
    writes: list[str] = []
    emails = [f"c{i}@example.com" for i in range(200)]
    for e in emails:
        hubspot[(e, "aud")] = "true"
        c.offer(e, "aud", "true", P0)
    c.acknowledge(c.drain(200, settled_only=False))  # HubSpot holds "true" for everyone
    pos = P0 + 1
    for r in range(6):
        clock.set(T0 + 10 + 0.3 * r)
        flush(c, hubspot, writes)
        for i, e in enumerate(emails):
            if i % 2 == 0 or r < 5:
                c.offer(e, "aud", "false" if r % 2 == 0 else "true", pos)
                pos += 1
        flush(c, hubspot, writes)
    while (at := c.next_flush_at()) is not None:
        clock.set(max(at, clock.now()))
        flush(c, hubspot, writes)
    assert sorted(writes) == sorted(emails[1::2])  # each net-changed contact once, nobody else
    assert all(
        hubspot[(e, "aud")] == ("true" if i % 2 == 0 else "false") for i, e in enumerate(emails)
    )
    assert clock.now() - (T0 + 11.5) < DAMPING.max_hold


def test_a_contact_that_never_stops_flipping_is_written_by_the_ceiling() -> None:
    clock = FakeClock(T0)
    damping = DampingPolicy(max_hold=5.0)
    c = damped(clock, damping)
    hubspot: dict[tuple[str, str], str] = {}
    writes: list[str] = []
    for i in range(200):  # a new score every 100 ms for 20 s
        c.offer("ada@example.com", "score", str(i), P0 + i)
        clock.advance(0.1)
        flush(c, hubspot, writes)
        held = c.hold_of("ada@example.com")
        assert held is None or held[1] <= held[0] + damping.max_hold
    assert 3 <= len(writes) <= 5  # about once per 5 s ceiling, not 200 times


def test_damping_state_is_kept_only_for_contacts_that_flip() -> None:
    clock = FakeClock(T0)
    c = damped(clock)
    for i in range(10_000):
        c.offer(f"c{i}@example.com", "aud", "true", P0 + i)
        c.offer(f"c{i}@example.com", "ltv", "12", P0 + 20_000 + i)  # another property: no flip
    assert c.stats().damped == 0 and c.held() == 0
    c.offer("c7@example.com", "aud", "false", P0 + 50_000)
    assert c.stats().damped == 1


def test_penalties_decay_and_are_forgotten() -> None:
    damper = Damper(DAMPING)
    assert damper.flip(b"k", T0)  # the flipped change counts too: 2 >= suppress
    assert damper.release_at(b"k") == pytest.approx(T0 + 1.0 * 1.415, abs=0.01)  # log2(2 / 0.75)
    damper.release(b"k")
    assert damper.sweep(T0 + 1.0) == 0  # 1.0 left, not under half of reuse
    assert damper.sweep(T0 + 3.0) == 1 and not damper.tracks(b"k")


@pytest.mark.parametrize(
    "field, value",
    [
        ("penalty", 0.0),
        ("half_life", 0.0),
        ("reuse", 3.0),
        ("reuse", 0.0),
        ("max_hold", -1.0),
        ("settle", -0.1),
        ("suppress", float("inf")),
    ],
)
def test_impossible_damping_settings_fail_fast(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field if field != "suppress" else "reuse"):
        DampingPolicy(**{field: value})


def test_snapshots_keep_holds_and_older_snapshots_load() -> None:
    clock = FakeClock(T0)
    c = damped(clock)
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    c.offer("ada@example.com", "aud", "false", P0 + 2)
    c.offer("ada@example.com", "aud", "true", P0 + 3)  # held
    c.offer("bob@example.com", "aud", "true", P0 + 4)
    held = c.hold_of("ada@example.com")
    restored = Coalescer.from_snapshot(c.snapshot(), clock, POLICY, damping=DAMPING)
    assert restored.held() == 1 and restored.hold_of("ada@example.com") == held
    assert restored.pending() == 2
    assert restored.snapshot() == c.snapshot()
    # without damping (or by older code) the held contact is simply pending, in front
    plain = Coalescer.from_snapshot(c.snapshot(), clock, POLICY)
    assert plain.pending_values("ada@example.com") == {"aud": ("true", P0 + 3)}
    # a snapshot written before damping existed has no "damping" key
    old = Coalescer(clock, POLICY).to_builtins()  # the version 1 form
    assert "damping" not in old
    assert Coalescer.from_builtins(old, clock, POLICY, damping=DAMPING).pending() == 0


# --- the properties ----------------------------------------------------------------------------

EMAILS = [f"c{i}@example.com" for i in range(5)]
ONCE = [f"once{i}@example.com" for i in range(5)]

step = st.one_of(
    st.tuples(st.just("flip"), st.sampled_from(EMAILS), st.sampled_from(["aud", "ltv"])),
    st.tuples(st.just("once"), st.integers(0, len(ONCE) - 1)),
    st.tuples(st.just("tick"), st.floats(0, 2.0)),
    st.tuples(st.just("restart"), st.just(0)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(step, max_size=80),
    max_hold=st.sampled_from([0.0, 0.5, 3.0, 30.0]),
    half_life=st.sampled_from([0.2, 1.0, 5.0]),
)
def test_damped_contacts_end_right_within_the_ceiling_and_single_changes_are_never_held(
    steps, max_hold, half_life
) -> None:
    damping = DampingPolicy(max_hold=max_hold, half_life=half_life)
    clock = FakeClock(T0)
    c = Coalescer(clock, POLICY, damping=damping)
    hubspot: dict[tuple[str, str], str] = {}
    last: dict[tuple[str, str], str] = {}
    writes: list[str] = []
    changed_at: dict[str, float] = {}
    used: set[int] = set()
    pos = P0

    def check_holds() -> None:
        now = clock.now()
        c.due_lanes(now)  # releases what is due
        for email in EMAILS + ONCE:
            hold = c.hold_of(email)
            if hold is not None:
                assert email not in ONCE, "a contact changed once was held"
                since, until = hold
                assert until <= since + max_hold + 1e-6  # released by the ceiling at the latest
                assert until > now

    for kind, a, *rest in steps:
        pos += 1
        if kind == "flip":
            value = str(pos % 3) if a != "aud" else ("true" if pos % 2 else "false")
            c.offer(a, rest[0], value, pos)
            last[(a, rest[0])] = value
        elif kind == "once" and a not in used:
            used.add(a)
            c.offer(ONCE[a], "aud", "true", pos)
            last[(ONCE[a], "aud")] = "true"
            changed_at[ONCE[a]] = clock.now()
        elif kind == "tick":
            target = clock.now() + a
            while (at := c.next_flush_at()) is not None and at <= target:
                clock.set(max(at, clock.now()))
                check_holds()
                flush(c, hubspot, writes)
            clock.set(target)
        elif kind == "restart":
            c = Coalescer.from_snapshot(c.snapshot(), clock, POLICY, damping=damping)
        check_holds()
        flush(c, hubspot, writes)
        for email, at in changed_at.items():  # changed once: written settle + linger after
            if clock.now() >= at + damping.settle + POLICY.linger + 1e-6:
                assert email in writes
    # no force: holds end by themselves (decay, or the ceiling)
    while (at := c.next_flush_at()) is not None:
        assert at <= clock.now() + max(max_hold, 1.0) + 1.0
        clock.set(max(at, clock.now()))
        check_holds()
        flush(c, hubspot, writes)
    assert c.pending() == 0 and c.held() == 0
    for key, value in last.items():
        assert hubspot.get(key) == value, key
    for email in ONCE:
        assert writes.count(email) <= 1


def test_forget_property_drops_it_from_held_contacts() -> None:
    c = damped(FakeClock(T0))
    c.offer_many("ada@example.com", [("aud", "true", P0 + 1), ("ltv", "1", P0 + 2)])
    c.offer("ada@example.com", "aud", "false", P0 + 3)  # a flip: held
    assert c.held() == 1
    c.forget_property("ltv")
    assert c.pending_values("ada@example.com") == {"aud": ("false", P0 + 3)}
    c.forget_property("aud")
    assert c.held() == 0 and c.pending() == 0
    assert c.stats().forgotten == 2


def test_a_backfill_lane_contact_held_stays_in_its_lane() -> None:
    clock = FakeClock(T0)
    c = damped(clock)
    c.offer("ada@example.com", "aud", "true", P0 + 1, Lane.BACKFILL)
    c.offer("ada@example.com", "aud", "false", P0 + 2, Lane.BACKFILL)
    c.offer("ada@example.com", "aud", "true", P0 + 3, Lane.BACKFILL)
    assert (c.pending(Lane.REALTIME), c.pending(Lane.BACKFILL)) == (0, 1)
    batch = c.take(force=True)
    assert batch is not None and batch.lane == Lane.BACKFILL


def test_contacts_released_one_by_one_share_batches() -> None:
    # holds end at different times; each release waits a linger for company, as arrivals do,
    # instead of costing a call of its own
    clock = FakeClock(T0)
    c = damped(clock)
    hubspot: dict[tuple[str, str], str] = {}
    writes: list[str] = []
    batches = 0
    for i in range(50):
        clock.set(T0 + 0.01 * i)
        c.offer(f"c{i}@example.com", "aud", "true", P0 + 2 * i)
        c.offer(f"c{i}@example.com", "aud", "false", P0 + 2 * i + 1)  # a flip: held
    assert c.held() == 50
    while (at := c.next_flush_at()) is not None:
        clock.set(max(at, clock.now()))
        before = len(writes)
        flush(c, hubspot, writes)
        batches += len(writes) > before
    assert sorted(writes) == sorted(f"c{i}@example.com" for i in range(50))
    assert batches <= 3
