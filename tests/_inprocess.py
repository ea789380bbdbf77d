"""The server in the test's own Trio run, reached over real loopback TCP.

The ``start_server`` and ``server`` fixtures (in ``conftest.py``) start it in the test's
nursery; this module holds what tests use to talk to it and to check what it logged. Servers
listen on 127.0.0.1 with port 0, run on the real clock and log to a temporary file.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ParamSpec

import attrs
import numpy as np
import trio

from numlog_trio import Totals

P = ParamSpec("P")
TIMEOUT = 10
"""Seconds within which a test over loopback must end; a healthy run needs a fraction."""


def fail_after(
    seconds: float,
) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """Fail the decorated test if it runs longer than ``seconds`` (real time)."""

    def decorate(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(test)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> None:
            with trio.fail_after(seconds):
                await test(*args, **kwargs)

        return timed

    return decorate


@attrs.define(eq=False)
class RunningServer:
    """A server started by the ``start_server`` fixture, and what it did so far."""

    port: int
    log: Path
    done: trio.Event = attrs.Factory(trio.Event)
    totals: Totals | None = None
    reports: list[str] = attrs.Factory(list)
    clients: list[trio.SocketStream] = attrs.Factory(list)

    async def connect(self) -> trio.SocketStream:
        """Open a client connection, closed when the test ends."""
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        self.clients.append(stream)
        return stream

    def logged(self) -> list[bytes]:
        """Return the lines of the log, each with its newline, in the order written."""
        return self.log.read_bytes().splitlines(keepends=True)

    async def wait_until_logged(self, count: int) -> None:
        """Wait until the log holds at least ``count`` lines."""
        while len(self.logged()) < count:  # noqa: ASYNC110 (the file is what we observe)
            await trio.sleep(0.01)

    async def wait_until_stopped(self) -> Totals:
        """Wait until :func:`numlog_trio.serve` has returned, and return its totals."""
        await self.done.wait()
        assert self.totals is not None
        return self.totals


StartServer = Callable[..., Awaitable[RunningServer]]


async def is_closed_by_server(stream: trio.SocketStream) -> bool:
    """Wait for the server to close the connection; True if it sent nothing before."""
    try:
        return await stream.receive_some() == b""
    except trio.BrokenResourceError:
        return True  # reset: the server closed with our data unread


async def reset(stream: trio.SocketStream) -> None:
    """Close the connection with a reset (RST) instead of an orderly end of stream (FIN)."""
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


def lines(*numbers: int) -> bytes:
    """Return input lines for the numbers, in order."""
    return "".join(f"{n:09d}\n" for n in numbers).encode()


def numbered_lines(start: int, count: int) -> bytes:
    """Return lines for start, start + 1, ..., fast enough for megabytes of load."""
    numbers = np.arange(start, start + count, dtype=np.uint32)
    table = np.full((count, 10), ord("\n"), dtype=np.uint8)
    for column in range(8, -1, -1):
        table[:, column] = ord("0") + numbers % 10
        numbers //= 10
    return table.tobytes()
