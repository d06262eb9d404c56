"""What operators see outside the console: the Grafana dashboard hubsync ships (only metrics hubsync
defines), the metric tags of HubSpot calls and 429s (token fingerprint, never the token), and the
one-line reprs the Ray dashboard's Actors tab shows. Pure: no Ray, no Redis, a fake clock."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from typing import Any

import pytest

import actors.metrics as metrics_module
from actors.metrics import HISTOGRAMS, METRICS, metric_names
from actors.shells import describe_activation, describe_governor
from crm.tokens import token_fingerprint
from tests.unit.test_governor_refusals import Rig

TOKEN = "pat-na1-secret-0123456789"


def dashboard() -> dict[str, Any]:
    return json.loads(files("hubsync.console").joinpath("grafana/hubsync.json").read_text())


def test_the_metric_list_names_every_metric_hubsync_defines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []

    class Recorder:
        def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
            made.append(name)
            self.kind = type(self).__name__

    for kind in ("Counter", "Gauge", "Histogram"):
        monkeypatch.setattr(metrics_module, kind, type(kind, (Recorder,), {}))
    metrics_module._Metrics()
    assert sorted(made) == sorted(METRICS)
    assert set(METRICS) >= HISTOGRAMS


def test_the_grafana_dashboard_uses_only_metrics_hubsync_defines() -> None:
    board = dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used: set[str] = set()
    for expr in exprs:
        # `{__name__=~"ray_x(_total)?"}` (a counter with or without Prometheus's suffix) or `ray_x`
        used.update(re.findall(r'__name__=~"(ray_[a-z0-9_]+)\(_total\)\?"', expr))
        used.update(re.findall(r"\b(ray_[a-z0-9_]+)\b(?!\()", expr))
    assert used, "the dashboard queries no metric"
    assert used <= metric_names(), used - metric_names()
    # every area the issue names has a panel
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for area in ("intake", "pending", "calls", "429", "budget", "lag", "backfill", "dead letters"):
        assert area in titles, area
    assert all(p["description"] for p in board["panels"])
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


class _Recorded:
    def __init__(self) -> None:
        self.incs: list[tuple[str, dict[str, str]]] = []

    def __getattr__(self, name: str) -> Any:
        recorded = self

        class Metric:
            def inc(self, value: float = 1, tags: dict[str, str] | None = None) -> None:
                recorded.incs.append((name, dict(tags or {})))

        return Metric()


async def test_a_429_counts_in_hubsync_hubspot_429_and_calls_are_tagged_by_token_fingerprint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = _Recorded()
    monkeypatch.setattr(metrics_module, "metrics", lambda: recorded)
    rig = Rig(token=TOKEN, metrics=metrics_module.RayCallMetrics(token_fingerprint(TOKEN)))
    await rig.create()
    try:
        rig.faults(next_n={"count": 1, "status": 429})
        assert [o.status for o in await rig.upsert()] == ["created"]
    finally:
        await rig.close()
    fingerprint = token_fingerprint(TOKEN)
    refused = [tags for name, tags in recorded.incs if name == "rate_limited"]
    assert refused == [
        {"activation": "act1", "token": fingerprint, "policy": refused[0]["policy"]}
    ], recorded.incs
    calls = [tags for name, tags in recorded.incs if name == "calls"]
    assert {c["status"] for c in calls} >= {"429"} and all(c["token"] == fingerprint for c in calls)
    assert TOKEN not in repr(recorded.incs)


def test_an_activation_repr_says_name_state_pending_and_backfill() -> None:
    status = {
        "state": "running",
        "pending": 1234,
        "backfills": {"a:vip": {"done": 300, "total": 1000}, "t:ltv": {"done": 100, "total": 1000}},
    }
    text = describe_activation("eu1", "EU marketing", status)
    assert text == (
        "ActivationActor(eu1 'EU marketing': running, 1,234 pending, backfill 400/2,000 (20%))"
    )
    assert describe_activation("eu1", None, {}) == "ActivationActor(eu1: starting, 0 pending)"


def test_a_governor_repr_says_calls_in_the_window_and_budget_left_never_the_token() -> None:
    fingerprint = token_fingerprint(TOKEN)
    status = {
        "fingerprint": fingerprint,
        "window_limit": 100,
        "window_left": 63,
        "daily_limit": 250_000,
        "daily_left": 249_000,
        "waiting_for": None,
    }
    text = describe_governor(status)
    assert text == (
        f"RateGovernor(token {fingerprint}: 37/100 calls in the 10 s window; "
        "249,000 of 250,000 left today)"
    )
    blocked = describe_governor({**status, "waiting_for": "HubSpot refused a call (429)"})
    assert blocked.endswith("HubSpot refused a call (429))") and TOKEN not in blocked
