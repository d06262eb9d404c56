"""Configuration, read from an environment passed in (never from os.environ deep inside).

Environment variables::

    HUBSYNC_REDIS_URL     Redis to use; unset: hubsync's embedded redis-server in HUBSYNC_HOME
    HUBSYNC_HOME          data directory (embedded Redis, secret key); default ~/.local/share/hubsync
    HUBSYNC_NAMESPACE     prefix of every Redis key; default "hubsync"
    HUBSYNC_PARTITIONS    change-stream partitions, applied at first start only; default 4
    HUBSYNC_SECRET_KEY    key that encrypts access tokens at rest (Fernet, urlsafe base64);
                          unset: one is created in HUBSYNC_HOME/secret.key (mode 0600)
    HUBSYNC_LINGER_MS     how long a change may wait for its batch to fill; default 250
    HUBSYNC_DAMPING       "off" turns flap damping off; default on, with these settings:
    HUBSYNC_DAMPING_SETTLE_MS     least wait of a realtime change before it is written; 500
    HUBSYNC_DAMPING_PENALTY       penalty per flip; 1
    HUBSYNC_DAMPING_HALF_LIFE_MS  time for a penalty to halve; 1000
    HUBSYNC_DAMPING_SUPPRESS      penalty at which a contact is held; 2
    HUBSYNC_DAMPING_REUSE         penalty under which a held contact is written; 0.75
    HUBSYNC_DAMPING_MAX_HOLD_MS   longest hold, however a contact keeps flipping; 30000
    HUBSYNC_ACTOR_RESOURCE  a custom resource only worker nodes offer (cluster.yaml: hubsync_worker);
                          routers, activations and governors require a sliver of it, so they stay
                          off the head node; unset: they go anywhere (one machine)
    HUBSYNC_MAX_ENTRY_BYTES   a change entry larger than this is parked unread; default 65536
    HUBSYNC_DEAD_LETTERS_MAX  entries the dead-letter stream keeps (XADD MAXLEN ~); default 100000
    HUBSYNC_CHANGE_RETENTION  seconds acknowledged change entries are kept for replay; default 0
                          (trimmed as soon as every consumer group acknowledged them)
    RAY_ADDRESS           a Ray cluster to join; unset: a local Ray on 127.0.0.1
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from events.connection import redact_url
from events.streams import DEAD_LETTERS_MAX, DEFAULT_PARTITIONS, MAX_ENTRY_BYTES, Keys
from scheduler import DampingPolicy

__all__ = ["Config", "ConfigError"]

SECRET_FIELDS = frozenset({"secret_key"})  # never shown, not even in part
URL_FIELDS = frozenset({"redis_url", "ray_address"})  # shown without a password


class ConfigError(ValueError):
    """A setting has a value hubsync cannot use; the message names it and says what to do."""


@dataclass(frozen=True)
class Config:
    redis_url: str | None
    home: Path
    namespace: str = "hubsync"
    partitions: int = DEFAULT_PARTITIONS
    secret_key: str | None = None
    linger_ms: int = 250
    ray_address: str | None = None
    actor_resource: str | None = None
    max_entry_bytes: int = MAX_ENTRY_BYTES
    dead_letters_max: int = DEAD_LETTERS_MAX
    change_retention_s: float = 0.0
    damping: DampingPolicy | None = field(default_factory=DampingPolicy)
    """Flap damping per contact (README "Flapping contacts"); None: off."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        home = Path(env.get("HUBSYNC_HOME") or Path.home() / ".local" / "share" / "hubsync")
        namespace = env.get("HUBSYNC_NAMESPACE", "hubsync")
        if not namespace or not namespace.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"HUBSYNC_NAMESPACE={namespace!r}: use letters, digits, '-' or '_'")
        return cls(
            redis_url=env.get("HUBSYNC_REDIS_URL") or None,
            home=home,
            namespace=namespace,
            partitions=_positive_int(env, "HUBSYNC_PARTITIONS", DEFAULT_PARTITIONS),
            secret_key=env.get("HUBSYNC_SECRET_KEY") or None,
            linger_ms=_positive_int(env, "HUBSYNC_LINGER_MS", 250),
            ray_address=env.get("RAY_ADDRESS") or None,
            actor_resource=env.get("HUBSYNC_ACTOR_RESOURCE") or None,
            max_entry_bytes=_positive_int(env, "HUBSYNC_MAX_ENTRY_BYTES", MAX_ENTRY_BYTES),
            dead_letters_max=_positive_int(env, "HUBSYNC_DEAD_LETTERS_MAX", DEAD_LETTERS_MAX),
            change_retention_s=_seconds(env, "HUBSYNC_CHANGE_RETENTION", 0.0),
            damping=_damping(env),
        )

    def __repr__(self) -> str:
        """Every setting but the secrets: no key, no Redis password (logs, tracebacks, Ray)."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value and f.name in SECRET_FIELDS:
                value = "<hidden>"
            elif value and f.name in URL_FIELDS:
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Config({', '.join(shown)})"

    __str__ = __repr__

    @property
    def keys(self) -> Keys:
        return Keys(self.namespace)

    def resolve_redis_url(self) -> str:
        """The Redis to use: the configured one, else the embedded one that `hubsync up` runs
        (RedisNotRunning if none runs: only `hubsync up` starts it, see Service)."""
        if self.redis_url:
            return self.redis_url
        from events.redis_server import embedded_redis_url

        return embedded_redis_url(self.home)


def _damping(env: Mapping[str, str]) -> DampingPolicy | None:
    """The flap damping settings; times in milliseconds like HUBSYNC_LINGER_MS."""
    switch = env.get("HUBSYNC_DAMPING", "").strip().lower()
    if switch in ("off", "0", "false", "no"):
        return None
    if switch not in ("", "on", "1", "true", "yes"):
        raise ConfigError(f"HUBSYNC_DAMPING={switch!r}: use 'on' or 'off'")
    d = DampingPolicy()
    values = {
        "settle": _number(env, "HUBSYNC_DAMPING_SETTLE_MS", d.settle * 1000) / 1000,
        "penalty": _number(env, "HUBSYNC_DAMPING_PENALTY", d.penalty),
        "half_life": _number(env, "HUBSYNC_DAMPING_HALF_LIFE_MS", d.half_life * 1000) / 1000,
        "suppress": _number(env, "HUBSYNC_DAMPING_SUPPRESS", d.suppress),
        "reuse": _number(env, "HUBSYNC_DAMPING_REUSE", d.reuse),
        "max_hold": _number(env, "HUBSYNC_DAMPING_MAX_HOLD_MS", d.max_hold * 1000) / 1000,
    }
    try:
        return DampingPolicy(**values)
    except ValueError as exc:
        raise ConfigError(f"HUBSYNC_DAMPING_*: {exc}") from None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={raw!r} must be a finite number >= 0")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds (e.g. 0, 3600)") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={raw!r} must be 0 or a positive number of seconds")
    return value
