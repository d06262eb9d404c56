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

__all__ = [
    "activation_actor",
    "actor_name",
    "governor_actor",
    "options",
    "router_actor",
    "supervisor_actor",
]


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


def _placed(settings: Settings, name: str) -> dict[str, Any]:
    """Options for the actors that do the work: spread, and off the head node when the cluster
    marks its worker nodes with ``actor_resource`` (a tiny share of it per actor)."""
    opts = options(name, settings.namespace)
    if settings.actor_resource:
        opts["resources"] = {settings.actor_resource: 0.001}
    return opts


def router_actor(settings: Settings, partition: int) -> Any:
    opts = _placed(settings, actor_name("router", partition))
    return _remote(RouterActor).options(**opts).remote(settings, partition)


def activation_actor(settings: Settings, activation_id: str) -> Any:
    opts = _placed(settings, actor_name("activation", activation_id))
    return _remote(ActivationActor).options(**opts).remote(settings, activation_id)


def governor_actor(settings: Settings, fingerprint: str) -> Any:
    opts = _placed(settings, actor_name("governor", fingerprint))
    return _remote(RateGovernor).options(**opts).remote(settings, fingerprint)
