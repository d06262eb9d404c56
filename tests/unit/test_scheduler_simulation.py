"""A flood of changes through coalescer, lanes and limiter on a fake clock (Starter plan)."""

from __future__ import annotations

from bench.simulation import simulate


def test_starter_plan_simulation_converges_within_limits() -> None:
    result = simulate(changes=150_000, contacts=20_000, minutes=1.0, seed=3)
    print(result)
    assert result["hubspot_matches_last_by_position"]
    assert result["max_calls_in_any_window"] <= 100
    assert result["calls"] * 100 >= result["contacts_written"]
    assert result["coalesced"] > 0
