"""The soak's growth verdict, on series written out by hand: a series keeps growing when the mean
of the last third is more than 5% above the middle third's and by more than the floor; warm-up
(the first third) never counts, and tiny noisy series are not judged on noise."""

from __future__ import annotations

import json
import random

from bench.soak import (
    BAD_EVERY,
    FLOOR_BYTES,
    FLOOR_COUNT,
    floor_of,
    soak_entry,
    verdict,
    verdicts,
)
from events.model import InvalidEvent, decode_cdp_event
from events.streams import Keys

MIB = 2**20


def test_a_stream_that_is_never_trimmed_keeps_growing() -> None:
    lengths = [i * 25_000 for i in range(12)]  # XLEN of a change stream at 5,000/s, every 5 s
    v = verdict("xlen.changes:0", lengths)
    assert v.judged and v.keeps_growing
    assert v.middle_mean == 137_500 and v.last_mean == 237_500


def test_a_plateau_after_warm_up_is_flat() -> None:
    # Redis fills its projections in the first third, then stays put.
    used = [
        1 * MIB,
        20 * MIB,
        40 * MIB,
        50 * MIB,
        50.2 * MIB,
        49.9 * MIB,
        50.1 * MIB,
        50 * MIB,
        50.3 * MIB,
    ]
    v = verdict("redis.used_memory_bytes", used)
    assert v.judged and not v.keeps_growing
    assert abs(v.growth or 0) < 0.01


def test_slow_growth_under_five_percent_is_flat() -> None:
    rss = [100 * MIB + i * 0.3 * MIB for i in range(12)]  # ~1.2 MiB between thirds of ~102 MiB
    assert not verdict("rss.router:0_bytes", rss).keeps_growing


def test_growth_just_over_five_percent_keeps_growing() -> None:
    rss = [100 * MIB] * 4 + [100 * MIB] * 4 + [106 * MIB] * 4
    v = verdict("rss.activation:a_bytes", rss)
    assert v.keeps_growing and round(v.growth or 0, 2) == 0.06


def test_a_tiny_noisy_series_is_not_judged_on_noise() -> None:
    # a trimmed stream hovering between 0 and 50 entries: +400% between thirds, but 40 entries
    backlog = [0, 30, 5, 10, 0, 10, 5, 5, 50, 40, 45, 35]
    v = verdict("xlen.changes:1", backlog)
    assert v.judged and (v.growth or 0) > 0.05
    assert not v.keeps_growing
    assert v.floor == FLOOR_COUNT


SAWTOOTH = [100, 1300, 200, 900, 50, 700, 1200, 400, 1350, 800, 300, 1100]  # 0-1,400, no trend


def test_a_sawtooth_is_not_judged_on_where_the_samples_fell() -> None:
    # an inbox trimmed at every snapshot, sampled at six points per third
    warm_up = [0] * 6
    v = verdict("xlen.inbox:soak0", warm_up + SAWTOOTH)
    assert v.last_mean is not None and v.middle_mean is not None and v.noise is not None
    # 5% and the floor alone would call it growing: the noise term is what keeps it flat
    assert (v.growth or 0) > 0.05 and v.last_mean - v.middle_mean > v.floor
    assert v.last_mean - v.middle_mean < v.noise
    assert not v.keeps_growing


def test_a_sawtooth_on_a_rising_base_keeps_growing() -> None:
    rising = [x + 400 * i for i, x in enumerate([0] * 6 + SAWTOOTH)]  # an inbox never trimmed
    assert verdict("xlen.inbox:soak0", rising).keeps_growing


def test_the_floor_follows_the_unit() -> None:
    assert floor_of("memory.dead_bytes") == FLOOR_BYTES
    assert floor_of("rss.emulator_bytes") == FLOOR_BYTES
    assert floor_of("xlen.dead") == FLOOR_COUNT
    assert floor_of("pending.soak0") == FLOOR_COUNT
    # 200 KiB more dead-letter bytes is under the byte floor; 200 more entries is over the count floor
    assert not verdict("memory.dead_bytes", [1e5] * 3 + [1e5] * 3 + [3e5] * 3).keeps_growing
    assert verdict("xlen.dead", [100] * 3 + [100] * 3 + [300] * 3).keeps_growing


def test_a_shrinking_series_is_flat() -> None:
    assert not verdict("xlen.inbox:a", [900, 800, 700, 600, 500, 400, 300, 200, 100]).keeps_growing


def test_too_few_samples_are_not_judged() -> None:
    v = verdict("xlen.dead", [0, 10, 2000, 4000, 8000])
    assert not v.judged and not v.keeps_growing
    assert v.middle_mean is None and v.growth is None


def test_missing_samples_do_not_shift_the_thirds() -> None:
    # a process restarting: no RSS at two sampling times, in the middle third
    rss = [100.0 * MIB] * 4 + [None, 100.0 * MIB, None, 100.0 * MIB] + [130.0 * MIB] * 4
    v = verdict("rss.activation:a_bytes", rss)
    assert v.samples == 10 and v.middle_mean == 100 * MIB and v.keeps_growing
    assert not verdict("rss.x_bytes", [None] * 12).judged


def test_verdicts_judge_every_series_of_every_sample() -> None:
    samples = [
        {
            "series": {"xlen.changes:0": 1000 * i, "xlen.dead": 10}
            | ({"rss.governor:abc_bytes": 100 * MIB} if i > 2 else {})
        }
        for i in range(9)
    ]
    judged = {v.series: v for v in verdicts(samples)}
    assert sorted(judged) == ["rss.governor:abc_bytes", "xlen.changes:0", "xlen.dead"]
    assert judged["xlen.changes:0"].keeps_growing
    assert not judged["xlen.dead"].keeps_growing
    assert judged["rss.governor:abc_bytes"].samples == 6


def test_the_soak_mixes_one_percent_bad_entries_of_four_kinds() -> None:
    rng = random.Random(1)
    keys = Keys("hubsync")
    entries = [
        soak_entry(i, rng, contacts=500, activations=3, partitions=4, keys=keys)
        for i in range(4 * BAD_EVERY * 10)
    ]
    bad = []
    for stream, raw in entries:
        assert stream in {keys.changes(p) for p in range(4)}
        try:
            decode_cdp_event(raw)
        except InvalidEvent as exc:
            bad.append(exc.reason)
    # bad JSON and a bad email fail to decode; an unknown audience and a wrong value type decode
    # and are refused by the Router against the catalog
    assert len(bad) == 20
    audiences = [
        json.loads(raw).get("audience_id") for _, raw in entries[BAD_EVERY :: BAD_EVERY * 4]
    ]
    assert set(audiences) == {"soak_unknown"}
    values = [json.loads(raw)["value"] for _, raw in entries[2 * BAD_EVERY :: BAD_EVERY * 4]]
    assert set(values) == {"lots"}
    emails = {json.loads(raw).get("email") for _, raw in entries[1:BAD_EVERY]}
    assert all(e.endswith("@example.com") for e in emails) and len(emails) > 50
