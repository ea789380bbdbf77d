"""Push seeded random numbers at a numlog-trio server and time it: ``python benchmarks/load.py``.

The numbers are generated before timing starts. Each of K connections sends its share, then
half-closes and waits for the server to close it, which tells that the server has read (and
handed to its writer) everything sent. Then one more connection sends ``terminate``; where
this command started the server, it waits for the server to exit and reports its peak RSS and
CPU time, as measured by ``rusage.py`` beside this file.

A server this command starts is started by the tests' subprocess harness (``start_server`` in
``tests/helpers.py``), in a Trio run; the numbers are pushed from threads, on blocking sockets.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar, final

import attrs
import trio

try:
    import numpy as np
    import numpy.typing as npt
except ImportError:  # the server does not need NumPy; only this load tool does
    raise SystemExit("benchmarks/load.py needs NumPy: pip install '.[load]'") from None

# The tests' harness starts the servers here too (as the fuzz target shares their reference).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import (
    HOST,
    SERVER_MODULE,
    ServerProcess,
    console_script,
    format_lines,
    parse_lines,
    start_server,
)

from numlog_trio._cli import DEFAULT_HOST, DEFAULT_PORT
from numlog_trio._framing import LINE_SIZE, LineFramer, Outcome
from numlog_trio._options import positive_int

PROG: Final = "benchmarks/load.py"
NUMBER_RANGE: Final = 1_000_000_000
_SEND_CHUNK: Final = 4 << 20
_TIMEOUT: Final = 120.0
"""Upper bound in seconds of any single wait on the server."""

RUSAGE: Final = Path(__file__).resolve().with_name("rusage.py")
"""Runs a server as its child and reports its peak RSS and CPU time (why: see that file)."""
_CHILD: Final = re.compile(r"^child (\d+)$", re.MULTILINE)
_USAGE: Final = re.compile(r"^rusage (\d+) (\S+)$", re.MULTILINE)

T = TypeVar("T")


@final
@attrs.frozen
class Workload:
    """Numbers to send, in sending order, as the bytes of their lines.

    Attributes:
        payload: ``count`` lines, each nine digits and a newline.
        distinct: The distinct numbers, sorted: what the log must hold afterwards.
    """

    payload: npt.NDArray[np.uint8]
    distinct: npt.NDArray[np.uint32]

    @property
    def count(self) -> int:
        """Number of lines in the payload."""
        return len(self.payload) // LINE_SIZE


def make_workload(count: int, duplicate_share: float, seed: int) -> Workload:
    """Return ``count`` seeded random numbers of which ``duplicate_share`` repeat earlier ones.

    Distinct numbers are drawn uniformly from 0..999,999,999; the repeats are drawn from them,
    and all are shuffled, so a repeat may come before the first sighting of its number.
    """
    rng = np.random.default_rng(seed)
    # At least one distinct number, for the repeats to repeat.
    distinct_count = max(1, count - round(count * duplicate_share))
    distinct = np.empty(0, dtype=np.uint32)
    while len(distinct) < distinct_count:
        missing = distinct_count - len(distinct)
        drawn = rng.integers(0, NUMBER_RANGE, size=missing + missing // 50 + 16, dtype=np.uint32)
        distinct = sorted_unique(np.concatenate([distinct, drawn]))
    distinct = rng.permutation(distinct)[:distinct_count]
    repeats = distinct[rng.integers(0, distinct_count, size=count - distinct_count)]
    numbers = np.concatenate([distinct, repeats]) if distinct_count else repeats
    rng.shuffle(numbers)
    return Workload(format_lines(numbers), np.sort(distinct))


def sorted_unique(values: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """Return the distinct values, ascending (np.unique is several times slower)."""
    ordered = np.sort(values)
    keep = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def check_log(path: Path, distinct: npt.NDArray[np.uint32]) -> str | None:
    """Return why the log at ``path`` is not exactly the ``distinct`` numbers, or None."""
    data = np.fromfile(path, dtype=np.uint8)
    if len(data) % LINE_SIZE:
        return f"{path} ends in a partial line ({len(data)} bytes)"
    lines = data.reshape(-1, LINE_SIZE)
    step = LINE_SIZE * 10_000_000  # whole lines, checked a slice at a time
    for start in range(0, len(data), step):
        if LineFramer().feed(data[start : start + step].tobytes()).outcome is not Outcome.MORE:
            return f"{path} has a line that is not nine digits and a newline"
    logged = np.sort(parse_lines(lines))
    if len(logged) > 1 and (logged[1:] == logged[:-1]).any():
        return f"{path} holds a number twice"
    if len(logged) != len(distinct) or not (logged == distinct).all():
        return f"{path} holds {len(logged)} numbers; expected {len(distinct)} distinct ones"
    return None


@final
@attrs.frozen
class Summary:
    """What one load run measured.

    Attributes:
        numbers: Numbers sent.
        clients: Connections that sent them at once.
        seconds: From the first byte sent until the server exited (or, if this command did
            not start it, until it closed the connection that sent terminate).
        peak_rss_bytes: The server's peak resident memory, where this command started it.
        server_cpu_seconds: The server's CPU time (user and system, start-up included),
            where this command started it.
        log_ok: Whether the log held exactly the distinct numbers sent; None if not checked.
    """

    numbers: int
    clients: int
    seconds: float
    peak_rss_bytes: int | None
    server_cpu_seconds: float | None
    log_ok: bool | None

    @property
    def numbers_per_second(self) -> float:
        """Throughput of the run."""
        return self.numbers / self.seconds

    def as_dict(self) -> dict[str, object]:
        """Return the summary as JSON-ready values."""
        return {**attrs.asdict(self), "numbers_per_second": self.numbers_per_second}

    def as_text(self) -> str:
        """Return the summary as one line of text."""
        server = (
            f", server peak RSS {self.peak_rss_bytes / 2**20:.1f} MiB"
            if self.peak_rss_bytes is not None
            else ""
        )
        if self.server_cpu_seconds is not None:
            server += f", server CPU {self.server_cpu_seconds:.2f} s"
        checked = {None: "", True: ", log exact", False: ", LOG WRONG"}[self.log_ok]
        return (
            f"{self.numbers:,} numbers over {self.clients} connections in {self.seconds:.3f} s: "
            f"{self.numbers_per_second / 1e6:.2f} M numbers/s{server}{checked}"
        )


@final
@attrs.frozen
class Exited:
    """How a server that this command started ended.

    Attributes:
        status: Its exit status (128 + N if signal N killed it).
        peak_rss_bytes: Its peak resident memory.
        cpu_seconds: Its CPU time, user and system, start-up included.
    """

    status: int
    peak_rss_bytes: int
    cpu_seconds: float


def run_trio(main: Callable[[], Awaitable[T]]) -> T:
    """Return ``trio.run(main)``, but raise the tool's own failure that ended it as itself.

    Trio gathers the errors of a nursery's tasks into an ExceptionGroup. When the group holds
    just one OSError or RuntimeError (the failures this tool documents: the harness's tasks
    only read the server's output, and stop quietly when the nursery closes), that error is
    raised alone, for the callers to catch by type. Anything else (several errors, a bug,
    Ctrl-C) leaves in its group.
    """
    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        failures, others = group.split((OSError, RuntimeError))
        if failures is None or others is not None or len(failures.exceptions) != 1:
            raise
        (failure,) = failures.exceptions
        if isinstance(failure, BaseExceptionGroup):
            raise
        raise failure from failure.__cause__


async def start_measured(
    nursery: trio.Nursery, command: Sequence[str], directory: Path
) -> ServerProcess:
    """Start ``command`` on a free port of 127.0.0.1 in ``directory``; wait until it listens.

    The command gets ``--host 127.0.0.1 --port 0``, runs as the child of ``rusage.py`` (whose
    output the returned :class:`ServerProcess` reads as its standard output; the server's own
    goes to /dev/null), must say ``listening on HOST port N`` on standard error, as numlog-trio
    does, and writes ``numbers.log`` in ``directory``. When ``nursery`` closes, a server still
    running is killed.

    Raises:
        RuntimeError: It did not say it listens within the timeout.
    """
    server = await start_server(
        nursery, directory, command=[sys.executable, str(RUSAGE), *command], listening=False
    )
    try:
        await server.wait_listening(within=_TIMEOUT)
    except AssertionError as error:
        raise RuntimeError(f"the server did not start: {error}") from None
    return server


async def server_pid(server: ServerProcess) -> int:
    """Return the process id of the server itself, which ``rusage.py`` started."""
    await server.wait_until(
        lambda: _CHILD.search(server.stdout) is not None, "child line", within=_TIMEOUT
    )
    found = _CHILD.search(server.stdout)
    assert found is not None
    return int(found[1])


async def wait_exited(server: ServerProcess) -> Exited:
    """Wait for a server started by :func:`start_measured` to exit; return how it ended.

    Raises:
        RuntimeError: It did not exit within the timeout (it is killed when the nursery
            closes), or ``rusage.py`` did not report on it.
    """
    try:
        finished = await server.finish(within=_TIMEOUT)
    except AssertionError:
        raise RuntimeError(f"the server did not exit within {_TIMEOUT:g} s") from None
    usage = _USAGE.search(finished.stdout)
    if usage is None:
        raise RuntimeError(f"no rusage of the server (status {finished.returncode}); {server}")
    return Exited(finished.returncode, int(usage[1]), float(usage[2]))


def installed_server_command() -> list[str]:
    """Return the command line of the installed ``numlog-trio``, next to this interpreter."""
    return [console_script("numlog-trio")]


def _connect(host: str, port: int) -> socket.socket:
    connection = socket.create_connection((host, port), timeout=_TIMEOUT)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def _send_share(host: str, port: int, share: memoryview, sent: list[int], index: int) -> None:
    with _connect(host, port) as connection:
        for start in range(0, len(share), _SEND_CHUNK):
            connection.sendall(share[start : start + _SEND_CHUNK])
            sent[index] += len(share[start : start + _SEND_CHUNK])
        connection.shutdown(socket.SHUT_WR)
        # The server closes once it has read everything: only then is the share delivered.
        while connection.recv(65536):
            pass


def push(
    host: str,
    port: int,
    payload: npt.NDArray[np.uint8],
    clients: int,
    *,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Send ``payload`` split over ``clients`` connections at once; wait until all are read.

    Raises:
        OSError: A connection failed.
    """
    lines = len(payload) // LINE_SIZE
    bounds = [LINE_SIZE * (lines * k // clients) for k in range(clients + 1)]
    data = memoryview(payload.data)
    sent = [0] * clients
    errors: list[BaseException] = []

    def send(index: int) -> None:
        try:
            _send_share(host, port, data[bounds[index] : bounds[index + 1]], sent, index)
        except BaseException as error:
            errors.append(error)

    senders = [threading.Thread(target=send, args=(k,)) for k in range(clients)]
    for sender in senders:
        sender.start()
    # Joined with a timeout, so progress shows meanwhile and the last join returns as soon as
    # the last sender is done (a polling sleep would add its remainder to the measured time).
    for sender in senders:
        while sender.is_alive():
            sender.join(0.25)
            if progress is not None:
                progress(sum(sent) // LINE_SIZE)
    if errors:
        raise errors[0]


def send_terminate(host: str, port: int) -> None:
    """Send ``terminate`` on a new connection and wait until the server closes it."""
    with _connect(host, port) as connection:
        connection.sendall(b"terminate\n")
        connection.shutdown(socket.SHUT_WR)
        while connection.recv(65536):
            pass


def run_against_spawned(
    command: Sequence[str],
    workload: Workload,
    clients: int,
    directory: Path,
    *,
    check: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Start the server ``command`` in ``directory``, push ``workload``, terminate it, time it.

    Raises:
        RuntimeError: The server did not start, or did not exit with status 0.
        OSError: A connection failed.
    """
    return run_trio(
        functools.partial(
            _run_against_spawned, command, workload, clients, directory, check, progress
        )
    )


async def _run_against_spawned(
    command: Sequence[str],
    workload: Workload,
    clients: int,
    directory: Path,
    check: bool,
    progress: Callable[[int], None] | None,
) -> Summary:
    async with trio.open_nursery() as nursery:
        server = await start_measured(nursery, command, directory)
        started = time.perf_counter()
        await trio.to_thread.run_sync(
            functools.partial(push, HOST, server.port, workload.payload, clients, progress=progress)
        )
        await trio.to_thread.run_sync(send_terminate, HOST, server.port)
        exited = await wait_exited(server)
        seconds = time.perf_counter() - started
    if exited.status != 0:
        raise RuntimeError(f"the server exited with status {exited.status}: {server.stderr}")
    log_ok = check_log(directory / "numbers.log", workload.distinct) is None if check else None
    return Summary(
        workload.count, clients, seconds, exited.peak_rss_bytes, exited.cpu_seconds, log_ok
    )


def run_against_running(
    host: str,
    port: int,
    workload: Workload,
    clients: int,
    *,
    terminate: bool,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Push ``workload`` at a server that is already running; time until it has read it all."""
    started = time.perf_counter()
    push(host, port, workload.payload, clients, progress=progress)
    if terminate:
        send_terminate(host, port)
    return Summary(workload.count, clients, time.perf_counter() - started, None, None, None)


def _progress_printer(total: int) -> Callable[[int], None]:
    interactive = sys.stderr.isatty()
    last_shown = [0.0]
    shown = [-1]

    def show(sent: int) -> None:
        now = time.monotonic()
        if sent == shown[0] or (now - last_shown[0] < 0.5 and sent < total):
            return
        last_shown[0], shown[0] = now, sent
        text = f"{PROG}: sent {sent:,} of {total:,} numbers ({100 * sent // max(total, 1)} %)"
        print(
            f"\r{text}" if interactive else text,
            end="" if interactive else "\n",
            file=sys.stderr,
            flush=True,
        )

    return show


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of the load command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Push seeded random 9-digit numbers at a numlog-trio server over several "
            "connections and print how fast it took them. With --spawn, start the server "
            "itself in a temporary directory, stop it with terminate, report its peak RSS and "
            "check that numbers.log holds exactly the distinct numbers sent."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--numbers", type=positive_int, default=20_000_000, help="how many numbers to send"
    )
    parser.add_argument(
        "--duplicates",
        type=_share,
        default=0.2,
        help="share of the numbers that repeat another one",
    )
    parser.add_argument(
        "--clients", type=positive_int, default=5, help="connections sending at once"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random numbers")
    parser.add_argument("--host", default=DEFAULT_HOST, help="server address (without --spawn)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="server port (without --spawn)"
    )
    parser.add_argument(
        "--terminate", action="store_true", help="send terminate afterwards (without --spawn)"
    )
    parser.add_argument(
        "--spawn", action="store_true", help="start the server, stop it afterwards, check its log"
    )
    parser.add_argument(
        "--server-command",
        default=shlex.join(SERVER_MODULE),
        help="command that --spawn starts (it gets --host and --port)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="show no progress")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load command; return the process exit status."""
    args = build_parser().parse_args(argv)
    workload = make_workload(args.numbers, args.duplicates, args.seed)
    progress = None if args.quiet else _progress_printer(workload.count)
    try:
        if args.spawn:
            with tempfile.TemporaryDirectory(prefix="numlog-load-") as directory:
                summary = run_against_spawned(
                    shlex.split(args.server_command),
                    workload,
                    args.clients,
                    Path(directory),
                    progress=progress,
                )
        else:
            summary = run_against_running(
                args.host,
                args.port,
                workload,
                args.clients,
                terminate=args.terminate,
                progress=progress,
            )
    except (OSError, RuntimeError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    if progress is not None and sys.stderr.isatty():
        print(file=sys.stderr)
    print(json.dumps(summary.as_dict()) if args.json else summary.as_text(), flush=True)
    return 0 if summary.log_ok is not False else 1


if __name__ == "__main__":
    sys.exit(main())
