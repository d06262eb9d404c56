"""The one place where hubsync's classes become Ray actors, with their options.

Every actor is named (readable in the Ray dashboard: ``supervisor``, ``router:<p>``,
``activation:<id>``, ``governor:<fingerprint>``), lives in the deployment's Ray namespace, is
detached (it outlives whoever created it; the Supervisor reconciles), restarts forever, retries
calls across restarts, reserves no CPU (``num_cpus=0``: a 2-core node still places dozens), and
is spread across the cluster's nodes (``SPREAD``) so one node's loss costs a share, not the lot.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import ray

from actors.shells import ActivationActor, RateGovernor, RouterActor, Settings, SupervisorActor

__all__ = ["activation_actor", "actor_name", "governor_actor", "options", "router_actor", "supervisor_actor"]


def options(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
        "num_cpus": 0,
        "scheduling_strategy": "SPREAD",
        **extra,
    }


@cache
def _remote(cls: type) -> Any:
    return ray.remote(cls)


def actor_name(kind: str, ident: str | int = "") -> str:
    return kind if kind == "supervisor" else f"{kind}:{ident}"


def supervisor_actor(settings: Settings) -> Any:
    # Small, and found first by every command: it may sit on the head node.
    opts = options("supervisor", settings.namespace, scheduling_strategy="DEFAULT")
    return _remote(SupervisorActor).options(**opts).remote(settings)


def router_actor(settings: Settings, partition: int) -> Any:
    opts = options(actor_name("router", partition), settings.namespace)
    return _remote(RouterActor).options(**opts).remote(settings, partition)


def activation_actor(settings: Settings, activation_id: str) -> Any:
    opts = options(actor_name("activation", activation_id), settings.namespace)
    return _remote(ActivationActor).options(**opts).remote(settings, activation_id)


def governor_actor(settings: Settings, fingerprint: str) -> Any:
    opts = options(actor_name("governor", fingerprint), settings.namespace)
    return _remote(RateGovernor).options(**opts).remote(settings, fingerprint)
