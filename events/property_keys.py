"""Property keys: which CDP source a HubSpot property of an activation syncs.

A key is ``a:<audience id>`` (an audience's membership) or ``t:<attribute id>`` (a calculated
attribute's value). That text is what crosses processes and is stored (the Routers' inbox
entries, snapshots, the published status, the API); in code a key is a `PropertyKey`, parsed and
formatted here and nowhere else, so nobody slices strings to learn what a key names.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["PropertyKey", "SourceKind", "attribute_key", "audience_key"]


class SourceKind(enum.StrEnum):
    """What a property key names in the CDP (the value is the key's prefix)."""

    AUDIENCE = "a"
    ATTRIBUTE = "t"


class PropertyKey(NamedTuple):
    """One CDP source of an activation's properties (a NamedTuple: `kind, cdp_id = key`)."""

    kind: SourceKind
    cdp_id: str

    @classmethod
    def parse(cls, text: str) -> PropertyKey:
        """The key written as ``a:<audience id>`` or ``t:<attribute id>``; anything else is a
        `ValueError` that says what was expected."""
        prefix, colon, cdp_id = text.partition(":")
        if colon and cdp_id:
            if prefix == SourceKind.AUDIENCE:
                return cls(SourceKind.AUDIENCE, cdp_id)
            if prefix == SourceKind.ATTRIBUTE:
                return cls(SourceKind.ATTRIBUTE, cdp_id)
        raise ValueError(
            f"not a property key: {text[:100]!r} (expected 'a:<audience id>' or 't:<attribute id>')"
        )

    @property
    def is_audience(self) -> bool:
        return self.kind is SourceKind.AUDIENCE

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.cdp_id}"


# str(PropertyKey(kind, cdp_id)), written out: a Router formats one key per change it routes.
_AUDIENCE_PREFIX = f"{SourceKind.AUDIENCE.value}:"
_ATTRIBUTE_PREFIX = f"{SourceKind.ATTRIBUTE.value}:"


def audience_key(audience_id: str) -> str:
    """The key text of an audience's property (what crosses processes and is stored)."""
    return _AUDIENCE_PREFIX + audience_id


def attribute_key(attribute_id: str) -> str:
    """The key text of a calculated attribute's property."""
    return _ATTRIBUTE_PREFIX + attribute_id
