"""What the tests share: input lines, log and report checks, and three ways to run a server.

Rules for every test (stated here once; each test module says which way it runs a server):

- In process, on memory streams: :func:`numlog_trio.serve` in the test's own Trio run, handed
  an in-memory listener; clients are ``trio.testing`` memory streams. No socket, no port,
  and the autojump clock where time matters, so no test waits real seconds; "nothing
  happened" is shown with ``trio.testing.wait_all_tasks_blocked``, never by sleeping.
- In process, on loopback: the same, with real TCP listeners on 127.0.0.1, port 0, for what
  only a kernel socket shows (resets, back-pressure); the real clock.
- As a command: the installed ``numlog-trio`` in a subprocess (:func:`start_server`, on
  ``trio.run_process``), on 127.0.0.1 with ``--port 0``, its port read back from its
  "listening" line, its working directory the test's ``tmp_path``. Each test waits, within
  a bound, for its server to exit; a test that fails first kills it. Commands never inherit
  a ``NOTIFY_SOCKET`` (a test run under systemd must not notify it); a test that checks the
  notifications gives one of its own.

``benchmarks/load.py`` starts its servers with :func:`start_server` too, where only the ``load``
extra is installed: this module imports neither pytest nor hypothesis.

Servers never use port 4000 and log to a temporary file. Every wait is bounded by an
absolute timeout (:data:`TIMEOUT` seconds unless a test says otherwise), and a wait that
runs out fails saying what it expected and what it saw, so no test can hang.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar, Final, Generic, ParamSpec, TypeVar

import attrs
import numpy as np
import trio
import trio.testing
from numpy.typing import NDArray

from numlog_trio import LogWriter, ServerConfig, Totals, _kernel, serve

HOST: Final = "127.0.0.1"
TIMEOUT: Final = 10.0
"""Upper bound in seconds of any single wait; a healthy run needs a small fraction of it."""
QUICK: Final = 3.0
"""Seconds within which a server asked to shut down must have exited."""

NL: Final = os.linesep.encode()
"""The server-native newline that ends every input line and every logged number."""

# -P: the installed package, never the source tree that the working directory may be (its
# compiled kernel is built into the installed copy only).
SERVER_MODULE: Final = (sys.executable, "-P", "-m", "numlog_trio")
CLIENT_MODULE: Final = (sys.executable, "-P", "-c", "from numlog_trio._client import run; run()")

REPORT: Final = re.compile(
    r"^Received (\d+) unique numbers, (\d+) duplicates\. Unique total: (\d+)$"
)
LISTENING: Final = re.compile(rb"listening on \S+ port (\d+)")
RESUMED: Final = re.compile(rb"\(resumed with (\d+) numbers loaded in ([0-9.]+) s\)")


def after_start(stderr: str) -> list[str]:
    """The lines a server wrote on stderr after those saying it started.

    Those are its listening line, and the line that says the pure-Python kernel runs (and what
    to do about it), where it does.
    """
    advice = _kernel.slower_kernel_advice()
    started = {f"numlog-trio: {advice}"} if advice is not None else set()
    return [
        text
        for text in stderr.splitlines()
        if text not in started and LISTENING.search(text.encode()) is None
    ]


def console_script(name: str) -> str:
    """Return the path of an installed console script, preferring this interpreter's scripts."""
    found = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
    assert found is not None, f"console script {name!r} is not installed"
    return found


def line(number: int | str) -> bytes:
    """Return one input line: a number as 9 digits, or a text as it is, and the newline."""
    text = f"{number:09d}" if isinstance(number, int) else number
    return text.encode() + NL


def lines(*numbers: int | str) -> bytes:
    """Return input lines for several numbers (or texts), in order."""
    return b"".join(line(number) for number in numbers)


def logged(directory: Path) -> list[bytes]:
    """Return the lines of ``numbers.log`` in ``directory``, each with its newline, sorted."""
    return sorted((directory / "numbers.log").read_bytes().splitlines(keepends=True))


def format_lines(numbers: NDArray[np.uint32]) -> NDArray[np.uint8]:
    """Return the lines of ``numbers``, fast: nine digits with leading zeros and a newline each.

    The load generator (``benchmarks/load.py``) formats its workloads with this too.
    """
    lines = np.empty((len(numbers), 10), dtype=np.uint8)
    lines[:, 9] = ord("\n")
    rest = numbers.copy()
    for column in range(8, -1, -1):
        rest, digit = np.divmod(rest, 10)
        lines[:, column] = digit + ord("0")
    return lines.reshape(-1)


def parse_lines(lines: NDArray[np.uint8]) -> NDArray[np.uint32]:
    """Return the numbers of valid number lines, given as an ``(n, 10)`` array."""
    numbers = np.zeros(len(lines), dtype=np.uint32)
    for column in range(9):
        numbers *= 10
        numbers += lines[:, column]
        numbers -= ord("0")
    return numbers


def log_numbers(data: bytes) -> NDArray[np.uint32]:
    """Return the numbers of whole log lines, in order, read fast.

    Checks that every 10 bytes are nine digits and a newline; the message names the first
    line that is not.
    """
    assert len(data) % 10 == 0, f"the log ends with an unfinished line: {data[-20:]!r}"
    lines = np.frombuffer(data, dtype=np.uint8).reshape(-1, 10)
    not_digits = lines[:, :9] - np.uint8(ord("0")) > 9  # anything but a digit wraps past 9
    bad = np.flatnonzero((lines[:, 9] != ord("\n")) | not_digits.any(axis=1))
    assert not len(bad), (
        f"line {bad[0] + 1} of {len(lines)} whole lines is {bytes(lines[bad[0]])!r}, not nine "
        f"digits and a newline ({len(bad)} such lines)"
    )
    return parse_lines(lines)


def logged_numbers(directory: Path) -> NDArray[np.uint32]:
    """Return the numbers of ``numbers.log`` in ``directory``, in order: :func:`log_numbers`."""
    return log_numbers((directory / "numbers.log").read_bytes())


TORN_LINE: Final = re.compile(rb"[0-9]{0,9}")
"""What may follow the whole lines of a log whose server was killed: part of a line's digits."""


def assert_crash_consistent(
    data: bytes, sent: NDArray[np.integer[Any]], *, unique_total: int = 0
) -> int:
    """Check a log left by a server killed at any moment (SIGKILL), and count its whole lines.

    Such a log holds whole lines of nine ASCII digits and a newline, each number at most once
    and only numbers that were sent; its last line alone may be torn: Linux can stop a large
    write at a page boundary when a fatal signal arrives, so 1 to 9 digits of a line may end
    the file. And a number is counted only once its write returned, so the last unique total
    reported before the kill is at most the number of whole lines.

    Args:
        data: The log's bytes: whole lines of 10 bytes, then ``len(data) % 10`` more.
        sent: Every number the clients sent, sorted ascending (repeats allowed).
        unique_total: The last unique total the server reported before it was killed.

    Returns:
        How many whole lines the log holds.

    Raises:
        AssertionError: The log holds something else; the message says what and where.
    """
    whole = len(data) // 10
    tail = data[whole * 10 :]
    assert TORN_LINE.fullmatch(tail), (
        f"after {whole} whole lines the log ends with {tail!r}, not with the 1 to 9 digits of "
        "a torn line"
    )
    numbers = log_numbers(data[: whole * 10])
    ordered = np.sort(numbers)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    assert not len(repeated), (
        f"{repeated[0]:09d} is logged on lines "
        f"{(np.flatnonzero(numbers == repeated[0]) + 1).tolist()} ({len(repeated)} repeats in all)"
    )
    assert (sent[1:] >= sent[:-1]).all(), "the numbers sent must be given in ascending order"
    where = np.searchsorted(sent, numbers).clip(max=max(len(sent) - 1, 0))
    unsent = np.flatnonzero(sent[where] != numbers) if len(sent) else np.arange(whole)
    assert not len(unsent), (
        f"line {unsent[0] + 1} logs {numbers[unsent[0]]:09d}, which no client sent "
        f"({len(unsent)} such lines)"
    )
    assert unique_total <= whole, (
        f"a report counted {unique_total} unique numbers, but the log holds {whole} whole lines"
    )
    return whole


def report_counts(stdout: str) -> list[tuple[int, int, int]]:
    """Parse report lines; fail if stdout holds anything else.

    Returns:
        ``(unique, duplicates, unique_total)`` of each report, in order.
    """
    counts: list[tuple[int, int, int]] = []
    for text in stdout.splitlines():
        match = REPORT.match(text)
        assert match is not None, f"not a report line: {text!r}"
        unique, duplicates, total = (int(group) for group in match.groups())
        counts.append((unique, duplicates, total))
    return counts


def sums(counts: Sequence[tuple[int, int, int]], loaded: int = 0) -> tuple[int, int]:
    """Return the unique and duplicate counts summed over reports.

    Also checks that each report's unique total is the sum of the unique counts so far, and
    of the numbers the server loaded at start (``--resume``).
    """
    unique = duplicates = 0
    for new_unique, new_duplicates, total in counts:
        unique += new_unique
        duplicates += new_duplicates
        assert total == loaded + unique, (
            f"unique total {total} is not the sum of reports {unique} and {loaded} loaded"
        )
    return unique, duplicates


# The server in the test's own Trio run (fixtures in conftest.py).

TEST_TIMEOUT: Final = 3 * TIMEOUT
"""Real seconds a whole test may run (:func:`fail_after`): longer than any one wait, so that
a wait that runs out fails with its own message."""

P = ParamSpec("P")
ClientT = TypeVar("ClientT", bound=trio.abc.Stream)
StapledMemoryStream = trio.StapledStream[
    trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream
]


@contextmanager
def real_time_limit(seconds: float) -> Iterator[trio.CancelScope]:
    """Cancel the block after ``seconds`` of real time, whichever clock the Trio run has.

    On the autojump clock a ``trio.fail_after`` deadline is virtual: it passes whenever every
    task is blocked, as they are while the writer waits for its worker threads. A timer
    thread bounds the block in real time instead. The caller checks ``cancelled_caught``.
    """
    token = trio.lowlevel.current_trio_token()
    with trio.CancelScope() as scope:

        def cancel() -> None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)

        timer = threading.Timer(seconds, cancel)
        timer.start()
        try:
            yield scope
        finally:
            timer.cancel()


def fail_after(
    seconds: float,
) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """Fail the decorated test if it runs longer than ``seconds`` of real time."""

    def decorate(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(test)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> None:
            with real_time_limit(seconds) as limit:
                await test(*args, **kwargs)
            if limit.cancelled_caught:
                raise AssertionError(f"the test was still running after {seconds} s")

        return timed

    return decorate


@attrs.define(eq=False, slots=False)
class MemoryClient(trio.abc.HalfCloseableStream):
    """A client's end of a connection made by :meth:`MemoryListener.connect`.

    Attributes:
        server_receives: How often the server called ``receive_some`` on its end of the
            connection: 0 while the server has not read this client at all.
    """

    _stream: StapledMemoryStream
    server_receives: int = 0

    async def _count_server_receive(self) -> None:
        self.server_receives += 1

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


@attrs.define(eq=False, slots=False)
class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are memory streams, as in Trio's tests of its servers.

    :meth:`connect` makes a ``trio.testing.memory_stream_pair``, queues the server's end for
    :meth:`accept` (like a kernel's backlog, it does not wait for the server to accept) and
    returns the client's end. Closing the listener closes the connections still queued;
    connecting then fails.
    """

    closed: bool = False
    _queue: tuple[
        trio.MemorySendChannel[StapledMemoryStream], trio.MemoryReceiveChannel[StapledMemoryStream]
    ] = attrs.Factory(lambda: trio.open_memory_channel[StapledMemoryStream](math.inf))

    async def connect(self) -> MemoryClient:
        """Connect a client; its end of the connection.

        Raises:
            trio.BrokenResourceError: The listener is closed.
        """
        await trio.lowlevel.checkpoint()
        client_end, server_end = trio.testing.memory_stream_pair()
        client = MemoryClient(client_end)
        server_end.receive_stream.receive_some_hook = client._count_server_receive
        self._queue[0].send_nowait(server_end)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._queue[1].receive()

    async def aclose(self) -> None:
        self.closed = True
        with suppress(trio.WouldBlock, trio.ClosedResourceError):
            while True:
                queued = self._queue[1].receive_nowait()
                queued.send_stream.close()
                queued.receive_stream.close()
        self._queue[1].close()
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class RunningServer(Generic[ClientT]):
    """:func:`numlog_trio.serve` running in the test's nursery, and what it did so far.

    Started by :func:`start_serving` (through the fixtures in conftest.py), or built by a
    test that awaits serve itself, to see what it raises.

    Attributes:
        listeners: What it was handed to serve on.
        writer: The writer of its log.
        log: The path of its log.
        started_at: Trio time when it was started.
        reports: Each report so far: seconds since ``started_at``, and the line.
        done: Set once :func:`~numlog_trio.serve` has returned.
        totals: What it returned.
        clients: The connections opened by :meth:`connect`, closed when the test ends.
        shutdowns: How often serve called its ``on_shutdown``.
    """

    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]]
    writer: LogWriter
    log: Path
    _open_client: Callable[[], Awaitable[ClientT]]
    started_at: float = attrs.Factory(trio.current_time)
    reports: list[tuple[float, str]] = attrs.Factory(list)
    done: trio.Event = attrs.Factory(trio.Event)
    totals: Totals | None = None
    clients: list[ClientT] = attrs.Factory(list)
    shutdowns: int = 0
    _shutdown: trio.Event = attrs.Factory(trio.Event)

    async def connect(self) -> ClientT:
        """Open a client connection, closed when the test ends."""
        stream = await self._open_client()
        self.clients.append(stream)
        return stream

    def stop(self) -> None:
        """Fire the shutdown trigger that serve was handed."""
        self._shutdown.set()

    def logged(self) -> list[bytes]:
        """Return the lines of the log, each with its newline, in the order written."""
        return self.log.read_bytes().splitlines(keepends=True)

    async def wait_until_logged(self, count: int, within: float = TIMEOUT) -> None:
        """Wait until the writer has written and counted at least ``count`` distinct numbers.

        The writer works in threads, so this checks at every checkpoint rather than waiting
        on the clock: on the autojump clock no virtual time passes meanwhile (no report or
        idle timeout falls due because a thread was busy).

        Raises:
            AssertionError: ``within`` seconds passed first; says how many lines the log has.
        """
        with real_time_limit(within):
            while self.writer.totals.unique < count:
                await trio.lowlevel.checkpoint()
            return
        raise AssertionError(
            f"log has {len(self.logged())} of {count} lines after {within} s "
            f"({self.writer.totals} counted)"
        )

    async def wait_until_stopped(self, within: float = TIMEOUT) -> Totals:
        """Wait until :func:`numlog_trio.serve` has returned, and return its totals.

        Raises:
            AssertionError: It was still serving after ``within`` seconds.
        """
        with real_time_limit(within):
            await self.done.wait()
            assert self.totals is not None
            return self.totals
        raise AssertionError(
            f"serve had not returned after {within} s; log has {len(self.logged())} lines"
        )

    async def close_clients(self) -> None:
        """Close every connection opened by :meth:`connect`."""
        for client in self.clients:
            await client.aclose()


async def start_serving(
    nursery: trio.Nursery,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    open_client: Callable[[], Awaitable[ClientT]],
    log: Path,
    **options: Any,
) -> RunningServer[ClientT]:
    """Start :func:`numlog_trio.serve` in ``nursery``, with a new log and a shutdown trigger.

    Args:
        nursery: Runs the server.
        listeners: Handed to serve (which closes them).
        open_client: Opens a connection to the listeners.
        log: Path of a new log file; the writer is closed when serve ends.
        options: :class:`~numlog_trio.ServerConfig` options.
    """
    config = ServerConfig(**options)
    writer = LogWriter.open(log)
    server = RunningServer(listeners, writer, log, open_client)

    def record(report: str) -> None:
        server.reports.append((trio.current_time() - server.started_at, report))

    def count_shutdown() -> None:
        server.shutdowns += 1

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with writer:
            server.totals = await serve(
                listeners,
                writer,
                emit_report=record,
                config=config,
                shutdown_trigger=server._shutdown.wait,
                on_shutdown=count_shutdown,
                task_status=task_status,
            )
        server.done.set()

    await nursery.start(run)
    return server


StartInProcess = Callable[..., Awaitable[RunningServer[MemoryClient]]]
StartOnLoopback = Callable[..., Awaitable[RunningServer[trio.SocketStream]]]


async def is_closed_by_server(stream: trio.abc.ReceiveStream, within: float = TIMEOUT) -> bool:
    """Wait for the server to close the connection; True if it sent nothing before.

    Raises:
        AssertionError: The connection was still open after ``within`` seconds.
    """
    with real_time_limit(within):
        try:
            return await stream.receive_some() == b""
        except trio.BrokenResourceError:
            return True  # reset: the server closed with our data unread
    raise AssertionError(f"the server kept the connection open for {within} s")


async def reset(stream: trio.SocketStream) -> None:
    """Close the connection with a reset (RST) instead of an orderly end of stream (FIN)."""
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


def numbered_lines(start: int, count: int) -> bytes:
    """Return lines for start, start + 1, ..., fast enough for megabytes of load."""
    return format_lines(np.arange(start, start + count, dtype=np.uint32)).tobytes()


# Busy clients: each of CLIENTS sends a set of numbers of its own, over and over.

CLIENTS: Final = 5
"""The server's default number of slots: tests under load fill them all."""

BUSY_NUMBERS: Final = 50_000
"""Distinct numbers each busy client sends, over and over, unless a test says otherwise."""


def first_number(client: int) -> int:
    """Return where the numbers of a client start: every client sends a set of its own."""
    return (client + 1) * 100_000_000


def sent_by_clients(per_client: int, clients: int = CLIENTS) -> NDArray[np.int64]:
    """Return, sorted, the numbers that the first ``clients`` clients send ``per_client`` of."""
    starts = [first_number(client) for client in range(clients)]
    return np.concatenate([np.arange(start, start + per_client) for start in starts])


# The installed command in a subprocess, driven from the test's Trio run.


def limited_server(limit: str, value: int) -> tuple[str, ...]:
    """Return a server command run under a resource limit, such as ``"RLIMIT_FSIZE"``."""
    return (
        sys.executable,
        "-P",
        "-c",
        "import resource, runpy; "
        f"resource.setrlimit(resource.{limit}, ({value}, {value})); "
        "runpy.run_module('numlog_trio', run_name='__main__')",
    )


_SIGNAL_ON_LISTENING: Final = """
import logging
class SignalOnListening(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("listening on "):
            signal.raise_signal(SIGNUM)
logging.getLogger("numlog_trio").addHandler(SignalOnListening())
"""

_SIGNAL_ON_IGNORING: Final = """
set_handler = signal.signal
raised = []
def set_handler_then_signal(signum, handler):
    previous = set_handler(signum, handler)
    if signum == SIGNUM and callable(handler) and handler.__name__ == "_ignore" and not raised:
        raised.append(signum)
        signal.raise_signal(SIGNUM)
    return previous
signal.signal = set_handler_then_signal
"""


def signalled_server(signum: signal.Signals, *, at: str) -> tuple[str, ...]:
    """Return a server command that gets ``signum`` at a given instant of its start, no race.

    Args:
        signum: The signal.
        at: ``"listening"``: from within the logging of the listening line, before the line
            reaches stderr (the earliest moment anyone reading it could send one);
            ``"ignoring"``: the instant the command sets the signal to be ignored (by its
            ``_ignore`` handler), before its receiver for shutdown signals is in place.
    """
    setup = {"listening": _SIGNAL_ON_LISTENING, "ignoring": _SIGNAL_ON_IGNORING}[at]
    code = f"import runpy, signal\nSIGNUM = {int(signum)}\n{setup}\n"
    return (
        sys.executable,
        "-P",
        "-c",
        code + "runpy.run_module('numlog_trio', run_name='__main__')",
    )


_SIGNAL_WHILE_LOADING: Final = """
import logging, os, runpy, signal, threading, time
SIGNUM, AT = {signum}, {at!r}
told = threading.Event()
class Told(logging.Handler):
    def emit(self, record):
        if "shutting down" in record.getMessage():
            told.set()
logging.getLogger("numlog_trio").addHandler(Told())
real_preadv = os.preadv
reads, ends = [], []
def preadv(fd, buffers, offset):
    reads.append(fd)
    received = real_preadv(fd, buffers, offset)
    ends.extend([fd] if received == 0 else [])
    # The second read of all, or the very last one (the tail's, at the end of the file).
    if (AT == "second" and len(reads) == 2) or (AT == "last" and len(ends) == 2):
        signal.raise_signal(SIGNUM)
        # Until the server has taken the signal in: then the load must stop, not go on.
        assert told.wait(10)
        time.sleep(0.2)
    return received
os.preadv = preadv
runpy.run_module("numlog_trio", run_name="__main__")
"""


def signalled_while_loading(signum: signal.Signals, *, at: str) -> tuple[str, ...]:
    """Return a server command that gets ``signum`` while it loads its log (``--resume``).

    The signal is raised from within a read of the log, and that read returns only once the
    server has taken the signal in (said it shuts down), so the load must then stop, no race.

    Args:
        signum: The signal.
        at: ``"second"``: in the second read of all; ``"last"``: in the very last (the tail's,
            at the end of the file), when the load is done but for its end.
    """
    code = _SIGNAL_WHILE_LOADING.format(signum=int(signum), at=at)
    return (sys.executable, "-P", "-c", code)


@attrs.frozen
class Finished:
    """How a process ended, and all it printed."""

    returncode: int
    stdout: str
    stderr: str


@attrs.define(eq=False)
class CommandProcess:
    """A command started in a test's nursery, and what it printed so far.

    Two tasks read its standard output and standard error as they come; the ``wait_*``
    methods wait on what was read, each within :data:`TIMEOUT` seconds unless told, and fail
    saying what was expected and what the command printed instead.
    """

    NAME: ClassVar[str] = "command"
    """What failure messages call the process."""

    process: trio.Process
    directory: Path
    _stdout: bytearray = attrs.Factory(bytearray)
    _stderr: bytearray = attrs.Factory(bytearray)
    _pipes_open: int = 2
    _changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def stdout(self) -> str:
        """Standard output read so far."""
        return self._stdout.decode()

    @property
    def stderr(self) -> str:
        """Standard error read so far."""
        return self._stderr.decode()

    def __str__(self) -> str:
        return f"{self.NAME} stdout {self.stdout!r}, stderr {self.stderr!r}"

    def _start_reading(self, nursery: trio.Nursery) -> None:
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        nursery.start_soon(self._read, self.process.stdout, self._stdout)
        nursery.start_soon(self._read, self.process.stderr, self._stderr)

    async def _read(self, pipe: trio.abc.ReceiveStream, into: bytearray) -> None:
        async with pipe:
            while chunk := await pipe.receive_some():
                into += chunk
                self._changed.set()
                self._changed = trio.Event()
        self._pipes_open -= 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(
        self, done: Callable[[], bool], expected: str, within: float = TIMEOUT
    ) -> None:
        """Wait until ``done()`` holds, reading the process's output meanwhile.

        Raises:
            AssertionError: ``within`` seconds passed, or the process closed its output,
                before ``done()`` held; the message says what was ``expected`` and shows
                what the process printed.
        """
        with trio.move_on_after(within):
            while not done():
                if not self._pipes_open:
                    raise AssertionError(f"the {self.NAME} exited before {expected}; {self}")
                await self._changed.wait()
            return
        raise AssertionError(f"no {expected} after {within} s; {self}")

    def signal(self, signum: signal.Signals) -> None:
        """Send a signal to the process."""
        self.process.send_signal(signum)

    async def finish(self, within: float = TIMEOUT) -> Finished:
        """Wait until the process has exited by itself and closed its output.

        Raises:
            AssertionError: It was still running after ``within`` seconds (it is killed
                when the test's nursery closes).
        """
        with trio.move_on_after(within):
            await self.process.wait()
            await self.wait_until(lambda: not self._pipes_open, "end of output")
            if self.process.stdin is not None:
                await self.process.stdin.aclose()
            assert self.process.returncode is not None
            return Finished(self.process.returncode, self.stdout, self.stderr)
        raise AssertionError(f"the {self.NAME} was still running after {within} s; {self}")


@attrs.define(eq=False)
class ServerProcess(CommandProcess):
    """A ``numlog-trio`` process started by :func:`start_server`, and what it printed so far.

    Besides waiting on its output, it connects clients to the server and waits on them,
    each wait bounded and failing with what the server printed.
    """

    NAME: ClassVar[str] = "server"

    port: int = 0
    loaded: int = 0
    """Numbers the server said it loaded from the log at start (``--resume``)."""

    async def wait_listening(self, within: float = TIMEOUT) -> None:
        """Wait until the server says it listens; take the port, and any numbers loaded."""
        await self.wait_until(
            lambda: LISTENING.search(self._stderr) is not None, "listening line", within
        )
        match = LISTENING.search(self._stderr)
        assert match is not None
        self.port = int(match[1])
        resumed = RESUMED.search(self._stderr)
        self.loaded = 0 if resumed is None else int(resumed[1])

    def reports(self) -> list[tuple[int, int, int]]:
        """Return the complete reports read so far (see :func:`report_counts`)."""
        text = self.stdout
        return report_counts(text[: text.rfind("\n") + 1])

    def report_sums(self) -> tuple[int, int]:
        """Return the unique and duplicate counts summed over the complete reports so far."""
        return sums(self.reports(), self.loaded)

    async def wait_for_report(self, done: Callable[[int, int], bool], expected: str) -> None:
        """Wait until ``done(unique, duplicates)`` holds for the counts summed over reports."""
        await self.wait_until(lambda: done(*self.report_sums()), f"report of {expected}")

    async def wait_for_next_report(self) -> tuple[int, int, int]:
        """Wait until one more report is complete, and return it."""
        seen = len(self.reports())
        await self.wait_until(lambda: len(self.reports()) > seen, "next report")
        return self.reports()[seen]

    async def connect(self) -> trio.SocketStream:
        """Open a client connection to the server; the caller closes it."""
        return await trio.open_tcp_stream(HOST, self.port)

    async def wait_closed(self, stream: trio.SocketStream, within: float = TIMEOUT) -> bytes:
        """Read until the server closes the connection; return what it sent (it should not).

        Raises:
            AssertionError: The connection was still open after ``within`` seconds.
        """
        received = bytearray()
        with trio.move_on_after(within):
            while True:
                try:
                    chunk = await stream.receive_some()
                except trio.BrokenResourceError:
                    return bytes(received)  # reset: the server closed with our data unread
                if not chunk:
                    return bytes(received)
                received += chunk
        raise AssertionError(f"the server kept a connection open for {within} s; {self}")

    async def is_open_after(self, stream: trio.SocketStream, seconds: float) -> bool:
        """Tell whether the server keeps the connection open, silently, for ``seconds``.

        Real time is what this checks: that nothing happens on the connection for a while.
        """
        with trio.move_on_after(seconds):
            try:
                chunk = await stream.receive_some()
            except trio.BrokenResourceError:
                return False  # reset
            assert not chunk, f"the server sent {chunk!r}; {self}"
            return False
        return True

    async def send_and_wait_closed(self, data: bytes) -> None:
        """Send data, half-close, and wait until the server has read it all and closed too."""
        async with await self.connect() as stream:
            await stream.send_all(data)
            await stream.send_eof()
            assert await self.wait_closed(stream) == b"", "the server replied"

    async def send_terminate(self) -> None:
        """Send ``terminate`` and wait until the server closes the connection."""
        async with await self.connect() as stream:
            await stream.send_all(line("terminate"))
            assert await self.wait_closed(stream) == b"", "the server replied"

    async def stream_until_closed(
        self, stream: trio.SocketStream, data: bytes, within: float = TIMEOUT
    ) -> None:
        """Send ``data`` over and over until the server closes the connection.

        Meant for a task of its own: a client that keeps the server busy for as long as it
        is served. Only the server closing the connection ends it.

        Raises:
            AssertionError: The connection was still open after ``within`` seconds.
        """
        with trio.move_on_after(within):
            try:
                while True:
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                return
        raise AssertionError(f"the server kept a busy connection open for {within} s; {self}")


@attrs.define(eq=False)
class ClientProcess(CommandProcess):
    """A ``numlog-trio-client`` process started by :func:`start_client`."""

    NAME: ClassVar[str] = "client"

    async def type(self, typed: bytes) -> None:
        """Write to the client's standard input, which stays open (as a terminal's does)."""
        assert self.process.stdin is not None, "the client was started without a stdin pipe"
        await self.process.stdin.send_all(typed)


async def _kill(process: trio.Process) -> None:
    # The whole process group: a wrapper (bash) and the command it started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _start(
    nursery: trio.Nursery,
    command: Sequence[str],
    directory: Path,
    stdin: int | bytes,
    env: Mapping[str, str] | None = None,
) -> trio.Process:
    inherited = {name: value for name, value in os.environ.items() if name != "NOTIFY_SOCKET"}
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            command,
            cwd=directory,
            env=inherited | dict(env or {}),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
            start_new_session=True,  # a group of its own, killed whole by _kill
            deliver_cancel=_kill,
        )
    )
    return process


async def start_server(
    nursery: trio.Nursery,
    directory: Path,
    *options: str,
    command: Sequence[str] = SERVER_MODULE,
    listening: bool = True,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start the server on a free port of 127.0.0.1 in ``directory``.

    The test waits for it to end (:meth:`ServerProcess.finish`), within a bound; if the test
    fails first, the nursery is cancelled and the server killed.

    Args:
        nursery: Runs the process and the readers of its output; when it is cancelled, a
            server still running is killed (with any process it started).
        directory: Working directory of the server, where it writes ``numbers.log``.
        options: More command-line options; they come after ``--host 127.0.0.1 --port 0``,
            so they may override both, and a server never listens on the default port.
        command: How to run the server command.
        listening: Wait until the server says it listens (and read its port).
        env: Environment variables to set for the server, beside those it inherits.
    """
    args = [*command, "--host", HOST, "--port", "0", *options]
    process = await _start(nursery, args, directory, subprocess.DEVNULL, env)
    server = ServerProcess(process, directory)
    server._start_reading(nursery)
    if listening:
        await server.wait_listening()
    return server


async def start_client(
    nursery: trio.Nursery,
    directory: Path,
    port: int,
    *,
    stdin: int | bytes = subprocess.PIPE,
    command: Sequence[str] = CLIENT_MODULE,
) -> ClientProcess:
    """Start the client of a server on 127.0.0.1 at ``port``, in ``directory``.

    Args:
        nursery: As for :func:`start_server`.
        directory: Working directory of the client.
        port: The server's port.
        stdin: ``subprocess.PIPE`` (the default) for a standard input held open and written
            with :meth:`ClientProcess.type`, as a terminal is; bytes for a pipe that holds
            them and then ends.
        command: How to run the client command.
    """
    args = [*command, "--host", HOST, "--port", str(port)]
    process = await _start(nursery, args, directory, stdin)
    client = ClientProcess(process, directory)
    client._start_reading(nursery)
    return client


async def run_command(directory: Path, command: Sequence[str]) -> Finished:
    """Run any command that exits by itself (``--version``), in ``directory``, until it exits."""
    async with trio.open_nursery() as nursery:
        process = CommandProcess(
            await _start(nursery, command, directory, subprocess.DEVNULL), directory
        )
        process._start_reading(nursery)
        return await process.finish()


async def run_server(directory: Path, *options: str) -> Finished:
    """Run a server that is expected to exit by itself (bad options, failure to start)."""
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, directory, *options, listening=False)
        return await server.finish()


async def run_client(
    directory: Path, port: int, typed: bytes, *, command: Sequence[str] = CLIENT_MODULE
) -> Finished:
    """Run the client with ``typed`` on its standard input, until it exits."""
    async with trio.open_nursery() as nursery:
        client = await start_client(nursery, directory, port, stdin=typed, command=command)
        return await client.finish()


async def served_clients(
    server: ServerProcess, stack: AsyncExitStack, numbers: Sequence[str]
) -> list[trio.SocketStream]:
    """Connect one client per number, and wait until the server has logged each client's number.

    Each number must be new to the server, and the server must report often (a short
    ``--report-interval``): a report counting every one proves that each client holds a slot.

    Returns:
        The connected clients, closed when ``stack`` closes.
    """
    unique_before = server.report_sums()[0]
    clients = [await stack.enter_async_context(await server.connect()) for _ in numbers]
    for client, number in zip(clients, numbers, strict=True):
        await client.send_all(line(number))
    expected = unique_before + len(numbers)
    await server.wait_for_report(lambda unique, _: unique == expected, f"{expected} unique")
    return clients


def keep_busy(
    nursery: trio.Nursery,
    server: ServerProcess,
    clients: Sequence[trio.SocketStream],
    per_client: int = BUSY_NUMBERS,
) -> None:
    """Make each client send its own numbers over and over until the server closes it.

    After the first round every number is a duplicate: the log stays small while the server
    keeps reading, deduplicating and counting as fast as it can.
    """
    for client, stream in enumerate(clients):
        data = numbered_lines(first_number(client), per_client)
        nursery.start_soon(server.stream_until_closed, stream, data)
