"""The main job, as a user runs it: `hubsync demo` in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_runs_end_to_end_and_leaves_nothing_behind(tmp_path) -> None:
    env = {**os.environ, "HUBSYNC_HOME": str(tmp_path), "COLUMNS": "160"}
    env.pop("HUBSYNC_REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "hubsync.cli", "demo", "--contacts", "2000"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "Raptor Smart Advisor CDP" in out
    assert "raptor_abandon_basket" in out
    assert "│ 429s" in out and "│ 0 " in out.split("│ 429s", 1)[1][:60]
    assert "HubSpot matches the CDP" in out
    assert "nothing left running" in out
