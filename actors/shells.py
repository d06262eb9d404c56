"""The Ray actors: thin shells that give each plain class a Redis connection, a loop and a name.

The logic lives in RouterCore, ActivationCore, GovernorCore and SupervisorCore; a shell only
wires them to Ray (handles to other actors, metrics). A restart reruns the constructor, which
recovers from the log and snapshots, so every shell is safe to kill at any moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
import ray
import redis.asyncio as aioredis

from actors.activation import ActivationCore
from actors.governor import GovernorCore
from actors.governor_port import GovernorPort, Permit
from actors.loops import forever
from actors.messages import WriteReport
from actors.naming import actor_name, options, placed, remote_class
from actors.router import RouterCore
from actors.status import ActivationStatus, GovernorStatus
from actors.supervisor import SupervisorCore
from crm.plans import REQUEST_TIMEOUT_S
from crm.properties import PropertySpec
from events.connection import connect
from events.redis_backend import RedisStorage
from events.streams import DEAD_LETTERS_MAX, MAX_ENTRY_BYTES, Keys
from scheduler import DampingPolicy, Lane

__all__ = [
    "CHECKPOINT_TIMEOUT_S",
    "ActivationActor",
    "RateGovernor",
    "RayGovernor",
    "RouterActor",
    "Settings",
    "SupervisorActor",
    "activation_actor",
    "describe_activation",
    "describe_governor",
    "governor_actor",
    "router_actor",
    "supervisor_actor",
]

log = logging.getLogger("hubsync")

# How long shutdown waits for the activations' last checkpoints before it kills them anyway.
CHECKPOINT_TIMEOUT_S = 10.0
# How long stopping one actor waits for Ray to report it gone after ray.kill.
KILL_WAIT_S = 10.0


class Settings(msgspec.Struct, frozen=True):
    """What every actor needs to find its peers and its data; no secrets."""

    redis_url: str
    namespace: str = "hubsync"
    partitions: int = 4
    linger_ms: int = 250
    actor_resource: str | None = (
        None  # a custom resource only worker nodes offer: keeps actors off the head
    )
    http_timeout_s: float = REQUEST_TIMEOUT_S  # one HubSpot call longer than this: a timeout
    max_entry_bytes: int = MAX_ENTRY_BYTES  # a change entry larger than this is parked unread
    dead_letters_max: int = DEAD_LETTERS_MAX  # the dead-letter stream keeps about this many entries
    change_retention_s: float = 0.0  # acknowledged change entries kept this long (0: trim at once)
    damping: DampingPolicy | None = None  # flap damping per contact; the service passes Config's

    @property
    def keys(self) -> Keys:
        return Keys(self.namespace)

    def __repr__(self) -> str:
        """Without the Redis password: Ray shows an actor's arguments in errors and logs."""
        from events.connection import redact_url

        shown = {name: getattr(self, name) for name in self.__struct_fields__}
        shown["redis_url"] = redact_url(self.redis_url)
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    __str__ = __repr__


def describe_activation(activation_id: str, name: str | None, status: ActivationStatus) -> str:
    """One line for the Ray dashboard's Actors tab (its Repr column) and the actor's log prefix:
    which activation, its state, what is pending and how far its backfill is. Never the token."""
    label = f"{activation_id} {name!r}" if name else activation_id
    parts = [str(status.state), f"{status.pending:,} pending"]
    backfills = status.backfills
    if backfills:
        done = sum(b.done for b in backfills.values())
        total = sum(b.total for b in backfills.values())
        share = f" ({100 * done // total}%)" if total else ""
        parts.append(f"backfill {done:,}/{total:,}{share}")
    return f"ActivationActor({label}: {', '.join(parts)})"


def describe_governor(status: GovernorStatus) -> str:
    """One line for the Actors tab: the token's fingerprint (never the token), calls used in the
    10-second window against its limit, and the daily budget left; why calls wait, if they do."""
    limit = status.window_limit
    used = max(0, limit - status.window_left)
    parts = [f"{used}/{limit} calls in the 10 s window"]
    if status.daily_left is not None:
        parts.append(f"{status.daily_left:,} of {status.daily_limit or 0:,} left today")
    why = status.rejected or status.problem or status.waiting_for
    if why:
        parts.append(why)
    return f"RateGovernor(token {status.fingerprint}: {'; '.join(parts)})"


def _redis(settings: Settings) -> aioredis.Redis:
    return connect(settings.redis_url)


def _storage(settings: Settings, *, dead_letters_max: int = DEAD_LETTERS_MAX) -> RedisStorage:
    return RedisStorage(_redis(settings), settings.keys, dead_letters_max=dead_letters_max)


def _metrics() -> Any:
    from actors.metrics import metrics

    return metrics()


class _Handles:
    """Handles to named actors, created on first use (get_if_exists) and cached."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cache: dict[str, Any] = {}

    def get(self, kind: str, ident: str | int) -> Any:
        name = actor_name(kind, ident)
        handle = self._cache.get(name)
        if handle is None:
            makers: dict[str, Callable[[Settings, Any], Any]] = {  # ident: a partition, or an id
                "router": router_actor,
                "activation": activation_actor,
                "governor": governor_actor,
            }
            make = makers[kind]
            handle = self._cache[name] = make(self._settings, ident)
        return handle

    def forget(self, kind: str, ident: str | int) -> None:
        self._cache.pop(actor_name(kind, ident), None)


class _RayPlacement:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._handles = _Handles(settings)

    def ensure_router(self, partition: int) -> None:
        self._handles.get("router", partition)

    def ensure_activation(self, activation_id: str) -> None:
        self._handles.get("activation", activation_id)

    def ensure_governor(self, fingerprint: str) -> None:
        self._handles.get("governor", fingerprint)

    def running(self, kind: str) -> set[str]:
        prefix = f"{kind}:"
        return {
            a["name"][len(prefix) :]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == self._settings.namespace and a["name"].startswith(prefix)
        }

    async def kill(self, kind: str, ident: str) -> None:
        """Kill the actor without waiting for it to go (shutdown: everything goes at once)."""
        self._handles.forget(kind, ident)
        try:
            handle = await asyncio.to_thread(
                ray.get_actor, actor_name(kind, ident), namespace=self._settings.namespace
            )
        except ValueError:
            return
        await asyncio.to_thread(ray.kill, handle, no_restart=True)

    async def stop(self, kind: str, ident: str) -> None:
        """Kill the actor and wait (bounded) until Ray no longer lists it, so once this returns it
        writes nothing more; Ray's calls are synchronous, so they run off the event loop."""
        self._handles.forget(kind, ident)
        name = actor_name(kind, ident)
        try:
            handle = await asyncio.to_thread(
                ray.get_actor, name, namespace=self._settings.namespace
            )
        except ValueError:
            return
        await asyncio.to_thread(ray.kill, handle, no_restart=True)
        deadline = time.monotonic() + KILL_WAIT_S
        while ident in await asyncio.to_thread(self.running, kind):
            if time.monotonic() > deadline:
                log.warning("%s: still listed %.0fs after ray.kill", name, KILL_WAIT_S)
                return
            await asyncio.sleep(0.1)


def _freeze_start_up_heap() -> None:
    """Leave the objects start-up made (modules, Ray's and hubsync's own) out of the garbage
    collector's full passes from now on (`gc.freeze`).

    A Router or an ActivationActor makes thousands of short-lived objects a step; those alive at
    a young collection are promoted, and every few hundred thousand changes that pushes the
    collector into a full pass, which walked the whole start-up heap each time: a third of a
    Router's CPU during intake (issue 15, section 3). Frozen objects are never collected, so no
    `gc.collect()` first either: the garbage start-up may leave is small, and a collection here
    would delay the actor's start."""
    gc.freeze()


class _Located:
    async def where(self) -> dict[str, Any]:
        """This actor's process and node (for operators and tests)."""
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


class SupervisorActor(_Located):
    def __init__(self, settings: Settings) -> None:
        logging.basicConfig(level=logging.INFO)
        self._settings = settings
        self._placement = _RayPlacement(settings)
        self.core = SupervisorCore(
            _storage(settings), self._placement, partitions=settings.partitions
        )
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self.core.run(stop=lambda: self._stopping)
        )

    def __repr__(self) -> str:
        core = getattr(self, "core", None)
        if core is None:
            return "SupervisorActor(starting)"
        return (
            f"SupervisorActor({core.partitions or '?'} partitions, "
            f"{len(core.activations.by_id)} activations)"
        )

    async def ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Returns once the routers exist (the first reconcile passed)."""
        for _ in range(int(timeout * 10)):
            if (
                self.core.partitions
                and len(self._placement.running("router")) >= self.core.partitions
            ):
                return {
                    "partitions": self.core.partitions,
                    "activations": len(self.core.activations.by_id),
                    "ray_version": ray.__version__,
                }
            await asyncio.sleep(0.1)
        raise TimeoutError("hubsync's routers did not start; see the Ray dashboard's actor logs")

    async def shutdown(self, checkpoint_timeout: float = CHECKPOINT_TIMEOUT_S) -> None:
        """Checkpoint every activation (each within ``checkpoint_timeout``), then stop every actor
        but this one, whether or not it answered: its state is in Redis either way (the inbox
        holds what the last snapshot does not), so a kill loses nothing."""
        self._stopping = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, 2.0)  # no reconcile may start actors from here on
        activations = await asyncio.to_thread(self._placement.running, "activation")
        handles = []
        for activation_id in activations:
            try:
                handles.append(
                    await asyncio.to_thread(
                        ray.get_actor,
                        f"activation:{activation_id}",
                        namespace=self._settings.namespace,
                    )
                )
            except ValueError:
                continue
        if handles:
            stops: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(h.stop.remote()) for h in handles
            ]
            _, late = await asyncio.wait(stops, timeout=checkpoint_timeout)
            for unanswered in late:
                unanswered.cancel()
            if late:
                log.warning(
                    "%d of %d activations did not checkpoint within %.0fs; killing them anyway",
                    len(late),
                    len(handles),
                    checkpoint_timeout,
                )
        for kind in ("router", "activation", "governor"):
            for ident in await asyncio.to_thread(self._placement.running, kind):
                await self._placement.kill(kind, ident)


class RouterActor(_Located):
    def __init__(self, settings: Settings, partition: int) -> None:
        logging.basicConfig(level=logging.INFO)
        self.core = RouterCore(
            _storage(settings, dead_letters_max=settings.dead_letters_max),
            partition,
            partitions=settings.partitions,
            max_entry_bytes=settings.max_entry_bytes,
            change_retention_s=settings.change_retention_s,
        )
        self._tag = {"partition": str(partition)}
        _freeze_start_up_heap()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        started = False

        async def step() -> None:
            nonlocal started
            if not started:  # at first, and after any failure: read the group and catalog again
                await self.core.start()
                started = True
            before = self.core.stats.dead
            n = await self.core.step()
            if n:
                _metrics().events_in.inc(n, tags=self._tag)
                if self.core.stats.dead > before:
                    _metrics().dead_letters.inc(self.core.stats.dead - before, tags=self._tag)

        def failed(what: str, exc: Exception) -> None:
            nonlocal started
            started = False

        await forever(
            f"router {self.core.partition}: step", step, log=log, cap=5.0, on_error=failed
        )

    def __repr__(self) -> str:
        core = getattr(self, "core", None)
        if core is None:
            return "RouterActor(starting)"
        st = core.stats
        return (
            f"RouterActor(partition {core.partition}: {st.events_in:,} events in, "
            f"{st.routed:,} routed, {st.dead:,} dead letters)"
        )

    async def stats(self) -> dict[str, Any]:
        s = self.core.stats
        return {
            "events_in": s.events_in,
            "routed": s.routed,
            "dead": s.dead,
            "last_position": s.last_position,
        }


class RayGovernor:
    """The GovernorPort over a RateGovernor actor's handle: what an ActivationCore (or the API)
    holds of its token's governor in production."""

    def __init__(self, handle: Any) -> None:
        self._h = handle

    async def turn(self, activation_id: str, lane: Lane) -> Permit:
        permit: Permit = await self._h.turn.remote(activation_id, lane)
        return permit

    async def release(self, permit: Permit) -> None:
        await self._h.release.remote(permit)

    async def upsert(
        self,
        activation_id: str,
        lane: Lane,
        contacts: list[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        report: WriteReport = await self._h.upsert.remote(activation_id, lane, contacts, permit)
        return report

    async def update(
        self,
        activation_id: str,
        lane: Lane,
        records: list[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        report: WriteReport = await self._h.update.remote(activation_id, lane, records, permit)
        return report

    async def read_ids(
        self, activation_id: str, lane: Lane, emails: list[str], permit: Permit | None = None
    ) -> dict[str, str]:
        ids: dict[str, str] = await self._h.read_ids.remote(activation_id, lane, emails, permit)
        return ids

    async def read_contact(
        self, activation_id: str, email: str, properties: list[str]
    ) -> dict[str, str | None] | None:
        found: dict[str, str | None] | None = await self._h.read_contact.remote(
            activation_id, email, properties
        )
        return found

    async def ensure_schema(self, activation_id: str, specs: list[PropertySpec]) -> dict[str, str]:
        problems: dict[str, str] = await self._h.ensure_schema.remote(activation_id, specs)
        return problems

    async def archive(self, activation_id: str, name: str) -> bool:
        archived: bool = await self._h.archive.remote(activation_id, name)
        return archived


class ActivationActor(_Located):
    def __init__(self, settings: Settings, activation_id: str) -> None:
        logging.basicConfig(level=logging.INFO)
        self._handles = _Handles(settings)
        self._tag = {"activation": activation_id}
        self.core = ActivationCore(
            _storage(settings),
            activation_id,
            lambda fingerprint: RayGovernor(self._handles.get("governor", fingerprint)),
            linger=settings.linger_ms / 1000,
            damping=settings.damping,
            on_written=self._written,
        )
        _freeze_start_up_heap()
        self.core.start()
        self._seen = {"changes_in": 0, "coalesced": 0}
        self._task = asyncio.get_running_loop().create_task(self._export())

    def _written(self, contacts: int, lag: float | None) -> None:
        m = _metrics()
        m.written.inc(contacts, tags=self._tag)
        if lag is not None:
            m.lag.observe(lag, tags=self._tag)

    async def _export(self) -> None:
        async def step() -> None:
            s = self.core.status()
            m = _metrics()
            for field, value, counter in (
                ("changes_in", s.changes_in, m.changes_received),
                ("coalesced", s.coalesced, m.coalesced),
            ):
                if value > self._seen[field]:
                    counter.inc(value - self._seen[field], tags=self._tag)
                self._seen[field] = value
            m.pending.set(s.pending_realtime, tags={**self._tag, "lane": "realtime"})
            m.pending.set(s.pending_backfill, tags={**self._tag, "lane": "backfill"})
            for key, b in s.backfills.items():
                m.backfill_done.set(b.done, tags={**self._tag, "property": key})
                m.backfill_total.set(b.total, tags={**self._tag, "property": key})

        what = f"activation {self.core.activation_id}: metrics export"
        await forever(what, step, log=log, pause=1.0)

    def __repr__(self) -> str:
        core = getattr(self, "core", None)
        if core is None:
            return "ActivationActor(starting)"
        try:
            name = core.spec.name if core.spec else None
            return describe_activation(core.activation_id, name, core.status())
        except Exception:  # a repr must never raise (Ray calls it for logs and the dashboard)
            return f"ActivationActor({core.activation_id})"

    async def describe(self) -> str:
        """What the Actors tab's Repr column says, now (Ray records it when the actor starts)."""
        return repr(self)

    async def status(self) -> dict[str, Any]:
        """The status as published (JSON-like builtins: what crosses to a caller in another
        process without it importing this module's types)."""
        return msgspec.to_builtins(self.core.status())

    async def checkpoint(self) -> None:
        await self.core.checkpoint()

    async def stop(self) -> None:
        await self.core.stop()


class RateGovernor(_Located):
    def __init__(self, settings: Settings, fingerprint: str) -> None:
        logging.basicConfig(level=logging.INFO)
        from actors.metrics import RayCallMetrics

        self.core = GovernorCore(
            _storage(settings),
            fingerprint,
            # Read here, in the actor's process: never an actor constructor argument (Ray shows
            # those in its dashboard).
            secret_key=os.environ.get("HUBSYNC_SECRET_KEY"),
            metrics=RayCallMetrics(fingerprint),
            http_timeout=settings.http_timeout_s,
        )
        self.core.start()
        self._tag = {"token": fingerprint}
        self._task = asyncio.get_running_loop().create_task(self._housekeeping())

    async def _housekeeping(self) -> None:
        async def step() -> None:
            await self.core.refresh()
            await self.core.publish_status()
            s = self.core.status()
            _metrics().window_left.set(s.window_left, tags=self._tag)
            if s.daily_left is not None:
                _metrics().daily_left.set(s.daily_left, tags=self._tag)

        await forever(f"governor {self.core.fingerprint}: housekeeping", step, log=log, pause=1.0)

    def __repr__(self) -> str:
        core = getattr(self, "core", None)
        if core is None:
            return "RateGovernor(starting)"
        try:
            return describe_governor(core.status())
        except Exception:  # a repr must never raise
            return f"RateGovernor(token {core.fingerprint})"

    async def describe(self) -> str:
        """What the Actors tab's Repr column says, now."""
        return repr(self)

    # The GovernorPort, served to RayGovernor (actors.governor_port documents each call).

    async def turn(self, activation_id: str, lane: Lane) -> Permit:
        return await self.core.turn(activation_id, lane)

    async def release(self, permit: Permit) -> None:
        await self.core.release(permit)

    async def upsert(
        self,
        activation_id: str,
        lane: Lane,
        contacts: list[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        return await self.core.upsert(activation_id, lane, contacts, permit)

    async def update(
        self,
        activation_id: str,
        lane: Lane,
        records: list[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        return await self.core.update(activation_id, lane, records, permit)

    async def read_ids(
        self, activation_id: str, lane: Lane, emails: list[str], permit: Permit | None = None
    ) -> dict[str, str]:
        return await self.core.read_ids(activation_id, lane, emails, permit)

    async def read_contact(
        self, activation_id: str, email: str, properties: list[str]
    ) -> dict[str, str | None] | None:
        return await self.core.read_contact(activation_id, email, properties)

    async def ensure_schema(self, activation_id: str, specs: list[PropertySpec]) -> dict[str, str]:
        return await self.core.ensure_schema(activation_id, specs)

    async def archive(self, activation_id: str, name: str) -> bool:
        return await self.core.archive(activation_id, name)

    async def status(self) -> dict[str, Any]:
        """The status as published (JSON-like builtins: what crosses to a caller in another
        process without it importing this module's types)."""
        return msgspec.to_builtins(self.core.status())


# --- making the actors: named, detached, restarting, placed (options from actors.naming) --------


def supervisor_actor(settings: Settings) -> Any:
    # Small, and found first by every command: it may sit on the head node.
    opts = options("supervisor", settings.namespace, scheduling_strategy="DEFAULT")
    return remote_class(SupervisorActor).options(**opts).remote(settings)


def router_actor(settings: Settings, partition: int) -> Any:
    opts = placed(actor_name("router", partition), settings.namespace, settings.actor_resource)
    return remote_class(RouterActor).options(**opts).remote(settings, partition)


def activation_actor(settings: Settings, activation_id: str) -> Any:
    name = actor_name("activation", activation_id)
    opts = placed(name, settings.namespace, settings.actor_resource)
    return remote_class(ActivationActor).options(**opts).remote(settings, activation_id)


def governor_actor(settings: Settings, fingerprint: str) -> Any:
    opts = placed(actor_name("governor", fingerprint), settings.namespace, settings.actor_resource)
    return remote_class(RateGovernor).options(**opts).remote(settings, fingerprint)


_: type[GovernorPort] = RayGovernor  # mypy: the Ray adapter implements the one GovernorPort
