"""Wiring a running hubsync: Ray (joined or started on 127.0.0.1), Redis, and the Supervisor.

``Service.start()`` returns once the Supervisor has started the routers; the Supervisor then
starts an ActivationActor per activation and a RateGovernor per token, and keeps them running.
Without ``HUBSYNC_REDIS_URL`` the service owns hubsync's embedded Redis: it starts it first and
stops it last. ``Service.stop()`` is bounded (STOP_TIMEOUT_S): a stop that hangs on a Redis or
an actor that does not answer ends by killing the actors, which loses nothing (see README).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import click
import ray
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from actors.shells import CHECKPOINT_TIMEOUT_S, Settings, supervisor_actor
from events.redis_server import EmbeddedRedis
from hubsync.config import Config, ensure_reachable, secret_key

__all__ = [
    "RAY_VERSIONS",
    "STOP_TIMEOUT_S",
    "IncompatibleRay",
    "Service",
    "check_ray_version",
    "init_ray",
]

# The Ray versions hubsync supports: pyproject.toml's `ray[default]` line and cluster.yaml's pin
# must agree with it (tests/unit/test_cluster_yaml.py checks both).
RAY_VERSIONS = ">=2.60,<2.61"

# How long the Supervisor's shutdown may take (checkpoints, then kills) before the driver kills
# whatever is left itself: well inside the 30 s an operator (or `ray job stop`) waits.
STOP_TIMEOUT_S = CHECKPOINT_TIMEOUT_S + 8.0


class IncompatibleRay(RuntimeError):
    """The Ray running here (or on the cluster) is outside RAY_VERSIONS; the message says what to do."""


def check_ray_version(version: str, where: str = "this machine") -> None:
    """Refuse a Ray outside RAY_VERSIONS, naming where it runs and what to install."""
    if Version(version) not in SpecifierSet(RAY_VERSIONS):
        raise IncompatibleRay(
            f"Ray {version} on {where} is not supported: hubsync needs ray[default]{RAY_VERSIONS} "
            f"(pip install 'ray[default]{RAY_VERSIONS}'; on a cluster, the pin in cluster.yaml)"
        )


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
        self.embedded: EmbeddedRedis | None = None
        self._started_ray = False

    def start(self) -> dict[str, Any]:
        check_ray_version(ray.__version__)
        if self.config.redis_url:
            redis_url = self.config.redis_url
        else:
            self.embedded = EmbeddedRedis(self.config.home).start()
            redis_url = self.embedded.url
        ensure_reachable(redis_url)  # one clear line now, not a supervisor retrying in the dark
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
            max_entry_bytes=self.config.max_entry_bytes,
            dead_letters_max=self.config.dead_letters_max,
            change_retention_s=self.config.change_retention_s,
            damping=self.config.damping,
        )
        self.supervisor = supervisor_actor(self.settings)
        info: dict[str, Any] = ray.get(self.supervisor.ready.remote(), timeout=120)
        # The cluster's Ray (where the Supervisor runs); Ray itself refuses nodes of another version.
        check_ray_version(info.pop("ray_version", ray.__version__), "the cluster")
        return info

    def stop(self) -> None:
        """Checkpoint and stop every hubsync actor, within STOP_TIMEOUT_S; stop Ray if this
        process started it, and the embedded Redis last (after the checkpoints)."""
        try:
            if self.supervisor is not None:
                self._stop_actors()
        finally:
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False
            if self.embedded is not None:
                self.embedded.stop()
                self.embedded = None

    def _stop_actors(self) -> None:
        started = time.monotonic()
        try:
            ray.get(self.supervisor.shutdown.remote(), timeout=STOP_TIMEOUT_S)
        except Exception as exc:  # no answer in time, or the Supervisor died: kill them here
            click.echo(
                f"the Supervisor did not stop the actors in {time.monotonic() - started:.0f}s "
                f"({type(exc).__name__}); killing them",
                err=True,
            )
            self._kill_named_actors()
        finally:
            ray.kill(self.supervisor, no_restart=True)
            self.supervisor = None

    def _kill_named_actors(self) -> None:
        """Kill every hubsync actor of this namespace (they restart from Redis next time)."""
        for found in ray.util.list_named_actors(all_namespaces=True):
            if found["namespace"] != self.config.namespace or found["name"] == "supervisor":
                continue
            try:
                ray.kill(
                    ray.get_actor(found["name"], namespace=found["namespace"]), no_restart=True
                )
            except ValueError:
                continue
