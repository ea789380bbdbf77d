"""Receive buffers: a fixed set shared by the handlers and the writer, reused all run long.

A handler receives into a buffer of its own, hands it to the writer with the batch of lines
in it, and takes another before it receives again; the writer gives the buffer back once
those lines are written. So the memory for data in flight is the pool's, fixed, however
large the receives, and a slow writer makes handlers wait for a buffer (and TCP push back on
their clients) instead of making them allocate.
"""

from __future__ import annotations

from typing import final

import attrs
import trio


@final
@attrs.define(eq=False)
class ReceiveBuffers:
    """A pool of at most ``count`` bytearrays of ``size`` bytes, created as first needed.

    Args:
        size: Bytes in each buffer.
        count: Buffers in all. Each served client holds one while it waits for data, so a
            pool for ``n`` clients needs more than ``n`` for the writer to have any.
    """

    size: int
    count: int
    _created: int = attrs.field(default=0, init=False)
    # Buffers taken and not given back, by identity: a buffer given back twice would be
    # handed to two clients at once.
    _lent: set[int] = attrs.field(factory=set, init=False)
    _given_back: trio.MemorySendChannel[bytearray] = attrs.field(init=False)
    _free: trio.MemoryReceiveChannel[bytearray] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._given_back, self._free = trio.open_memory_channel[bytearray](self.count)

    @property
    def in_use(self) -> int:
        """How many buffers are taken and not given back."""
        return len(self._lent)

    async def take(self) -> bytearray:
        """Return a free buffer, waiting for one to be given back if all are in use."""
        # Trio's pattern for an operation that may complete at once: cancelled only before
        # it, so a buffer taken is never lost to a cancellation.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            buffer = self._free.receive_nowait()
        except trio.WouldBlock:
            if self._created == self.count:
                return self._lend(await self._free.receive())
            self._created += 1
            buffer = bytearray(self.size)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return self._lend(buffer)

    def _lend(self, buffer: bytearray) -> bytearray:
        self._lent.add(id(buffer))
        return buffer

    def give_back(self, buffer: bytearray) -> None:
        """Return a buffer taken from this pool; its contents are no longer needed.

        Raises:
            ValueError: The buffer is not one this pool lent out (or was given back already).
        """
        try:
            self._lent.remove(id(buffer))
        except KeyError:
            raise ValueError("this buffer is not lent out by this pool") from None
        self._given_back.send_nowait(buffer)


async def receive_into(stream: trio.abc.ReceiveStream, into: memoryview) -> int:
    """Receive some bytes from ``stream`` into ``into``; return how many (0 at end of stream).

    From a socket, straight into the buffer (``recv_into``); from any other stream (tests use
    memory streams), by copying what ``receive_some`` returns.

    Raises:
        trio.BrokenResourceError: The connection broke (a reset by the peer, for one).
    """
    if isinstance(stream, trio.SocketStream):
        try:
            return await stream.socket.recv_into(into)
        except OSError as error:
            raise trio.BrokenResourceError(f"socket connection broken: {error}") from error
    data = await stream.receive_some(len(into))
    into[: len(data)] = data
    return len(data)
