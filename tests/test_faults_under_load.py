"""The ``numlog-trio`` command under load from several clients: shutdown and faults.

Each test keeps every slot busy with clients sending megabytes, then stops the server (a
signal, ``terminate``, a disk filling up) and checks that nothing accepted was lost, nothing
was logged twice or in part, and every client was disconnected. The servers run as commands
under the rules in ``helpers.py``; the busy clients are tasks of a nursery of the test's own,
which ends only once each has seen the server close its connection.
"""

from __future__ import annotations

import fcntl
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.lowlevel
from helpers import (
    BUSY_NUMBERS,
    CLIENTS,
    QUICK,
    TIMEOUT,
    after_start,
    first_number,
    keep_busy,
    limited_server,
    line,
    logged_numbers,
    numbered_lines,
    report_counts,
    sent_by_clients,
    served_clients,
    start_server,
    sums,
)
from numpy.typing import NDArray

SIGNALS = pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)

TERMINATE_BOUND = 2.0
"""Seconds from sending ``terminate`` to the process's exit; generous for a shared machine."""


def _assert_no_duplicates(numbers: NDArray[np.uint32]) -> None:
    ordered = np.sort(numbers)
    assert not (ordered[1:] == ordered[:-1]).any(), "a number was logged twice"


@SIGNALS
async def test_a_signal_after_clients_sent_everything_keeps_every_number(
    tmp_path: Path, signum: signal.Signals
) -> None:
    per_client = 200_000
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        # The server closes after a client's end of stream only once it has read every line
        # and handed the numbers to the writer; the writer may still be busy with them.
        data = [numbered_lines(first_number(client), per_client) for client in range(CLIENTS)]
        async with trio.open_nursery() as senders:
            for one_client in data:
                senders.start_soon(server.send_and_wait_closed, one_client)
        started = trio.current_time()
        server.signal(signum)
        finished = await server.finish(within=QUICK)
        elapsed = trio.current_time() - started
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert elapsed < QUICK
    logged = logged_numbers(tmp_path)
    _assert_no_duplicates(logged)
    assert np.array_equal(np.sort(logged), sent_by_clients(per_client))


PIPE_SIZE = 4096
"""Bytes a pipe holds at least (one page): less than one client's batch of number lines."""


async def _read_fifo_until_closed(pipe: trio.lowlevel.FdStream, within: float = TIMEOUT) -> bytes:
    """Read a pipe until its writer closes it; fail after ``within`` seconds."""
    received = bytearray()
    with trio.move_on_after(within):
        while chunk := await pipe.receive_some():
            received += chunk
        return bytes(received)
    raise AssertionError(f"the pipe was still open after {within} s; {len(received)} bytes read")


@pytest.mark.parametrize("shutdown", ["SIGINT", "SIGTERM", "terminate"])
async def test_a_shutdown_while_the_writer_is_behind_still_writes_every_batch_handed_to_it(
    tmp_path: Path, shutdown: str
) -> None:
    # The log is a pipe, and the test its reader, which reads nothing until the server was
    # told to stop. So the writer is stuck on the first client's batch (more than the pipe
    # holds) and the second client's batch waits in the writer's queue: shutdown must still
    # write it, whatever stops the server.
    log = tmp_path / "numbers.log"
    os.mkfifo(log)
    reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    async with trio.lowlevel.FdStream(reader) as pipe:  # closes the reader
        fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        batches = [numbered_lines(first_number(client), 1000) for client in range(2)]
        assert fcntl.fcntl(reader, fcntl.F_GETPIPE_SZ) < len(batches[0])  # the writer blocks
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path)
            first, second = batches
            await server.send_and_wait_closed(first)  # read whole and handed to the writer
            # Something in the pipe: the writer is in the first batch's write, so the second
            # cannot join it in one write; it waits in the queue.
            with trio.move_on_after(TIMEOUT) as waiting:
                await trio.lowlevel.wait_readable(reader)
            assert not waiting.cancelled_caught, f"nothing reached the log; {server}"
            await server.send_and_wait_closed(second)
            if shutdown == "terminate":
                await server.send_terminate()
            else:
                server.signal(signal.Signals[shutdown])
                await server.wait_until(lambda: "shutting down" in server.stderr, "shutdown")
            logged = await _read_fifo_until_closed(pipe)
            finished = await server.finish(within=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert logged == b"".join(batches)


@SIGNALS
async def test_a_signal_while_clients_are_sending_stops_at_once_and_logs_whole_lines(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.05")
        clients = [await stack.enter_async_context(await server.connect()) for _ in range(CLIENTS)]
        async with trio.open_nursery() as busy:
            keep_busy(busy, server, clients)
            await server.wait_for_report(lambda _, duplicates: duplicates > 0, "duplicates")
            started = trio.current_time()
            server.signal(signum)
            finished = await server.finish(within=QUICK)
            elapsed = trio.current_time() - started
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert elapsed < QUICK
    logged = logged_numbers(tmp_path)
    _assert_no_duplicates(logged)
    assert np.isin(logged, sent_by_clients(BUSY_NUMBERS)).all(), "a number nobody sent"
    assert all(total <= len(logged) for *_, total in report_counts(finished.stdout))


async def test_terminate_from_a_waiting_client_waits_until_it_is_served(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.05")
        holders = await served_clients(
            server, stack, [f"99999999{slot}" for slot in range(CLIENTS)]
        )
        async with trio.open_nursery() as busy:
            keep_busy(busy, server, holders[:3])
            idle = holders[3:]
            waiting = await stack.enter_async_context(await server.connect())
            await waiting.send_all(line("123456789") + line("terminate"))
            # The slots stay busy: the streaming clients go on being read (their repeats
            # counted as duplicates), and the waiting client is neither read nor closed.
            await server.wait_for_report(lambda _, duplicates: duplicates > 0, "duplicates")
            assert await server.is_open_after(waiting, 0.3)
            assert server.process.returncode is None
            assert line("123456789") not in (tmp_path / "numbers.log").read_bytes()

            await idle[0].aclose()  # a slot frees: the waiting client is read, its terminate obeyed
            finished = await server.finish(within=QUICK)
            assert await server.wait_closed(waiting) == b""
            assert await server.wait_closed(idle[1]) == b""
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    logged = logged_numbers(tmp_path)
    _assert_no_duplicates(logged)
    assert 123456789 in logged


async def test_terminate_under_load_ends_everything_within_a_bound(tmp_path: Path) -> None:
    from_terminator = numbered_lines(900_000_000, 1000)
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.05")
        clients = [
            await stack.enter_async_context(await server.connect()) for _ in range(CLIENTS - 1)
        ]
        async with trio.open_nursery() as busy:
            keep_busy(busy, server, clients)
            await server.wait_for_report(lambda _, duplicates: duplicates > 0, "duplicates")
            terminator = await stack.enter_async_context(await server.connect())
            started = trio.current_time()
            await terminator.send_all(from_terminator + line("terminate"))
            finished = await server.finish(within=QUICK)
            elapsed = trio.current_time() - started
            assert await server.wait_closed(terminator) == b""
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert elapsed < TERMINATE_BOUND, f"terminate took {elapsed:.3f} s to end the server"
    logged = logged_numbers(tmp_path)
    _assert_no_duplicates(logged)
    assert np.isin(np.arange(900_000_000, 900_001_000), logged).all()


FILE_SIZE_LIMIT = 1_000_005  # a little over 100,000 lines; not a whole number of lines


async def test_a_disk_filling_up_under_load_disconnects_everyone_and_reports_only_what_was_logged(
    tmp_path: Path,
) -> None:
    command = limited_server("RLIMIT_FSIZE", FILE_SIZE_LIMIT)
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.02", command=command)
        holders = await served_clients(
            server, stack, [f"99999999{slot}" for slot in range(CLIENTS)]
        )
        idle = holders[4]
        waiting = await stack.enter_async_context(await server.connect())
        # Four clients send twice as many distinct numbers as the file may hold.
        async with trio.open_nursery() as busy:
            keep_busy(busy, server, holders[:4])
            finished = await server.finish()
        # Every client was disconnected: the busy ones (their nursery has ended), the idle
        # one, the one waiting unread.
        assert await server.wait_closed(idle) == b""
        assert await server.wait_closed(waiting) == b""
    assert finished.returncode == 1
    said = after_start(finished.stderr)
    assert said == ["numlog-trio: cannot write numbers.log: File too large"], finished.stderr
    logged = logged_numbers(tmp_path)  # whole lines only: the failed write was cut back
    _assert_no_duplicates(logged)
    assert CLIENTS < len(logged) <= FILE_SIZE_LIMIT // 10
    holders_numbers = 999_999_990 + np.arange(CLIENTS)
    sent = np.concatenate([sent_by_clients(BUSY_NUMBERS, clients=4), holders_numbers])
    assert np.isin(logged, sent).all(), "a number nobody sent"
    # No report ever counted a number that is not in the log.
    counts = report_counts(finished.stdout)
    sums(counts)
    assert all(total <= len(logged) for *_, total in counts)
