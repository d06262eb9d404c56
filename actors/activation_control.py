"""An activation's control: what it syncs and how HubSpot's schema follows the CDP.

The ActivationCore (actors/activation.py) is the data path: its inbox, the Coalescer, batches
and their outcomes. This half folds the control and catalog streams and acts on them: which
properties the activation syncs and what each is named in HubSpot (chosen once, kept), making
them exist in HubSpot as currently defined, backfilling an audience or attribute when it is
added (from the projections, on the backfill lane), archiving the property of one the CDP
deleted and making a new one when it is defined again, following pause/resume. Each property
fails alone: one HubSpot refuses is a problem (retried after PROBLEM_RETRY), never a stop.

``State`` is what an activation's snapshot holds besides the Coalescer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from actors.governor_port import CallFailed, GovernorPort, TokenRejected
from crm.properties import (
    PropertySpec,
    ValueFormatError,
    attribute_property,
    audience_property,
    format_value,
)
from events.activations import Activations, ActivationSpec
from events.catalog import Catalog
from events.ports import DeadLetterStore, ProjectionStore, Storage
from events.property_keys import PropertyKey, SourceKind, attribute_key, audience_key
from events.streams import DeadLetter
from scheduler import Clock, Coalescer, Lane

__all__ = ["PROBLEM_RETRY", "ActivationControl", "Backfill", "Counters", "State"]

log = logging.getLogger("hubsync.activation")

PROBLEM_RETRY = 60.0  # seconds before a property with a problem is tried again


class Backfill(msgspec.Struct):
    added_at: int  # position of the control event that asked for it
    total: int = 0
    loaded: bool = False
    started_at: float = 0.0
    finished_at: float | None = None


class Counters(msgspec.Struct):
    changes_in: int = 0
    written: int = 0
    created: int = 0
    parked: int = 0
    not_in_hubspot: int = 0
    calls: int = 0
    day: str = ""
    written_today: int = 0


class State(msgspec.Struct):
    """What a snapshot holds besides the Coalescer."""

    names: dict[str, str] = {}  # property key (a:<id> / t:<id>) -> HubSpot internal name
    backfills: dict[str, Backfill] = {}
    archived: list[str] = []  # keys whose HubSpot property was archived after a CDP deletion
    retired: list[str] = []  # names archived in HubSpot: a key defined again gets a new name
    counters: Counters = msgspec.field(default_factory=Counters)
    inbox_id: str = "0-0"
    resynced_at: int = 0  # the resync_requested position last carried out
    coalescer: bytes = b""


class ActivationControl:
    """The control half of ActivationCore (a base class: both halves share the activation's
    state; the core's constructor sets every attribute declared here)."""

    activation_id: str
    state: State
    coalescer: Coalescer
    spec: ActivationSpec | None
    deleted: bool
    ensured: dict[str, PropertySpec]  # key -> the definition HubSpot is known to hold
    problems: dict[str, str]  # key -> why it cannot sync (e.g. archived in HubSpot)
    schema_ready: bool  # every subscribed property exists in HubSpot (or has a problem)
    timeline: dict[str, float]
    _problem_at: dict[str, float]
    _storage: Storage
    _clock: Clock
    _activations: Activations
    _catalog: Catalog
    _projections: ProjectionStore
    _dead: DeadLetterStore
    _partitions: int
    _work: asyncio.Event
    _refresh_lock: asyncio.Lock
    _dirty: bool

    if TYPE_CHECKING:

        async def checkpoint(self) -> None: ...
        def _governor(self) -> GovernorPort: ...

    def _name(self, key: str) -> str | None:
        """The HubSpot property of a key, chosen once and kept (HubSpot names cannot change)."""
        name = self.state.names.get(key)
        if name is not None:
            return name
        spec = self._property_spec(key)
        if spec is None:
            return None
        self.state.names[key] = spec.name
        return spec.name

    def _property_spec(self, key: str) -> PropertySpec | None:
        kind, cdp_id = PropertyKey.parse(key)
        taken = (set(self.state.names.values()) | set(self.state.retired)) - {
            self.state.names.get(key)
        }
        if kind is SourceKind.AUDIENCE:
            audience = self._catalog.audiences.get(cdp_id)
            if audience is None:
                return None
            spec = audience_property(cdp_id, audience.name, taken)
        else:
            attribute = self._catalog.attributes.get(cdp_id)
            if attribute is None:
                return None
            spec = attribute_property(
                cdp_id, attribute.name, attribute.value_type, attribute.options or (), taken
            )
        known = self.state.names.get(key)
        return spec if known is None else msgspec.structs.replace(spec, name=known)

    async def refresh(self) -> None:
        async with self._refresh_lock:
            await self._activations.fold(self._storage.activations)
            await self._catalog.fold(self._storage.catalog)
        spec = self._activations.by_id.get(self.activation_id)
        if spec is None:
            self.deleted = self.spec is not None or self._activations.last_id != "0-0"
            return
        if self.spec is not None:
            for key in self.spec.subscribes() - spec.subscribes():
                self._unsubscribe(key)
        if self.spec is None or spec.subscribes() - self.spec.subscribes():
            self.schema_ready = False  # a new property: nothing goes out before it exists
        if any(
            key in self.ensured and self.ensured[key] != self._property_spec(key)
            for key in spec.subscribes()
        ):
            self.schema_ready = False  # redefined (new options): values wait for HubSpot to have it
        self.spec = spec
        if not spec.paused:
            self._work.set()

    def _unsubscribe(self, key: str) -> None:
        name = self.state.names.get(key)
        if name is not None:
            self.coalescer.forget_property(name)
        self.state.backfills.pop(key, None)
        self.ensured.pop(key, None)
        self._dirty = True

    async def _reconcile_current(self) -> None:
        if self.spec is not None and not self.deleted:
            await self._reconcile(self.spec)

    def _set_problem(self, key: str, problem: str) -> None:
        """Stop syncing one property until PROBLEM_RETRY has passed; the others go on."""
        self.problems[key] = problem
        self._problem_at[key] = self._clock.now()
        name = self.state.names.get(key)
        if name is not None:
            self.coalescer.forget_property(name)
        self.ensured.pop(key, None)
        # Changes of it are dropped meanwhile: once it works again, a backfill sends them.
        self.state.backfills.pop(key, None)
        self._dirty = True

    def _clear_problem(self, key: str) -> None:
        self.problems.pop(key, None)
        self._problem_at.pop(key, None)

    def _expire_problems(self) -> None:
        """Try again what failed a while ago: someone may have restored the property in HubSpot,
        or HubSpot may take the definition now."""
        now = self._clock.now()
        for key in [k for k, at in self._problem_at.items() if now - at > PROBLEM_RETRY]:
            self._clear_problem(key)

    async def _reconcile(self, spec: ActivationSpec) -> None:
        subscribed = spec.subscribes()
        deleted = {audience_key(a) for a in self._catalog.deleted_audiences} | {
            attribute_key(t) for t in self._catalog.deleted_attributes
        }
        self._expire_problems()
        self._revive(subscribed - deleted)
        # The CDP deleted an audience or attribute: archive its property, stop syncing it.
        for key in sorted((subscribed & deleted) - set(self.state.archived) - set(self.problems)):
            try:
                await self._archive(key)
            except (TokenRejected, CallFailed):
                raise  # the token or HubSpot as a whole: the next round retries
            except Exception as exc:
                self._set_problem(key, f"archiving property {self.state.names.get(key)}: {exc}")
        live = {k for k in subscribed - deleted if self._property_spec(k) is not None}
        resync = spec.resync_at > self.state.resynced_at
        backfills = []
        unmade = {k for k in live if self.ensured.get(k) != self._property_spec(k)}
        for key in sorted(live - set(self.problems)):
            kind, cdp_id = PropertyKey.parse(key)
            added_at = (spec.audiences if kind is SourceKind.AUDIENCE else spec.attributes).get(
                cdp_id
            )
            backfill = self.state.backfills.get(key)
            if added_at is not None and (
                resync or backfill is None or backfill.added_at < added_at or not backfill.loaded
            ):
                backfills.append(self._backfill_alone(key, max(added_at, spec.resync_at), resync))
                if key in unmade:
                    # Its property is (re)made now (defined again, or retried after a problem):
                    # its members must not go out before HubSpot has it.
                    self.schema_ready = False
        self.timeline.setdefault("reconcile", self._clock.now())
        # Members load while HubSpot makes the schema: nothing is sent before `schema_ready`,
        # which only the schema's end sets, and a property HubSpot refuses stops its backfill.
        # Every step ends before this returns, so the next round never loads a backfill twice.
        outcomes = await asyncio.gather(
            self._ensure_schema(live), *backfills, return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if resync:
            self.state.resynced_at = spec.resync_at
            await self.checkpoint()

    async def _ensure_schema(self, live: set[str]) -> None:
        await self._ensure(live)
        self.schema_ready = True
        self.timeline.setdefault("schema_ready", self._clock.now())
        self._work.set()

    async def _backfill_alone(self, key: str, added_at: int, force: bool) -> None:
        """A backfill that fails is a problem of its property alone."""
        if key in self.problems:
            return  # HubSpot refused its property meanwhile: a later round backfills it
        try:
            await self._backfill(key, added_at, force=force)
        except Exception as exc:
            self._set_problem(key, f"backfill of {self.state.names.get(key)}: {exc}")

    def _revive(self, live: set[str]) -> None:
        """An audience or attribute the CDP deleted and then defined again syncs again, under a
        new property: the archived one keeps its name in HubSpot's recycle bin."""
        for key in [k for k in self.state.archived if k in live]:
            self.state.archived.remove(key)
            name = self.state.names.pop(key, None)
            if name is not None and name not in self.state.retired:
                self.state.retired.append(name)
            self.state.backfills.pop(key, None)
            self.ensured.pop(key, None)
            self._clear_problem(key)
            self._dirty = True
            log.info("activation %s: %s defined again, re-creating it", self.activation_id, key)

    async def _archive(self, key: str) -> None:
        name = self.state.names.get(key)
        if name is not None:
            self.coalescer.forget_property(name)
            await self._governor().archive(self.activation_id, name)
        self.state.archived.append(key)
        self.state.backfills.pop(key, None)
        self.ensured.pop(key, None)
        self._dirty = True

    async def _ensure(self, live: set[str]) -> None:
        """Make the properties of ``live`` exist in HubSpot as currently defined: new ones, and
        ones whose definition changed (an enumeration's new options). A property HubSpot
        refuses gets a problem of its own; the others are ensured all the same."""
        specs: dict[str, PropertySpec] = {}
        for key in sorted(live - set(self.problems)):
            spec = self._property_spec(key)
            if spec is not None and self.ensured.get(key) != spec:
                self.state.names.setdefault(key, spec.name)
                specs[key] = spec
        if not specs:
            return
        try:
            problems = await self._governor().ensure_schema(
                self.activation_id, list(specs.values())
            )
        except (TokenRejected, CallFailed):
            raise  # the token or HubSpot as a whole: the next round retries
        except Exception:
            # Something in the batch HubSpot would not take, unnamed: find it, one at a time.
            problems = {}
            for spec in specs.values():
                try:
                    problems.update(
                        await self._governor().ensure_schema(self.activation_id, [spec])
                    )
                except (TokenRejected, CallFailed):
                    raise
                except Exception as exc:
                    problems[spec.name] = f"ensuring property {spec.name}: {exc}"
        for key, spec in specs.items():
            problem = problems.get(spec.name)
            if problem:
                self._set_problem(key, problem)
            else:
                self._clear_problem(key)
                self.ensured[key] = spec

    async def _backfill(self, key: str, added_at: int, *, force: bool = False) -> None:
        """Offer the current members/values from the projections on the backfill lane
        (``force``: even values HubSpot is known to hold, for a resync). It stops, offering
        nothing more, once the backfill is dropped meanwhile (its property got a problem, was
        unsubscribed or archived while the members loaded)."""
        name = self._name(key)
        if name is None:
            return
        kind, cdp_id = PropertyKey.parse(key)
        backfill = Backfill(added_at=added_at, started_at=self._clock.now())
        self.state.backfills[key] = backfill

        def dropped() -> bool:
            return self.state.backfills.get(key) is not backfill

        if kind is SourceKind.AUDIENCE:
            async for page in self._projections.members(cdp_id, self._partitions):
                if dropped():
                    return
                self.coalescer.offer_all(
                    [(m.email, name, "true", m.position) for m in page], Lane.BACKFILL, force=force
                )
                backfill.total += len(page)
                self._work.set()
        else:
            definition = self._catalog.attributes[cdp_id]
            async for rows in self._projections.values(cdp_id, self._partitions):
                if dropped():
                    return
                unusable: list[DeadLetter] = []
                usable: list[tuple[str, str, str, int]] = []
                for row in rows:
                    try:
                        text = format_value(
                            definition.value_type, row.value, options=definition.options
                        )
                    except ValueFormatError as exc:
                        # Valid when it arrived, not under the attribute's new definition: park
                        # this value, backfill the rest.
                        unusable.append(self._unusable_value(key, row.email, row.value, exc))
                        continue
                    usable.append((row.email, name, text, row.position))
                self.coalescer.offer_all(usable, Lane.BACKFILL, force=force)
                await self._dead.park(unusable)
                backfill.total += len(rows) - len(unusable)
                self._work.set()
        if dropped():
            return
        backfill.loaded = True
        self.timeline.setdefault("members_loaded", self._clock.now())
        await self.checkpoint()  # a restart resumes this backfill, it does not start over
        log.info(
            "activation %s: backfill of %s loaded, %d contacts",
            self.activation_id,
            key,
            backfill.total,
        )

    def _unusable_value(
        self, key: str, email: str, value: Any, exc: ValueFormatError
    ) -> DeadLetter:
        attribute_id = PropertyKey.parse(key).cdp_id
        return DeadLetter(
            f"activation:{self.activation_id}",
            "-",
            f"attribute {attribute_id!r} for {email}: {exc} (under its current definition)",
            msgspec.json.encode({"email": email, "attribute_id": attribute_id, "value": value}),
        )
