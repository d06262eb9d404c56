"""The control plane as state: activations folded from the ``hubsync:activations`` stream.

``decide`` checks an operator's command against the current state and returns the events to
append (or raises CommandRejected saying why); ``evolve`` applies one event. Every process that
needs the activations (supervisor, routers, activation actors, the CLI) folds the same stream.
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from events.model import (
    ActivationCreated,
    ActivationDeleted,
    ActivationPaused,
    ActivationResumed,
    AttributeAdded,
    AttributeRemoved,
    AudienceAdded,
    AudienceRemoved,
    ControlEvent,
    InvalidEvent,
    Mode,
    Plan,
    ResyncRequested,
    decode_control_event,
)
from events.streams import Keys, append_control, position, read_after

__all__ = ["ActivationSpec", "Activations", "CommandRejected"]


class CommandRejected(ValueError):
    """An operator command that does not fit the current state; the message says why."""


class ActivationSpec(msgspec.Struct, kw_only=True):
    """One activation as the control stream defines it now."""

    activation_id: str
    name: str
    token_sealed: str
    token_fingerprint: str
    base_url: str
    api_version: str
    plan: Plan
    mode: Mode
    audiences: dict[str, int] = {}  # audience id -> position of the event that added it
    attributes: dict[str, int] = {}
    paused: bool = False
    pause_reason: str = ""
    created_at: int = 0  # position of activation_created
    resync_at: int = 0  # position of the latest resync_requested

    def subscribes(self) -> set[str]:
        """Property keys this activation syncs: ``a:<audience>`` and ``t:<attribute>``."""
        return {f"a:{a}" for a in self.audiences} | {f"t:{t}" for t in self.attributes}


class Activations(msgspec.Struct):
    """Every live activation; deleted ones are gone. ``last_id`` is the control position folded."""

    by_id: dict[str, ActivationSpec] = {}
    last_id: str = "0-0"

    def evolve(self, event: ControlEvent, pos: int) -> None:
        spec = self.by_id.get(event.activation_id)
        match event:
            case ActivationCreated():
                self.by_id[event.activation_id] = ActivationSpec(
                    activation_id=event.activation_id,
                    name=event.name,
                    token_sealed=event.token_sealed,
                    token_fingerprint=event.token_fingerprint,
                    base_url=event.base_url,
                    api_version=event.api_version,
                    plan=event.plan,
                    mode=event.mode,
                    audiences=dict.fromkeys(event.audiences, pos),
                    attributes=dict.fromkeys(event.attributes, pos),
                    created_at=pos,
                )
            case _ if spec is None:
                return  # an event for an activation that does not exist (any more): nothing to do
            case AudienceAdded(audience_id=aid):
                spec.audiences.setdefault(aid, pos)
            case AudienceRemoved(audience_id=aid):
                spec.audiences.pop(aid, None)
            case AttributeAdded(attribute_id=attr):
                spec.attributes.setdefault(attr, pos)
            case AttributeRemoved(attribute_id=attr):
                spec.attributes.pop(attr, None)
            case ActivationPaused(reason=reason):
                spec.paused, spec.pause_reason = True, reason
            case ActivationResumed():
                spec.paused, spec.pause_reason = False, ""
            case ActivationDeleted():
                del self.by_id[event.activation_id]
            case ResyncRequested():
                spec.resync_at = pos

    async def refresh(self, redis: aioredis.Redis, keys: Keys) -> int:
        """Fold what the control stream gained since the last refresh; returns how many entries."""
        seen = 0
        async for entry_id, raw in read_after(redis, keys.activations, self.last_id):
            self.last_id = entry_id
            seen += 1
            try:
                self.evolve(decode_control_event(raw or b""), position(entry_id))
            except InvalidEvent:
                continue  # only hubsync writes here; an entry it cannot read is skipped, not fatal
        return seen

    def find(self, ref: str) -> ActivationSpec:
        """An activation by id, or by name when the name is unique."""
        if ref in self.by_id:
            return self.by_id[ref]
        named = [s for s in self.by_id.values() if s.name == ref]
        if len(named) == 1:
            return named[0]
        if named:
            raise CommandRejected(
                f"several activations are named {ref!r}; use the id ({', '.join(s.activation_id for s in named)})"
            )
        raise CommandRejected(f"no activation {ref!r}; `hubsync activation list` shows them")

    def decide(self, event: ControlEvent) -> list[ControlEvent]:
        """The events a command produces in the current state (no-ops produce none)."""
        match event:
            case ActivationCreated():
                if event.activation_id in self.by_id:
                    raise CommandRejected(f"activation {event.activation_id!r} already exists")
                if any(s.name == event.name for s in self.by_id.values()):
                    raise CommandRejected(
                        f"an activation named {event.name!r} already exists; pick another name"
                    )
                return [event]
        spec = self.find(event.activation_id)
        match event:
            case AudienceAdded(audience_id=aid) if aid in spec.audiences:
                return []
            case AudienceRemoved(audience_id=aid) if aid not in spec.audiences:
                raise CommandRejected(f"activation {spec.name!r} does not sync audience {aid!r}")
            case AttributeAdded(attribute_id=attr) if attr in spec.attributes:
                return []
            case AttributeRemoved(attribute_id=attr) if attr not in spec.attributes:
                raise CommandRejected(f"activation {spec.name!r} does not sync attribute {attr!r}")
            case ActivationPaused() if spec.paused:
                return []
            case ActivationResumed() if not spec.paused:
                return []
        return [event]

    async def execute(
        self, redis: aioredis.Redis, keys: Keys, event: ControlEvent
    ) -> list[ControlEvent]:
        """Decide against the latest state, then append; returns what was appended."""
        await self.refresh(redis, keys)
        decided = self.decide(event)
        for e in decided:
            await append_control(redis, keys, e)
        await self.refresh(redis, keys)
        return decided
