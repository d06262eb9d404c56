"""One tenant never slows another: with one ActivationActor frozen (SIGSTOP: a long GC pause, a
partitioned node), the other activations on the same audience keep getting their changes within
seconds, and the frozen one's changes wait in its inbox and all arrive, in order, once it is back.
Also: its inbox stays bounded while it works (checkpoints trim it), even with a property HubSpot
refuses."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from crm.emulator import EmulatorServer
from crm.tokens import token_fingerprint
from events.model import (
    ActivationCreated,
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
)
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration

DELIVERY = 5.0  # "about a second", with room for a loaded 2-core machine

Expected = dict[str, dict[str, str]]


@pytest.fixture
def other_account() -> Iterator[EmulatorServer]:
    """A second HubSpot account, so each activation's result can be read on its own."""
    with EmulatorServer() as server:
        yield server


def wave(tag: str, contacts: int, attributes: tuple[str, ...]) -> tuple[list[CdpEvent], Expected]:
    """Enters, leaves and values for fresh contacts, and what HubSpot must hold after them."""
    rng = random.Random(tag)
    events: list[CdpEvent] = []
    expected: Expected = {}
    for i in range(contacts):
        email = f"{tag}{i}@example.com"
        props = expected.setdefault(email, {})
        for _ in range(1 + i % 3):  # flips: the last one wins
            entered = rng.random() < 0.5
            events.append(
                (AudienceEntered if entered else AudienceLeft)(audience_id="shared", email=email)
            )
            props["raptor_shared"] = "true" if entered else "false"
        for attribute in attributes:
            value = rng.randrange(1000)
            events.append(AttributeChanged(attribute_id=attribute, email=email, value=value))
            props[f"raptor_{attribute}"] = str(value)
    return events, expected


def holds(emulator: EmulatorServer, expected: Expected, props: tuple[str, ...]) -> bool:
    hubspot = emulator.admin.contact_properties()
    return all(
        hubspot.get(email, {}).get(p) == values[p]
        for email, values in expected.items()
        for p in props
        if p in values
    )


def holds_none(emulator: EmulatorServer, expected: Expected, props: tuple[str, ...]) -> bool:
    hubspot = emulator.admin.contact_properties()
    return not any(p in hubspot.get(email, {}) for email in expected for p in props)


async def create_on(
    hubsync: Hubsync, emulator: EmulatorServer, token: str, attributes: tuple[str, ...]
) -> str:
    activation_id = f"act{uuid.uuid4().hex[:8]}"
    await hubsync.control(
        ActivationCreated(
            activation_id=activation_id,
            name=activation_id,
            token_sealed=hubsync.sealer.seal(
                token, activation_id=activation_id, base_url=emulator.url
            ),
            token_fingerprint=token_fingerprint(token),
            base_url=emulator.url,
            audiences=("shared",),
            attributes=attributes,
        )
    )
    return activation_id


@pytest.mark.parametrize("accounts", ["two tokens, two accounts", "one token, one account"])
async def test_a_frozen_activation_delays_no_other_and_loses_nothing(
    hubsync: Hubsync, other_account: EmulatorServer, accounts: str
) -> None:
    same = accounts.startswith("one")
    # Same token: one account, so each activation gets an attribute of its own to tell them
    # apart (the audience is written by both). Two tokens: each account holds one activation's.
    live_attrs, frozen_attrs = (("live_score",), ("frozen_score",)) if same else (("score",),) * 2
    await hubsync.publish(
        [AudienceDefined(audience_id="shared", name="Shared")]
        + [
            AttributeDefined(attribute_id=a, name=a, value_type="number")
            for a in {*live_attrs, *frozen_attrs}
        ]
    )
    live_hubspot = hubsync.emulator
    frozen_hubspot = hubsync.emulator if same else other_account
    await create_on(hubsync, live_hubspot, "pat-one" if same else "pat-live", live_attrs)
    frozen = await create_on(
        hubsync, frozen_hubspot, "pat-one" if same else "pat-frozen", frozen_attrs
    )
    attributes = tuple(sorted({*live_attrs, *frozen_attrs}))
    live_props = (*(f"raptor_{a}" for a in live_attrs), "raptor_shared")
    frozen_own = (
        *(f"raptor_{a}" for a in frozen_attrs),
        *(() if same else ("raptor_shared",)),
    )

    # Both up and in step before the freeze.
    events, warm = wave("warm", 20, attributes)
    await hubsync.publish(events)
    await hubsync.until(
        lambda: holds(live_hubspot, warm, live_props) and holds(frozen_hubspot, warm, frozen_own),
        timeout=60,
        what="both activations in step",
    )
    where: dict[str, Any] = await (await hubsync.wait_actor("activation", frozen)).where.remote()
    os.kill(where["pid"], signal.SIGSTOP)
    try:
        waves: list[Expected] = []
        for tag in ("first", "second"):
            events, expected = wave(tag, 100, attributes)
            waves.append(expected)
            published = time.monotonic()
            await hubsync.publish(events)
            await hubsync.until(
                lambda expected=expected: holds(live_hubspot, expected, live_props),
                timeout=DELIVERY,
                every=0.1,
                what=f"the {tag} wave for the activation that is not frozen",
            )
            print(f"{accounts}: {tag} wave in HubSpot {time.monotonic() - published:.2f}s")
            assert holds_none(frozen_hubspot, expected, frozen_own), "the frozen actor wrote"
        inbox = hubsync.keys.inbox(frozen)
        assert await hubsync.redis.xlen(inbox) >= 2  # its changes wait in its inbox
    finally:
        os.kill(where["pid"], signal.SIGCONT)
    for expected in waves:
        await hubsync.until(
            lambda expected=expected: holds(frozen_hubspot, expected, frozen_own),
            timeout=60,
            what="every change of the frozen activation, once it is back",
        )
        assert holds(live_hubspot, expected, live_props)


async def test_the_inbox_stays_bounded_while_a_property_hubspot_refuses_fails(
    hubsync: Hubsync,
) -> None:
    hubsync.emulator.admin.configure(max_property_name_length=30)
    await hubsync.publish(
        [
            AudienceDefined(audience_id="shared", name="Shared"),
            AttributeDefined(
                attribute_id="refused",
                name="a name far too long for this HubSpot account",
                value_type="number",
            ),
        ]
    )
    activation = await hubsync.create_activation(
        "pat-steady", audiences=["shared"], attributes=["refused"]
    )
    inbox = hubsync.keys.inbox(activation)
    events, expected = wave("warm", 10, ("refused",))
    await hubsync.publish(events)
    await hubsync.until(
        lambda: holds(hubsync.emulator, expected, ("raptor_shared",)),
        timeout=60,
        what="the activation up (and the refused attribute not in its way)",
    )
    lengths: list[int] = []
    early: bytes | None = None  # an inbox entry seen early on: trimming must remove it
    for step in range(40):  # ~20 s of steady traffic: several checkpoints' worth
        events, wanted = wave(f"s{step}x", 10, ("refused",))
        expected.update(wanted)
        await hubsync.publish(events)
        lengths.append(await hubsync.redis.xlen(inbox))
        if early is None and (first := await hubsync.redis.xrange(inbox, count=1)):
            early = first[0][0]
        await asyncio.sleep(0.5)
    await hubsync.until(
        lambda: holds(hubsync.emulator, expected, ("raptor_shared",)),
        timeout=60,
        what="the audience in step beside the refused attribute",
    )
    status = await hubsync.actor("activation", activation).status.remote()
    assert "t:refused" in status["problems"], status
    # ~2 entries appended per step (one per partition); checkpoints every ~5 s trim what the
    # snapshot covers, so the inbox holds a few seconds' worth, not everything appended.
    print(f"inbox lengths seen {lengths}")
    assert early is not None and max(lengths) <= 60, lengths
    # trimmed while the traffic flowed (Redis 6.2 has no entries-added to count appends with)
    assert not await hubsync.redis.xrange(inbox, min=early, max=early), "never trimmed"
    deadline = time.monotonic() + 30
    while await hubsync.redis.xlen(inbox) > 2:
        assert time.monotonic() < deadline, "the inbox was not trimmed once the traffic stopped"
        await asyncio.sleep(0.5)


async def test_an_activation_restarting_delays_no_other_and_loses_nothing(
    hubsync: Hubsync, other_account: EmulatorServer
) -> None:
    """The recovering variant: one ActivationActor's process is killed (Ray restarts it, and it
    recovers from its snapshot and inbox) just as two waves are published."""
    await hubsync.publish(
        [
            AudienceDefined(audience_id="shared", name="Shared"),
            AttributeDefined(attribute_id="score", name="score", value_type="number"),
        ]
    )
    await create_on(hubsync, hubsync.emulator, "pat-steady", ("score",))
    restarting = await create_on(hubsync, other_account, "pat-restart", ("score",))
    props = ("raptor_shared", "raptor_score")
    events, warm = wave("warm", 20, ("score",))
    await hubsync.publish(events)
    await hubsync.until(
        lambda: holds(hubsync.emulator, warm, props) and holds(other_account, warm, props),
        timeout=60,
        what="both activations in step",
    )
    where: dict[str, Any] = await (
        await hubsync.wait_actor("activation", restarting)
    ).where.remote()
    os.kill(where["pid"], signal.SIGKILL)
    waves: list[Expected] = []
    for tag in ("first", "second"):
        events, expected = wave(tag, 100, ("score",))
        waves.append(expected)
        await hubsync.publish(events)
        await hubsync.until(
            lambda expected=expected: holds(hubsync.emulator, expected, props),
            timeout=DELIVERY,
            every=0.1,
            what=f"the {tag} wave for the activation that is not restarting",
        )
    for expected in waves:
        await hubsync.until(
            lambda expected=expected: holds(other_account, expected, props),
            timeout=60,
            what="every change of the restarted activation",
        )
