"""`hubsync emulator`: the local HubSpot, for trying and testing without an account."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click
from starlette.routing import BaseRoute

from crm.emulator import (
    ALL_SCOPES,
    PLANS,
    EmulatorConfig,
    EmulatorServer,
    FaultSettings,
    HubSpotState,
)
from crm.tokens import token_fingerprint

Instrument = Callable[[HubSpotState], Sequence[BaseRoute]]
"""Wires an observer into the account before it serves; returns admin routes to add."""


def _parse_token(spec: str) -> tuple[str, frozenset[str]]:
    token, sep, scopes = spec.partition(":")
    if not token:
        raise click.BadParameter(f"empty token in {spec!r}")
    chosen = frozenset(s.strip() for s in scopes.split(",") if s.strip()) if sep else ALL_SCOPES
    return token, chosen


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8089, show_default=True, type=int, help="0 picks a free port.")
@click.option("--plan", type=click.Choice(sorted(PLANS)), default="starter", show_default=True)
@click.option("--rate", type=int, default=None, help="Calls per rolling 10 s per token.")
@click.option("--daily", type=int, default=None, help="Calls per day for the account.")
@click.option(
    "--token",
    "tokens",
    multiple=True,
    metavar="TOKEN[:scope,scope...]",
    help="Accept this bearer token (with these scopes; all four when none are given).",
)
@click.option("--error-rate", type=float, default=0.0, help="Share of calls answered 503.")
@click.option("--latency-ms", type=float, default=0.0, help="Added latency per call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault RNG.")
def emulator(
    host: str,
    port: int,
    plan: str,
    rate: int | None,
    daily: int | None,
    tokens: tuple[str, ...],
    error_rate: float,
    latency_ms: float,
    seed: int,
) -> None:
    """Run a local HubSpot (contacts, properties, limits) until Ctrl-C."""
    serve(
        host=host,
        port=port,
        plan=plan,
        rate=rate,
        daily=daily,
        tokens=tokens,
        error_rate=error_rate,
        latency_ms=latency_ms,
        seed=seed,
    )


def serve(
    *,
    host: str,
    port: int,
    plan: str,
    rate: int | None,
    daily: int | None,
    tokens: tuple[str, ...],
    error_rate: float,
    latency_ms: float,
    seed: int,
    instrument: Instrument | None = None,
) -> None:
    """What `hubsync emulator` runs, with its flags; `instrument` is for benchmarks."""
    registered = dict(_parse_token(t) for t in tokens)
    config = EmulatorConfig(plan=plan, rate=rate, daily=daily, open_auth=not registered)
    state = HubSpotState(config, tokens=registered, seed=seed)
    routes = instrument(state) if instrument is not None else ()
    server = EmulatorServer(
        host=host, port=port, state=state, log_level="info", admin_routes=routes
    )
    server.state.set_faults(FaultSettings(error_rate=error_rate, latency_ms=latency_ms))
    click.echo(f"HubSpot emulator listening on {server.url}")
    click.echo(f"  plan {plan}: {config.per_window} calls per 10 s, {config.per_day} per day")
    if registered:
        for token, scopes in registered.items():
            click.echo(f"  token {token_fingerprint(token)}…  scopes: {', '.join(sorted(scopes))}")
    else:
        click.echo("  no --token given: ANY bearer token is accepted, with all four scopes")
    click.echo(f"  admin: {server.url}/_emulator/stats  (Ctrl-C to stop)")
    server.serve_forever()
