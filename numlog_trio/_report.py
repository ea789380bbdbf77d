"""The periodic report: its text, free of I/O, and the task that prints it on schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import attrs
import trio


@final
@attrs.frozen
class Totals:
    """Counts of the run.

    Attributes:
        unique: Distinct numbers in the log: each accepted number (written once), and
            those the log held at start when the run resumed it.
        duplicates: Numbers received this run that were in the log already.
    """

    unique: int = 0
    duplicates: int = 0


def format_report(previous: Totals, current: Totals) -> str:
    """Return the report line for the period between two readings of the totals."""
    return (
        f"Received {current.unique - previous.unique} unique numbers, "
        f"{current.duplicates - previous.duplicates} duplicates. "
        f"Unique total: {current.unique}"
    )


async def report_periodically(
    interval: float, read_totals: Callable[[], Totals], emit: Callable[[str], None]
) -> None:
    """Emit a report every ``interval`` seconds until cancelled.

    The schedule is drift-free: report k is due at start + k * interval, however long each
    report or the work between reports takes.

    Args:
        interval: Seconds between reports.
        read_totals: Returns the current totals.
        emit: Receives each report line.
    """
    previous = read_totals()
    deadline = trio.current_time()
    while True:
        deadline += interval
        await trio.sleep_until(deadline)
        current = read_totals()
        emit(format_report(previous, current))
        previous = current
