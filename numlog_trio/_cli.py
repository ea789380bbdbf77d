"""The ``numlog-trio`` command."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from functools import partial
from typing import Final, NoReturn

import trio

from . import _kernel
from ._errors import ListenError, ServiceError
from ._logfile import Loaded
from ._notify import READY, STOPPING, Notifier
from ._options import OneLineParser, add_version, port, positive_int, positive_seconds, seconds
from ._report import Totals
from ._server import RECEIVE_SIZE, ServerConfig, cancel_when_triggered, logger, serve
from ._writer import SYNC_INTERVAL, LogWriter

_DEFAULTS: Final = ServerConfig()
PROG: Final = "numlog-trio"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 4000
_SHUTDOWN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

PLATFORM_CALLS: Final = (
    "os.writev",  # writing the log
    "os.preadv",  # loading it (--resume)
    "os.O_CLOEXEC",  # opening it
    "os.O_NONBLOCK",
    "signal.pthread_sigmask",  # catching SIGINT and SIGTERM without losing one
    "mmap.MAP_PRIVATE",  # the dedup bitmap
    "mmap.MAP_ANONYMOUS",
)
"""What the server needs of the operating system, as ``module.name``: POSIX calls and flags
that Windows lacks. (``os.fdatasync`` is not among them: ``os.fsync`` stands in for it.)"""
UNSUPPORTED: Final = 1
"""Exit status on a platform that lacks some of :data:`PLATFORM_CALLS`: a start that fails."""


def missing_calls(names: Iterable[str]) -> list[str]:
    """Return those of ``names`` (``module.name``, as ``"os.writev"``) that this Python lacks."""
    missing = []
    for name in names:
        module, _, attribute = name.partition(".")
        if not hasattr(importlib.import_module(module), attribute):
            missing.append(name)
    return missing


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of ``numlog-trio``."""
    parser = OneLineParser(
        prog=PROG,
        description=(
            "Accept 9-digit numbers (one per line) over TCP from a few clients at a time, "
            "write each distinct number once to a log file, and print a report of new unique "
            "and duplicate numbers every report interval. A client sending 'terminate' shuts "
            "the server down, as do SIGINT and SIGTERM."
        ),
        epilog=(
            "Exit status: 0 after terminate, SIGINT or SIGTERM; 1 when the port cannot be "
            "bound, the log cannot be written (or, with --resume, read as a log of this "
            "server), the 125 MB dedup bitmap cannot be allocated or the platform is not "
            "supported (it runs on Linux and other POSIX systems); 2 for a bad option. "
            "Under systemd (Type=notify: $NOTIFY_SOCKET set) it says READY=1 once it listens "
            "and STOPPING=1 when it begins to shut down. It runs its compiled kernel, or "
            "where that could not be built (or NUMLOG_TRIO_NO_EXTENSIONS=1 is set) a "
            "pure-Python one, about 20 times slower; the listening line says which."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on; 0.0.0.0 for all IPv4 interfaces, :: for all IPv6 ones",
    )
    parser.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help="TCP port; 0 picks a free port"
    )
    parser.add_argument(
        "--log-file",
        default="numbers.log",
        help="file receiving each distinct number once; created, or cleared at start unless "
        "--resume",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=(
            "keep the log instead of clearing it, and go on where it ends: its numbers count "
            "as received before, and what a crash can leave at its end (an unfinished line, "
            "NUL bytes) is cut off; a file that is not a log of this server is refused, "
            "unchanged"
        ),
    )
    parser.add_argument(
        "--sync-interval",
        type=seconds,
        default=SYNC_INTERVAL,
        metavar="SECONDS",
        help=(
            "sync the log to disk at most this many seconds after a write (a power cut "
            "loses about that much); 0 syncs each write before its numbers are counted"
        ),
    )
    parser.add_argument(
        "--max-clients",
        type=positive_int,
        default=_DEFAULTS.max_clients,
        help=(
            f"clients read at a time, each holding a {RECEIVE_SIZE >> 10} KiB receive buffer "
            "while served; more connections wait unread until a slot frees"
        ),
    )
    parser.add_argument(
        "--report-interval",
        type=positive_seconds,
        default=_DEFAULTS.report_interval,
        metavar="SECONDS",
        help="seconds between reports on standard output",
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help=(
            "disconnect a served client that sends nothing for this many seconds, without a "
            "reply (clients waiting for a slot are not timed); None means never"
        ),
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also log each connection closed as invalid or idle",
    )
    add_version(parser)
    return parser


def _one_line(record: logging.LogRecord) -> bool:
    # Trio's accept loop logs EMFILE and the like with a traceback; users get the message.
    record.exc_info = None
    record.exc_text = None
    return True


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    handler.addFilter(_one_line)
    logging.getLogger().addHandler(handler)  # ours and Trio's
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def print_report(line: str) -> None:
    """Write a report line to standard output at once, even when it is a pipe.

    If the reader of standard output has gone (a closed pipe), say so once on stderr and
    send later reports to /dev/null: the server goes on logging numbers.
    """
    try:
        print(line, flush=True)
    except OSError as error:
        logger.error("cannot write reports to standard output (%s): reports stop", error.strerror)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


async def _listen(host: str, port: int) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as error:
        raise ListenError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error


async def _first_signal(signals: AsyncIterator[int]) -> None:
    signum = await anext(signals)
    logger.info("received %s: shutting down", signal.Signals(signum).name)


def _ignore(signum: int, frame: object) -> None:
    """Ignore a signal: one during the final drain and exit must not interrupt them."""


async def _load_unless_signalled(writer: LogWriter, signals: AsyncIterator[int]) -> Loaded | None:
    """Load the log; None if a shutdown signal came first (the log is then left as it was)."""
    async with trio.open_nursery() as loading:
        loading.start_soon(
            cancel_when_triggered, partial(_first_signal, signals), loading.cancel_scope
        )
        # In a thread: a 10 GB log takes seconds. It checks between reads for a signal.
        loaded = await trio.to_thread.run_sync(writer.load, trio.from_thread.check_cancelled)
        if loading.cancel_scope.cancel_called:
            return None  # a signal after the last check: it still means stop
        loading.cancel_scope.cancel()
        return loaded
    return None


def _describe_tail(writer: LogWriter, loaded: Loaded) -> str:
    damage = []
    if loaded.torn:
        damage.append(f"an unfinished line of {loaded.torn} digits")
    if loaded.zeros:
        damage.append(f"{loaded.zeros} NUL bytes")
    return (
        f"cut off what followed the {loaded.lines} whole lines of {writer.name} "
        f"(left by a crash): {' and '.join(damage)}"
    )


def _status(listeners: Sequence[trio.SocketListener]) -> str:
    """Return a STATUS notification: where the server listens."""
    addresses = (listener.socket.getsockname() for listener in listeners)
    return "STATUS=" + ", ".join(f"listening on {host} port {port}" for host, port, *_ in addresses)


async def _serve_until_shutdown(
    host: str, port: int, config: ServerConfig, writer: LogWriter, resume: bool, notifier: Notifier
) -> Totals:
    # Ignored rather than default once the receiver closes (it restores what it found): a
    # second signal while the log is drained and the process exits must not kill it. Blocked
    # meanwhile, so that one arriving between the two changes waits for the receiver. Ignored
    # by a handler, not SIG_IGN: setting SIG_IGN (as Trio does again, to check that it runs in
    # the main thread) would discard a signal that is waiting.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SHUTDOWN_SIGNALS)
    for shutdown_signal in _SHUTDOWN_SIGNALS:
        signal.signal(shutdown_signal, _ignore)
    # Caught from before the port opens: a supervisor may signal the moment it reads that
    # the server listens, and that must be a clean shutdown too.
    with trio.open_signal_receiver(*_SHUTDOWN_SIGNALS) as signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SHUTDOWN_SIGNALS)
        loaded = None
        if resume:
            started = time.perf_counter()
            loaded = await _load_unless_signalled(writer, signals)
            if loaded is None:
                notifier.notify(STOPPING)  # a signal: shutdown begins, before it was ever ready
                return writer.totals
            loading = time.perf_counter() - started
        listeners = await _listen(host, port)
        # Only once bound: a server that fails to start leaves the old log as it was. In a
        # thread: both sync the log, which a resumed one may have much of unsynced.
        if loaded is None:
            await trio.to_thread.run_sync(writer.clear)
            resumed = ""
        else:
            await trio.to_thread.run_sync(writer.keep, loaded)
            if loaded.tail:
                logger.warning("%s", _describe_tail(writer, loaded))
            resumed = f" (resumed with {loaded.lines} numbers loaded in {loading:.3f} s)"
        for listener in listeners:
            bound_host, bound_port, *_ = listener.socket.getsockname()
            logger.info(
                "listening on %s port %d with the %s kernel, writing %s%s",
                *(bound_host, bound_port, _kernel.NAME, writer.name, resumed),
            )
        advice = _kernel.slower_kernel_advice()
        if advice is not None:
            logger.warning("%s", advice)
        # Ready as the line says so: signals are caught, and the port accepts connections (the
        # kernel queues them until serve accepts). A supervisor (systemd's Type=notify) may
        # now start what needs the server.
        notifier.notify(READY, _status(listeners))
        return await serve(
            listeners,
            writer,
            emit_report=print_report,
            config=config,
            shutdown_trigger=partial(_first_signal, signals),
            on_shutdown=partial(notifier.notify, STOPPING),
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server; return the process exit status.

    Args:
        argv: Command-line arguments (without the program name); default ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    # Before anything that needs them (and after the options: --help and --version need none),
    # so that Windows gets one line instead of a traceback from deep inside.
    missing = missing_calls(PLATFORM_CALLS)
    if missing:
        logger.error(
            "this platform (%s) is not supported: it lacks %s; %s runs on Linux and other "
            "POSIX systems",
            *(sys.platform, ", ".join(missing), PROG),
        )
        return UNSUPPORTED
    config = ServerConfig(
        max_clients=args.max_clients,
        report_interval=args.report_interval,
        idle_timeout=math.inf if args.idle_timeout is None else args.idle_timeout,
    )
    status = 0
    try:
        # Opened, not yet emptied, before the event loop starts: a path that cannot be written
        # fails before anything listens.
        with (
            Notifier.from_environment() as notifier,
            LogWriter.open(args.log_file, sync_interval=args.sync_interval) as writer,
        ):
            writer.reserve_memory()
            try:
                trio.run(
                    _serve_until_shutdown,
                    *(args.host, args.port, config, writer, args.resume, notifier),
                )
            except* ServiceError as faults:
                # One line for each: a write and a background sync can fail together.
                for fault in faults.exceptions:
                    logger.error("%s", fault)
                status = 1
    except ServiceError as fault:  # opening the log, mapping the bitmap or closing the log
        logger.error("%s", fault)
        status = 1
    return status


def run() -> NoReturn:
    """Entry point of the ``numlog-trio`` console script."""
    try:
        status = main()
    except KeyboardInterrupt:  # Ctrl-C before the server catches signals (it then shuts down)
        print(f"{PROG}: interrupted", file=sys.stderr)
        status = 130
    # The log is synced and closed by now, and reports are flushed line by line. Leaving
    # without the interpreter's teardown (finalizing Trio's and the other modules' objects;
    # the kernel unmaps the bitmap either way) brings terminate -> exit from 37-70 to 7-14 ms
    # idle and from 51-92 to 21-31 ms after 20 M numbers (medians of four interleaved runs,
    # benchmarks/RESULTS.md).
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(status)
