"""Messages that cross actor boundaries, as compact msgspec Structs (batched: one call, many changes).

- `Change`: one property value for one contact, from a Router to an ActivationActor (its inbox).
- `Outcome`, `OutcomeStatus`, `WriteReport`: what a RateGovernor answers an ActivationActor's write.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = ["Change", "Outcome", "OutcomeStatus", "WriteReport", "decode_changes", "encode_changes"]


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


class OutcomeStatus(enum.StrEnum):
    """What became of one input of a write, as the activation acts on it."""

    WRITTEN = "written"
    """HubSpot updated the contact: its values leave the activation's pending work."""
    CREATED = "created"
    """HubSpot created the contact (an upsert of an email it did not know): as written."""
    FAILED = "failed"
    """HubSpot refused this input for good (a bad value, an unexpected 4xx): parked with the reason."""
    MISSING = "missing"
    """No such contact in HubSpot (update-only mode, or deleted meanwhile): dropped, counted."""
    RETRY = "retry"
    """Not written now (HubSpot left it out of its answer, failed it for now, or every property
    it carried was refused): the activation puts it back and sends it again later."""


class Outcome(msgspec.Struct, array_like=True, frozen=True):
    """One input's fate: its key (email, or record id for an update), what became of it, the
    contact's HubSpot record id when known, and HubSpot's reason when it was not written."""

    key: str
    status: OutcomeStatus
    contact_id: str | None = None
    reason: str = ""


class WriteReport(msgspec.Struct, frozen=True):
    """A batch write's result: one outcome per input, and the properties HubSpot refused for
    every input (internal name -> HubSpot's reason). Those were dropped from the inputs before
    the rest was sent again: the caller stops syncing them and records the problem."""

    outcomes: list[Outcome]
    property_problems: dict[str, str] = {}
