"""bench peers, the pure parts: the storm every peer gets, how a user's loop batches changes, and
the figures. The SDK itself is not needed here (tests/integration/test_bench_peers.py runs it)."""

from __future__ import annotations

import pytest

from bench.peers import (
    PEERS,
    Storm,
    documented_retry_retries,
    goal_met,
    naive_batches,
    storm_figures,
    throughput_figures,
)


def test_storm_even_contacts_end_where_they_started_odd_ones_leave() -> None:
    storm = Storm(contacts=4, flips=4)
    changes = storm.changes(["a", "b", "c", "d"])
    assert len(changes) == 4 * 4 + 2  # K flips each, odd contacts one more
    last = dict(changes)  # email -> state after its last change
    assert last == {"a": True, "b": False, "c": True, "d": False}
    assert storm.final() == [True, False, True, False]
    assert storm.net_changed() == {1, 3}


def test_storm_rounds_flip_every_contact_once_per_round() -> None:
    rounds = Storm(contacts=3, flips=2).rounds()
    assert [[i for i, _ in r] for r in rounds] == [[0, 1, 2], [0, 1, 2], [1]]
    assert rounds[0] == [(0, False), (1, False), (2, False)]  # everyone starts in the audience


def test_storm_with_odd_k_the_even_contacts_are_the_net_changed_ones() -> None:
    storm = Storm(contacts=2, flips=3)
    assert storm.final() == [False, True]
    assert storm.net_changed() == {0}


def test_naive_batches_write_every_change_in_order() -> None:
    changes = [(f"c{i}", i % 2 == 0) for i in range(250)]
    batches = naive_batches(changes)
    assert [len(b) for b in batches] == [100, 100, 50]
    assert [c for b in batches for c in b] == changes


def test_naive_batches_cut_before_a_contact_the_batch_already_holds() -> None:
    # HubSpot refuses a batch naming a contact twice; a user writing every change cuts the batch.
    changes = [("a", False), ("b", False), ("a", True), ("b", True), ("a", False)]
    assert naive_batches(changes) == [
        [("a", False), ("b", False)],
        [("a", True), ("b", True)],
        [("a", False)],
    ]


def test_naive_batches_of_one_is_a_call_per_change() -> None:
    changes = [("a", True), ("a", False)]
    assert naive_batches(changes, 1) == [[("a", True)], [("a", False)]]
    assert naive_batches([]) == []


def test_throughput_figures_against_the_starter_ceiling() -> None:
    # 2,000 contacts, job started at 100.0, writes from 101.0 to 104.0: 500/s from the start.
    r = throughput_figures(2000, 2000, 100.0, [101.0, 102.5, 104.0])
    assert r["contacts_per_s"] == 500.0
    assert r["efficiency"] == 0.5
    assert r["seconds_first_to_last_write"] == 3.0
    assert r["efficiency_first_to_last"] == pytest.approx(0.6667, abs=1e-4)


def test_throughput_figures_refuse_a_job_with_no_write() -> None:
    with pytest.raises(RuntimeError, match="no write"):
        throughput_figures(10, 0, 100.0, [])


def test_storm_figures_count_writes_and_check_the_final_state() -> None:
    storm = Storm(contacts=4, flips=2)  # 0 and 2 end unchanged; 1 and 3 leave
    writes = [2, 3, 0, 1]
    r = storm_figures(storm, writes, [True, False, True, False])
    assert r["changes"] == 10
    assert r["writes_per_contact"] == 1.5
    assert r["writes_per_net_changed_contact"] == 2.0
    assert r["net_unchanged_written"] == 1
    assert r["final_state_correct"]
    wrong = storm_figures(storm, writes, [True, True, None, False])
    assert wrong["wrong_final_states"] == 2  # a wrong value, and a contact HubSpot never got
    assert not wrong["final_state_correct"]


def _peer(efficiency: float, writes: float, refused: int = 0) -> dict[str, dict[str, object]]:
    return {
        "throughput": {
            "efficiency": efficiency,
            "rate_limited_429": refused,
            "contacts": 10,
            "correct_in_hubspot": 10,
        },
        "storm": {"writes_per_contact": writes, "final_state_correct": True},
    }


def test_goal_hubsync_beats_both_peers_without_a_429() -> None:
    peers = {"sdk_patch": _peer(0.01, 4.5), "sdk_batch": _peer(0.7, 4.5, 30)}
    assert set(PEERS) == {*peers, "hubsync"}
    assert goal_met(peers | {"hubsync": _peer(0.95, 1.2)})
    assert not goal_met(peers | {"hubsync": _peer(0.95, 1.2, refused=1)})
    assert not goal_met(peers | {"hubsync": _peer(0.6, 1.2)})
    assert not goal_met(peers | {"hubsync": _peer(0.95, 4.5)})


def test_goal_not_met_when_a_peer_did_not_end_right() -> None:
    broken = _peer(0.7, 4.5)
    broken["storm"]["final_state_correct"] = False
    peers = {"sdk_patch": _peer(0.01, 4.5), "sdk_batch": broken, "hubsync": _peer(0.95, 1.2)}
    assert not goal_met(peers)


def test_the_sdk_readme_retry_retries_no_write() -> None:
    # urllib3 retries only idempotent methods unless told otherwise: the SDK README's
    # Retry(total=5, status_forcelist=(429,)) leaves a 429 on a batch upsert (POST) or a PATCH alone.
    pytest.importorskip("urllib3")
    assert documented_retry_retries() == {"GET": True, "PATCH": False, "POST": False}
