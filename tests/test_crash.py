"""The ``numlog-trio`` command killed with SIGKILL: what its log may hold afterwards.

The contract, checked by :func:`helpers.assert_crash_consistent`: after a SIGKILL at any
moment, ``numbers.log`` holds only whole lines of nine ASCII digits and a newline, each number
at most once and only numbers that clients sent, except that its last line may be torn (1 to
9 digits, no newline): Linux can stop a large write at a page boundary when a fatal signal
arrives. And the server counts a number only once its write returned, so the last unique
total it reported before the kill is at most the number of whole lines.

The checker is tested first, on logs made by hand, so that it cannot pass vacuously. Then
servers are killed at several instants of a load (none, a log of a given size, the first
report of duplicates, seeded random times), and, where a torn last line is likeliest, in the
middle of a write: the test watches the log's size and kills the server as soon as it is not
a whole number of lines, which only happens while a write is under way. Whether that kill
tore the last line depends on the kernel's timing, so the test records how many did (a
``torn_tails`` property in the JUnit report, and in its captured output) instead of asserting
it; ``benchmarks/torn_writes.py`` measures how often kills at random instants tear one.

The servers run as commands under the rules in ``helpers.py`` (:func:`helpers.start_server`
on ``trio.run_process``, 127.0.0.1, port 0, the test's ``tmp_path``, every wait bounded and
failing with what was seen). The busy clients (:func:`helpers.keep_busy`) are tasks of a
nursery of the test's own, which ends once each has seen the kill break its connection. The
log's size is watched from a worker thread, within a bound; no test sleeps to show that
nothing happened (the random kills sleep only to choose their instant).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Final

import numpy as np
import pytest
import trio
from helpers import (
    CLIENTS,
    QUICK,
    TIMEOUT,
    Finished,
    ServerProcess,
    assert_crash_consistent,
    first_number,
    keep_busy,
    lines,
    numbered_lines,
    report_counts,
    sent_by_clients,
    start_server,
    sums,
)

# The checker itself.

SENT: Final = np.arange(1, 10)
"""The numbers 1 to 9: what the clients sent, for the logs made by hand."""


@pytest.mark.parametrize(
    ("data", "unique_total", "whole"),
    [
        (b"", 0, 0),
        (lines(3, 1, 2), 3, 3),
        (lines(3, 1, 2), 1, 3),
        (lines(3, 1) + b"0", 2, 2),
        (lines(3, 1) + b"00000000", 2, 2),
        (lines(3, 1) + b"123456789", 0, 2),
        (b"12345", 0, 0),
    ],
    ids=[
        "empty",
        "whole-lines",
        "a-report-behind",
        "torn-after-1-digit",
        "torn-after-8-digits",
        "torn-after-9-digits",
        "only-a-torn-line",
    ],
)
def test_the_checker_accepts_whole_lines_and_a_torn_last_line(
    data: bytes, unique_total: int, whole: int
) -> None:
    assert assert_crash_consistent(data, SENT, unique_total=unique_total) == whole


@pytest.mark.parametrize(
    ("data", "unique_total", "message"),
    [
        (lines(3, 1) + b"1234567890", 0, r"line 3 of 3 whole lines is b'1234567890'"),
        (lines(3, 1) + b"12\n", 0, r"after 2 whole lines the log ends with b'12\\n'"),
        (lines(3, 1) + b"12a", 0, r"ends with b'12a', not with the 1 to 9 digits"),
        (lines(3) + b"00000001x\n" + lines(2), 0, r"line 2 of 3 whole lines is b'00000001x\\n'"),
        (lines(3) + b"0001\n" + lines(2) + b"00000", 0, r"line 2 of 3 whole lines is b'0001\\n0"),
        (lines(3, 1, 2, 1), 0, r"000000001 is logged on lines \[2, 4\] \(1 repeat"),
        (lines(3, 10, 2), 0, r"line 2 logs 000000010, which no client sent"),
        (lines(3, 1), 3, r"a report counted 3 unique numbers, but the log holds 2 whole lines"),
        (lines(3, 1) + b"00000000", 3, r"counted 3 unique numbers, but the log holds 2 whole"),
    ],
    ids=[
        "ten-bytes-without-a-newline",
        "a-newline-in-the-torn-line",
        "a-letter-in-the-torn-line",
        "a-bad-line-in-the-middle",
        "a-short-line-in-the-middle",
        "a-repeat",
        "a-number-nobody-sent",
        "a-report-ahead-of-the-log",
        "a-report-counting-the-torn-line",
    ],
)
def test_the_checker_rejects_anything_else(data: bytes, unique_total: int, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        assert_crash_consistent(data, SENT, unique_total=unique_total)


# Servers killed under load.

PER_CLIENT: Final = 400_000
"""Distinct numbers each busy client sends, over and over: 20 MB of new lines in all, which
keep the writer busy for some tens of milliseconds before it only deduplicates."""

ALL_LINES: Final = CLIENTS * PER_CLIENT * 10
"""Bytes of the log once it holds every number sent."""

RANDOM_WINDOW: Final = 0.2
"""Seconds after the busy clients start within which the random kills fall. On the machine of
benchmarks/RESULTS.md the first new lines reach the log some 70 ms after the start, the last
some 120 to 180 ms after it; then the server only deduplicates."""

_RANDOM: Final = random.Random(13)
RANDOM_KILLS: Final = [round(_RANDOM.uniform(0, RANDOM_WINDOW), 3) for _ in range(2)]
"""Seconds from the start of the load to the random kills: seeded, the same on every run."""


def _last_unique_total(stdout: str) -> int:
    """Return the unique total of the last complete report (0 if none), checking them all."""
    counts = report_counts(stdout[: stdout.rfind("\n") + 1])
    sums(counts)
    return counts[-1][2] if counts else 0


def _watch_log_size(
    log: Path,
    until: Callable[[int], bool],
    within: float,
    stop: threading.Event,
    kill: int | None,
) -> int | None:
    """Poll the log's size until ``until(size)``; then SIGKILL process ``kill``, if given.

    Runs in a worker thread. The process is signalled through a pidfd, opened as the watch
    starts, while the server runs: a kill coming late cannot hit a process that reused its id.

    Returns:
        The size that satisfied ``until``, or None if ``within`` seconds passed first or
        ``stop`` was set.
    """
    deadline = time.monotonic() + within
    pidfd = None if kill is None else os.pidfd_open(kill)
    try:
        fd = os.open(log, os.O_RDONLY)
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                size = os.fstat(fd).st_size
                if until(size):
                    if pidfd is not None:
                        with contextlib.suppress(ProcessLookupError):  # it died already
                            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    return size
            return None
        finally:
            os.close(fd)
    finally:
        if pidfd is not None:
            os.close(pidfd)


async def _wait_log_size(
    server: ServerProcess,
    until: Callable[[int], bool],
    expected: str,
    *,
    kill: bool = False,
    within: float = TIMEOUT,
) -> int:
    """Wait until the log's size satisfies ``until``; with ``kill``, SIGKILL the server then.

    The size is polled from a worker thread, which kills the server itself: from the moment
    the size is seen, the kill takes no longer than a system call.

    Raises:
        AssertionError: ``within`` seconds passed first; says what the server printed.
    """
    log = server.directory / "numbers.log"
    stop = threading.Event()
    try:
        seen = await trio.to_thread.run_sync(
            _watch_log_size,
            log,
            until,
            within,
            stop,
            server.process.pid if kill else None,
            abandon_on_cancel=True,
        )
    finally:
        stop.set()  # if abandoned: the thread ends at its next poll
    if seen is None:
        size = log.stat().st_size
        raise AssertionError(f"no {expected} after {within} s: {size} bytes; {server}")
    return seen


async def _killed(server: ServerProcess) -> Finished:
    """Wait until a server that was sent SIGKILL has ended; check that the kill ended it."""
    finished = await server.finish(within=QUICK)
    assert finished.returncode == -signal.SIGKILL, f"not ended by SIGKILL; {server}"
    return finished


async def _at_once(server: ServerProcess) -> None:
    """Kill as soon as the server listens."""


def _log_size(size: int) -> Callable[[ServerProcess], Awaitable[None]]:
    """Kill once the log holds at least ``size`` bytes."""

    async def wait(server: ServerProcess) -> None:
        await _wait_log_size(server, lambda logged: logged >= size, f"log of {size} bytes")

    return wait


async def _first_duplicates(server: ServerProcess) -> None:
    """Kill after the first report of duplicates."""
    await server.wait_for_report(lambda _, duplicates: duplicates > 0, "duplicates")


def _after(seconds: float) -> Callable[[ServerProcess], Awaitable[None]]:
    """Kill ``seconds`` after the busy clients start."""

    async def wait(server: ServerProcess) -> None:
        await trio.sleep(seconds)

    return wait


@pytest.mark.parametrize(
    ("clients", "instant"),
    [
        pytest.param(0, _at_once, id="listening-idle"),
        pytest.param(CLIENTS, _log_size(64 << 10), id="log-of-64KiB"),
        pytest.param(CLIENTS, _log_size(8 << 20), id="log-of-8MiB"),
        pytest.param(CLIENTS, _first_duplicates, id="first-report-of-duplicates"),
        *(pytest.param(CLIENTS, _after(t), id=f"random-{t * 1000:.0f}ms") for t in RANDOM_KILLS),
    ],
)
async def test_a_sigkill_leaves_a_log_consistent_up_to_a_torn_last_line(
    tmp_path: Path, clients: int, instant: Callable[[ServerProcess], Awaitable[None]]
) -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.05")
        streams = [await stack.enter_async_context(await server.connect()) for _ in range(clients)]
        async with trio.open_nursery() as busy:
            keep_busy(busy, server, streams, PER_CLIENT)
            await instant(server)
            server.signal(signal.SIGKILL)
            finished = await _killed(server)
    sent = sent_by_clients(PER_CLIENT, clients) if clients else np.arange(0)
    assert_crash_consistent(
        (tmp_path / "numbers.log").read_bytes(),
        sent,
        unique_total=_last_unique_total(finished.stdout),
    )


MID_WRITE_KILLS: Final = (0, 1 << 20, 4 << 20, 8 << 20, 12 << 20)
"""Bytes the log holds, at least, before each kill in the middle of a write: the first write
is aimed at, then writes further and further into the 20 MB of new lines."""


def _mid_write(at_least: int) -> Callable[[int], bool]:
    """Tell by the log's size that a write is under way, once the log holds ``at_least``.

    A size that is not a whole number of lines shows a write under way: Linux grows the file
    page by page as it copies. Once the log holds every number sent, no write is left to aim
    at; the kill comes then.
    """
    return lambda size: (size >= at_least and size % 10 != 0) or size >= ALL_LINES


async def test_a_sigkill_in_the_middle_of_a_write_tears_at_most_the_last_line(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    tails: list[int] = []
    aimed = 0
    for at_least in MID_WRITE_KILLS:
        directory = tmp_path / f"after-{at_least}"
        directory.mkdir()
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            server = await start_server(nursery, directory, "--report-interval", "0.05")
            streams = [
                await stack.enter_async_context(await server.connect()) for _ in range(CLIENTS)
            ]
            async with trio.open_nursery() as busy:
                keep_busy(busy, server, streams, PER_CLIENT)
                seen = await _wait_log_size(
                    server, _mid_write(at_least), f"write after {at_least} bytes", kill=True
                )
                finished = await _killed(server)
        aimed += seen % 10 != 0
        data = (directory / "numbers.log").read_bytes()
        assert_crash_consistent(
            data,
            sent_by_clients(PER_CLIENT),
            unique_total=_last_unique_total(finished.stdout),
        )
        tails.append(len(data) % 10)
    torn = sum(tail != 0 for tail in tails)
    record_property("torn_tails", torn)
    record_property("kills", len(tails))
    print(
        f"{torn} of {len(tails)} kills tore the last line (bytes after the last whole line: "
        f"{tails}); {aimed} were sent while the log's size showed a write under way"
    )


# Carrying on after the kill: --resume.

SECOND_RUN: Final = 300_000
"""Numbers each client of the second run sends: its first run's own, and as many new ones."""


@pytest.mark.parametrize(
    "kill_when",
    [
        pytest.param(_mid_write(1 << 20), id="mid-write"),
        pytest.param(lambda size: size >= 8 << 20, id="log-of-8MiB"),
    ],
)
async def test_resume_after_a_sigkill_logs_the_union_of_both_runs_each_number_once(
    tmp_path: Path, kill_when: Callable[[int], bool]
) -> None:
    log = tmp_path / "numbers.log"
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.05")
        streams = [await stack.enter_async_context(await server.connect()) for _ in range(CLIENTS)]
        async with trio.open_nursery() as busy:
            keep_busy(busy, server, streams, PER_CLIENT)
            await _wait_log_size(server, kill_when, "the instant to kill", kill=True)
            await _killed(server)
    killed = log.read_bytes()
    whole = assert_crash_consistent(killed, sent_by_clients(PER_CLIENT))
    first_run = set(killed[: whole * 10].splitlines())

    # The second run: each client sends numbers from where its first-run ones start, so
    # that some were logged before the kill, some sent then but lost, and some are new.
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--resume", "--report-interval", "0.05")
        assert server.loaded == whole, server.stderr
        sent = [
            numbered_lines(first_number(client) + PER_CLIENT - SECOND_RUN, SECOND_RUN)
            for client in range(CLIENTS)
        ]
        async with trio.open_nursery() as senders:
            for data in sent:
                senders.start_soon(server.send_and_wait_closed, data)
        expected = first_run.union(*(data.splitlines() for data in sent))
        await server.wait_for_report(
            lambda unique, _: server.loaded + unique == len(expected), f"{len(expected)} in all"
        )
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    resumed = log.read_bytes()
    assert len(resumed) == len(expected) * 10, "the log is not whole lines, one for each number"
    assert set(resumed.splitlines()) == expected
    assert resumed.startswith(killed[: whole * 10]), "the first run's lines were changed"
    unique, duplicates = sums(report_counts(finished.stdout), whole)
    assert whole + unique == len(expected)
    assert unique + duplicates == CLIENTS * SECOND_RUN
    torn = len(killed) - whole * 10
    print(f"killed with {whole} whole lines and {torn} bytes after them")
    cut = [text for text in finished.stderr.splitlines() if "cut off" in text]
    assert len(cut) == (1 if torn else 0), finished.stderr
    if torn:
        assert f"an unfinished line of {torn} digits" in cut[0]
