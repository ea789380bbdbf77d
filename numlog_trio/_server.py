"""The service: client handlers, writer and reporter, in two nurseries.

The outer nursery runs the writer; the inner one serves: the listeners' accept loops with
their client handlers, the reporter and the shutdown trigger. Shutdown cancels the inner one
only. Once it has ended, nothing sends batches any more, so the writer drains what it was
handed, syncs the log and returns: every number a handler handed over is kept.

:func:`serve` is handed its listeners and touches no process-wide state; binding, signals
and the exit status belong to the command (``_cli.py``).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, final

import attrs
import trio

from ._buffers import ReceiveBuffers, receive_into
from ._errors import defer_to_the_fault
from ._framing import LineFramer, Outcome
from ._report import Totals, report_periodically
from ._writer import Batch, LogWriter

logger = logging.getLogger("numlog_trio")

RECEIVE_SIZE: Final = 1 << 19
"""Bytes of each receive buffer: large receives cost less CPU a number.

The buffers are all the memory for data in flight (``max_clients`` + :data:`WRITER_BUFFERS`
of them), so this also sets the server's peak memory: 3.5 MiB of buffers by default, beside
the bitmap's 119 MiB. 1 MiB was about 15 % faster but over 150 MiB at peak; 256 KiB about
7 % slower (benchmarks/RESULTS.md).
"""

WRITER_BUFFERS: Final = 2
"""Receive buffers beyond one per served client: the writer's, for the batches it holds.

When the writer holds them all, handlers wait for one before they read on, and TCP pushes
back on their clients.
"""


def _positive(config: object, attribute: attrs.Attribute[float], value: float) -> None:
    # ``not value > 0`` also rejects nan, which every comparison is false for.
    if not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number of seconds, not {value}")


@final
@attrs.frozen
class ServerConfig:
    """How the server treats its clients.

    Attributes:
        max_clients: Connections read at a time; further clients wait unread.
        report_interval: Seconds between reports.
        idle_timeout: Seconds a served client may send nothing before it is disconnected
            without a reply (its unfinished line discarded). ``math.inf``, the default,
            never disconnects it: the specification limits concurrency, not time. Clients
            waiting for a slot are not timed.
    """

    max_clients: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    report_interval: float = attrs.field(default=10.0, validator=_positive)
    idle_timeout: float = attrs.field(default=math.inf, validator=_positive)


class Cancellable(Protocol):
    """What a shutdown trigger or terminate cancels: a cancel scope, or serve's shutdown."""

    def cancel(self) -> None:
        """Stop what it covers."""


@final
@attrs.define(eq=False)
class _Shutdown:
    """Ends serving and calls ``on_shutdown``, once.

    Whichever asks first (a client's terminate, the trigger) begins the shutdown; later asks
    change nothing.
    """

    _serving: trio.CancelScope
    _on_shutdown: Callable[[], object] | None = None

    def cancel(self) -> None:
        if self._serving.cancel_called:
            return
        self._serving.cancel()
        if self._on_shutdown is not None:
            self._on_shutdown()


@final
@attrs.define(eq=False)
class _ClientHandler:
    """Reads one client at a time per limiter token and hands its numbers to the writer."""

    _limiter: trio.CapacityLimiter
    _batches: trio.MemorySendChannel[Batch]
    _buffers: ReceiveBuffers
    _serving: Cancellable
    _idle_timeout: float = math.inf

    async def __call__(self, stream: trio.abc.ReceiveStream) -> None:
        async with self._limiter:
            await self._read_lines(stream)
        # Returning closes the connection at once, without a reply (serve_listeners does it).

    async def _read_lines(self, stream: trio.abc.ReceiveStream) -> None:
        framer = LineFramer()
        while True:
            buffer = await self._buffers.take()
            handed_over = False
            try:
                # The unfinished line goes first, so that it is completed in place.
                carried = framer.take_partial()
                buffer[: len(carried)] = carried
                # Timed only from here, once served: clients waiting for a slot are not.
                with trio.move_on_after(self._idle_timeout) as idle:
                    try:
                        received = await receive_into(stream, memoryview(buffer)[len(carried) :])
                    except trio.BrokenResourceError:
                        return  # reset by the peer: like end of stream, the line is lost
                if idle.cancelled_caught:
                    logger.debug("closing a connection idle for %g seconds", self._idle_timeout)
                    return  # as at the end of the stream, the unfinished line is lost
                if not received:
                    return
                framed = framer.feed(memoryview(buffer)[: len(carried) + received])
                if framed.lines:
                    release = functools.partial(self._buffers.give_back, buffer)
                    try:
                        await self._batches.send(Batch(framed.lines, release))
                    except trio.BrokenResourceError:
                        return  # the writer has failed; the server is stopping with its error
                    handed_over = True  # the writer gives the buffer back once it is done
            finally:
                if not handed_over:
                    self._buffers.give_back(buffer)
            if framed.outcome is Outcome.TERMINATE:
                logger.info("a client sent terminate: shutting down")
                self._serving.cancel()
                return
            if framed.outcome is Outcome.INVALID:
                logger.debug("closing a connection that sent an invalid line")
                return


async def cancel_when_triggered(
    shutdown_trigger: Callable[[], Awaitable[object]], serving: Cancellable
) -> None:
    """Cancel ``serving`` once ``shutdown_trigger`` returns."""
    await shutdown_trigger()
    serving.cancel()


async def serve(
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    writer: LogWriter,
    *,
    emit_report: Callable[[str], None],
    config: ServerConfig = ServerConfig(),
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    on_shutdown: Callable[[], object] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> Totals:
    """Serve clients on the listeners until one sends terminate or the trigger fires.

    Shutdown keeps every number already handed to the writer: serving stops first (the
    listeners, which are closed, the clients, which are disconnected, and the reporter), then
    the writer drains what it holds and syncs the log.

    Args:
        listeners: Where clients connect, already listening; :func:`serve` closes them.
        writer: Owner of the log, open and emptied by the caller.
        emit_report: Receives each report line.
        config: How clients are treated, and how often the report is due.
        shutdown_trigger: Awaited while serving; serving stops when it returns, as it does
            when a client sends terminate. None: only terminate stops the server.
        on_shutdown: Called once when shutdown begins, whichever began it (a client's
            terminate or the trigger), before the clients are disconnected and the writer
            drains: where a command tells its supervisor that it is stopping. Not called when
            a fault stops the server. It runs in the event loop: it must return at once, and
            not raise.
        task_status: Told once the listeners are accepting clients.

    Returns:
        The totals of the run.

    Raises:
        LogWriteError: The log could not be written; the numbers counted are all in it.
            Faults that come together (a write and a background sync) are raised as one
            ExceptionGroup of them (see :func:`~numlog_trio._errors.defer_to_the_fault`).
    """
    buffers = ReceiveBuffers(RECEIVE_SIZE, config.max_clients + WRITER_BUFFERS)
    # Room for a batch per buffer: sending never blocks, the pool is what holds handlers back.
    send_batches, receive_batches = trio.open_memory_channel[Batch](buffers.count)
    with defer_to_the_fault():
        async with trio.open_nursery() as writing:
            writing.start_soon(writer.run, receive_batches)
            async with send_batches, trio.open_nursery() as serving:
                shutdown = _Shutdown(serving.cancel_scope, on_shutdown)
                handler = _ClientHandler(
                    trio.CapacityLimiter(config.max_clients),
                    send_batches,
                    buffers,
                    shutdown,
                    config.idle_timeout,
                )
                await serving.start(trio.serve_listeners, handler, list(listeners))
                serving.start_soon(
                    report_periodically, config.report_interval, lambda: writer.totals, emit_report
                )
                if shutdown_trigger is not None:
                    serving.start_soon(cancel_when_triggered, shutdown_trigger, shutdown)
                task_status.started()
    return writer.totals
