"""Flap damping settings come from the environment like HUBSYNC_LINGER_MS, and reach the actors."""

from __future__ import annotations

import pytest

from actors.shells import Settings
from hubsync.config import Config, ConfigError
from scheduler import DampingPolicy


def test_damping_is_on_by_default_with_the_documented_settings() -> None:
    assert Config.from_environ({}).damping == DampingPolicy(
        settle=0.5, penalty=1.0, half_life=1.0, suppress=2.0, reuse=0.75, max_hold=30.0
    )


def test_damping_settings_are_read_in_milliseconds_and_can_be_turned_off() -> None:
    env = {
        "HUBSYNC_DAMPING_SETTLE_MS": "400",
        "HUBSYNC_DAMPING_PENALTY": "1000",
        "HUBSYNC_DAMPING_HALF_LIFE_MS": "15000",
        "HUBSYNC_DAMPING_SUPPRESS": "2000",
        "HUBSYNC_DAMPING_REUSE": "750",
        "HUBSYNC_DAMPING_MAX_HOLD_MS": "60000",
    }
    assert Config.from_environ(env).damping == DampingPolicy(
        settle=0.4, penalty=1000, half_life=15.0, suppress=2000, reuse=750, max_hold=60.0
    )
    assert Config.from_environ({"HUBSYNC_DAMPING": "off"}).damping is None


@pytest.mark.parametrize(
    "env, named",
    [
        ({"HUBSYNC_DAMPING": "maybe"}, "HUBSYNC_DAMPING="),
        ({"HUBSYNC_DAMPING_SETTLE_MS": "soon"}, "HUBSYNC_DAMPING_SETTLE_MS"),
        ({"HUBSYNC_DAMPING_MAX_HOLD_MS": "-5"}, "HUBSYNC_DAMPING_MAX_HOLD_MS"),
        ({"HUBSYNC_DAMPING_REUSE": "3"}, "reuse"),
        ({"HUBSYNC_DAMPING_HALF_LIFE_MS": "0"}, "half_life"),
    ],
)
def test_a_bad_damping_setting_is_a_clear_error(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Config.from_environ(env)


def test_settings_carry_damping_to_the_actors() -> None:
    import msgspec

    settings = Settings("redis://127.0.0.1:1", damping=DampingPolicy(settle=0.1))
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(settings), type=Settings)
    assert again.damping == DampingPolicy(settle=0.1)
    assert Settings("redis://127.0.0.1:1").damping is None
