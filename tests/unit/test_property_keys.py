"""Property keys: `a:<audience id>` / `t:<attribute id>` parsed and formatted in one place; the
text is what crosses processes and is stored, and a malformed one is refused with a clear error."""

from __future__ import annotations

import pytest

from events.activations import ActivationSpec
from events.property_keys import PropertyKey, SourceKind, attribute_key, audience_key


@pytest.mark.parametrize(
    "text, kind, cdp_id",
    [
        ("a:a17", SourceKind.AUDIENCE, "a17"),
        ("t:ltv", SourceKind.ATTRIBUTE, "ltv"),
        ("t:ns:ltv", SourceKind.ATTRIBUTE, "ns:ltv"),  # ids may hold ':' (events.model.Id)
    ],
)
def test_a_key_parses_into_its_kind_and_id_and_formats_back_to_the_same_text(
    text: str, kind: SourceKind, cdp_id: str
) -> None:
    key = PropertyKey.parse(text)
    assert key == (kind, cdp_id)
    assert str(key) == text
    assert key.is_audience is (kind is SourceKind.AUDIENCE)


def test_the_helpers_write_the_same_text_as_before() -> None:
    assert audience_key("a17") == "a:a17"
    assert attribute_key("ltv") == "t:ltv"


@pytest.mark.parametrize("text", ["", "a17", "a:", "x:a17", "A:a17", ":a17", "audience:a17"])
def test_a_malformed_key_is_refused_with_what_was_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a property key.*'a:<audience id>'"):
        PropertyKey.parse(text)


def test_an_activation_subscribes_to_the_keys_of_its_audiences_and_attributes() -> None:
    spec = ActivationSpec(
        activation_id="x",
        name="x",
        token_sealed="",
        token_fingerprint="f",
        base_url="https://api.hubapi.com",
        api_version="2026-03",
        plan="starter",
        mode="upsert",
        audiences={"a17": 1},
        attributes={"ltv": 2},
    )
    assert {PropertyKey.parse(k) for k in spec.subscribes()} == {
        PropertyKey(SourceKind.AUDIENCE, "a17"),
        PropertyKey(SourceKind.ATTRIBUTE, "ltv"),
    }
