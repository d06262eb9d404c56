"""`hubsync demo`: the whole system on this machine, end to end, with nothing else installed.

It starts a private Redis, the HubSpot emulator and a local Ray (all on 127.0.0.1), defines an
audience "Abandon Basket" and a few calculated attributes, publishes part of a realistic history
before creating the activation (so it is backfilled) and the rest after (realtime, with contacts
flipping in and out), shows progress, and then prints what HubSpot holds and whether it matches
what the CDP said, computed independently from the published events.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from crm.tokens import token_fingerprint
from events.activations import Activations
from events.connection import connect
from events.model import (
    ActivationCreated,
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
)
from events.secrets import Sealer
from events.streams import Publisher, group_backlog
from hubsync.api import ApiServer
from hubsync.config import ConfigError, secret_key
from hubsync.progress import progress_bars
from hubsync.stack import LocalStack

__all__ = ["run_demo"]

CATEGORIES = ["shoes", "outdoor", "kitchen", "books"]
DEFINITIONS: list[CdpEvent] = [
    AudienceDefined(audience_id="abandon_basket", name="Abandon Basket"),
    AttributeDefined(attribute_id="ltv", name="Lifetime value", value_type="number"),
    AttributeDefined(
        attribute_id="category",
        name="Preferred category",
        value_type="enumeration",
        options=CATEGORIES,
    ),
    AttributeDefined(attribute_id="last_order", name="Last order date", value_type="date"),
    AttributeDefined(attribute_id="vip", name="VIP", value_type="bool"),
]
PROPERTY = {
    "abandon_basket": "raptor_abandon_basket",
    "ltv": "raptor_lifetime_value",
    "category": "raptor_preferred_category",
    "last_order": "raptor_last_order_date",
    "vip": "raptor_vip",
}


class Story:
    """The CDP's history for the demo, and what HubSpot must hold once it is synced."""

    def __init__(self, contacts: int, seed: int = 2026) -> None:
        rng = random.Random(seed)
        self.expected: dict[str, dict[str, str]] = {}
        self.before: list[CdpEvent] = []  # happened before the activation existed: backfilled
        self.after: list[CdpEvent] = []  # happens while it runs: realtime
        emails = [
            f"{name}.{i}@example.com"
            for i, name in enumerate(
                rng.choices(["ada", "grace", "alan", "edsger", "barbara", "ken"], k=contacts)
            )
        ]
        for email in emails:
            ltv = round(rng.uniform(10, 5000), 2)
            self._attr(
                self.before, email, "ltv", ltv, f"{ltv:g}" if ltv != int(ltv) else str(int(ltv))
            )
            category = rng.choice(CATEGORIES)
            self._attr(self.before, email, "category", category, category)
            day = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}"
            self._attr(self.before, email, "last_order", day, day)
            vip = ltv > 4000
            self._attr(self.before, email, "vip", vip, "true" if vip else "false")
        for email in emails[: contacts * 2 // 3]:
            self._member(self.before, email, True)
        for i, email in enumerate(emails):
            roll = rng.random()
            if roll < 0.15:  # left the audience (they bought after all)
                self._member(self.after, email, False)
            elif roll < 0.30:  # flipping in and out while they browse
                for f in range(rng.randint(3, 8)):
                    self._member(self.after, email, f % 2 == 0)
            elif roll < 0.40:  # newly abandoning a basket
                self._member(self.after, email, True)
            if i % 5 == 0:  # a new order changes their value
                ltv = round(rng.uniform(10, 5000), 2)
                self._attr(
                    self.after, email, "ltv", ltv, f"{ltv:g}" if ltv != int(ltv) else str(int(ltv))
                )

    def _member(self, into: list[CdpEvent], email: str, entered: bool) -> None:
        into.append(
            (AudienceEntered if entered else AudienceLeft)(
                audience_id="abandon_basket", email=email
            )
        )
        self.expected.setdefault(email, {})[PROPERTY["abandon_basket"]] = (
            "true" if entered else "false"
        )

    def _attr(
        self, into: list[CdpEvent], email: str, attribute: str, value: Any, text: str
    ) -> None:
        into.append(AttributeChanged(attribute_id=attribute, email=email, value=value))
        self.expected.setdefault(email, {})[PROPERTY[attribute]] = text

    def differences(self, hubspot: dict[str, dict[str, str]]) -> int:
        return sum(
            1
            for email, props in self.expected.items()
            for prop, value in props.items()
            if hubspot.get(email, {}).get(prop) != value
        )


def run_demo(
    *,
    contacts: int = 8_000,
    keep_running: bool = False,
    console: Console | None = None,
    wait: Callable[[], None] | None = None,
) -> int:
    console = console or Console()
    started = time.monotonic()
    with console.status("starting Redis, the HubSpot emulator and Ray on 127.0.0.1 ...") as spinner:
        stack = LocalStack(dashboard=keep_running, partitions=4)
        stack.__enter__()
        spinner.update("running")
    try:
        assert stack.config is not None and stack.service is not None
        console.print(
            f"[green]✓[/] up in {time.monotonic() - started:.1f}s: Redis {stack.config.redis_url}, "
            f"HubSpot emulator {stack.emulator.url}"
            + (
                f", Ray dashboard {stack.service.dashboard_url}"
                if stack.service.dashboard_url
                else ""
            )
        )
        story = Story(contacts)
        ok = asyncio.run(_play(stack, story, console))
        if keep_running:
            api = _console(stack, console)
            console.print("\n[bold]--keep-running[/]: everything stays up; press Ctrl-C to stop.")
            try:
                (wait or _forever)()
            except KeyboardInterrupt:
                pass
            finally:
                api.stop()
        return 0 if ok else 1
    finally:
        with console.status("stopping ..."):
            stack.stop()
        console.print(
            f"[green]✓[/] stopped; nothing left running ({time.monotonic() - started:.0f}s in all)"
        )


def _console(stack: LocalStack, console: Console) -> ApiServer:
    """Serve the API and console over the demo's data; say where, and how to get the key."""
    assert stack.config is not None
    try:
        api = ApiServer.from_config(stack.config, environ=os.environ)
    except ConfigError as exc:  # 8077 taken (a `hubsync up` running?): any free port will do
        console.print(f"[yellow]![/] {exc}; using a free port instead")
        api = ApiServer.from_config(stack.config, environ=os.environ, port=0)
    api.start()
    key_hint = (
        "the key is in HUBSYNC_API_KEY"
        if os.environ.get("HUBSYNC_API_KEY")
        else f"get the key with: HUBSYNC_HOME={stack.home} hubsync api-key"
    )
    console.print(
        f"[green]✓[/] console: {api.url}/ (sign in with the API key; {key_hint})",
        soft_wrap=True,
        highlight=False,
    )
    return api


def _forever() -> None:
    while True:
        time.sleep(3600)


async def _play(stack: LocalStack, story: Story, console: Console) -> bool:
    config = stack.config
    assert config is not None
    redis = connect(config.resolve_redis_url())
    admin = stack.emulator.admin
    publisher = Publisher(redis, config.keys, config.partitions)
    try:
        await publisher.publish(DEFINITIONS)
        await publisher.publish(story.before)
        console.print(
            f"[green]✓[/] the CDP defined 1 audience and 4 calculated attributes and published "
            f"{len(story.before):,} events of history for {len(story.expected):,} contacts"
        )
        token = f"pat-demo-{secrets.token_hex(8)}"
        activation_id = "demo"
        await _wait_projected(redis, config)
        await Activations().execute(
            redis,
            config.keys,
            ActivationCreated(
                activation_id=activation_id,
                name="Demo: Abandon Basket to HubSpot",
                token_sealed=Sealer(secret_key(config)).seal(
                    token, activation_id=activation_id, base_url=stack.emulator.url
                ),
                token_fingerprint=token_fingerprint(token),
                base_url=stack.emulator.url,
                plan="starter",
                audiences=("abandon_basket",),
                attributes=("ltv", "category", "last_order", "vip"),
            ),
        )
        console.print(
            f"[green]✓[/] activation [bold]{activation_id}[/] created (starter plan: 100 calls per 10 s; "
            f"token {token_fingerprint(token)}…): backfilling, then live"
        )
        await publisher.publish(story.after)
        console.print(
            f"[green]✓[/] published {len(story.after):,} live events (contacts leaving, entering, "
            "flipping back and forth; new orders)"
        )
        events_in = len(DEFINITIONS) + len(story.before) + len(story.after)
        synced_at = await _progress(redis, config, admin, story, console, activation_id)
        await _report(redis, config, admin, story, console, activation_id, events_in, synced_at)
        return synced_at is not None
    finally:
        await redis.aclose()


async def _wait_projected(redis: aioredis.Redis, config: Any) -> None:
    from events.projections import Projections

    projections = Projections(redis, config.keys)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        positions = [await projections.position(p) for p in range(config.partitions)]
        if all(positions):
            # Every entry the demo wrote is read and acknowledged (the Routers trim what they
            # acknowledge, so XLEN says nothing; Redis 6.2 has no entries-added or lag).
            backlog = [
                await group_backlog(redis, config.keys.changes(p), "routers")
                for p in range(config.partitions)
            ]
            if not any(backlog):
                return
        await asyncio.sleep(0.2)


async def _progress(
    redis: aioredis.Redis,
    config: Any,
    admin: Any,
    story: Story,
    console: Console,
    activation_id: str,
) -> float | None:
    from hubsync.views import read_status

    total = sum(len(p) for p in story.expected.values())
    start = time.monotonic()
    with progress_bars(console, details="{task.fields[info]}", clock="elapsed") as progress:
        task = progress.add_task("HubSpot in step", total=total, info="")
        while time.monotonic() - start < 100:
            hubspot = await asyncio.to_thread(admin.contact_properties)
            wrong = story.differences(hubspot)
            stats = await asyncio.to_thread(admin.stats)
            status = await read_status(redis, config.keys, activation_id) or {}
            progress.update(
                task,
                completed=total - wrong,
                info=(
                    f"calls {stats['requests']}  429s {stats['rate_limited']}  pending {status.get('pending', '-')}"
                ),
            )
            if wrong == 0 and status.get("pending") == 0:
                return time.monotonic() - start
            await asyncio.sleep(0.5)
    console.print("[red]✗[/] HubSpot did not come in step within 100 s; see `hubsync status`")
    return None


async def _report(
    redis: aioredis.Redis,
    config: Any,
    admin: Any,
    story: Story,
    console: Console,
    activation_id: str,
    events_in: int,
    synced_at: float | None,
) -> None:
    from hubsync.views import read_status

    status = await read_status(redis, config.keys, activation_id) or {}
    stats = admin.stats()
    catalog = admin.properties()
    group = next((g for g in catalog["groups"] if g["name"] == "raptor_smart_advisor_cdp"), None)
    console.print()
    console.print(
        f"[bold]HubSpot now holds[/] the property group [bold]{group['label'] if group else '(missing!)'}[/]"
        f" ({group['name'] if group else ''}):"
    )
    props = Table("property", "label", "type", "fieldType")
    for p in catalog["properties"]:
        if p.get("groupName") == "raptor_smart_advisor_cdp" and not p.get("archived"):
            props.add_row(p["name"], p["label"], p["type"], p["fieldType"])
    console.print(props)
    hubspot = admin.contact_properties()
    sample = [e for e, p in sorted(hubspot.items()) if p.get("raptor_abandon_basket") == "true"][:5]
    contacts = Table(
        "email",
        *(p.removeprefix("raptor_") for p in PROPERTY.values()),
        title="sample contacts with raptor_abandon_basket = true (raptor_ prefix left out)",
    )
    for email in sample:
        contacts.add_row(email, *(hubspot[email].get(p, "") for p in PROPERTY.values()))
    console.print(contacts)
    in_basket = sum(1 for p in hubspot.values() if p.get("raptor_abandon_basket") == "true")
    figures = Table("figure", "value", title="the figures that matter")
    figures.add_row("CDP events in", f"{events_in:,}")
    figures.add_row("changes routed to the activation", f"{status.get('changes_in', 0):,}")
    figures.add_row("changes coalesced away (flips, repeats)", f"{status.get('coalesced', 0):,}")
    figures.add_row("HubSpot calls made", f"{stats['requests']:,}")
    figures.add_row("contact writes HubSpot accepted", f"{status.get('written', 0):,}")
    figures.add_row("contacts in HubSpot / in the audience", f"{len(hubspot):,} / {in_basket:,}")
    figures.add_row(
        "most calls in any 10 s window (limit 100)", str(stats["max_calls_in_any_window"])
    )
    figures.add_row("429s", str(stats["rate_limited"]))
    differences = story.differences(hubspot)
    figures.add_row("values that differ from the CDP", str(differences))
    if synced_at is not None:
        figures.add_row("time to get HubSpot in step", f"{synced_at:.1f}s")
    console.print(figures)
    if differences == 0:
        console.print("[green]✓ HubSpot matches the CDP.[/]")
