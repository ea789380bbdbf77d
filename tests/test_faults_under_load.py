"""The ``numlog-trio`` command under load from several clients: shutdown and faults.

Each test keeps every slot busy with clients sending megabytes, then stops the server (a
signal, ``terminate``, a disk filling up) and checks that nothing accepted was lost, nothing
was logged twice or in part, and every client was disconnected.

Rules for every test here:

- localhost only: servers listen on 127.0.0.1 and clients are plain blocking sockets, the
  busy ones each in a thread of their own;
- port 0: the operating system picks a free port, read back from the server's stderr line;
- a temporary directory (pytest's ``tmp_path``) is the server's working directory and holds
  its ``numbers.log``;
- an absolute timeout bounds every wait (process, pipe, socket and thread), and a server
  still running when a test ends is killed, so no test can hang.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    QUICK,
    TIMEOUT,
    connect,
    is_open_after,
    limited_server,
    line,
    logged_numbers,
    numbered_lines,
    report_counts,
    running_server,
    send_and_close,
    send_terminate,
    served_clients,
    stream_until_closed,
    sums,
    wait_closed,
)
from numpy.typing import NDArray

CLIENTS = 5
"""The default number of slots: every test fills them all."""

SIGNALS = pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)

BUSY_NUMBERS = 50_000
"""Distinct numbers each busy client sends, over and over."""

TERMINATE_BOUND = 2.0
"""Seconds from sending ``terminate`` to the process's exit; generous for a shared machine."""


def _first_number(client: int) -> int:
    """Return where the numbers of a client start: every client sends a set of its own."""
    return (client + 1) * 100_000_000


def _sent_by_clients(per_client: int, clients: int = CLIENTS) -> NDArray[np.int64]:
    """Return, sorted, the numbers that the first ``clients`` clients send ``per_client`` of."""
    starts = [_first_number(client) for client in range(clients)]
    return np.concatenate([np.arange(start, start + per_client) for start in starts])


def _keep_busy(
    pool: ThreadPoolExecutor, clients: list[socket.socket], per_client: int = BUSY_NUMBERS
) -> list[Future[None]]:
    """Make each client send its own numbers over and over until the server closes it.

    After the first round every number is a duplicate: the log stays small while the server
    keeps reading, deduplicating and counting as fast as it can.
    """
    return [
        pool.submit(stream_until_closed, sock, numbered_lines(_first_number(client), per_client))
        for client, sock in enumerate(clients)
    ]


def _wait_all(streams: list[Future[None]]) -> None:
    """Wait for the streaming clients: each must have seen the server close its connection."""
    for stream in streams:
        stream.result(timeout=TIMEOUT)


def _assert_no_duplicates(numbers: NDArray[np.int64]) -> None:
    ordered = np.sort(numbers)
    assert not (ordered[1:] == ordered[:-1]).any(), "a number was logged twice"


@SIGNALS
def test_a_signal_after_clients_sent_everything_keeps_every_number(
    tmp_path: Path, signum: signal.Signals
) -> None:
    per_client = 200_000
    with ThreadPoolExecutor(CLIENTS) as pool, running_server(tmp_path) as server:
        # The server closes after a client's end of stream only once it has read every line
        # and handed the numbers to the writer; the writer may still be busy with them.
        data = [numbered_lines(_first_number(client), per_client) for client in range(CLIENTS)]
        list(pool.map(partial(send_and_close, server.port), data, timeout=TIMEOUT))
        started = time.monotonic()
        server.signal(signum)
        finished = server.finish(timeout=QUICK)
        elapsed = time.monotonic() - started
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert elapsed < QUICK
    logged = logged_numbers(tmp_path)
    _assert_no_duplicates(logged)
    assert np.array_equal(np.sort(logged), _sent_by_clients(per_client))


PIPE_SIZE = 4096
"""Bytes a pipe holds at least (one page): less than one client's batch of number lines."""


def _read_until_closed(fd: int, timeout: float = TIMEOUT) -> bytes:
    """Read a non-blocking pipe until its writer closes it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the pipe was still open after {timeout} s"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                return bytes(received)
            received += chunk


@pytest.mark.parametrize("shutdown", ["SIGINT", "SIGTERM", "terminate"])
def test_a_shutdown_while_the_writer_is_behind_still_writes_every_batch_handed_to_it(
    tmp_path: Path, shutdown: str
) -> None:
    # The log is a pipe, and the test its reader, which reads nothing until the server was
    # told to stop. So the writer is stuck on the first client's batch (more than the pipe
    # holds) and the second client's batch waits in the writer's queue: shutdown must still
    # write it, whatever stops the server.
    log = tmp_path / "numbers.log"
    os.mkfifo(log)
    reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        batches = [numbered_lines(_first_number(client), 1000) for client in range(2)]
        assert fcntl.fcntl(reader, fcntl.F_GETPIPE_SZ) < len(batches[0])  # the writer blocks
        with running_server(tmp_path) as server:
            for data in batches:
                send_and_close(server.port, data)  # read whole and handed to the writer
            if shutdown == "terminate":
                send_terminate(server.port)
            else:
                server.signal(signal.Signals[shutdown])
                server.read_until(lambda: "shutting down" in server.stderr)
            logged = _read_until_closed(reader)
            finished = server.finish(timeout=QUICK)
    finally:
        os.close(reader)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert logged == b"".join(batches)


@SIGNALS
def test_a_signal_while_clients_are_sending_stops_at_once_and_logs_whole_lines(
    tmp_path: Path, signum: signal.Signals
) -> None:
    with (
        ThreadPoolExecutor(CLIENTS) as pool,
        running_server(tmp_path, "--report-interval", "0.05") as server,
        ExitStack() as stack,
    ):
        clients = [stack.enter_context(connect(server.port)) for _ in range(CLIENTS)]
        streams = _keep_busy(pool, clients)
        server.wait_for_report(lambda _, duplicates: duplicates > 0)
        started = time.monotonic()
        server.signal(signum)
        finished = server.finish(timeout=QUICK)
        elapsed = time.monotonic() - started
        _wait_all(streams)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert elapsed < QUICK
    logged = logged_numbers(tmp_path)
    _assert_no_duplicates(logged)
    assert np.isin(logged, _sent_by_clients(BUSY_NUMBERS)).all(), "a number nobody sent"
    assert all(total <= len(logged) for *_, total in report_counts(finished.stdout))


def test_terminate_from_a_waiting_client_waits_until_it_is_served(tmp_path: Path) -> None:
    with (
        ThreadPoolExecutor(CLIENTS) as pool,
        running_server(tmp_path, "--report-interval", "0.05") as server,
        ExitStack() as stack,
    ):
        holders = served_clients(server, stack, [f"99999999{slot}" for slot in range(CLIENTS)])
        streams = _keep_busy(pool, holders[:3])
        idle = holders[3:]
        waiting = stack.enter_context(connect(server.port))
        waiting.sendall(line("123456789") + line("terminate"))
        # The slots stay busy: the streaming clients go on being read (their repeats counted
        # as duplicates), and the waiting client is neither read nor closed.
        server.wait_for_report(lambda _, duplicates: duplicates > 0)
        assert is_open_after(waiting, 0.3)
        assert server.process.poll() is None
        assert line("123456789") not in (tmp_path / "numbers.log").read_bytes()

        idle[0].close()  # a slot frees: the waiting client is read, and its terminate obeyed
        finished = server.finish(timeout=QUICK)
        assert wait_closed(waiting) == b""
        assert wait_closed(idle[1]) == b""
        _wait_all(streams)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    logged = logged_numbers(tmp_path)
    _assert_no_duplicates(logged)
    assert 123456789 in logged


def test_terminate_under_load_ends_everything_within_a_bound(tmp_path: Path) -> None:
    from_terminator = numbered_lines(900_000_000, 1000)
    with (
        ThreadPoolExecutor(CLIENTS) as pool,
        running_server(tmp_path, "--report-interval", "0.05") as server,
        ExitStack() as stack,
    ):
        clients = [stack.enter_context(connect(server.port)) for _ in range(CLIENTS - 1)]
        streams = _keep_busy(pool, clients)
        server.wait_for_report(lambda _, duplicates: duplicates > 0)
        terminator = stack.enter_context(connect(server.port))
        started = time.monotonic()
        terminator.sendall(from_terminator + line("terminate"))
        finished = server.finish(timeout=QUICK)
        elapsed = time.monotonic() - started
        assert wait_closed(terminator) == b""
        _wait_all(streams)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert elapsed < TERMINATE_BOUND, f"terminate took {elapsed:.3f} s to end the server"
    logged = logged_numbers(tmp_path)
    _assert_no_duplicates(logged)
    assert np.isin(np.arange(900_000_000, 900_001_000), logged).all()


FILE_SIZE_LIMIT = 1_000_005  # a little over 100,000 lines; not a whole number of lines


def test_a_disk_filling_up_under_load_disconnects_everyone_and_reports_only_what_was_logged(
    tmp_path: Path,
) -> None:
    command = limited_server("RLIMIT_FSIZE", FILE_SIZE_LIMIT)
    with (
        ThreadPoolExecutor(CLIENTS) as pool,
        running_server(tmp_path, "--report-interval", "0.02", command=command) as server,
        ExitStack() as stack,
    ):
        holders = served_clients(server, stack, [f"99999999{slot}" for slot in range(CLIENTS)])
        idle = holders[4]
        waiting = stack.enter_context(connect(server.port))
        # Four clients send twice as many distinct numbers as the file may hold.
        streams = _keep_busy(pool, holders[:4])
        finished = server.finish()
        # Every client was disconnected: the busy ones, the idle one, the one waiting unread.
        _wait_all(streams)
        assert wait_closed(idle) == b""
        assert wait_closed(waiting) == b""
    assert finished.returncode == 1
    said = finished.stderr.splitlines()
    assert said[1:] == ["numlog-trio: cannot write numbers.log: File too large"], said
    logged = logged_numbers(tmp_path)  # whole lines only: the failed write was cut back
    _assert_no_duplicates(logged)
    assert CLIENTS < len(logged) <= FILE_SIZE_LIMIT // 10
    holders_numbers = 999_999_990 + np.arange(CLIENTS)
    sent = np.concatenate([_sent_by_clients(BUSY_NUMBERS, clients=4), holders_numbers])
    assert np.isin(logged, sent).all(), "a number nobody sent"
    # No report ever counted a number that is not in the log.
    counts = report_counts(finished.stdout)
    sums(counts)
    assert all(total <= len(logged) for *_, total in counts)
