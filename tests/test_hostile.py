"""Hostile and broken clients against serve(), while well-behaved clients go on.

Each test checks three things: the bad connection is closed without a reply (or simply ends),
the other clients keep being served meanwhile, and exactly their numbers (and the valid ones
the bad client sent before its bad line) land in the log, each once.

Tests run in process on memory streams and the autojump clock, or, where only a kernel socket
shows the behaviour, in process on loopback with the real clock (the ways and their rules are
in ``helpers.py``). On loopback: a line without end (TCP's back-pressure on the sender), a
reset mid-line, and a flood of connects and resets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic

import attrs
import pytest
import trio
import trio.lowlevel
from helpers import (
    QUICK,
    TEST_TIMEOUT,
    ClientT,
    MemoryClient,
    RunningServer,
    StartInProcess,
    StartOnLoopback,
    fail_after,
    is_closed_by_server,
    line,
    lines,
    numbered_lines,
    reset,
)
from trio.testing import MockClock, wait_all_tasks_blocked

import numlog_trio._server
from numlog_trio import Framed, LineFramer, Outcome, Totals
from numlog_trio._server import RECEIVE_SIZE

IDLE_TIMEOUT = 30.0
"""Seconds of silence after which the idle-timeout tests expect a client to be dropped."""
BYSTANDER_BASE = 900_000_000
"""Bystanders send numbers from here up, apart from any number a hostile client sends."""


@attrs.define(eq=False)
class RecordingFramer:
    """Stands in for one connection's LineFramer and records what it was fed and held."""

    fed: list[int] = attrs.Factory(list)
    """Bytes received for each buffer fed, in order (without the unfinished line put first)."""
    held: list[int] = attrs.Factory(list)
    """Bytes of an unfinished line held after each buffer."""
    outcome: Outcome = Outcome.MORE
    _framer: LineFramer = attrs.Factory(LineFramer)
    _taken: int = 0

    def take_partial(self) -> bytes:
        partial = self._framer.take_partial()
        self._taken = len(partial)
        return partial

    def feed(self, data: bytes | bytearray | memoryview) -> Framed:
        framed = self._framer.feed(data)
        self.fed.append(len(data) - self._taken)
        self._taken = 0
        self.held.append(self._framer.pending)
        self.outcome = framed.outcome
        return framed


@pytest.fixture
def framers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RecordingFramer]]:
    """Record the framing of every connection the server reads, in order of connection."""
    created: list[RecordingFramer] = []

    def recording_framer() -> RecordingFramer:
        created.append(RecordingFramer())
        return created[-1]

    monkeypatch.setattr(numlog_trio._server, "LineFramer", recording_framer)
    yield created
    assert all(held <= 9 for framer in created for held in framer.held), "a line grew past 9"


@attrs.define(eq=False)
class Bystanders(Generic[ClientT]):
    """Well-behaved clients that keep sending new numbers while a hostile client acts."""

    server: RunningServer[ClientT]
    streams: list[ClientT]
    sent: list[bytes] = attrs.Factory(list)
    """Every line sent so far."""

    @classmethod
    async def join(cls, server: RunningServer[ClientT], count: int = 2) -> Bystanders[ClientT]:
        return cls(server, [await server.connect() for _ in range(count)])

    async def send_round(self, per_client: int = 10) -> None:
        for stream in self.streams:
            block = numbered_lines(BYSTANDER_BASE + len(self.sent), per_client)
            self.sent += block.splitlines(keepends=True)
            await stream.send_all(block)

    async def chat(self, rounds: int = 5) -> None:
        for _ in range(rounds):
            await self.send_round()
            await trio.sleep(0.01)


async def terminate_and_check_log(
    server: RunningServer[ClientT], terminator: ClientT, expected: list[bytes]
) -> None:
    """Wait until the log holds ``expected``, terminate, and check it holds exactly that."""
    await server.wait_until_logged(len(expected))
    await terminator.send_all(line("terminate"))
    totals = await server.wait_until_stopped(within=QUICK)  # shutdown takes milliseconds
    assert totals == Totals(unique=len(expected), duplicates=0)
    assert sorted(server.logged()) == sorted(expected)


# On loopback: what needs a kernel socket ----------------------------------------------------


@fail_after(TEST_TIMEOUT)
async def test_a_stream_without_newlines_is_cut_off_at_once_and_never_held(
    start_on_loopback: StartOnLoopback, framers: list[RecordingFramer]
) -> None:
    server = await start_on_loopback()
    bystanders = await Bystanders.join(server)
    offender = await server.connect()
    async with trio.open_nursery() as chatting:
        chatting.start_soon(bystanders.chat)
        try:
            with trio.move_on_after(2) as stuck:
                await offender.send_all(b"1" * 20_000_000)
            # Sending 20 MB into a closed connection fails long before it is all sent.
        except trio.BrokenResourceError:
            pass
        else:
            assert not stuck.cancelled_caught, "the server kept reading a line without end"
            assert await is_closed_by_server(offender)
    # The server stopped reading within one receive buffer, and held at most 9 bytes of it
    # (the fixture checks every framer).
    (cut_off,) = (framer for framer in framers if framer.outcome is Outcome.INVALID)
    assert sum(cut_off.fed) <= RECEIVE_SIZE + 9
    await bystanders.send_round()
    await terminate_and_check_log(server, bystanders.streams[0], bystanders.sent)


@fail_after(TEST_TIMEOUT)
async def test_a_client_resetting_mid_line_costs_only_its_unfinished_line(
    start_on_loopback: StartOnLoopback,
) -> None:
    server = await start_on_loopback()
    bystanders = await Bystanders.join(server)
    resetter = await server.connect()
    await resetter.send_all(lines(1) + b"0000")
    await server.wait_until_logged(1)
    async with trio.open_nursery() as chatting:
        chatting.start_soon(bystanders.chat)
        await reset(resetter)
    await bystanders.send_round()
    witness = await server.connect()
    await witness.send_all(lines(2))
    await terminate_and_check_log(server, witness, [lines(1), lines(2), *bystanders.sent])


FLOOD = 300


async def flood_once(server: RunningServer[trio.SocketStream], kind: int) -> None:
    """Connect and leave at once: close, reset, or either after half a line."""
    stream = await server.connect()
    if kind in {2, 3}:
        await stream.send_all(b"0000")
    if kind in {1, 3}:
        await reset(stream)
    else:
        await stream.aclose()


@fail_after(TEST_TIMEOUT)
async def test_a_connection_flood_loses_none_of_the_real_clients_numbers(
    start_on_loopback: StartOnLoopback,
) -> None:
    server = await start_on_loopback()
    per_client = 1000
    sent: list[bytes] = []

    async def real_client(base: int) -> None:
        stream = await server.connect()
        for start in range(base, base + per_client, 100):
            block = numbered_lines(start, 100)
            sent.extend(block.splitlines(keepends=True))
            await stream.send_all(block)
            await trio.lowlevel.checkpoint()
        await stream.send_eof()
        # The server closes only once it has read everything up to our end of stream.
        assert await is_closed_by_server(stream)

    async with trio.open_nursery() as burst:
        for index in range(FLOOD):
            burst.start_soon(flood_once, server, index % 4)
            if index % (FLOOD // 5) == 0:
                burst.start_soon(real_client, index * per_client)
    assert len(sent) == 5 * per_client
    # Afterwards the server still serves a new client, and terminate still works.
    late = await server.connect()
    await late.send_all(lines(999_999_999))
    await terminate_and_check_log(server, late, [*sent, lines(999_999_999)])


# On memory streams ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "bad_byte"), [(4, b"x"), (9, b"\r")], ids=["bad-digit", "bad-newline"]
)
@fail_after(TEST_TIMEOUT)
async def test_one_bad_byte_in_a_megabyte_keeps_exactly_the_lines_before_it(
    server: RunningServer[MemoryClient], autojump_clock: MockClock, column: int, bad_byte: bytes
) -> None:
    bad_line = 54_321  # in the second receive buffer
    stream = bytearray(numbered_lines(0, 100_000))  # 1 MB
    stream[bad_line * 10 + column : bad_line * 10 + column + 1] = bad_byte
    bystanders = await Bystanders.join(server)
    offender = await server.connect()
    async with trio.open_nursery() as chatting:
        chatting.start_soon(bystanders.chat)
        await offender.send_all(stream)
        assert await is_closed_by_server(offender)
    await bystanders.send_round()
    expected = numbered_lines(0, bad_line).splitlines(keepends=True) + bystanders.sent
    await terminate_and_check_log(server, bystanders.streams[0], expected)


@fail_after(TEST_TIMEOUT)
async def test_lines_sent_one_byte_at_a_time_are_logged(
    server: RunningServer[MemoryClient],
    autojump_clock: MockClock,
    framers: list[RecordingFramer],
) -> None:
    bystanders = await Bystanders.join(server)
    trickler = await server.connect()
    stream = lines(123_456_789, 7) + line("terminate")
    expected = lines(123_456_789, 7).splitlines(keepends=True)
    for sent in range(1, 21):
        await trickler.send_all(stream[sent - 1 : sent])
        # The bystanders go on, and the writer keeps up with them, so that no handler ever
        # waits for a receive buffer: the trickler's handler reads each byte on its own.
        await bystanders.send_round(per_client=1)
        await server.wait_until_logged(len(bystanders.sent) + stream[:sent].count(b"\n"))
    for sent in range(21, len(stream) + 1):  # terminate, one byte at a time too
        await trickler.send_all(stream[sent - 1 : sent])
        await wait_all_tasks_blocked()
    assert await server.wait_until_stopped(within=QUICK) == Totals(
        unique=len(bystanders.sent) + len(expected), duplicates=0
    )
    assert sorted(server.logged()) == sorted([*bystanders.sent, *expected])
    (trickled,) = (framer for framer in framers if framer.outcome is Outcome.TERMINATE)
    assert trickled.fed == [1] * len(stream)


@fail_after(TEST_TIMEOUT)
async def test_a_client_that_never_sends_holds_one_slot_and_terminate_still_ends_all(
    server: RunningServer[MemoryClient], autojump_clock: MockClock
) -> None:
    silent = await server.connect()
    busy = [await server.connect() for _ in range(4)]
    expected: list[bytes] = []
    for index, stream in enumerate(busy):
        expected.append(lines(index))
        await stream.send_all(expected[-1])
    await server.wait_until_logged(4)
    sixth = await server.connect()
    await sixth.send_all(lines(99))
    # Without an idle timeout the silent client keeps its slot, minutes long: the sixth
    # client stays unread while the four others go on being served.
    for index, stream in enumerate(busy):
        await trio.sleep(60)
        expected.append(lines(10 + index))
        await stream.send_all(expected[-1])
    await server.wait_until_logged(len(expected))
    await wait_all_tasks_blocked()
    assert sixth.server_receives == 0, "the sixth client was read while five held the slots"
    await terminate_and_check_log(server, busy[0], expected)
    for stream in (silent, *busy, sixth):
        assert await is_closed_by_server(stream)


# Slow clients and the idle timeout (memory streams, autojump clock) -------------------------


@fail_after(TEST_TIMEOUT)
async def test_without_an_idle_timeout_a_silent_client_is_kept_for_a_day(
    start_in_process: StartInProcess, autojump_clock: MockClock
) -> None:
    server = await start_in_process(report_interval=3600)  # no idle timeout: the default
    client = await server.connect()
    with trio.move_on_after(24 * 60 * 60) as day:
        received = await client.receive_some()
    assert day.cancelled_caught, f"the server closed a silent client (it sent {received!r})"
    await client.send_all(lines(1))
    await terminate_and_check_log(server, client, [lines(1)])


@fail_after(TEST_TIMEOUT)
async def test_an_idle_client_is_closed_after_exactly_the_timeout_of_silence(
    start_in_process: StartInProcess, autojump_clock: MockClock
) -> None:
    server = await start_in_process(idle_timeout=IDLE_TIMEOUT)
    client = await server.connect()
    await trio.sleep(IDLE_TIMEOUT * 0.9)  # silent, but not for long enough
    # The numbers sent before going silent are kept; an unfinished line is not.
    await client.send_all(lines(1) + b"0000")
    last_sent = trio.current_time()
    assert await is_closed_by_server(client)
    assert trio.current_time() - last_sent == pytest.approx(IDLE_TIMEOUT)
    await terminate_and_check_log(server, await server.connect(), [lines(1)])


@fail_after(TEST_TIMEOUT)
async def test_an_idle_timeout_frees_the_slots_of_five_silent_clients_for_a_sixth(
    start_in_process: StartInProcess, autojump_clock: MockClock
) -> None:
    server = await start_in_process(idle_timeout=IDLE_TIMEOUT)
    started = trio.current_time()
    silent = [await server.connect() for _ in range(5)]
    await silent[0].send_all(lines(1) + b"0000")
    await silent[1].send_all(lines(2))
    sixth = await server.connect()
    for stream in silent:
        assert await is_closed_by_server(stream)
    assert trio.current_time() - started == pytest.approx(IDLE_TIMEOUT)
    # The sixth waited for a slot as long as the timeout, but waiting is not being idle: it
    # is served now, and its silence is timed from here.
    await wait_all_tasks_blocked()
    assert sixth.server_receives == 1
    await trio.sleep(IDLE_TIMEOUT / 2)
    await sixth.send_all(lines(3))
    await terminate_and_check_log(server, sixth, [lines(1), lines(2), lines(3)])


@fail_after(TEST_TIMEOUT)
async def test_an_idle_timeout_spares_a_client_that_sends_slowly_but_steadily(
    start_in_process: StartInProcess, autojump_clock: MockClock
) -> None:
    server = await start_in_process(idle_timeout=IDLE_TIMEOUT)
    slow = await server.connect()
    started = trio.current_time()
    for byte in lines(42):  # one byte every fifth of the timeout: twice the timeout in all
        await trio.sleep(IDLE_TIMEOUT / 5)
        await slow.send_all(bytes([byte]))
    assert trio.current_time() - started == pytest.approx(2 * IDLE_TIMEOUT)
    await terminate_and_check_log(server, slow, [lines(42)])
