"""HubSpot's numbers live once (crm/plans.py); every place that names the plans or versions as
types (the event model, the HTTP API's schema, the emulator, the CLI) agrees with it."""

from __future__ import annotations

import typing

import click
import pytest

from crm.emulator import EmulatorConfig
from crm.emulator.state import HubSpotState
from crm.plans import API_VERSIONS, DEFAULT_API_VERSION, PLANS
from events import model
from hubsync.activation_cmd import create


def test_the_event_model_knows_exactly_the_plans_and_versions() -> None:
    assert set(typing.get_args(model.Plan)) == set(PLANS)
    assert model.ActivationCreated.__struct_defaults__  # the default version is 2026-03
    created = model.ActivationCreated(
        activation_id="a1", name="n", token_sealed="v2:x", token_fingerprint="f"
    )
    assert created.api_version == DEFAULT_API_VERSION == "2026-03"


def test_an_old_event_reads_as_it_was_written() -> None:
    raw = (
        b'{"type":"activation_created","activation_id":"a1","name":"n","token_sealed":"x",'
        b'"token_fingerprint":"f","api_version":"v3"}'
    )
    assert model.decode_control_event(raw).api_version == "v3"  # type: ignore[attr-defined]


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_the_emulator_serves_every_plan_with_its_limits(plan: str) -> None:
    state = HubSpotState(EmulatorConfig(plan=plan))
    assert state is not None
    assert PLANS[plan].per_window in (100, 190, 250)


def test_the_cli_offers_exactly_the_plans_and_versions() -> None:
    options = {p.name: p for p in create.params if isinstance(p, click.Option)}
    assert list(options["plan"].type.choices) == list(PLANS)  # type: ignore[attr-defined]
    assert tuple(options["api_version"].type.choices) == API_VERSIONS  # type: ignore[attr-defined]
    assert options["api_version"].default == DEFAULT_API_VERSION
