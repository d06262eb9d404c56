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


def test_demo_keep_running_serves_the_console_with_the_demo_data(tmp_path) -> None:
    """`hubsync demo --keep-running` prints the console's URL and how to get the key, and the
    console answers with the demo's activation until Ctrl-C."""
    import re
    import secrets
    import signal
    import time

    import httpx

    key = f"demo-key-{secrets.token_hex(12)}"
    env = {
        **os.environ,
        "HUBSYNC_HOME": str(tmp_path),
        "COLUMNS": "200",
        "HUBSYNC_API_ADDRESS": "127.0.0.1:0",  # tests run side by side: any free port
        "HUBSYNC_API_KEY": key,
    }
    env.pop("HUBSYNC_REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "hubsync.cli", "demo", "--contacts", "300", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        seen: list[str] = []
        url = None
        deadline = time.monotonic() + 240
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            seen.append(line)
            if found := re.search(r"console: (http://127\.0\.0\.1:\d+)/", line):
                url = found.group(1)
                assert "HUBSYNC_API_KEY" in line and key not in line
        assert url, "".join(seen)[-3000:]
        listed = httpx.get(
            f"{url}/api/v1/activations", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert [a["id"] for a in listed.json()["activations"]] == ["demo"]
        assert httpx.get(f"{url}/", follow_redirects=False).status_code == 303  # to sign-in
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=120)
        assert "nothing left running" in out, out[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
