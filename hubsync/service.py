"""Wiring a running hubsync: Ray (joined or started on 127.0.0.1), Redis, and the Supervisor.

``Service.start()`` returns once the Supervisor has started the routers; the Supervisor then
starts an ActivationActor per activation and a RateGovernor per token, and keeps them running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import ray

from actors.remote import supervisor_actor
from actors.shells import Settings
from hubsync.activation_cmd import secret_key
from hubsync.config import Config

__all__ = ["Service", "init_ray"]


def init_ray(
    config: Config,
    *,
    num_cpus: int | None = None,
    dashboard: bool = True,
    log_to_driver: bool = True,
) -> Any:
    """Join RAY_ADDRESS, or start a local Ray bound to 127.0.0.1 (never the machine's address)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if config.ray_address:
        return ray.init(
            address=config.ray_address, namespace=config.namespace, log_to_driver=log_to_driver
        )
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback only: nothing else can reach it
    return ray.init(
        address="local",  # a new local Ray: never whatever cluster a `ray start` on this machine left
        namespace=config.namespace,
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        log_to_driver=log_to_driver,
        configure_logging=False,
    )


@dataclass
class Service:
    config: Config
    num_cpus: int | None = None
    dashboard: bool = True
    log_to_driver: bool = True

    def __post_init__(self) -> None:
        self.supervisor: Any = None
        self.dashboard_url: str | None = None
        self.settings: Settings | None = None
        self._started_ray = False

    def start(self) -> dict[str, Any]:
        redis_url = self.config.resolve_redis_url()
        # Set before Ray starts so every local worker inherits it; on a cluster, set it on the nodes.
        os.environ["HUBSYNC_SECRET_KEY"] = secret_key(self.config)
        if not ray.is_initialized():
            context = init_ray(
                self.config,
                num_cpus=self.num_cpus,
                dashboard=self.dashboard,
                log_to_driver=self.log_to_driver,
            )
            self._started_ray = True
            url = getattr(context, "dashboard_url", None)
            self.dashboard_url = f"http://{url}" if url and not url.startswith("http") else url
        self.settings = Settings(
            redis_url,
            self.config.namespace,
            self.config.partitions,
            self.config.linger_ms,
            actor_resource=self.config.actor_resource,
            damping=self.config.damping,
        )
        self.supervisor = supervisor_actor(self.settings)
        return ray.get(self.supervisor.ready.remote(), timeout=120)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Checkpoint and stop every hubsync actor; stop Ray if this process started it."""
        if self.supervisor is not None:
            try:
                ray.get(self.supervisor.shutdown.remote(), timeout=60)
            finally:
                ray.kill(self.supervisor, no_restart=True)
                self.supervisor = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
