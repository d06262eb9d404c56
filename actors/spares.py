"""Spare Ray worker processes: idle workers started ahead of the actors that will need them.

Creating an actor costs a new worker process unless the raylet has an idle one that fits; a fresh
process takes 1-3 s on a small node, most of creation -> first write. The raylet starts idle
workers on request (its ``PrestartWorkers`` call, which Ray's Python API does not expose) and
keeps them for ``keep_alive_s`` even when it has more workers than CPUs (otherwise it kills an
idle worker after a second). A new ActivationActor or RateGovernor then takes one of them.

Why not a no-op task, which also leaves an idle worker behind: Ray does not give a worker that
ran a task to a new detached actor (measured on Ray 2.60: the actor got a new process every
time, the task's worker stayed idle next to it).

Spares are an optimisation: a failing request is logged and the actor starts a process of its
own, as it would without spares.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import ray

__all__ = ["SpareSchedule", "prestart"]

log = logging.getLogger("hubsync.spares")

# One call to a raylet; the raylet answers at once and starts the processes after.
PRESTART_TIMEOUT_S = 5.0
# How long the raylet keeps a spare; the Supervisor asks for a fresh set as often, so a spare
# never used costs a process start per period (~1-2 s of CPU), not a process kept forever.
KEEP_ALIVE_S = 600
# A spare taken is replaced once no actor was created for this long: starting a process competes
# for the CPU with the actor that just started (a new activation loads members, makes its schema).
QUIET_S = 5.0


class SpareSchedule:
    """When to ask for spares and how many: the full set at start and every ``keep_alive_s``
    (the raylet lets unused ones go then), else one per actor created, once creations paused
    ``quiet_s``, at most ``count`` at a time. Plain and clock-injected; the Supervisor acts on it."""

    def __init__(
        self,
        count: int,
        *,
        keep_alive_s: float = KEEP_ALIVE_S,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count = count
        self._keep_alive_s = keep_alive_s
        self._quiet_s = quiet_s
        self._clock = clock
        self._renew_at = clock()  # the first call asks for the full set
        self._taken = 0
        self._last_created = float("-inf")

    def created(self, actors: int = 1) -> None:
        """``actors`` were created: each may have taken a spare."""
        self._taken += actors
        self._last_created = self._clock()

    def due(self) -> int:
        """How many spares to ask for now (0: none); asking is up to the caller."""
        if self.count <= 0:
            return 0
        now = self._clock()
        if now >= self._renew_at:
            self._renew_at = now + self._keep_alive_s
            self._taken = 0
            return self.count
        if self._taken and now - self._last_created >= self._quiet_s:
            due, self._taken = min(self._taken, self.count), 0
            return due
        return 0


def _nodes(actor_resource: str | None) -> list[dict[str, Any]]:
    """The live nodes actors may be placed on (those that offer ``actor_resource``, if set)."""
    return [
        node
        for node in ray.nodes()
        if node.get("Alive")
        and (actor_resource is None or node.get("Resources", {}).get(actor_resource))
    ]


def prestart(
    count: int, keep_alive_s: int = KEEP_ALIVE_S, actor_resource: str | None = None
) -> int:
    """Ask every node actors may land on to start ``count`` idle workers and keep them for
    ``keep_alive_s``; returns how many nodes accepted. Blocking: call it off the event loop."""
    if count <= 0:
        return 0
    import grpc
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

    # Generated protobuf modules: no types for mypy to see.
    messages: Any = node_manager_pb2
    language: Any = common_pb2.Language  # type: ignore[attr-defined]

    accepted = 0
    for node in _nodes(actor_resource):
        address = f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
        request = messages.PrestartWorkersRequest(
            language=language.PYTHON,
            keep_alive_duration_secs=keep_alive_s,
            num_workers=count,
        )
        try:
            with grpc.insecure_channel(address) as channel:
                stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
                stub.PrestartWorkers(request, timeout=PRESTART_TIMEOUT_S)
        except grpc.RpcError as exc:
            log.warning("no spare workers on %s: %s", address, exc.code())
            continue
        accepted += 1
    return accepted
