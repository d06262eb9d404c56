"""Configuration, read from an environment passed in (never from os.environ deep inside).

Environment variables::

    HUBSYNC_REDIS_URL     Redis to use; unset: hubsync's embedded redis-server in HUBSYNC_HOME
    HUBSYNC_HOME          data directory (embedded Redis, secret key); default ~/.local/share/hubsync
    HUBSYNC_NAMESPACE     prefix of every Redis key; default "hubsync"
    HUBSYNC_PARTITIONS    change-stream partitions, applied at first start only; default 4
    HUBSYNC_SECRET_KEY    key that seals access tokens at rest (urlsafe base64, 32 bytes; AES-GCM
                          via HKDF, bound to the activation); unset (embedded Redis only): one is
                          created in HUBSYNC_HOME/secret.key (mode 0600)
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
    HUBSYNC_API_KEY       the HTTP API's key (read by hubsync.api); unset: HUBSYNC_HOME/api.key
    HUBSYNC_API_ADDRESS   where `hubsync up` serves the API and console, HOST:PORT; 127.0.0.1:8077

Besides the settings, this module owns what every command and the service need to reach their
data: the secret key (`secret_key`) and the Redis connection (`open_redis`, `with_redis`), so
commands depend on configuration, never on each other.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from events.connection import connect, redact_url
from events.redis_server import RedisUnavailable
from events.secrets import load_or_create_key
from events.streams import DEAD_LETTERS_MAX, DEFAULT_PARTITIONS, MAX_ENTRY_BYTES, Keys
from scheduler import DampingPolicy

__all__ = [
    "Config",
    "ConfigError",
    "RedisUnreachable",
    "ensure_reachable",
    "open_redis",
    "redacted",
    "secret_key",
    "with_redis",
]

T = TypeVar("T")

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


def _number(env: Mapping[str, str], name: str, default: float, *, unit: str = "") -> float:
    """A finite number >= 0 from the environment (``unit``: what it counts, for the message)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    what = f"a number{unit}"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {what}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={raw!r} must be {what} >= 0")
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
    return _number(env, name, default, unit=" of seconds (e.g. 0, 3600)")


# --- the secret key and the Redis connection, as every command and the service need them ---


def secret_key(config: Config) -> str:
    """The key that seals tokens: HUBSYNC_SECRET_KEY, or (embedded Redis only) one kept in HUBSYNC_HOME.

    With a shared Redis every machine must use the same key, so a key of this machine's own
    would seal tokens the service cannot open: refuse instead of guessing.
    """
    if config.secret_key:
        return config.secret_key
    if config.redis_url:
        raise ConfigError(
            "HUBSYNC_REDIS_URL is set but HUBSYNC_SECRET_KEY is not: with a shared Redis, set the same "
            'HUBSYNC_SECRET_KEY everywhere hubsync runs (create one with: python -c "from cryptography.fernet '
            'import Fernet; print(Fernet.generate_key().decode())")'
        )
    return load_or_create_key(config.home)


class RedisUnreachable(RedisUnavailable):
    """The configured Redis does not answer; the message names it (never its password)."""


redacted = redact_url  # what may be shown of a Redis URL: no password, no user name


def _unreachable(url: str, exc: BaseException) -> RedisUnreachable:
    reason = str(exc).replace(url, redacted(url)) or type(exc).__name__
    return RedisUnreachable(
        f"cannot reach Redis at {redacted(url)} ({reason.splitlines()[0]}): check that it is "
        "running and that HUBSYNC_REDIS_URL (host, port, password, rediss:// for TLS) is right"
    )


def ensure_reachable(url: str, timeout: float = 5.0) -> None:
    """One PING without retries, so a Redis that is down is reported at once, not after the
    client's ~10 s of retries (a cluster node answers PING too)."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(
        url.replace("+cluster", "", 1), socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        client.ping()
    except (sync_redis.ConnectionError, sync_redis.TimeoutError) as exc:
        raise _unreachable(url, exc) from None
    finally:
        client.close()


def open_redis(config: Config) -> aioredis.Redis:
    """A client for the configured Redis, checked to answer (RedisUnavailable if not)."""
    url = config.resolve_redis_url()
    ensure_reachable(url)
    return connect(url)


def with_redis(config: Config, work: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Run ``work`` with a Redis client; the one place where Redis being down or refusing a
    command becomes RedisUnreachable (one line, shown by the CLI's click group), never a traceback."""
    url = config.redis_url or ""

    async def run() -> T:
        client = open_redis(config)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise _unreachable(url or config.resolve_redis_url(), exc) from None
