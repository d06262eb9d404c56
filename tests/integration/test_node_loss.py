"""A Ray node dies mid-stream and mid-backfill: its actors restart elsewhere and lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_losing_a_worker_node_costs_a_short_delay_and_nothing_else() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.node_loss"],
        capture_output=True,
        text=True,
        timeout=420,
        env={**os.environ},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1])
    print("node loss:", result)
    assert result["converged"], result
    assert result["actors_on_head"] == [], (
        result
    )  # the worker-only resource keeps them off the head
    assert not result["activation_now_on_head"], result
    assert result["restart_delay_s"] < 60, result
