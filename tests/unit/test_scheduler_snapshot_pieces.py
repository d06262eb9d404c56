"""Snapshots in pieces (format 2): the cut is the Coalescer's state at the moment
`snapshot_pieces` is called, whatever happens while the pieces are encoded; it restores exactly,
and snapshots of format 1 still load."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scheduler._records
from actors.activation import State
from scheduler import Coalescer, DampingPolicy, FakeClock, FlushPolicy, Lane
from scheduler._records import KeyCodec
from scheduler.coalescer import LaneFront, SnapshotHeader, SnapshotV1, SnapshotVersionError

T0 = 1_800_000_000.0
P0 = int(T0 * 1000) << 20
POLICY = FlushPolicy(batch_size=3, linger=0.25)
EMAILS = [f"c{i}@example.com" for i in range(5)] + [
    "noat",  # keys that cannot be compact, and odd ones that can
    "a@b@example.com",
    "é@ü.de",
    "x\x00y@example.com",
    "@example.com",
]
PROPS = ["aud", "ltv", "tier"]
VALUES = ["true", "false", "", "gold", "é" * 3]


def state(c: Coalescer) -> dict:
    """Everything a snapshot holds, in the version 1 form (lists, comparable)."""
    return c.to_builtins()


def restore(data: bytes, clock: FakeClock, damping: DampingPolicy | None) -> Coalescer:
    return Coalescer.from_snapshot(data, clock, POLICY, damping=damping)


step = st.one_of(
    st.tuples(
        st.just("offer"),
        st.sampled_from(EMAILS),
        st.sampled_from(PROPS),
        st.sampled_from(VALUES),
        st.integers(-3, 40),  # position offset: late and duplicate changes too
        st.sampled_from([Lane.REALTIME, Lane.BACKFILL]),
    ),
    st.tuples(st.just("take")),
    st.tuples(st.just("ack")),
    st.tuples(st.just("retry")),
    st.tuples(st.just("tick"), st.floats(0, 1.5)),
    st.tuples(st.just("forget"), st.sampled_from(PROPS)),
)


def apply(c: Coalescer, clock: FakeClock, batches: list, op: tuple, pos: int) -> None:
    kind = op[0]
    if kind == "offer":
        _, email, prop, value, offset, lane = op
        c.offer(email, prop, value, max(0, pos + offset), lane)
    elif kind == "take":
        batch = c.take(force=True)
        if batch is not None:
            batches.append(batch)
    elif kind == "ack" and batches:
        c.acknowledge(batches.pop(0))
    elif kind == "retry" and batches:
        c.retry(batches.pop())
    elif kind == "tick":
        clock.advance(op[1])
    elif kind == "forget":
        c.forget_property(op[1])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(step, max_size=60),
    during=st.lists(step, max_size=40),
    chunk=st.integers(1, 5),
    damped=st.booleans(),
)
def test_a_snapshot_in_pieces_is_the_state_at_its_cut_while_changes_keep_arriving(
    before, during, chunk, damped
) -> None:
    damping = DampingPolicy() if damped else None
    clock = FakeClock(T0)
    c = Coalescer(clock, POLICY, damping=damping)
    batches: list = []
    pos = P0
    for op in before:
        pos += 10
        apply(c, clock, batches, op, pos)
    at_cut = state(c)
    framed = c.snapshot()
    pieces_iter = c.snapshot_pieces(chunk)
    pieces = [next(pieces_iter)]
    # Changes keep arriving (and batches go out, are acknowledged, retried) between pieces.
    for op in during:
        pos += 10
        apply(c, clock, batches, op, pos)
        pieces.extend(next(pieces_iter, b"") for _ in range(1))
    pieces.extend(pieces_iter)
    pieces = [p for p in pieces if p]
    restored = Coalescer.from_pieces(pieces, clock, POLICY, damping=damping)
    assert state(restored) == state(Coalescer.from_builtins(at_cut, clock, POLICY, damping=damping))
    assert restored.snapshot() == restore(framed, clock, damping).snapshot()
    # and it round-trips exactly: restored again, it snapshots the same
    assert restore(restored.snapshot(), clock, damping).snapshot() == restored.snapshot()
    for email in EMAILS:
        assert restored.pending_values(email) == restore(framed, clock, damping).pending_values(
            email
        )


def test_a_queue_larger_than_a_piece_keeps_its_order_and_arrival_runs() -> None:
    clock = FakeClock(T0)
    c = Coalescer(clock, FlushPolicy(batch_size=100, linger=0.25), resolution=0.01)
    for i in range(250):
        if i % 7 == 0:
            clock.advance(0.02)
        lane = Lane.BACKFILL if i % 5 == 0 else Lane.REALTIME
        c.offer(f"u{i}@example.com", "aud", "true" if i % 3 else "x" * 40, P0 + i, lane)
    c.offer("u3@example.com", "aud", "true", P0 + 1000)  # superseded in place
    c.offer("u4@example.com", "aud", "", P0 + 1001)
    pieces = list(c.snapshot_pieces(chunk=16))
    assert len(pieces) > 10
    restored = Coalescer.from_pieces(pieces, clock, c.policy, resolution=0.01)
    assert restored.to_builtins() == c.to_builtins()
    assert restored.oldest(Lane.REALTIME) == c.oldest(Lane.REALTIME)
    while (batch := c.drain(100)) is not None:
        assert restored.drain(100) == batch
    assert restored.drain(100, Lane.BACKFILL) == c.drain(100, Lane.BACKFILL)


def test_format_1_snapshots_still_load() -> None:
    clock = FakeClock(T0)
    c = Coalescer(clock, POLICY)
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    c.offer("bob@example.com", "ltv", "12", P0 + 2, Lane.BACKFILL)
    batch = c.take(force=True)
    assert batch is not None
    c.acknowledge(batch)
    c.offer("cyd@example.com", "aud", "false", P0 + 3)
    v1 = msgspec.msgpack.encode(c.to_builtins())
    restored = Coalescer.from_snapshot(v1, clock, POLICY)
    assert restored.snapshot() == c.snapshot()
    assert restored.known_value("ada@example.com", "aud") == ("true", P0 + 1)


@pytest.mark.parametrize(
    "pieces, match",
    [
        ([msgspec.msgpack.encode({"version": 9})], "version 9"),
        ([], "version None"),
        (
            [
                Coalescer(FakeClock(T0)).snapshot_pieces().__next__(),
                msgspec.msgpack.encode(["q", 0, [[T0, 2]], [b"a@x"], [1]]),
            ],
            "counts do not match",
        ),
    ],
)
def test_a_broken_snapshot_fails_with_a_clear_error(pieces: list[bytes], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Coalescer.from_pieces(pieces)


@pytest.mark.parametrize("email", [*EMAILS, "", "a@", "\x00", "ü@x.y@z"])
def test_every_email_has_one_key_and_comes_back_from_it(email: str) -> None:
    codec = KeyCodec(["other.org"])
    key = codec.key(email)
    assert codec.email(key) == email
    assert codec.find(email) == key == codec.key(email)
    assert KeyCodec(codec.domains).email(key) == email  # a restored table reads it the same
    key.decode()  # valid UTF-8: a Damper's snapshot keeps keys as text


def test_keys_are_compact_and_distinct() -> None:
    codec = KeyCodec()
    emails = [f"m{i:08d}@example.com" for i in range(1000)] + EMAILS + ["\x00noat", "m00000001"]
    keys = {codec.key(e) for e in emails}
    assert len(keys) == len(set(emails))
    # 48 bytes of heap instead of 64 for the bench's addresses (pymalloc rounds to 16)
    assert sys.getsizeof(codec.key("m00000000@example.com")) <= 48 - 1
    assert codec.domains == ["example.com", "ü.de"] and codec.find("z@unknown.org") is None


def test_when_the_domain_table_is_full_keys_fall_back_to_the_whole_email(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler._records, "MAX_DOMAINS", 2)
    clock = FakeClock(T0)
    c = Coalescer(clock, POLICY)
    emails = [f"u@d{i}.org" for i in range(5)]
    for i, email in enumerate(emails):
        c.offer(email, "aud", "true", P0 + i)
    assert c._keys.domains == ["d0.org", "d1.org"]
    restored = Coalescer.from_snapshot(c.snapshot(), clock, POLICY)
    assert all(restored.pending_values(e) == c.pending_values(e) != {} for e in emails)
    batch = restored.drain(10)
    assert batch is not None and [w.email for w in batch.contacts] == emails


def test_the_cut_leaves_no_large_container_for_the_garbage_collector_to_walk() -> None:
    """A list of every pending key would be walked by the next gc collections, on the actor's
    loop (~30 ms per million); copies of dicts of bytes and ints are untracked."""
    clock = FakeClock(T0)
    c = Coalescer(clock, POLICY)
    for i in range(5000):
        c.offer(f"u{i}@example.com", "aud", "true", P0 + i, Lane.REALTIME if i % 2 else "backfill")
    batch = c.take(force=True)
    assert batch is not None
    c.acknowledge(batch)  # something known too
    gc.collect()
    pieces = c.snapshot_pieces(chunk=100)
    young = [
        type(o).__name__
        for o in gc.get_objects(generation=0)
        if isinstance(o, list | tuple | dict | set) and len(o) >= 1000
    ]
    assert young == []
    assert Coalescer.from_pieces(pieces, clock, POLICY).snapshot() == c.snapshot()


# ----------------------------------------------------------------- the typed format, versioned

FIXTURE = Path(__file__).with_name("fixtures") / "snapshot_v2.msgpack"
FIXTURE_DAMPING = DampingPolicy(half_life=60.0, max_hold=300.0)  # as fixtures/make_snapshot_v2.py


def test_a_snapshot_written_before_the_format_was_typed_loads_as_it_was() -> None:
    """fixtures/snapshot_v2.msgpack: an ActivationActor's pieces as commit ba1daa3 wrote them
    (the state, then the Coalescer's untyped header and pieces), with what they held."""
    fixture = msgspec.msgpack.decode(FIXTURE.read_bytes())
    expected = fixture["expected"]
    clock = FakeClock(expected["now"])
    restored = Coalescer.from_pieces(
        fixture["pieces"][1:],
        clock,
        FlushPolicy(batch_size=2, linger=0.25),
        damping=FIXTURE_DAMPING,
    )
    for email, values in expected["pending"].items():
        assert restored.pending_values(email) == {p: tuple(v) for p, v in values.items()}, email
    for email, known in expected["known"].items():
        assert restored.known_value(email, "hs_aud") == (None if known is None else tuple(known))
    assert msgspec.to_builtins(restored.stats()) == expected["stats"]
    assert restored.held() == expected["held"] == 1
    assert restored.in_flight() == 0 and restored.pending_values("dee@example.com") != {}
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(restored.to_builtins())) == expected["v1"]
    assert restored.snapshot() == expected["snapshot"]  # and written again byte for byte
    # the header reads as the typed Struct, and is written back as the same map
    old_header = fixture["pieces"][1]
    typed = msgspec.msgpack.decode(old_header, type=SnapshotHeader)
    assert (
        typed.version == 2
        and typed.damping is not None
        and typed.damping.held == ["flap@example.com"]
    )
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(typed)) == msgspec.msgpack.decode(
        old_header
    )
    # and the state before the Coalescer's pieces is the activation's, unchanged
    state = msgspec.msgpack.decode(fixture["pieces"][0], type=State)
    assert state.inbox_id == "1800000000000-5" and state.names["a:vip"] == "hs_aud"


def test_the_header_is_a_versioned_struct_that_round_trips() -> None:
    clock = FakeClock(T0)
    c = Coalescer(clock, POLICY, damping=DampingPolicy())
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    c.offer("bob@example.com", "ltv", "12", P0 + 2, Lane.BACKFILL)
    pieces = list(c.snapshot_pieces())
    header = msgspec.msgpack.decode(pieces[0], type=SnapshotHeader)
    assert header.version == 2 and header.properties == ["aud", "ltv"]
    assert header.lanes == (LaneFront(None, []), LaneFront(None, []))
    assert msgspec.msgpack.encode(header) == pieces[0]
    without = Coalescer(clock, POLICY).snapshot_pieces().__next__()
    assert "damping" not in msgspec.msgpack.decode(without)  # absent, as before, not null
    v1 = msgspec.convert(c.to_builtins(), SnapshotV1)
    assert v1.version == 1 and Coalescer.from_builtins(v1, clock, POLICY).snapshot() == (
        Coalescer.from_builtins(c.to_builtins(), clock, POLICY).snapshot()
    )


@pytest.mark.parametrize("version", [3, 99, "2", None])
def test_a_snapshot_of_an_unknown_version_is_refused_saying_so(version: object) -> None:
    header = msgspec.msgpack.decode(next(Coalescer(FakeClock(T0)).snapshot_pieces()))
    header["version"] = version
    with pytest.raises(SnapshotVersionError, match=f"version {version!r}.*rebuild") as caught:
        Coalescer.from_pieces([msgspec.msgpack.encode(header)])
    assert caught.value.version == version
    with pytest.raises(SnapshotVersionError):
        Coalescer.from_builtins({**Coalescer(FakeClock(T0)).to_builtins(), "version": version})


def test_a_header_of_the_right_version_but_the_wrong_shape_is_a_clear_error() -> None:
    header = msgspec.msgpack.decode(next(Coalescer(FakeClock(T0)).snapshot_pieces()))
    header["counters"] = "many"
    with pytest.raises(ValueError, match=r"not a Coalescer snapshot header.*counters"):
        Coalescer.from_pieces([msgspec.msgpack.encode(header)])


def test_a_snapshot_observes_it_changes_no_count() -> None:
    """Contacts in flight are saved as a retry would leave them; folding them used to count
    and then restore the count: now it never counts."""
    clock = FakeClock(T0)
    c = Coalescer(clock, POLICY)
    c.offer("ada@example.com", "aud", "true", P0 + 1)
    c.offer("bob@example.com", "aud", "true", P0 + 2)
    batch = c.take(force=True)
    assert batch is not None
    c.offer("ada@example.com", "aud", "true", P0 + 1)  # a duplicate, waiting aside
    c.offer("ada@example.com", "aud", "false", P0 + 3)
    before = c.stats()
    list(c.snapshot_pieces())
    c.to_builtins()
    assert c.stats() == before
