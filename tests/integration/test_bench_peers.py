"""`python -m bench peers` at a tiny size, in a process of its own: HubSpot's SDK and hubsync
write to one emulator over real HTTP, and every peer's figures come out."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("hubspot") is None,
        reason="bench peers needs HubSpot's SDK (bench-only): pip install -e '.[bench]'",
    ),
]


@pytest.mark.timeout(600)
def test_peers_runs_all_three_on_one_emulator_and_reports_each() -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    tiny = ["--contacts", "300", "--patch-contacts", "5", "--storm-contacts", "10", "--flips", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "peers", *tiny, "--json"],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
    )
    # exit 1 is "goal not met": at this size the first window's burst decides the rates
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["scenario"] == "peers"
    peers = result["peers"]
    assert set(peers) == {"sdk_patch", "sdk_batch", "hubsync"}
    for name, peer in peers.items():
        t, s = peer["throughput"], peer["storm"]
        assert t["correct_in_hubspot"] == t["contacts"], name
        assert t["contacts_per_s"] > 0 and t["efficiency"] > 0, name
        assert s["final_state_correct"], name
        assert s["changes"] == 10 * 2 + 5, name
    # one schema call, then one call per contact or per 100
    assert peers["sdk_patch"]["throughput"]["calls"] == 1 + 5
    assert peers["sdk_batch"]["throughput"]["calls"] == 1 + 3
    # the naive peers write every change: a PATCH each, or 3 batches cut at a repeated contact
    for name in ("sdk_patch", "sdk_batch"):
        assert peers[name]["storm"]["contact_writes"] == 25, name
    assert peers["sdk_patch"]["storm"]["calls"] == 25
    assert peers["sdk_batch"]["storm"]["calls"] == 3
    assert peers["hubsync"]["throughput"]["rate_limited_429"] == 0
    assert peers["hubsync"]["storm"]["contact_writes"] <= 25
    assert result["documented_retry_retries"] == {"GET": True, "PATCH": False, "POST": False}


def test_the_sdk_readme_retry_leaves_a_refused_write_to_the_caller() -> None:
    """What `documented_retry_retries` says, over HTTP: the README's Retry(status_forcelist=(429,))
    sends a refused POST or PATCH once and raises; the bench's peers add allowed_methods=None."""
    from hubspot import HubSpot
    from hubspot.crm.contacts import (
        BatchInputSimplePublicObjectBatchInputUpsert,
        SimplePublicObjectBatchInputUpsert,
        SimplePublicObjectInput,
    )
    from hubspot.crm.contacts.exceptions import ApiException
    from urllib3.util.retry import Retry

    from crm.emulator import EmulatorServer
    from crm.emulator.state import EmulatorConfig

    properties = {"firstname": "Ada"}
    upsert = BatchInputSimplePublicObjectBatchInputUpsert(
        inputs=[
            SimplePublicObjectBatchInputUpsert(
                id="ada@example.com", id_property="email", properties=properties
            )
        ]
    )
    with EmulatorServer(config=EmulatorConfig(open_auth=True, rate=1)) as emulator:
        contacts = HubSpot(
            access_token="pat-readme",
            retry=Retry(total=5, status_forcelist=(429,)),
            host=emulator.url,
        ).crm.contacts
        contacts.batch_api.upsert(upsert)  # the token's one call in this window
        with pytest.raises(ApiException) as post:
            contacts.batch_api.upsert(upsert)
        with pytest.raises(ApiException) as patch:
            contacts.basic_api.update(
                "ada@example.com",
                SimplePublicObjectInput(properties=properties),
                id_property="email",
            )
        assert post.value.status == patch.value.status == 429
        (token,) = emulator.admin.stats()["tokens"].values()
        assert token["requests"] == 3 and token["rate_limited"] == 2  # each refused once, no retry
