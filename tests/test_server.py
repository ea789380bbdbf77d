"""serve() in the test's own Trio run: logging, the client limit, terminate, shutdown, reports.

In process on memory streams and the autojump clock (rules in ``helpers.py``), except the test
under load, which runs on loopback: its floods need TCP's back-pressure, where a memory stream
would buffer without limit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from pathlib import Path

import pytest
import trio
from helpers import (
    TEST_TIMEOUT,
    TIMEOUT,
    MemoryClient,
    MemoryListener,
    RunningServer,
    StartInProcess,
    StartOnLoopback,
    fail_after,
    is_closed_by_server,
    line,
    lines,
    numbered_lines,
)
from trio.testing import MockClock, wait_all_tasks_blocked

from numlog_trio import LogWriteError, LogWriter, ServerConfig, Totals, serve
from numlog_trio._server import _Shutdown


@fail_after(TEST_TIMEOUT)
async def test_numbers_from_several_clients_are_logged_once(
    server: RunningServer[MemoryClient], autojump_clock: MockClock
) -> None:
    first, second = await server.connect(), await server.connect()
    await first.send_all(lines(1, 2, 3, 2))
    await second.send_all(lines(3, 4, 999_999_999, 0))
    await server.wait_until_logged(6)
    await first.send_all(line("terminate"))
    assert await server.wait_until_stopped() == Totals(unique=6, duplicates=2)
    assert sorted(server.logged()) == sorted(lines(0, 1, 2, 3, 4, 999_999_999).splitlines(True))


@fail_after(TEST_TIMEOUT)
async def test_terminate_after_numbers_in_the_same_packet_keeps_them(
    server: RunningServer[MemoryClient], autojump_clock: MockClock
) -> None:
    client = await server.connect()
    await client.send_all(lines(*range(1000)) + line("terminate") + lines(5000))
    assert await server.wait_until_stopped() == Totals(unique=1000, duplicates=0)
    assert server.logged() == lines(*range(1000)).splitlines(keepends=True)


@fail_after(TEST_TIMEOUT)
async def test_terminate_disconnects_every_client_waiting_ones_too(
    start_in_process: StartInProcess, autojump_clock: MockClock
) -> None:
    server = await start_in_process(max_clients=2)
    served, terminator, waiting = [await server.connect() for _ in range(3)]
    await served.send_all(lines(7))
    await waiting.send_all(lines(8))
    await server.wait_until_logged(1)
    await wait_all_tasks_blocked()
    assert waiting.server_receives == 0, "the third client was read while two held the slots"
    await terminator.send_all(line("terminate"))
    for stream in (served, terminator, waiting):
        assert await is_closed_by_server(stream)
    assert await server.wait_until_stopped() == Totals(unique=1, duplicates=0)
    assert server.logged() == [line(7)]


@fail_after(TEST_TIMEOUT)
async def test_a_sixth_client_waits_unread_until_a_slot_frees(
    server: RunningServer[MemoryClient], autojump_clock: MockClock
) -> None:
    holders = [await server.connect() for _ in range(5)]
    for index, holder in enumerate(holders):
        await holder.send_all(lines(index))
    await server.wait_until_logged(5)
    sixth = await server.connect()
    await sixth.send_all(lines(6) + line("terminate"))
    await wait_all_tasks_blocked()
    assert sixth.server_receives == 0, "the sixth client was read while five held the slots"
    assert not server.done.is_set()

    await holders[0].aclose()
    assert await server.wait_until_stopped() == Totals(unique=6, duplicates=0)
    assert sixth.server_receives > 0
    assert server.logged()[-1] == line(6)


@fail_after(TEST_TIMEOUT)
async def test_max_clients_sets_the_number_of_slots(
    start_in_process: StartInProcess, autojump_clock: MockClock
) -> None:
    server = await start_in_process(max_clients=1)
    holder, second = await server.connect(), await server.connect()
    await holder.send_all(lines(1))
    await second.send_all(lines(2) + line("terminate"))
    await server.wait_until_logged(1)
    await wait_all_tasks_blocked()
    assert second.server_receives == 0, "the second client was read while one held the slot"
    await holder.send_all(line("terminate"))
    assert await server.wait_until_stopped() == Totals(unique=1, duplicates=0)
    assert server.logged() == [line(1)]


@fail_after(TEST_TIMEOUT)
async def test_an_invalid_line_closes_only_that_connection(
    server: RunningServer[MemoryClient], autojump_clock: MockClock
) -> None:
    bystander = await server.connect()
    offender = await server.connect()
    await offender.send_all(lines(1, 2) + b"12345678\n" + lines(3))
    assert await is_closed_by_server(offender)
    await bystander.send_all(lines(4))
    await server.wait_until_logged(3)
    await bystander.send_all(line("terminate"))
    await server.wait_until_stopped()
    assert server.logged() == lines(1, 2, 4).splitlines(keepends=True)


@fail_after(TEST_TIMEOUT)
async def test_a_partial_line_at_end_of_stream_is_discarded(
    server: RunningServer[MemoryClient], autojump_clock: MockClock
) -> None:
    client = await server.connect()
    await client.send_all(lines(1) + b"00000")
    await client.send_eof()
    assert await is_closed_by_server(client)
    other = await server.connect()
    await other.send_all(line("terminate"))
    assert await server.wait_until_stopped() == Totals(unique=1, duplicates=0)
    assert server.logged() == [line(1)]


@fail_after(TEST_TIMEOUT)
async def test_a_report_every_ten_seconds_of_serving(
    server: RunningServer[MemoryClient], autojump_clock: MockClock
) -> None:
    client = await server.connect()
    await client.send_all(lines(1, 2, 2))
    await server.wait_until_logged(2)  # no Trio time passes while the writer works
    await trio.sleep(25)
    assert [seconds for seconds, _ in server.reports] == pytest.approx([10, 20])
    assert [report for _, report in server.reports] == [
        "Received 2 unique numbers, 1 duplicates. Unique total: 2",
        "Received 0 unique numbers, 0 duplicates. Unique total: 2",
    ]


@fail_after(TEST_TIMEOUT)
async def test_serve_returns_when_triggered_once_every_number_handed_over_is_logged(
    server: RunningServer[MemoryClient],
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The log's writes wait at a gate, so the trigger fires while the writer holds every
    # batch: only a drain that finishes the writer's work keeps them.
    gate = threading.Event()
    real_writev = os.writev

    def gated_writev(fd: int, buffers: list[memoryview]) -> int:
        gate.wait(TIMEOUT)
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", gated_writev)
    # Three clients, so that the receive buffers the writer holds leave each a buffer to
    # read its block into, and one to wait for more in.
    sent = [numbered_lines(client * 100_000, 30_000) for client in range(3)]
    try:
        for block in sent:
            await (await server.connect()).send_all(block)
        await wait_all_tasks_blocked()
        # Each handler read its block, handed it over, and waits to read again.
        assert [client.server_receives for client in server.clients] == [2, 2, 2]
        assert server.writer.totals == Totals()
        server.stop()
        await wait_all_tasks_blocked()
        assert not server.done.is_set(), "serve returned with the writer's work undone"
    finally:
        gate.set()
    assert await server.wait_until_stopped() == Totals(unique=90_000, duplicates=0)
    assert sorted(server.logged()) == sorted(b"".join(sent).splitlines(keepends=True))
    for client in server.clients:
        assert await is_closed_by_server(client)


@fail_after(TEST_TIMEOUT)
@pytest.mark.parametrize("by", ["terminate", "trigger"])
async def test_on_shutdown_is_called_once_as_shutdown_begins(
    server: RunningServer[MemoryClient], autojump_clock: MockClock, by: str
) -> None:
    served = await server.connect()
    await served.send_all(lines(1))
    await server.wait_until_logged(1)
    await wait_all_tasks_blocked()
    assert server.shutdowns == 0
    if by == "terminate":
        await (await server.connect()).send_all(line("terminate"))
    else:
        server.stop()
    assert await is_closed_by_server(served)
    assert server.shutdowns == 1  # by the time the clients are disconnected
    await server.wait_until_stopped()
    assert server.shutdowns == 1


async def test_a_shutdown_asked_for_twice_begins_once() -> None:
    # A client's terminate and the trigger, in the same turn of the event loop.
    begun: list[str] = []
    serving = trio.CancelScope()
    shutdown = _Shutdown(serving, lambda: begun.append("stopping"))
    shutdown.cancel()
    shutdown.cancel()
    assert serving.cancel_called
    assert begun == ["stopping"]


@fail_after(TEST_TIMEOUT)
async def test_serve_closes_the_listeners_it_was_handed(
    server: RunningServer[MemoryClient], autojump_clock: MockClock
) -> None:
    (listener,) = server.listeners
    assert isinstance(listener, MemoryListener)
    assert not listener.closed
    server.stop()
    await server.wait_until_stopped()
    assert listener.closed
    with pytest.raises(trio.BrokenResourceError):
        await server.connect()


@fail_after(TEST_TIMEOUT)
async def test_serve_leaves_the_signal_handlers_as_it_found_them(
    start_in_process: StartInProcess, autojump_clock: MockClock
) -> None:
    def handlers() -> list[object]:
        return [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)]

    def stand_in(signum: int, frame: object) -> None:
        raise AssertionError(f"signal {signum} arrived during the test")

    # Handlers of this test's own, so that one set by an earlier test cannot hide a change.
    found = [signal.signal(signum, stand_in) for signum in (signal.SIGINT, signal.SIGTERM)]
    try:
        server = await start_in_process()
        assert handlers() == [stand_in, stand_in]
        client = await server.connect()
        await client.send_all(line("terminate"))
        await server.wait_until_stopped()
        assert handlers() == [stand_in, stand_in]
    finally:
        for signum, handler in zip((signal.SIGINT, signal.SIGTERM), found, strict=True):
            signal.signal(signum, handler)


@fail_after(TEST_TIMEOUT)
async def test_a_failing_log_makes_serve_raise_log_write_error_alone_with_the_count_logged(
    tmp_path: Path,
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_writev = os.writev
    writes = 0

    def writev_until_the_disk_is_full(fd: int, buffers: list[memoryview]) -> int:
        nonlocal writes
        writes += 1
        if writes > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", writev_until_the_disk_is_full)
    listener = MemoryListener()
    log = tmp_path / "numbers.log"
    with LogWriter.open(log) as writer:
        # serve is run here, not by a fixture, to see what it raises.
        server = RunningServer([listener], writer, log, listener.connect)

        async def send() -> None:
            client = await server.connect()
            await client.send_all(lines(1, 2))
            await server.wait_until_logged(2)
            await client.send_all(lines(3))  # its write fails

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            with pytest.raises(LogWriteError, match="No space left"):
                await serve([listener], writer, emit_report=lambda report: None)
    assert writer.totals == Totals(unique=2, duplicates=0)
    assert server.logged() == lines(1, 2).splitlines(keepends=True)
    await server.close_clients()


@fail_after(TEST_TIMEOUT)
async def test_terminate_under_load_keeps_what_was_handed_to_the_writer_and_syncs(
    start_on_loopback: StartOnLoopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def recording_fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)
    server = await start_on_loopback()

    async def flood(stream: trio.SocketStream, base: int) -> None:
        block = numbered_lines(base, 100_000)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await stream.send_all(block)

    async with trio.open_nursery() as floods:
        for index in range(4):
            floods.start_soon(flood, await server.connect(), (index + 1) * 100_000_000)
        await server.wait_until_logged(300_000)  # the writer is busy with the floods
        terminator = await server.connect()
        await terminator.send_all(numbered_lines(0, 1000) + line("terminate"))
        await server.wait_until_stopped()
    logged = set(server.logged())
    assert all(line in logged for line in numbered_lines(0, 1000).splitlines(keepends=True))
    assert synced


@pytest.mark.parametrize(
    "setting",
    [
        {"max_clients": 0},
        {"report_interval": 0.0},
        {"report_interval": float("nan")},
        {"idle_timeout": 0.0},
        {"idle_timeout": -1.0},
        {"idle_timeout": float("nan")},
    ],
)
def test_a_config_that_cannot_work_is_refused_when_built(setting: dict[str, float]) -> None:
    # The command line refuses these too; this covers code that builds the config itself,
    # where a bad idle timeout would otherwise raise inside a handler and stop the server.
    with pytest.raises(ValueError, match=next(iter(setting))):
        ServerConfig(**setting)  # type: ignore[arg-type]
