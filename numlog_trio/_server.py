"""The service: listener, client handlers, writer and reporter under one root nursery."""

from __future__ import annotations

import functools
import logging
import math
import signal
from collections.abc import Callable
from typing import Final, final

import attrs
import trio

from ._buffers import ReceiveBuffers, receive_into
from ._errors import ListenError
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

_SHUTDOWN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

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
    """What the server listens on and how it behaves.

    Attributes:
        host: Address to listen on.
        port: TCP port; 0 picks a free one.
        max_clients: Connections read at a time; further clients wait unread.
        report_interval: Seconds between reports.
        idle_timeout: Seconds a served client may send nothing before it is disconnected
            without a reply (its unfinished line discarded). None, the default, never
            disconnects it: the specification limits concurrency, not time. Clients
            waiting for a slot are not timed.
        handle_signals: Turn SIGINT and SIGTERM into a clean shutdown. Meant for the main
            thread of a program that exits when :func:`serve` returns: once serving ends,
            both signals stay ignored, so that nothing interrupts the drain and the exit.
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(
        default=4000, validator=[attrs.validators.ge(0), attrs.validators.le(65535)]
    )
    max_clients: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    report_interval: float = attrs.field(default=10.0, validator=_positive)
    idle_timeout: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    handle_signals: bool = True


@final
@attrs.define(eq=False)
class _ClientHandler:
    """Reads one client at a time per limiter token and hands its numbers to the writer."""

    _limiter: trio.CapacityLimiter
    _batches: trio.MemorySendChannel[Batch]
    _buffers: ReceiveBuffers
    _serving: trio.CancelScope
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


async def _shut_down_on_signals(
    serving: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    # Ignored rather than default once the receiver closes (it restores what it found): a
    # second signal while the log is drained and the process exits must not kill it.
    for shutdown_signal in _SHUTDOWN_SIGNALS:
        signal.signal(shutdown_signal, signal.SIG_IGN)
    with trio.open_signal_receiver(*_SHUTDOWN_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            logger.info("received %s: shutting down", signal.Signals(signum).name)
            serving.cancel()
            return


async def serve(
    config: ServerConfig,
    writer: LogWriter,
    *,
    emit_report: Callable[[str], None],
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> Totals:
    """Run the number server until a client sends terminate (or a signal arrives).

    Logs one line for each address it listens on. Shutdown keeps every number already handed
    to the writer: serving stops first (listener, clients, reporter), then the writer drains
    its channel and syncs the log.

    Args:
        config: Address and limits.
        writer: Owner of the log; the log is emptied once the address is bound, before any
            client is served, so a failed start leaves an earlier log alone.
        emit_report: Receives each report line.
        task_status: Given the bound port (of the first address) once the server listens.

    Returns:
        The totals of the run.

    Raises:
        ListenError: The address could not be bound.
        LogWriteError: The log could not be written.
    """
    buffers = ReceiveBuffers(RECEIVE_SIZE, config.max_clients + WRITER_BUFFERS)
    # Room for a batch per buffer: sending never blocks, the pool is what holds handlers back.
    send_batches, receive_batches = trio.open_memory_channel[Batch](buffers.count)
    async with trio.open_nursery() as root:
        root.start_soon(writer.run, receive_batches)
        async with send_batches, trio.open_nursery() as serving:
            try:
                listeners = await trio.open_tcp_listeners(config.port, host=config.host)
            except OSError as error:
                raise ListenError(
                    f"cannot listen on {config.host}:{config.port}: {error.strerror or error}"
                ) from error
            writer.clear()
            for listener in listeners:
                host, port, *_ = listener.socket.getsockname()
                logger.info("listening on %s port %d, writing %s", host, port, writer.name)
            task_status.started(listeners[0].socket.getsockname()[1])

            if config.handle_signals:
                await serving.start(_shut_down_on_signals, serving.cancel_scope)
            handler = _ClientHandler(
                trio.CapacityLimiter(config.max_clients),
                send_batches,
                buffers,
                serving.cancel_scope,
                math.inf if config.idle_timeout is None else config.idle_timeout,
            )
            await serving.start(trio.serve_listeners, handler, listeners)
            serving.start_soon(
                report_periodically, config.report_interval, lambda: writer.totals, emit_report
            )
    return writer.totals
