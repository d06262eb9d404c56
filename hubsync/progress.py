"""The progress bars of the CLI and the demo, set up in one place: a description, a bar, what is
counted (items as done/total, or bytes with their speed), an optional line of details, the time.

    with progress_bars(console, details="{task.fields[rate]}") as bars:
        task = bars.add_task("backfill a17", total=1000, rate="")
"""

from __future__ import annotations

from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = ["progress_bars"]


def progress_bars(
    console: Console,
    *,
    counts: Literal["items", "bytes", "none"] = "items",
    percent: bool = False,
    details: str | None = None,
    clock: Literal["remaining", "elapsed"] = "remaining",
    transient: bool = False,
    disable: bool = False,
) -> Progress:
    """A Rich `Progress` on `console`.

    counts: "items" shows done/total, "bytes" sizes and the transfer speed, "none" nothing;
    percent: the share done; details: a template of task fields (``"{task.fields[rate]}"``);
    clock: the time remaining or elapsed; transient: erased when done; disable: shows nothing
    (for output that is not a terminal, or JSON).
    """
    columns: list[str | ProgressColumn] = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
    ]
    if counts == "items":
        columns.append(MofNCompleteColumn())
    elif counts == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn()]
    if percent:
        columns.append(TaskProgressColumn())
    if details is not None:
        columns.append(TextColumn(details))
    columns.append(TimeRemainingColumn() if clock == "remaining" else TimeElapsedColumn())
    return Progress(*columns, console=console, transient=transient, disable=disable)
