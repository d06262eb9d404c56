"""Messages that cross actor boundaries, as compact msgspec Structs (batched: one call, many changes)."""

from __future__ import annotations

import msgspec

__all__ = ["Change", "decode_changes", "encode_changes"]


class Change(msgspec.Struct, array_like=True, frozen=True):
    """One property value for one contact, at a position of the contact's change stream.

    ``key`` names the CDP source: ``a:<audience_id>`` or ``t:<attribute_id>``; the activation
    maps it to its HubSpot property. ``value`` is already HubSpot's string ("" clears).
    """

    email: str
    key: str
    value: str
    position: int


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[Change]).decode


def encode_changes(changes: list[Change]) -> bytes:
    return _encode(changes)


def decode_changes(raw: bytes) -> list[Change]:
    return _decode(raw)
