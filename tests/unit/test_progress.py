"""The one progress-bar set-up of the CLI and the demo, rendered to a recording console."""

from __future__ import annotations

import io

from rich.console import Console

from hubsync.progress import progress_bars


def rendered(**options) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=120, record=True)
    with progress_bars(console, **options) as bars:
        task = bars.add_task("backfill a17", total=200, rate="12 contacts/s", events=7)
        bars.update(task, completed=50)
        bars.refresh()
    return console.export_text()


def test_items_show_done_of_total_the_share_and_the_details() -> None:
    text = rendered(percent=True, details="{task.fields[rate]}")
    assert "backfill a17" in text and "50/200" in text and "25%" in text
    assert "12 contacts/s" in text


def test_bytes_show_sizes_and_no_item_count() -> None:
    text = rendered(counts="bytes", details="{task.fields[events]} events")
    assert (
        "50/200 bytes" in text
        and "7 events" in text
        and "50/200 " not in text.replace("50/200 bytes", "")
    )


def test_the_clock_counts_down_or_up_and_disabled_bars_show_nothing() -> None:
    assert "-:--:--" in rendered() and "0:00:00" not in rendered()
    assert "0:00:00" in rendered(clock="elapsed")
    assert "backfill" not in rendered(disable=True)
