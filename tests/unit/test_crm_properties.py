"""Property naming, definitions and value formatting (pure)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm.emulator.values import normalise
from crm.properties import (
    GROUP_NAME,
    MAX_NAME_LENGTH,
    ValueFormatError,
    attribute_property,
    audience_property,
    format_value,
    internal_name,
    is_valid_property_name,
)

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class TestInternalName:
    def test_is_prefixed_slug_of_the_cdp_name(self):
        assert internal_name("a17", "Abandon Basket") == "raptor_abandon_basket"

    def test_accents_are_stripped_and_punctuation_separates_words(self):
        assert internal_name("x", "Älter—Kunden!!  (VIP)") == "raptor_alter_kunden_vip"

    def test_falls_back_to_the_id_when_the_name_has_no_latin_letters(self):
        assert internal_name("a-17", "ΑΒΓ") == "raptor_a_17"

    def test_collision_gets_a_stable_suffix_from_the_cdp_id(self):
        first = internal_name("a17", "VIP", {"raptor_vip"})
        assert first.startswith("raptor_vip_") and first != "raptor_vip"
        assert internal_name("a17", "VIP", {"raptor_vip"}) == first
        assert internal_name("a18", "VIP", {"raptor_vip"}) != first

    def test_collision_with_the_suffixed_name_too_still_finds_a_free_one(self):
        taken = {"raptor_vip", internal_name("a17", "VIP", {"raptor_vip"})}
        name = internal_name("a17", "VIP", taken)
        assert name not in taken and is_valid_property_name(name)

    @given(
        st.text(max_size=300),
        st.text(min_size=1, max_size=40),
        st.sets(st.text(max_size=30), max_size=5),
    )
    def test_always_a_valid_hubspot_name(self, name, cdp_id, taken):
        result = internal_name(cdp_id, name, taken)
        assert NAME_RE.fullmatch(result)
        assert len(result) <= MAX_NAME_LENGTH
        assert result.startswith("raptor_")
        assert result not in taken
        assert internal_name(cdp_id, name, taken) == result

    def test_long_names_are_cut_and_still_unique_on_collision(self):
        long = "x" * 300
        base = internal_name("1", long)
        assert len(base) == MAX_NAME_LENGTH
        other = internal_name("2", long, {base})
        assert len(other) <= MAX_NAME_LENGTH and other != base


class TestSpecs:
    def test_audience_is_a_yes_no_checkbox_in_our_group(self):
        spec = audience_property("a17", "Abandon Basket")
        body = spec.to_create_body()
        assert body["type"] == "bool" and body["fieldType"] == "booleancheckbox"
        assert body["groupName"] == GROUP_NAME and body["label"] == "Abandon Basket"
        assert [(o["value"], o["label"]) for o in body["options"]] == [
            ("true", "Yes"),
            ("false", "No"),
        ]

    @pytest.mark.parametrize(
        ("value_type", "pair"),
        [
            ("number", ("number", "number")),
            ("string", ("string", "text")),
            ("bool", ("bool", "booleancheckbox")),
            ("date", ("date", "date")),
            ("datetime", ("datetime", "date")),
            ("enumeration", ("enumeration", "select")),
        ],
    )
    def test_attribute_types_map_to_hubspot_pairs(self, value_type, pair):
        spec = attribute_property("ltv", "Lifetime value", value_type, options=["a", "b"])
        assert (spec.type, spec.field_type) == pair

    def test_enumeration_needs_options(self):
        with pytest.raises(ValueError, match="option"):
            attribute_property("tier", "Tier", "enumeration")

    def test_drift_is_empty_for_what_hubspot_echoes_and_names_changed_fields(self):
        spec = attribute_property("tier", "Tier", "enumeration", options=["gold", "silver"])
        echoed = {
            **spec.to_create_body(),
            "options": [
                {**o, "displayOrder": i, "description": ""}
                for i, o in enumerate(spec.to_create_body()["options"])
            ],
        }
        assert spec.drift(echoed) == {}
        assert set(spec.drift({**echoed, "label": "Old", "fieldType": "radio"})) == {
            "label",
            "fieldType",
        }
        assert "options" in spec.drift({**echoed, "options": echoed["options"][:1]})


class TestFormatValue:
    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (None, ""),
            (17, "17"),
            (1.0, "1"),
            (1234.5, "1234.5"),
            (1e-7, "0.0000001"),
            (1e22, "10000000000000000000000"),
            (-0.0, "0"),
            (Decimal("2.500"), "2.5"),
            ("12.50", "12.5"),
        ],
    )
    def test_numbers(self, value, text):
        assert format_value("number", value) == text

    @pytest.mark.parametrize("bad", [True, float("nan"), float("inf"), "1e5x", object()])
    def test_bad_numbers(self, bad):
        with pytest.raises(ValueFormatError):
            format_value("number", bad)

    @given(st.floats(allow_nan=False, allow_infinity=False) | st.integers())
    def test_numbers_are_what_hubspot_accepts(self, value):
        text = format_value("number", value)
        assert re.fullmatch(r"-?\d+(\.\d+)?", text)
        assert "e" not in text.lower() and not text.endswith(".0")
        expected = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        assert Decimal(text) == expected

    def test_bools_dates_datetimes(self):
        assert format_value("bool", True) == "true" and format_value("bool", "False") == "false"
        assert format_value("date", dt.date(2026, 11, 27)) == "2026-11-27"
        assert format_value("date", "2026-11-27T00:00:00Z") == "2026-11-27"
        assert format_value("datetime", "2026-11-27T09:00:00+01:00") == "2026-11-27T08:00:00.000Z"
        assert format_value("datetime", 1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
        assert format_value("datetime", dt.datetime(2026, 1, 1, 12)) == "2026-01-01T12:00:00.000Z"
        with pytest.raises(ValueFormatError, match="midnight"):
            format_value("date", dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))
        with pytest.raises(ValueFormatError):
            format_value("bool", "yes")

    def test_enumerations_check_options(self):
        assert format_value("enumeration", "gold", options=["gold"]) == "gold"
        for multi in (["a", "b"], ["gold"], ("gold",), 3):  # single-select: one option, a string
            with pytest.raises(ValueFormatError, match="an enumeration takes exactly one option"):
                format_value("enumeration", multi, options=["gold", "a", "b"])
        with pytest.raises(ValueFormatError, match="options"):
            format_value("enumeration", "bronze", options=["gold"])

    @given(
        st.one_of(
            st.tuples(st.just("number"), st.floats(allow_nan=False, allow_infinity=False)),
            st.tuples(st.just("bool"), st.booleans()),
            st.tuples(st.just("date"), st.dates(min_value=dt.date(1900, 1, 1))),
            st.tuples(
                st.just("datetime"),
                st.datetimes(min_value=dt.datetime(1900, 1, 1), timezones=st.just(dt.UTC)),
            ),
            st.tuples(st.just("string"), st.text(max_size=50)),
        )
    )
    def test_every_formatted_value_passes_the_emulators_validation(self, typed):
        value_type, value = typed
        prop = {"name": "p", "type": value_type, "fieldType": "x", "options": []}
        text = format_value(value_type, value)
        if text:
            assert not isinstance(normalise(prop, text), tuple)
