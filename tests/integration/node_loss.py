"""The node-loss scenario, run in a process of its own (it needs its own multi-node Ray):

    python -m tests.integration.node_loss [--json]

A head and two worker nodes on 127.0.0.1 (ray.cluster_utils.Cluster); hubsync's actors are kept
off the head by the worker-only resource ``hubsync_worker``. Mid-backfill and mid-stream, the
worker holding the ActivationActor is removed: its actors restart on the other worker, recover
from the log and snapshots, and HubSpot ends equal to the state computed from the events.
Prints one JSON object: restart delay, where actors were, whether HubSpot converged.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet


async def scenario(
    cluster: Any, redis_url: str, emulator: Any, secret: str, seed: int = 41
) -> dict[str, Any]:
    from events.model import AudienceEntered
    from tests.integration.harness import Hubsync
    from tests.integration.harness import scenario as story
    from tests.integration.test_restarts import define

    hubsync = Hubsync(redis_url, emulator, secret, partitions=2, actor_resource="hubsync_worker")
    await hubsync.start()
    result: dict[str, Any] = {"seed": seed}
    try:
        activation = await define(hubsync)
        backfill = 8_000
        members = [
            AudienceEntered(audience_id="aud", email=f"bf{i}@example.com") for i in range(backfill)
        ]
        events, expected = story(seed, contacts=300, events=3_000)
        for m in members:
            expected.setdefault(m.email, {})["raptor_audience"] = "true"
        await hubsync.publish(members + events[:1_500])
        actor = await hubsync.wait_actor("activation", activation)
        deadline = time.monotonic() + 60
        while emulator.admin.stats()["inputs_written"] < 2_000:
            assert time.monotonic() < deadline, "the backfill did not start"
            await asyncio.sleep(0.1)

        head = cluster.head_node.node_id
        placed = {}
        for kind, ident in [("activation", activation), ("router", 0), ("router", 1)]:
            placed[f"{kind}:{ident}"] = (await hubsync.actor(kind, ident).where.remote())["node_id"]
        result["actors_on_head"] = sorted(k for k, n in placed.items() if n == head)
        lost = placed[f"activation:{activation}"]
        node = next(n for n in cluster.worker_nodes if n.node_id == lost)
        result["lost_node_held"] = sorted(k for k, n in placed.items() if n == lost)
        removed_at = time.monotonic()
        cluster.remove_node(node)
        while True:  # the activation answers again: it restarted elsewhere and recovered
            try:
                where = await asyncio.wait_for(actor.where.remote(), 5)
                await asyncio.wait_for(actor.status.remote(), 5)
                if where["node_id"] != lost:
                    break
            except Exception:
                pass
            assert time.monotonic() - removed_at < 120, (
                "the activation did not restart on another node"
            )
            await asyncio.sleep(0.1)
        result["restart_delay_s"] = round(time.monotonic() - removed_at, 2)
        result["activation_now_on_head"] = where["node_id"] == head
        await hubsync.publish(events[1_500:])

        def converged() -> bool:
            hubspot = emulator.admin.contact_properties()
            return all(
                hubspot.get(e, {}).get(p) == v for e, ps in expected.items() for p, v in ps.items()
            )

        deadline = time.monotonic() + 120
        while not converged():
            if time.monotonic() > deadline:
                hubspot = emulator.admin.contact_properties()
                wrong = [
                    (e, p, v, hubspot.get(e, {}).get(p))
                    for e, ps in expected.items()
                    for p, v in ps.items()
                    if hubspot.get(e, {}).get(p) != v
                ]
                result["converged"] = False
                result["wrong"] = wrong[:5]
                result["wrong_count"] = len(wrong)
                return result
            await asyncio.sleep(0.5)
        result["converged"] = True
        result["converged_after_s"] = round(time.monotonic() - removed_at, 2)
        result["rate_limited"] = emulator.admin.stats()["rate_limited"]
        return result
    finally:
        try:
            await asyncio.wait_for(hubsync.stop(), 60)
        except Exception:
            pass


def main() -> int:
    secret = Fernet.generate_key().decode()
    os.environ.update(
        {
            "RAY_AUTH_MODE": "disabled",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "HUBSYNC_SECRET_KEY": secret,
        }
    )
    import ray
    from ray.cluster_utils import Cluster

    from crm.emulator import EmulatorServer
    from events.redis_server import RedisServer

    home = Path(tempfile.mkdtemp(prefix="hubsync-node-loss-"))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1, resources={"hubsync_worker": 100}, node_ip_address="127.0.0.1")
    redis = RedisServer(home / "redis").start()
    emulator = EmulatorServer().start()
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        seed = random.Random().randrange(1000) if "--random" in sys.argv else 41
        result = asyncio.run(scenario(cluster, redis.url, emulator, secret, seed=seed))
    finally:
        ray.shutdown()
        cluster.shutdown()
        emulator.stop()
        redis.stop()
    print(json.dumps(result))
    return 0 if result.get("converged") else 1


if __name__ == "__main__":
    sys.exit(main())
