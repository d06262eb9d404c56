"""The control plane as state: activations folded from the ``hubsync:activations`` stream.

``decide`` checks an operator's command against the current state and returns the events to
append (or raises CommandRejected saying why); ``evolve`` applies one event. Every process that
needs the activations (supervisor, routers, activation actors, the CLI) folds the same stream.

``execute`` appends only if the stream still ends where the decision was made (a compare-and-
append Lua script on the one control-stream key, so it holds on Redis Cluster too): two
concurrent commands cannot both pass a check that only one of them may pass (a unique name).

Where a token may go is checked three times: at create (``decide``), when the stream is folded
(``evolve`` skips an entry that names a refused base URL) and where the token is opened
(``ActivationSpec.open_token``), so an entry written around the CLI cannot redirect a token.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterable
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis

from crm.plans import DEFAULT_API_VERSION
from crm.tokens import token_fingerprint
from events.model import (
    ActivationCreated,
    ActivationDeleted,
    ActivationPaused,
    ActivationResumed,
    ApiVersion,
    AttributeAdded,
    AttributeRemoved,
    AudienceAdded,
    AudienceRemoved,
    ControlEvent,
    InvalidEvent,
    Mode,
    Plan,
    ResyncRequested,
    TokenResealed,
    decode_control_event,
    encode,
)
from events.ports import EventStream
from events.redis_backend import RedisEventStream
from events.secrets import Sealer, SecretError, is_legacy
from events.streams import EVENT_FIELD, Keys, position

__all__ = [
    "ActivationSpec",
    "Activations",
    "CommandRejected",
    "base_url_problem",
    "new_activation",
]

# Append ARGV[3..] (field ARGV[2]) to KEYS[1] only if nothing was appended after ARGV[1], the
# last entry the decision saw ("0-0": none); else nil. One key, so it runs on one Redis Cluster
# node like any single-key command.
_APPEND_IF_AT = """
if #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', 1) > 0 then return false end
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i]) end
return ids
"""
MAX_ATTEMPTS = 100  # compare-and-append retries before giving up on a stream that keeps moving
LOOPBACK_NAMES = frozenset({"localhost"})


class CommandRejected(ValueError):
    """An operator command that does not fit the current state; the message says why."""


def base_url_problem(url: str) -> str | None:
    """Why a token must not be sent to ``url``, or None: https, or plain http on loopback only.

    A token sent over plain http to another host is a token given away; loopback (127.0.0.0/8,
    ::1, localhost) is where the emulator and tests run.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return f"base URL {url!r} is not a URL"
    if not host:
        return f"base URL {url!r} names no host: use https://host (e.g. https://api.hubapi.com)"
    if parts.username is not None or parts.password is not None:
        return "the base URL must not carry credentials: the token is the only credential sent"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and _is_loopback(host):
        return None
    return (
        f"base URL {url!r} is refused: tokens go only over https:// "
        "(plain http:// only to a loopback address: 127.0.0.1, ::1 or localhost)"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_activation(
    sealer: Sealer,
    *,
    name: str,
    token: str,
    base_url: str = "https://api.hubapi.com",
    api_version: str = DEFAULT_API_VERSION,
    plan: str = "starter",
    mode: str = "upsert",
    audiences: Iterable[str] = (),
    attributes: Iterable[str] = (),
    activation_id: str | None = None,
) -> ActivationCreated:
    """The ``activation_created`` event for a new activation, its token checked and sealed for it.

    The one way in for the CLI and the HTTP API: a bad token (TokenError) or base URL
    (CommandRejected) is refused here with a message that never shows the token.
    """
    base_url = base_url.rstrip("/")
    if problem := base_url_problem(base_url):
        raise CommandRejected(problem)
    activation_id = activation_id or f"act_{uuid.uuid4().hex[:10]}"
    try:
        return msgspec.convert(
            {
                "activation_id": activation_id,
                "name": name,
                "token_sealed": sealer.seal(token, activation_id=activation_id, base_url=base_url),
                "token_fingerprint": token_fingerprint(token),
                "base_url": base_url,
                "api_version": api_version,
                "plan": plan,
                "mode": mode,
                "audiences": tuple(dict.fromkeys(audiences)),
                "attributes": tuple(dict.fromkeys(attributes)),
            },
            ActivationCreated,
        )
    except msgspec.ValidationError as exc:
        raise CommandRejected(f"this activation cannot be created: {exc}") from None


class ActivationSpec(msgspec.Struct, kw_only=True):
    """One activation as the control stream defines it now."""

    activation_id: str
    name: str
    token_sealed: str
    token_fingerprint: str
    base_url: str
    api_version: ApiVersion
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

    def open_token(self, sealer: Sealer) -> str:
        """The clear token, only if it may go to this base URL and was sealed for this activation.

        Raises SecretError saying why not; the governor then stays idle with that problem.
        """
        if problem := base_url_problem(self.base_url):
            raise SecretError(f"activation {self.activation_id!r}: {problem}")
        return sealer.unseal(
            self.token_sealed,
            activation_id=self.activation_id,
            base_url=self.base_url,
            fingerprint=self.token_fingerprint,
        )


class Activations(msgspec.Struct):
    """Every live activation; deleted ones are gone. ``last_id`` is the control position folded."""

    by_id: dict[str, ActivationSpec] = {}
    last_id: str = "0-0"

    def evolve(self, event: ControlEvent, pos: int) -> None:
        spec = self.by_id.get(event.activation_id)
        match event:
            case ActivationCreated() if base_url_problem(event.base_url):
                return  # written around `decide` (forged or edited): never send a token there
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
            case TokenResealed(token_sealed=sealed) if not is_legacy(sealed):
                spec.token_sealed = sealed  # bound to this activation: it opens nowhere else

    async def refresh(self, redis: aioredis.Redis, keys: Keys) -> int:
        """Fold what the control stream on ``redis`` gained since the last refresh; returns how
        many entries (the entry points' way; the cores fold their Storage's stream)."""
        return await self.fold(RedisEventStream(redis, keys.activations))

    async def fold(self, stream: EventStream) -> int:
        """Fold what the control stream gained since the last fold; returns how many entries."""
        seen = 0
        async for entry_id, raw in stream.read_after(self.last_id):
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
                if problem := base_url_problem(event.base_url):
                    raise CommandRejected(problem)
                if is_legacy(event.token_sealed):
                    raise CommandRejected(
                        "a new activation's token must be sealed for it (new_activation does)"
                    )
                self._check_shared_token(event)
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
            case TokenResealed(token_sealed=sealed) if is_legacy(sealed):
                raise CommandRejected("a token can only be resealed in the current format")
            case TokenResealed() if not is_legacy(spec.token_sealed):
                return []
        return [event]

    def _check_shared_token(self, event: ActivationCreated) -> None:
        """Activations sharing a token share one RateGovernor, which uses the first one's
        settings: a second one that differs would silently run with the first one's."""
        for other in self.by_id.values():
            if other.token_fingerprint != event.token_fingerprint:
                continue
            differing = [
                f"{label} {mine!r} (it has {theirs!r})"
                for label, mine, theirs in [
                    ("base URL", event.base_url, other.base_url),
                    ("API version", event.api_version, other.api_version),
                    ("plan", event.plan, other.plan),
                ]
                if mine != theirs
            ]
            if differing:
                raise CommandRejected(
                    f"activation {other.name!r} ({other.activation_id}) already uses this token with "
                    f"other settings: {', '.join(differing)}; activations sharing a token share its "
                    "rate limits and its RateGovernor (which uses the first one's settings), so use the "
                    "same settings (--base-url, --api-version, --plan), or another token"
                )
            return

    async def execute(
        self, redis: aioredis.Redis, keys: Keys, event: ControlEvent
    ) -> list[ControlEvent]:
        """Decide against the latest state, then append only if that state is still the latest
        (else fold what changed and decide again); returns what was appended."""
        for _ in range(MAX_ATTEMPTS):
            await self.refresh(redis, keys)
            decided = self.decide(event)
            if not decided:
                return decided
            appended = await redis.eval(
                _APPEND_IF_AT,
                1,
                keys.activations,
                self.last_id,
                EVENT_FIELD,
                *(encode(e) for e in decided),
            )
            if appended is not None:
                await self.refresh(redis, keys)
                return decided
        raise CommandRejected(
            "the activations changed under this command too many times in a row; try again"
        )
