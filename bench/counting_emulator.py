"""`hubsync emulator`, instrumented for benchmarks: it remembers every write of every contact.

The emulator keeps only the last write time per property; the flips scenario needs how many
times each contact was written. This child-process entry point observes the emulator's contact
writes (`HubSpotState.observe_writes`) and answers ``GET /_emulator/contacts?with_timestamps=1``
with ``writes`` added: the time of each write of the contact, in order (one call's writes share
one time). Nothing else changes; it takes the same flags as `hubsync emulator`.

    python -m bench.counting_emulator --port 0 --plan starter
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import click
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crm.emulator.state import HubSpotState
from hubsync.emulator_cmd import emulator, serve

__all__ = ["WriteCounter", "main"]


class WriteCounter:
    """Every write time of every contact of one emulated account."""

    def __init__(self, state: HubSpotState) -> None:
        self.state = state
        self.writes: defaultdict[str, list[float]] = defaultdict(list)
        state.observe_writes(self.written)

    def written(self, contact_id: str, at: float) -> None:
        self.writes[contact_id].append(at)

    def contacts(self, *, with_timestamps: bool = False) -> list[dict[str, Any]]:
        out = self.state.dump_contacts(with_timestamps=with_timestamps)
        if with_timestamps:
            for item in out:
                item["writes"] = list(self.writes.get(item["id"], ()))
        return out

    async def contacts_endpoint(self, request: Request) -> Response:
        with_ts = request.query_params.get("with_timestamps", "") not in ("", "0", "false")
        body = {"results": self.contacts(with_timestamps=with_ts)}
        return Response(msgspec.json.encode(body), media_type="application/json")


def _instrument(state: HubSpotState) -> Sequence[BaseRoute]:
    counter = WriteCounter(state)
    return [Route("/_emulator/contacts", counter.contacts_endpoint, methods=["GET"])]


@click.command("emulator", params=list(emulator.params), help=emulator.help)
def main(**options: Any) -> None:
    serve(**options, instrument=_instrument)


if __name__ == "__main__":
    main(prog_name="hubsync emulator")
