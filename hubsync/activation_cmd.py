"""`hubsync activation ...`: operators' commands, appended as events to the control stream."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from crm.plans import API_VERSIONS, DEFAULT_API_VERSION, PLANS
from events.activations import Activations, ActivationSpec, CommandRejected
from events.model import (
    ActivationDeleted,
    ActivationPaused,
    ActivationResumed,
    AttributeAdded,
    AttributeRemoved,
    AudienceAdded,
    AudienceRemoved,
    ControlEvent,
    ResyncRequested,
    TokenResealed,
)
from events.secrets import Sealer, SecretError, TokenError, is_legacy
from hubsync import activations_service as service
from hubsync.config import Config, ConfigError, secret_key, with_redis
from hubsync.views import describe

__all__ = ["activation"]

T = TypeVar("T")
# How long `activation delete` waits for the Supervisor to stop the actor and compact.
DELETE_WAIT_S = 30.0
WAIT = click.option(
    "--wait", is_flag=True, help="Follow the backfill with progress bars until it is done."
)


def _sealer(config: Config) -> Sealer:
    try:
        return Sealer(secret_key(config))
    except (SecretError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None


def _config() -> Config:
    return Config.from_environ()  # a ConfigError becomes one usage line in the click group


@click.group()
def activation() -> None:
    """Create, list and change activations (a HubSpot token + the audiences and attributes to sync)."""


@activation.command()
@click.option("--name", required=True, help="A name people recognise, unique among activations.")
@click.option(
    "--token-env",
    required=True,
    metavar="VAR",
    help="Environment variable holding the HubSpot private-app token or service key.",
)
@click.option(
    "--base-url",
    default="https://api.hubapi.com",
    show_default=True,
    help="HubSpot's API, or the emulator's URL: https://, or http:// to a loopback address only.",
)
@click.option(
    "--plan",
    type=click.Choice(list(PLANS)),
    default="starter",
    show_default=True,
    help="The HubSpot plan, which sets the API limits (refined from HubSpot's headers).",
)
@click.option(
    "--api-version", type=click.Choice(API_VERSIONS), default=DEFAULT_API_VERSION, show_default=True
)
@click.option(
    "--audience",
    "audiences",
    multiple=True,
    metavar="ID",
    help="A CDP audience id to sync (repeatable).",
)
@click.option(
    "--attribute",
    "attributes",
    multiple=True,
    metavar="ID",
    help="A CDP attribute id to sync (repeatable).",
)
@click.option(
    "--update-only", is_flag=True, help="Only update contacts already in HubSpot; never create any."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--dry-run", is_flag=True, help="Show the properties and the backfill plan; change nothing."
)
@WAIT
def create(
    name: str,
    token_env: str,
    base_url: str,
    plan: str,
    api_version: str,
    audiences: tuple[str, ...],
    attributes: tuple[str, ...],
    update_only: bool,
    as_json: bool,
    dry_run: bool,
    wait: bool,
) -> None:
    """Create an activation; prints its id. The token is read from the environment, never argv."""
    if dry_run:
        _dry_run(plan, audiences, attributes, as_json)
        return
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise click.UsageError(
            f"environment variable {token_env} is empty: export {token_env}=<your HubSpot token> first "
            "(hubsync reads tokens from the environment so they stay out of shell history)"
        )
    config = _config()
    try:
        event = service.new_activation(
            secret_key(config),
            name=name,
            token=token,
            base_url=base_url,
            api_version=api_version,
            plan=plan,
            update_only=update_only,
            audiences=audiences,
            attributes=attributes,
        )
    except TokenError as exc:
        raise click.UsageError(f"{token_env}: {exc}") from None
    except (SecretError, CommandRejected) as exc:  # a bad secret key, a refused base URL
        raise click.UsageError(str(exc)) from None

    async def work(redis: aioredis.Redis) -> list[str]:
        return await service.create_activation(redis, config.keys, event)

    warnings = with_redis(config, work)
    for warning in warnings:
        click.echo(f"note: {warning}; it syncs once defined", err=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "activation_id": event.activation_id,
                    "name": name,
                    "token_fingerprint": event.token_fingerprint,
                }
            )
        )
    else:
        click.echo(event.activation_id)
    if wait:
        follow(config, event.activation_id)


def _dry_run(
    plan: str, audiences: tuple[str, ...], attributes: tuple[str, ...], as_json: bool
) -> None:
    from hubsync.operations import plan_activation

    config = _config()
    result = with_redis(
        config,
        lambda redis: plan_activation(
            redis, config.keys, plan=plan, audiences=audiences, attributes=attributes
        ),
    )
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    console = Console()
    table = Table(
        "property",
        "label",
        "type",
        "fieldType",
        "contacts to backfill",
        title="would create, in the group Raptor Smart Advisor CDP",
    )
    for p in result.properties:
        table.add_row(
            p["name"], p["label"], p["type"], p["fieldType"], f"{result.contacts[p['key']]:,}"
        )
    console.print(table)
    console.print(
        f"backfill: at most {result.calls:,} HubSpot calls, about {result.seconds_at_limits:,.0f}s at the "
        f"{plan} plan's limits, {result.share_of_daily_budget:.2%} of the daily budget"
    )
    for missing in result.unknown:
        console.print(
            f"[yellow]note[/]: {missing} is not defined in the CDP yet; it syncs once defined"
        )
    console.print("dry run: nothing was created")


def _simple(
    make: Callable[[ActivationSpec], ControlEvent], done: str, *, wait: bool = False
) -> Callable[[str], None]:
    def run(ref: str) -> None:
        config = _config()

        async def work(redis: aioredis.Redis) -> tuple[str, list[ControlEvent]]:
            spec, appended = await service.change_activation(redis, config.keys, ref, make)
            return spec.activation_id, appended

        activation_id, appended = with_redis(config, work)
        click.echo(done if appended else "nothing to change")
        if wait and appended:
            follow(config, activation_id)

    return run


def follow(config: Config, activation_id: str, *, timeout: float | None = None) -> None:
    """Wait until the activation has nothing pending, with a progress bar per backfill (rate, ETA)
    on a terminal, quietly otherwise."""
    import time

    from hubsync.progress import progress_bars
    from hubsync.views import read_status

    console = Console(stderr=True)

    async def watch(redis: aioredis.Redis) -> None:
        started = time.monotonic()
        tasks: dict[str, Any] = {}
        seen_after = time.time()
        with progress_bars(
            console, percent=True, details="{task.fields[rate]}", disable=not console.is_terminal
        ) as bars:
            while timeout is None or time.monotonic() - started < timeout:
                status = await read_status(redis, config.keys, activation_id) or {}
                fresh = status.get("updated_at", 0) > seen_after + 1  # published after our command
                for key, b in (status.get("backfills") or {}).items():
                    if key not in tasks:
                        tasks[key] = bars.add_task(
                            f"backfill {key}", total=b["total"] or None, rate=""
                        )
                    elapsed = b.get("elapsed_s") or 0
                    rate = f"{b['done'] / elapsed:,.0f} contacts/s" if elapsed > 1 else ""
                    bars.update(
                        tasks[key], completed=b["done"], total=b["total"] or None, rate=rate
                    )
                if (
                    fresh
                    and status.get("pending") == 0
                    and all(
                        not b.get("loading") and b["done"] >= b["total"]
                        for b in (status.get("backfills") or {}).values()
                    )
                ):
                    return
                await asyncio.sleep(0.5)
            raise CommandRejected(
                f"still running after {timeout:.0f}s; `hubsync status` shows progress"
            )

    with_redis(config, watch)
    click.echo("in step: nothing pending")


@activation.command()
@click.argument("ref")
@click.option("--reason", default="paused by an operator", show_default=True)
def pause(ref: str, reason: str) -> None:
    """Stop writing to HubSpot; changes keep being recorded and go out on resume."""
    _simple(lambda s: ActivationPaused(activation_id=s.activation_id, reason=reason), "paused")(ref)


@activation.command()
@click.argument("ref")
def resume(ref: str) -> None:
    """Resume a paused activation (also after fixing a token or its scopes)."""
    _simple(lambda s: ActivationResumed(activation_id=s.activation_id), "resumed")(ref)


@activation.command()
@click.argument("ref")
@click.confirmation_option(prompt="Delete this activation? (its HubSpot properties stay)")
@click.option(
    "--timeout",
    default=DELETE_WAIT_S,
    show_default=True,
    help="Seconds to wait for the running hubsync to stop the activation's actor.",
)
def delete(ref: str, timeout: float) -> None:
    """Delete an activation; what it wrote to HubSpot stays there.

    Returns once the Supervisor has stopped the activation's actor and removed its data from
    Redis (its keys and control entries, sealed token included), or after --timeout.
    """
    from actors.governor import HTTP_TIMEOUT
    from actors.supervisor import leftover_entries
    from events.redis_backend import RedisEventStream

    config = _config()

    async def work(redis: aioredis.Redis) -> bool:
        state = Activations()
        await state.refresh(redis, config.keys)
        spec = state.find(ref)
        await state.execute(redis, config.keys, ActivationDeleted(activation_id=spec.activation_id))
        click.echo(
            f"deleted {spec.activation_id}; waiting up to {timeout:.0f}s for hubsync to stop it ...",
            err=True,
        )
        deadline = asyncio.get_running_loop().time() + timeout
        while await leftover_entries(
            RedisEventStream(redis, config.keys.activations), {spec.activation_id}
        ):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.25)
        return True

    if not with_redis(config, work):
        raise click.ClickException(
            f"the deletion is recorded, but no running hubsync confirmed it within {timeout:.0f}s "
            "(is `hubsync up` running?); when it runs it stops the actor and removes its data"
        )
    click.echo(
        "deleted: its actor is stopped and its data is gone from Redis; HubSpot sees no write "
        f"from it once the calls already in flight end (at most {HTTP_TIMEOUT:.0f}s, HubSpot's call timeout)"
    )


@activation.command("add-audience")
@click.argument("ref")
@click.argument("audience_id")
@WAIT
def add_audience(ref: str, audience_id: str, wait: bool) -> None:
    """Sync one more audience; its current members are backfilled."""
    _simple(
        lambda s: AudienceAdded(activation_id=s.activation_id, audience_id=audience_id),
        "added; backfill starts",
        wait=wait,
    )(ref)


@activation.command("remove-audience")
@click.argument("ref")
@click.argument("audience_id")
def remove_audience(ref: str, audience_id: str) -> None:
    """Stop syncing an audience (its HubSpot property stays)."""
    _simple(
        lambda s: AudienceRemoved(activation_id=s.activation_id, audience_id=audience_id), "removed"
    )(ref)


@activation.command("add-attribute")
@click.argument("ref")
@click.argument("attribute_id")
@WAIT
def add_attribute(ref: str, attribute_id: str, wait: bool) -> None:
    """Sync one more calculated attribute; current values are backfilled."""
    _simple(
        lambda s: AttributeAdded(activation_id=s.activation_id, attribute_id=attribute_id),
        "added; backfill starts",
        wait=wait,
    )(ref)


@activation.command("remove-attribute")
@click.argument("ref")
@click.argument("attribute_id")
def remove_attribute(ref: str, attribute_id: str) -> None:
    """Stop syncing a calculated attribute (its HubSpot property stays)."""
    _simple(
        lambda s: AttributeRemoved(activation_id=s.activation_id, attribute_id=attribute_id),
        "removed",
    )(ref)


@activation.command()
@click.argument("ref")
@WAIT
def resync(ref: str, wait: bool) -> None:
    """Re-send every current value (repair after someone edited HubSpot by hand)."""
    _simple(
        lambda s: ResyncRequested(activation_id=s.activation_id),
        "resync requested; `hubsync status` shows its progress",
        wait=wait,
    )(ref)


@activation.command()
@click.argument("ref", required=False)
@click.option(
    "--all", "every", is_flag=True, help="Reseal every activation still in the old format."
)
def reseal(ref: str | None, every: bool) -> None:
    """Re-seal a token stored in the old format, bound to its activation (REF, or --all).

    Tokens sealed before hubsync bound them to their activation (plain Fernet) keep working, but
    a copy of one would open anywhere; this rewrites them in the current format. Idempotent.
    """
    if (ref is None) == (not every):
        raise click.UsageError("name one activation (ID or name) or use --all")
    config = _config()
    sealer = _sealer(config)

    async def work(redis: aioredis.Redis) -> tuple[list[str], list[str]]:
        state = Activations()
        await state.refresh(redis, config.keys)
        specs = list(state.by_id.values()) if every else [state.find(ref or "")]
        done, failed = [], []
        for spec in specs:
            if not is_legacy(spec.token_sealed):
                continue
            try:
                token = spec.open_token(sealer)
            except SecretError as exc:
                failed.append(f"{spec.activation_id} ({spec.name}): {exc}")
                continue
            sealed = sealer.seal(token, activation_id=spec.activation_id, base_url=spec.base_url)
            event = TokenResealed(activation_id=spec.activation_id, token_sealed=sealed)
            if await state.execute(redis, config.keys, event):
                done.append(f"{spec.activation_id} ({spec.name})")
        return done, failed

    done, failed = with_redis(config, work)
    for line in done:
        click.echo(f"resealed {line}")
    for line in failed:
        click.echo(f"not resealed {line}", err=True)
    if not done and not failed:
        click.echo("nothing to change: every token is sealed in the current format")
    if failed:
        sys.exit(1)


@activation.command()
@click.argument("ref")
@click.option("--fix", is_flag=True, help="If anything differs, request a resync.")
@click.option(
    "--rate",
    default=10,
    show_default=True,
    help="Calls per 10 s verify may use (the service keeps the rest).",
)
@click.option("--json", "as_json", is_flag=True)
def verify(ref: str, fix: bool, rate: int, as_json: bool) -> None:
    """Read the activation's values back from HubSpot and report drift from the CDP."""
    from hubsync.progress import progress_bars

    config = _config()
    key = secret_key(config)

    async def work(redis: aioredis.Redis) -> dict[str, Any]:
        state = Activations()
        await state.refresh(redis, config.keys)
        spec = state.find(ref)
        with progress_bars(
            Console(stderr=True),
            counts="none",
            percent=True,
            transient=True,
            disable=as_json or not sys.stderr.isatty(),
        ) as bar:
            task = bar.add_task("reading HubSpot", total=None)
            return await service.verify_activation(
                redis,
                config.keys,
                spec,
                key,
                rate=rate,
                fix=fix,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )

    report = with_redis(config, work)
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(
            f"checked {report['checked']:,} contacts with {report['calls']} calls: {report['differing']:,} differ "
            f"({report['missing_in_hubspot']:,} missing in HubSpot)"
        )
        for example in report["examples"][:10]:
            click.echo(f"  {example['email']}: HubSpot {example['hubspot']} / CDP {example['cdp']}")
        if report["resync_requested"]:
            click.echo("resync requested")
        elif report["differing"]:
            click.echo("run again with --fix to resync")
    if report["differing"] and not report["resync_requested"]:
        sys.exit(1)


@activation.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Every activation, a line each."""
    config = _config()

    async def work(redis: aioredis.Redis) -> list[ActivationSpec]:
        state = Activations()
        await state.refresh(redis, config.keys)
        return list(state.by_id.values())

    specs = with_redis(config, work)
    if as_json:
        click.echo(json.dumps([describe(s) for s in specs]))
        return
    table = Table("id", "name", "plan", "mode", "audiences", "attributes", "state")
    for s in specs:
        table.add_row(
            s.activation_id,
            s.name,
            s.plan,
            s.mode,
            ", ".join(sorted(s.audiences)),
            ", ".join(sorted(s.attributes)),
            f"paused: {s.pause_reason}" if s.paused else "active",
        )
    Console().print(table)


@activation.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def show(ref: str, as_json: bool) -> None:
    """One activation, with its live status."""
    from hubsync.views import read_status

    config = _config()

    async def work(redis: aioredis.Redis) -> dict[str, Any]:
        state = Activations()
        await state.refresh(redis, config.keys)
        spec = state.find(ref)
        return {
            **describe(spec),
            "status": await read_status(redis, config.keys, spec.activation_id),
        }

    info = with_redis(config, work)
    if as_json:
        click.echo(json.dumps(info))
    else:
        Console().print_json(json.dumps(info))
