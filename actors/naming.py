"""The names and Ray options of hubsync's actors, in one place that imports nothing of hubsync.

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

__all__ = ["actor_name", "options", "placed", "remote_class"]


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
def remote_class(cls: type) -> Any:
    """``ray.remote(cls)``, made once per class (wrapping a class again and again is wasteful)."""
    return ray.remote(cls)


def actor_name(kind: str, ident: str | int = "") -> str:
    return kind if kind == "supervisor" else f"{kind}:{ident}"


def placed(name: str, namespace: str, actor_resource: str | None) -> dict[str, Any]:
    """Options for the actors that do the work: spread, and off the head node when the cluster
    marks its worker nodes with ``actor_resource`` (a tiny share of it per actor)."""
    opts = options(name, namespace)
    if actor_resource:
        opts["resources"] = {actor_resource: 0.001}
    return opts
