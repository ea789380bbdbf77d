"""The ``numlog-trio-client`` command: an interactive client to try the server by hand."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio

from ._cli import DEFAULT_HOST, DEFAULT_PORT
from ._options import OneLineParser, add_version, port

PROG = "numlog-trio-client"


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of ``numlog-trio-client``."""
    parser = OneLineParser(
        prog=PROG,
        description=(
            "Send lines typed on a terminal (or read from a pipe) to a numlog-trio server, "
            "each followed by this system's newline, and say when the server closes the "
            "connection. Type 'terminate' to shut the server down."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="server address")
    parser.add_argument("--port", type=port, default=DEFAULT_PORT, help="server port")
    add_version(parser)
    return parser


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def as_line(typed: bytes) -> bytes:
    """Return a line as sent: its own line ending replaced by this system's newline."""
    return typed.rstrip(b"\r\n") + os.linesep.encode()


def split_lines(pending: bytes, chunk: bytes) -> tuple[list[bytes], bytes]:
    """Add a chunk of input to the unfinished line; return the complete lines and the rest."""
    *complete, rest = (pending + chunk).split(b"\n")
    return complete, rest


async def _send_typed_lines(stream: trio.SocketStream) -> None:
    if sys.stdin is None:  # started with standard input closed: nothing to send
        await stream.send_eof()
        return
    stdin = sys.stdin.fileno()
    pending = b""
    while True:
        # A blocking read of the terminal runs in a thread, abandoned if the server closes
        # first. os.read takes no lock of the interpreter's (sys.stdin.buffer would), so the
        # abandoned thread cannot block the interpreter's exit.
        chunk = await trio.to_thread.run_sync(os.read, stdin, 65536, abandon_on_cancel=True)
        if not chunk:
            if pending:
                await stream.send_all(as_line(pending))
            await stream.send_eof()
            return
        complete, pending = split_lines(pending, chunk)
        await stream.send_all(b"".join(as_line(typed) for typed in complete))


async def _wait_for_close(stream: trio.SocketStream) -> None:
    while True:
        try:
            data = await stream.receive_some()
        except trio.BrokenResourceError:
            data = b""
        if not data:
            return


async def _talk(host: str, port: int) -> None:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as error:
        _say(f"cannot connect to {host}:{port}: {error.strerror or error}")
        raise SystemExit(1) from None
    async with stream, trio.open_nursery() as nursery:
        _say(f"connected to {host}:{port}; type numbers, one per line")

        async def send_then_keep_waiting() -> None:
            # If the server closed first, _wait_for_close reports it.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await _send_typed_lines(stream)

        nursery.start_soon(send_then_keep_waiting)
        await _wait_for_close(stream)
        _say("the server closed the connection")
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; return the process exit status."""
    args = build_parser().parse_args(argv)
    status = 0
    try:
        trio.run(_talk, args.host, args.port)
    except* KeyboardInterrupt:
        status = 130  # Ctrl-C: the person is done; no traceback
    return status


def run() -> NoReturn:
    """Entry point of the ``numlog-trio-client`` console script."""
    sys.exit(main())
