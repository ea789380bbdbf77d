"""Fixtures that run the server in the test's own nursery (helpers in ``_inprocess.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import RunningServer, StartServer

from numlog_trio import LogWriter, ServerConfig, serve


@pytest.fixture
async def start_server(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[StartServer]:
    """Start servers in the test's nursery, with ServerConfig options as keywords."""
    started: list[RunningServer] = []
    with ExitStack() as writers:

        async def start(**options: Any) -> RunningServer:
            log = tmp_path / f"numbers-{len(started)}.log"
            # Left from an earlier run: every check of the log's content also checks that
            # the server empties it at start.
            log.write_bytes(b"000000999\n")
            writer = writers.enter_context(LogWriter.open(log))
            config = ServerConfig(**options)
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            writer.clear()
            running = RunningServer(port=listeners[0].socket.getsockname()[1], log=log)
            started.append(running)

            async def run(task_status: trio.TaskStatus[None]) -> None:
                emit = running.reports.append
                running.totals = await serve(
                    listeners, writer, emit_report=emit, config=config, task_status=task_status
                )
                running.done.set()

            await nursery.start(run)
            return running

        yield start
        for running in started:
            for client in running.clients:
                await client.aclose()


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    """A server with the default limits, started in the test's nursery."""
    return await start_server()
