"""The report text and its 10-second schedule, on pytest-trio's autojump clock (no sockets)."""

from __future__ import annotations

import time

import trio
import trio.testing

from numlog_trio import Totals, format_report, report_periodically


def test_report_text_matches_the_specification() -> None:
    previous = Totals(unique=567_181, duplicates=10)
    current = Totals(unique=567_231, duplicates=12)
    assert format_report(previous, current) == (
        "Received 50 unique numbers, 2 duplicates. Unique total: 567231"
    )


def test_first_report_of_an_idle_run() -> None:
    assert format_report(Totals(), Totals()) == (
        "Received 0 unique numbers, 0 duplicates. Unique total: 0"
    )


async def test_three_reports_every_ten_seconds_with_the_differences(
    autojump_clock: trio.testing.MockClock,
) -> None:
    readings = iter([Totals(0, 0), Totals(50, 2), Totals(80, 2), Totals(80, 9)])
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            report_periodically,
            10,
            lambda: next(readings),
            lambda line: lines.append((trio.current_time(), line)),
        )
        await trio.sleep(35)
        nursery.cancel_scope.cancel()
    assert lines == [
        (10, "Received 50 unique numbers, 2 duplicates. Unique total: 50"),
        (20, "Received 30 unique numbers, 0 duplicates. Unique total: 80"),
        (30, "Received 0 unique numbers, 7 duplicates. Unique total: 80"),
    ]
    assert time.monotonic() - started < 1


async def test_schedule_does_not_drift_when_reporting_is_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    def slow_emit(line: str) -> None:
        times.append(trio.current_time())
        autojump_clock.jump(3)  # as if printing had blocked for 3 s

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_periodically, 10, Totals, slow_emit)
        await trio.sleep(45)
        nursery.cancel_scope.cancel()
    assert times == [10, 20, 30, 40]
