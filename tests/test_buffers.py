"""The pool of receive buffers and receiving into them: in-process, no real seconds.

The pool is checked with Trio's own tools for "nothing happened": a task that must wait is
shown waiting with ``wait_all_tasks_blocked``, not by sleeping. ``receive_into`` is checked on
a memory stream (the copying path) and on a connected socket pair (``recv_into``).
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from numlog_trio._buffers import ReceiveBuffers, receive_into


async def test_buffers_are_created_as_needed_up_to_the_count_and_reused() -> None:
    pool = ReceiveBuffers(size=16, count=2)
    first = await pool.take()
    assert (len(first), pool.in_use) == (16, 1)
    pool.give_back(first)
    assert await pool.take() is first  # reused, not a new one
    second = await pool.take()
    assert second is not first
    assert pool.in_use == 2


async def test_taking_from_an_empty_pool_waits_until_a_buffer_is_given_back() -> None:
    pool = ReceiveBuffers(size=16, count=1)
    held = await pool.take()
    taken: list[bytearray] = []

    async def take() -> None:
        taken.append(await pool.take())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.testing.wait_all_tasks_blocked()
        assert taken == [], "a second buffer was taken from a pool of one"
        pool.give_back(held)
    assert taken == [held]


async def test_a_cancelled_take_loses_no_buffer() -> None:
    pool = ReceiveBuffers(size=16, count=1)
    held = await pool.take()
    with trio.CancelScope() as scope:
        scope.cancel()
        await pool.take()  # cancelled while waiting
    pool.give_back(held)
    with trio.CancelScope() as scope:
        scope.cancel()
        await pool.take()  # cancelled before taking the free one
    assert pool.in_use == 0
    assert await pool.take() is held


async def test_a_buffer_given_back_twice_or_not_lent_is_refused() -> None:
    pool = ReceiveBuffers(size=16, count=2)
    buffer = await pool.take()
    pool.give_back(buffer)
    with pytest.raises(ValueError, match="not lent out"):
        pool.give_back(buffer)
    with pytest.raises(ValueError, match="not lent out"):
        pool.give_back(bytearray(16))
    assert pool.in_use == 0


async def test_receive_into_copies_from_a_stream_that_is_not_a_socket() -> None:
    send, receive = trio.testing.memory_stream_pair()
    await send.send_all(b"0123456789")
    buffer = bytearray(b"." * 12)
    assert await receive_into(receive, memoryview(buffer)[2:8]) == 6
    assert buffer == b"..012345...."
    await send.aclose()
    assert await receive_into(receive, memoryview(buffer)[2:]) == 4
    assert await receive_into(receive, memoryview(buffer)[2:]) == 0


async def test_receive_into_reads_a_socket_straight_into_the_buffer() -> None:
    left, right = trio.socket.socketpair()
    stream = trio.SocketStream(right)
    async with stream:
        await left.send(b"000000001\n")
        buffer = bytearray(16)
        assert await receive_into(stream, memoryview(buffer)[3:]) == 10
        assert buffer[3:13] == b"000000001\n"
        left.close()
        assert await receive_into(stream, memoryview(buffer)) == 0


async def test_a_reset_socket_is_a_broken_stream() -> None:
    left, right = trio.socket.socketpair(socket.AF_UNIX)
    stream = trio.SocketStream(right)
    async with stream:
        # A Unix socket closed with unread data makes the peer's next receive fail with
        # ECONNRESET, as a TCP reset does.
        await stream.send_all(b"unread")
        left.close()
        with pytest.raises(trio.BrokenResourceError):
            await receive_into(stream, memoryview(bytearray(16)))
