"""Fixtures that run :func:`numlog_trio.serve` in the test's own nursery (see ``helpers.py``)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers import (
    HOST,
    MemoryClient,
    MemoryListener,
    RunningServer,
    StartInProcess,
    StartOnLoopback,
    start_serving,
)
from kernels import Kernel, kernel_names, load_kernel


@pytest.fixture(scope="session", params=kernel_names())
def kernel(request: pytest.FixtureRequest) -> Kernel:
    """Each kernel in turn: the compiled one, then its pure-Python twin (see ``kernels.py``)."""
    name: str = request.param
    return load_kernel(name)


@pytest.fixture
async def start_in_process(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> AsyncIterator[StartInProcess]:
    """Start servers on a :class:`MemoryListener`, with ServerConfig options as keywords."""
    # pytest-trio hands trio.run only a clock that the test itself asks for.
    assert trio.lowlevel.current_clock() is autojump_clock, "the test must ask for autojump_clock"
    started: list[RunningServer[MemoryClient]] = []

    async def start(**options: Any) -> RunningServer[MemoryClient]:
        listener = MemoryListener()
        log = tmp_path / f"numbers-{len(started)}.log"
        started.append(await start_serving(nursery, [listener], listener.connect, log, **options))
        return started[-1]

    yield start
    for server in started:
        await server.close_clients()


@pytest.fixture
async def server(start_in_process: StartInProcess) -> RunningServer[MemoryClient]:
    """A server with the default configuration, on a :class:`MemoryListener`."""
    return await start_in_process()


@pytest.fixture
async def start_on_loopback(
    tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[StartOnLoopback]:
    """Start servers on TCP listeners of 127.0.0.1, port 0, with ServerConfig options."""
    started: list[RunningServer[trio.SocketStream]] = []

    async def start(**options: Any) -> RunningServer[trio.SocketStream]:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        port = listeners[0].socket.getsockname()[1]
        connect = functools.partial(trio.open_tcp_stream, HOST, port)
        log = tmp_path / f"numbers-{len(started)}.log"
        started.append(await start_serving(nursery, listeners, connect, log, **options))
        return started[-1]

    yield start
    for server in started:
        await server.close_clients()
