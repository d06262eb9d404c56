"""Spare Ray workers: when the Supervisor asks for them and how many (a moved clock, no Ray), and
the setting that sizes them."""

from __future__ import annotations

import pytest

from actors.spares import SpareSchedule
from hubsync.config import Config, ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def schedule(count: int = 2) -> tuple[SpareSchedule, Clock]:
    clock = Clock()
    return SpareSchedule(count, keep_alive_s=600, quiet_s=5, clock=clock), clock


def test_the_full_set_is_asked_for_at_start_and_then_nothing_while_no_actor_is_created() -> None:
    spares, clock = schedule()
    assert spares.due() == 2
    clock.now += 599
    assert spares.due() == 0


def test_a_spare_taken_is_replaced_once_creations_paused() -> None:
    spares, clock = schedule()
    spares.due()
    spares.created()  # the new activation's governor
    clock.now += 1
    spares.created()  # the activation
    clock.now += 4.9
    assert spares.due() == 0, "replaced while the new actors start: they would share the CPU"
    clock.now += 0.1
    assert spares.due() == 2
    assert spares.due() == 0


def test_a_burst_of_creations_asks_for_at_most_the_configured_count() -> None:
    spares, clock = schedule()
    spares.due()
    spares.created(50)
    clock.now += 5
    assert spares.due() == 2


def test_the_set_is_renewed_when_the_raylet_lets_the_unused_ones_go() -> None:
    spares, clock = schedule()
    spares.due()
    spares.created()
    clock.now += 600
    assert spares.due() == 2, "renewal includes the one taken"
    clock.now += 5
    assert spares.due() == 0


def test_no_spares_asks_for_none() -> None:
    spares, clock = schedule(count=0)
    spares.created()
    clock.now += 1000
    assert spares.due() == 0


def test_the_setting_defaults_to_two_and_zero_turns_spares_off() -> None:
    assert Config.from_environ({}).spare_workers == 2
    assert Config.from_environ({"HUBSYNC_SPARE_WORKERS": "0"}).spare_workers == 0
    with pytest.raises(ConfigError, match="HUBSYNC_SPARE_WORKERS"):
        Config.from_environ({"HUBSYNC_SPARE_WORKERS": "-1"})
