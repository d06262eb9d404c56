"""The status the actors publish, as typed messages: built by pure functions of a core's state,
written as the same JSON as before (what `hubsync status`, the API and the console read), and
read back into the Structs, old documents and partial ones included."""

from __future__ import annotations

import json

import msgspec
import pytest

from actors.activation import Backfill, Counters, State, activation_status
from actors.governor import governor_status
from actors.status import (
    ActivationState,
    ActivationStatus,
    BackfillProgress,
    GovernorStatus,
    decode_activation_status,
    decode_governor_status,
    encode_status,
)
from events.activations import ActivationSpec
from scheduler import CoalescerStats, TokenBudget

NOW = 1_800_000_100.0
WALL = 1_900_000_000.0

# As ActivationCore.status() wrote it (a dict) before the Struct: the shape readers rely on.
WRITTEN_BEFORE = {
    "state": "degraded",
    "pending": 7,
    "pending_realtime": 2,
    "pending_backfill": 4,
    "in_flight": 1,
    "held": 1,
    "changes_in": 40,
    "coalesced": 9,
    "written": 30,
    "written_today": 12,
    "created": 3,
    "parked": 1,
    "not_in_hubspot": 0,
    "calls": 5,
    "lag_s": None,
    "backfills": {
        "a:vip": {"done": 0, "total": 10, "eta_s": None, "loading": True},
        "t:ltv": {"done": 6, "total": 10, "eta_s": 0.04, "elapsed_s": 12.5},
    },
    "properties": {"a:vip": "raptor_vip"},
    "problems": {"t:ltv": "HubSpot refused it"},
    "last_error": "HubSpot refused it",
    "updated_at": WALL,
}


def _spec(**overrides: object) -> ActivationSpec:
    fields: dict[str, object] = dict(
        activation_id="eu1",
        name="EU",
        token_sealed="sealed",
        token_fingerprint="ffffffffffff",
        base_url="https://api.hubapi.com",
        api_version="2026-03",
        plan="starter",
        mode="upsert",
        audiences={"vip": 1},
        attributes={"ltv": 2},
    )
    fields.update(overrides)
    return ActivationSpec(**fields)  # type: ignore[arg-type]


def _stats(**overrides: int) -> CoalescerStats:
    fields = dict(
        offered=50,
        coalesced=9,
        written=30,
        forgotten=0,
        parked=1,
        pending_realtime=2,
        pending_backfill=4,
        in_flight=1,
        known=30,
        held=1,
    )
    fields.update(overrides)
    return CoalescerStats(**fields)


def _state() -> State:
    return State(
        names={"a:vip": "raptor_vip", "a:gone": "raptor_gone"},
        backfills={
            "a:vip": Backfill(added_at=1, total=10, loaded=True, started_at=NOW - 20),
            "t:ltv": Backfill(added_at=2, total=8, started_at=NOW - 1),
        },
        counters=Counters(changes_in=40, written=30, written_today=12, created=3, calls=5),
    )


def _status(state: State | None = None, **overrides: object) -> ActivationStatus:
    args: dict[str, object] = dict(
        spec=_spec(),
        deleted=False,
        problems={},
        last_error="",
        lag=0.5,
        contacts_per_second=100.0,
        now=NOW,
        wall=WALL,
    )
    args.update(overrides)
    stats = args.pop("stats", _stats())
    return activation_status(state or _state(), stats, **args)  # type: ignore[arg-type]


def test_the_activation_status_is_what_the_state_and_the_coalescer_say() -> None:
    status = _status()
    assert status.state is ActivationState.RUNNING
    assert (status.pending, status.pending_realtime, status.pending_backfill) == (7, 2, 4)
    assert (status.in_flight, status.held, status.coalesced) == (1, 1, 9)
    assert (status.changes_in, status.written, status.written_today, status.calls) == (
        40,
        30,
        12,
        5,
    )
    assert status.lag_s == 0.5 and status.updated_at == WALL
    # only subscribed properties are listed: a:gone was unsubscribed
    assert status.properties == {"a:vip": "raptor_vip"}
    assert status.backfills == {
        "a:vip": BackfillProgress(done=6, total=10, eta_s=0.04, elapsed_s=20.0),
        "t:ltv": BackfillProgress(done=0, total=8, eta_s=None, loading=True),
    }


def test_a_finished_backfill_counts_its_time_to_its_end_and_the_function_changes_nothing() -> None:
    state = _state()
    state.backfills["a:vip"].finished_at = NOW - 5
    before = msgspec.msgpack.encode(state)
    status = _status(state, stats=_stats(pending_backfill=0))
    assert status.backfills["a:vip"] == BackfillProgress(
        done=10, total=10, eta_s=0.0, elapsed_s=15.0
    )
    assert msgspec.msgpack.encode(state) == before  # a pure function: the state is untouched
    assert _status(state, stats=_stats(pending_backfill=0)) == status  # and it says the same


@pytest.mark.parametrize(
    "overrides, state, last_error",
    [
        ({"deleted": True}, ActivationState.DELETED, ""),
        ({"spec": None}, ActivationState.STARTING, ""),
        (
            {"spec": _spec(paused=True, pause_reason="token refused"), "last_error": "x"},
            ActivationState.PAUSED,
            "token refused",
        ),
        (
            {"problems": {"t:ltv": "refused", "a:vip": "archived"}, "last_error": "x"},
            ActivationState.DEGRADED,
            "refused; archived",
        ),
        (
            {"last_error": "inbox: Redis went away"},
            ActivationState.RUNNING,
            "inbox: Redis went away",
        ),
    ],
)
def test_the_state_and_the_error_shown_follow_the_configuration_and_the_problems(
    overrides: dict[str, object], state: ActivationState, last_error: str
) -> None:
    status = _status(**overrides)
    assert status.state is state and status.last_error == last_error


def test_no_rate_means_no_estimate() -> None:
    assert _status(contacts_per_second=0.0).backfills["a:vip"].eta_s is None


def test_the_status_is_written_as_the_same_json_as_before_and_reads_back() -> None:
    status = decode_activation_status(json.dumps(WRITTEN_BEFORE).encode())
    assert status.state is ActivationState.DEGRADED
    assert status.backfills["a:vip"].loading and status.backfills["t:ltv"].elapsed_s == 12.5
    # Written again: the same document, key for key (a loading backfill has no elapsed_s, a
    # loaded one no "loading", eta_s is null when unknown).
    assert json.loads(encode_status(status)) == WRITTEN_BEFORE
    assert decode_activation_status(encode_status(status)) == status
    assert json.loads(encode_status(_status()))["backfills"]["t:ltv"] == {
        "done": 0,
        "total": 8,
        "eta_s": None,
        "loading": True,
    }


def test_a_partial_status_reads_with_defaults_and_a_wrong_one_is_refused() -> None:
    assert decode_activation_status(b"{}") == ActivationStatus()
    assert decode_activation_status(b'{"state": "deleted"}').state is ActivationState.DELETED
    with pytest.raises(msgspec.ValidationError, match="state"):
        decode_activation_status(b'{"state": "dancing"}')
    with pytest.raises(msgspec.ValidationError, match="pending"):
        decode_activation_status(b'{"pending": "many"}')


def test_the_governor_status_is_its_budget_at_a_time_and_its_counts() -> None:
    budget = TokenBudget.for_plan(100, 250_000)
    budget.reserve(NOW)
    budget.reserve(NOW)
    status = governor_status(
        "ffffffffffff",
        "starter",
        budget,
        NOW,
        waiting_for=None,
        waiting=2,
        calls={"200": 2},
        rate_limited=0,
        rejected=None,
        problem=None,
        wall=WALL,
    )
    assert status == GovernorStatus(
        fingerprint="ffffffffffff",
        plan="starter",
        window_limit=100,
        window_left=98,
        daily_limit=250_000,
        daily_left=budget.daily.remaining(NOW) if budget.daily else None,
        daily_resets_at=budget.daily.resets_at(NOW) if budget.daily else None,
        blocked_until=None,
        waiting_for=None,
        waiting=2,
        calls={"200": 2},
        rate_limited=0,
        rejected=None,
        problem=None,
        updated_at=WALL,
    )
    assert status.daily_left == 249_998
    # the same keys as the dict written before, and it reads back
    assert set(json.loads(encode_status(status))) == {
        "fingerprint",
        "plan",
        "window_limit",
        "window_left",
        "daily_limit",
        "daily_left",
        "daily_resets_at",
        "blocked_until",
        "waiting_for",
        "waiting",
        "calls",
        "rate_limited",
        "rejected",
        "problem",
        "updated_at",
    }
    assert decode_governor_status(encode_status(status)) == status
    no_daily = governor_status(
        "f",
        None,
        TokenBudget.for_plan(100, None),
        NOW,
        waiting_for="waiting",
        waiting=0,
        calls={},
        rate_limited=1,
        rejected="401",
        problem=None,
        wall=WALL,
    )
    assert (no_daily.daily_limit, no_daily.daily_left, no_daily.daily_resets_at) == (None,) * 3
