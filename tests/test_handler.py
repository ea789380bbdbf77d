"""The server's per-connection handler against the reference model: no sockets, no clock.

The handler reads a scripted stream that hands it exactly the given buffers, one per receive,
and then ends (an end of stream or a reset). Hypothesis generates the byte streams (valid
numbers, ``terminate``, near misses, arbitrary bytes, partial lines) and the points where they
are cut into buffers; the byte-at-a-time model of ``_reference.py`` says which numbers must
reach the writer, in which order, whether the connection is closed early and after which
buffer, and whether ``terminate`` shuts the server down. Nothing here waits on time, so each
example runs in a fresh ``trio.run`` in well under a millisecond.
"""

from __future__ import annotations

import math

import attrs
import trio
from _reference import cut, cuts, numbers_in, reference, streams
from hypothesis import given, settings
from hypothesis import strategies as st

from numlog_trio import Outcome
from numlog_trio._buffers import ReceiveBuffers
from numlog_trio._server import _ClientHandler
from numlog_trio._writer import Batch


@attrs.define(eq=False)
class ScriptedStream(trio.abc.ReceiveStream):
    """A received stream that returns the given buffers, one per receive, then ends."""

    buffers: list[bytes]
    reset_at_end: bool
    received: int = 0
    """How many buffers the handler has received."""
    ended: bool = False
    """Whether the handler has received the end (or the reset)."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await trio.lowlevel.checkpoint()
        assert not self.ended, "read again after the end of the stream"
        if self.received < len(self.buffers):
            buffer = self.buffers[self.received]
            assert max_bytes is None or len(buffer) <= max_bytes
            self.received += 1
            return buffer
        self.ended = True
        if self.reset_at_end:
            raise trio.BrokenResourceError("connection reset by peer")
        return b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@settings(max_examples=100, deadline=None)
@given(streams, cuts, st.booleans())
async def test_the_handler_matches_the_reference_for_any_stream_cut_anywhere(
    stream: bytes, offsets: list[int], reset_at_end: bool
) -> None:
    buffers, bounds = cut(stream, offsets)
    connection = ScriptedStream(buffers, reset_at_end)
    send_batches, receive_batches = trio.open_memory_channel[Batch](math.inf)
    serving = trio.CancelScope()  # what terminate cancels: the server's serving scope
    pool = ReceiveBuffers(size=1 << 16, count=len(buffers) + 1)  # one per batch, never short

    with trio.fail_after(5):
        await _ClientHandler(trio.CapacityLimiter(1), send_batches, pool, serving)(connection)
    send_batches.close()
    handed_over = []
    async for batch in receive_batches:
        handed_over += [number for lines in batch.lines for number in numbers_in(lines)]
        batch.release()
    assert pool.in_use == 0, "the handler kept a receive buffer"

    expected_numbers, expected_outcome, decided_at = reference(stream)
    assert handed_over == expected_numbers
    assert serving.cancel_called == (expected_outcome is Outcome.TERMINATE)
    if decided_at is None:
        # Every line was valid or unfinished: read to the end, whichever way it came.
        assert connection.ended
        assert connection.received == len(buffers)
    else:
        # Invalid or terminate: the handler returned (so the connection is closed) right
        # after the buffer holding the deciding byte, without reading on.
        assert not connection.ended
        assert bounds[connection.received - 1] <= decided_at < bounds[connection.received]


async def test_a_handler_stops_quietly_when_the_writer_has_failed() -> None:
    # A failed writer closes its end of the channel; the server is already stopping with the
    # writer's error, which must not be buried under one error per handler.
    send_batches, receive_batches = trio.open_memory_channel[Batch](0)
    receive_batches.close()
    connection = ScriptedStream([b"000000001\n", b"000000002\n"], reset_at_end=False)
    with trio.fail_after(5):
        await _ClientHandler(
            trio.CapacityLimiter(1), send_batches, ReceiveBuffers(1 << 16, 2), trio.CancelScope()
        )(connection)
    assert connection.received == 1
