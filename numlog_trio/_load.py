"""The ``numlog-trio-load`` command: push seeded random numbers at a server and time it.

The numbers are generated before timing starts. Each of K connections sends its share, then
half-closes and waits for the server to close it, which tells that the server has read (and
handed to its writer) everything sent. Then one more connection sends ``terminate``; where
this command started the server, it waits for the server to exit and reads its peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, NoReturn, final

import attrs

try:
    import numpy as np
    import numpy.typing as npt
except ImportError:  # the server does not need NumPy; only this load tool does
    raise SystemExit("numlog-trio-load needs NumPy: pip install 'numlog-trio[load]'") from None

from ._cli import DEFAULT_HOST, DEFAULT_PORT, _positive_int
from ._framing import LINE_SIZE, LineFramer, Outcome

PROG: Final = "numlog-trio-load"
NUMBER_RANGE: Final = 1_000_000_000
_SEND_CHUNK: Final = 4 << 20
_TIMEOUT: Final = 120.0
"""Upper bound in seconds of any single wait on the server."""
_LISTENING: Final = "listening on "

_LAUNCHER: Final = """
import os, sys
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, flush=True)
sys.exit(os.waitstatus_to_exitcode(status) & 255)
"""
"""Runs the server as its child; prints its peak RSS (bytes) and CPU time (s) when it exits.

The server must be the child of a small process: a child's peak RSS (ru_maxrss) starts at
the RSS of the process it was forked from, and this one holds the whole payload.
"""


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


def format_lines(numbers: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint8]:
    """Return the lines of ``numbers``: nine digits with leading zeros and a newline each."""
    lines = np.empty((len(numbers), LINE_SIZE), dtype=np.uint8)
    lines[:, 9] = ord("\n")
    rest = numbers.copy()
    for column in range(8, -1, -1):
        rest, digit = np.divmod(rest, 10)
        lines[:, column] = digit + ord("0")
    return lines.reshape(-1)


def parse_lines(records: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """Return the numbers of valid number lines, given as ``(n, 10)`` rows."""
    numbers = np.zeros(len(records), dtype=np.uint32)
    for column in range(LINE_SIZE - 1):
        numbers *= 10
        numbers += records[:, column]
        numbers -= ord("0")
    return numbers


def check_log(path: Path, distinct: npt.NDArray[np.uint32]) -> str | None:
    """Return why the log at ``path`` is not exactly the ``distinct`` numbers, or None."""
    data = np.fromfile(path, dtype=np.uint8)
    if len(data) % LINE_SIZE:
        return f"{path} ends in a partial line ({len(data)} bytes)"
    records = data.reshape(-1, LINE_SIZE)
    step = LINE_SIZE * 10_000_000  # whole lines, checked a slice at a time
    for start in range(0, len(data), step):
        if LineFramer().feed(data[start : start + step].tobytes()).outcome is not Outcome.MORE:
            return f"{path} has a line that is not nine digits and a newline"
    logged = np.sort(parse_lines(records))
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
@attrs.define(eq=False)
class SpawnedServer:
    """A server process this command started, listening on a free loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    _stderr_lines: list[str]
    _stderr_drain: threading.Thread

    @classmethod
    def start(cls, command: Sequence[str], directory: Path) -> SpawnedServer:
        """Start ``command --host 127.0.0.1 --port 0`` in ``directory``; wait until it listens.

        The command must log ``listening on HOST port N`` on standard error, as numlog-trio
        does, and write ``numbers.log`` in its working directory.
        """
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, *command, "--host", "127.0.0.1", "--port", "0"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        # A thread reads standard error throughout, so the server never blocks on a full
        # pipe, and tells when the listening line has come.
        stderr_lines: list[str] = []
        listening: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        drain = threading.Thread(
            target=cls._drain, args=(process, stderr_lines, listening), daemon=True
        )
        drain.start()
        server = cls(process, 0, directory / "numbers.log", stderr_lines, drain)
        try:
            port = listening.get(timeout=_TIMEOUT)
        except queue.Empty:
            port = None
        if port is None:
            server.close()
            raise RuntimeError(f"the server did not start: {' / '.join(stderr_lines)}")
        server.port = port
        return server

    @staticmethod
    def _drain(
        process: subprocess.Popen[bytes], lines: list[str], listening: queue.SimpleQueue[int | None]
    ) -> None:
        assert process.stderr is not None
        told = False
        for raw in process.stderr:
            text = raw.decode(errors="replace").rstrip("\n")
            lines.append(text)
            if not told and _LISTENING in text:
                listening.put(int(text.rsplit(" port ", 1)[1].split(",")[0]))
                told = True
        if not told:
            listening.put(None)  # the server ended without listening

    def server_pid(self) -> int:
        """Return the process id of the server itself (the launcher's only child)."""
        launcher = self.process.pid
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
        return int(children[0])

    @property
    def stderr(self) -> str:
        """What the server wrote on standard error so far."""
        return "\n".join(self._stderr_lines)

    def wait(self) -> tuple[int, int, float]:
        """Wait for the server to exit; return its exit status, peak RSS and CPU seconds.

        Raises:
            RuntimeError: The server did not exit in time (it is killed).
        """
        assert self.process.stdout is not None
        try:
            status = self.process.wait(_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.close()
            raise RuntimeError(f"the server did not exit within {_TIMEOUT:g} s") from None
        usage = self.process.stdout.read().split()
        if len(usage) != 2:
            return status, 0, 0.0
        return status, int(usage[0]), float(usage[1])

    def close(self) -> None:
        """Stop the server (and its launcher) if it is still running; release the pipes."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._stderr_drain.join(_TIMEOUT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def installed_server_command() -> list[str]:
    """Return the command line of the installed ``numlog-trio``, next to this interpreter."""
    scripts = str(Path(sys.executable).parent)
    found = shutil.which("numlog-trio", path=scripts) or shutil.which("numlog-trio")
    if found is None:
        raise RuntimeError("the numlog-trio command is not installed")
    return [found]


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
    """
    server = SpawnedServer.start(command, directory)
    try:
        started = time.perf_counter()
        push("127.0.0.1", server.port, workload.payload, clients, progress=progress)
        send_terminate("127.0.0.1", server.port)
        status, peak_rss, cpu_seconds = server.wait()
        seconds = time.perf_counter() - started
    finally:
        server.close()
    if status != 0:
        raise RuntimeError(f"the server exited with status {status}: {server.stderr}")
    log_ok = check_log(server.log, workload.distinct) is None if check else None
    return Summary(workload.count, clients, seconds, peak_rss, cpu_seconds, log_ok)


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
    """Return the command-line parser of ``numlog-trio-load``."""
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
        "--numbers", type=_positive_int, default=20_000_000, help="how many numbers to send"
    )
    parser.add_argument(
        "--duplicates",
        type=_share,
        default=0.2,
        help="share of the numbers that repeat another one",
    )
    parser.add_argument(
        "--clients", type=_positive_int, default=5, help="connections sending at once"
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
        default=f"{sys.executable} -m numlog_trio",
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


def run() -> NoReturn:
    """Entry point of the ``numlog-trio-load`` console script."""
    sys.exit(main())
