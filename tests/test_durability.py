"""Durability as the command keeps it: when the log is synced, and ``--resume``.

The installed ``numlog-trio`` runs as a subprocess, under the rules in ``helpers.py``. What
happens inside it is watched from outside through a wrapper (:func:`traced_server`) that
appends each write and sync of the log, with the system's monotonic time, to a file of the
test's: the same clock as the test's ``time.monotonic()``. Crashes (``SIGKILL``) and resuming
after them are in ``test_crash.py``.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Final

import attrs
import pytest
import trio
from helpers import (
    QUICK,
    TIMEOUT,
    after_start,
    line,
    lines,
    logged,
    numbered_lines,
    report_counts,
    run_server,
    signalled_while_loading,
    start_server,
    sums,
)

SIGNALS = pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)

_TRACE: Final = """
import os, runpy, time
TRACE = os.open("trace.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
real_writev, real_fdatasync = os.writev, os.fdatasync
def note(kind, fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == "numbers.log":
        os.write(TRACE, f"{kind} {time.monotonic()} {os.fstat(fd).st_size}\\n".encode())
def writev(fd, buffers):
    written = real_writev(fd, buffers)
    note("write", fd)
    return written
def fdatasync(fd):
    note("sync-start", fd)
    real_fdatasync(fd)
os.writev, os.fdatasync = writev, fdatasync
runpy.run_module("numlog_trio", run_name="__main__")
"""


def traced_server() -> tuple[str, ...]:
    """A server command that traces the log's writes and syncs to ``trace.txt`` in its cwd."""
    return (sys.executable, "-P", "-c", _TRACE)


@attrs.frozen
class Traced:
    kind: str
    at: float
    size: int


def read_trace(directory: Path) -> list[Traced]:
    trace = directory / "trace.txt"
    if not trace.exists():
        return []
    return [
        Traced(kind, float(at), int(size))
        for kind, at, size in (text.split() for text in trace.read_text().splitlines())
    ]


async def test_a_slow_stream_is_synced_within_the_interval_of_each_write(tmp_path: Path) -> None:
    # One number every 50 ms, for about two seconds: 40 writes, a sync about every 0.5 s.
    interval = 0.5
    slack = 1.0  # seconds: a loaded machine may schedule the server late
    async with trio.open_nursery() as nursery:
        server = await start_server(
            nursery, tmp_path, "--sync-interval", str(interval), command=traced_server()
        )
        sent: list[float] = []
        async with await server.connect() as client:
            for number in range(40):
                sent.append(time.monotonic())
                await client.send_all(line(number))
                await trio.sleep(0.05)
            await trio.sleep(interval + slack)
            syncs = [event for event in read_trace(tmp_path) if event.kind == "sync-start"]
            await client.send_all(line("terminate"))
            finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    for number, at in enumerate(sent):
        size = (number + 1) * 10
        assert any(
            event.size >= size and at <= event.at <= at + interval + slack for event in syncs
        ), f"number {number}, sent at {at:.3f}, was not synced within {interval} s: {syncs}"
    assert len(syncs) <= (sent[-1] - sent[0]) / interval + 3, f"{len(syncs)} syncs: {syncs}"


async def test_an_idle_server_makes_no_sync_calls(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(
            nursery, tmp_path, "--sync-interval", "0.1", command=traced_server()
        )
        at_start = read_trace(tmp_path)  # emptying the log at start is synced
        await server.send_and_wait_closed(lines(1, 2))
        with trio.move_on_after(TIMEOUT):  # the write, then its sync
            while len(read_trace(tmp_path)) < len(at_start) + 2:  # noqa: ASYNC110 (a file)
                await trio.sleep(0.01)
        after_write = read_trace(tmp_path)
        await trio.sleep(1)
        assert read_trace(tmp_path) == after_write
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    during = after_write[len(at_start) :]
    assert [event.kind for event in during] == ["write", "sync-start"], during


async def test_at_sync_interval_0_each_write_is_synced_before_the_next(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(
            nursery, tmp_path, "--sync-interval", "0", command=traced_server()
        )
        at_start = len(read_trace(tmp_path))
        for number in range(5):
            await server.send_and_wait_closed(lines(number, number))
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    kinds = [event.kind for event in read_trace(tmp_path)[at_start:]]
    # Every write followed by its sync (batches that wait together share a write), and the
    # sync at shutdown last.
    writes = kinds.count("write")
    assert 1 <= writes <= 5, " ".join(kinds)
    assert kinds == ["write", "sync-start"] * writes + ["sync-start"], " ".join(kinds)
    assert logged(tmp_path) == [line(number) for number in range(5)]


_FAILING_SYNC: Final = """
import errno, os, runpy
real_fdatasync = os.fdatasync
calls = []
def fdatasync(fd):
    calls.append(fd)
    if len(calls) > 1:  # the sync of the emptied log at start goes through
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    real_fdatasync(fd)
os.fdatasync = fdatasync
runpy.run_module("numlog_trio", run_name="__main__")
"""


async def test_a_failing_background_sync_stops_the_server_with_one_line(tmp_path: Path) -> None:
    command = (sys.executable, "-P", "-c", _FAILING_SYNC)
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--sync-interval", "0.1", command=command)
        await server.send_and_wait_closed(lines(1, 2))
        finished = await server.finish()
    assert finished.returncode == 1
    assert after_start(finished.stderr) == [
        "numlog-trio: cannot sync numbers.log: Input/output error"
    ], finished.stderr
    assert logged(tmp_path) == [line(1), line(2)]  # written, counted; only the sync failed


# ---------------------------------------------------------------------------------------------
# --resume


async def test_resume_goes_on_where_the_log_ends_and_reports_count_only_this_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "numbers.log").write_bytes(lines(1, 2, 3))
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--resume", "--report-interval", "0.1")
        assert "(resumed with 3 numbers loaded in " in server.stderr
        await server.send_and_wait_closed(lines(3, 4, 1, 5))
        await server.wait_for_report(lambda unique, _: unique == 2, "2 unique")
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "numbers.log").read_bytes() == lines(1, 2, 3, 4, 5)
    counts = report_counts(finished.stdout)
    assert sum(unique for unique, _, _ in counts) == 2
    assert sum(duplicates for _, duplicates, _ in counts) == 2
    assert counts[-1][2] == 5  # the unique total: every line of the log


async def test_without_resume_the_log_is_cleared_as_the_specification_says(
    tmp_path: Path,
) -> None:
    (tmp_path / "numbers.log").write_bytes(lines(1, 2, 3))
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.1")
        assert "resumed" not in server.stderr
        await server.send_and_wait_closed(lines(3))
        await server.wait_for_report(lambda unique, _: unique == 1, "1 unique")
        await server.send_terminate()
        finished = await server.finish()
    assert (tmp_path / "numbers.log").read_bytes() == lines(3)
    assert sums(report_counts(finished.stdout)) == (1, 0)


async def test_resume_cuts_a_torn_tail_saying_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "numbers.log").write_bytes(lines(1, 2) + b"1234" + b"\0" * 4090)
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--resume")
        await server.send_and_wait_closed(lines(1234, 2))
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "numbers.log").read_bytes() == lines(1, 2, 1234)
    cut = [text for text in finished.stderr.splitlines() if "cut off" in text]
    assert cut == [
        "numlog-trio: cut off what followed the 2 whole lines of numbers.log (left by a "
        "crash): an unfinished line of 4 digits and 4090 NUL bytes"
    ], finished.stderr
    assert "(resumed with 2 numbers loaded in " in finished.stderr


async def test_resume_of_a_missing_log_starts_an_empty_one(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--resume")
        assert "(resumed with 0 numbers loaded in " in server.stderr
        await server.send_and_wait_closed(lines(7))
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line(7)]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lines(1, 2) + b"hello, world\n", "line 3 is not nine digits and a newline"),
        (lines(1, 2, 1), "line 3 repeats a number of an earlier line"),
        (lines(1) + b"123456789\r\n", "line 2 is not nine digits and a newline"),
    ],
    ids=["text", "repeat", "CRLF"],
)
async def test_resume_refuses_a_file_that_is_not_a_log_and_leaves_it_unchanged(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    log = tmp_path / "numbers.log"
    log.write_bytes(content)
    before = log.stat()
    finished = await run_server(tmp_path, "--resume")
    assert finished.returncode == 1
    assert finished.stderr == (
        f"numlog-trio: cannot resume from numbers.log: {problem}; "
        "it is not a log this server wrote, or it was damaged before its end\n"
    )
    assert finished.stdout == ""
    assert log.read_bytes() == content
    assert (log.stat().st_mtime_ns, log.stat().st_size) == (before.st_mtime_ns, before.st_size)


async def test_resume_with_the_port_taken_leaves_a_torn_log_as_it_was(tmp_path: Path) -> None:
    content = lines(1, 2) + b"123"
    (tmp_path / "numbers.log").write_bytes(content)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with listeners[0]:
        finished = await run_server(tmp_path, "--resume", "--port", str(port))
    assert finished.returncode == 1
    assert "cannot listen" in finished.stderr
    assert (tmp_path / "numbers.log").read_bytes() == content


@SIGNALS
@pytest.mark.parametrize("at", ["second", "last"], ids=["second-read", "last-read"])
async def test_a_signal_while_loading_stops_promptly_and_leaves_the_log_as_it_was(
    tmp_path: Path, signum: signal.Signals, at: str
) -> None:
    # Five reads' worth and a torn tail, which a finished load would cut. A signal at the
    # last read finds the load done: it must still stop the server before it listens.
    content = numbered_lines(0, 500_000) + b"12345"
    (tmp_path / "numbers.log").write_bytes(content)
    command = signalled_while_loading(signum, at=at)
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--resume", command=command, listening=False)
        finished = await server.finish(within=QUICK + 10)
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr == f"numlog-trio: received {signum.name}: shutting down\n"
    assert finished.stdout == ""
    assert (tmp_path / "numbers.log").read_bytes() == content
