"""A minimal Trio server that receives and discards: the ceiling the benchmark measures against.

Same Trio shape as numlog-trio where the bytes come in (handlers limited to five at a time by
a CapacityLimiter, receives of numlog-trio's size, the connection closed once its client has
sent everything), but the bytes are thrown away: no framing, no dedup, no log. Its throughput
is what Trio and the loopback connections allow for the same load.

Simplification: it does not read lines. It notices ``terminate`` only when ``terminate\\n``
is the last 10 bytes a connection has sent so far (checked after each receive), which is how
the load tool sends it: alone, on a connection of its own. Then it cancels everything and
exits 0 without the interpreter's teardown, like the others. It writes no ``numbers.log``: the
benchmark runs it with the log unchecked.

Usage: ``python discard_server.py --host H --port P [--receive-size BYTES]``.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

MAX_CLIENTS = 5
# numlog_trio._server.RECEIVE_SIZE, copied so that this server imports only Trio (its start-up
# and RSS stay minimal); bench.py passes the current value with --receive-size.
RECEIVE_SIZE = 1 << 20
TERMINATE = b"terminate\n"


async def main(host: str, port: int, receive_size: int) -> None:
    async with trio.open_nursery() as serving:
        limiter = trio.CapacityLimiter(MAX_CLIENTS)

        async def handle(stream: trio.SocketStream) -> None:
            async with limiter:
                tail = b""  # the last (up to) 10 bytes this connection sent
                while True:
                    try:
                        data = await stream.receive_some(receive_size)
                    except trio.BrokenResourceError:
                        return  # reset by the peer
                    if not data:
                        return  # end of stream: serve_listeners closes the connection
                    tail = data[-10:] if len(data) >= 10 else (tail + data)[-10:]
                    if tail == TERMINATE:
                        serving.cancel_scope.cancel()
                        return

        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        print(f"listening on {bound[0]} port {bound[1]}", file=sys.stderr, flush=True)
        serving.start_soon(trio.serve_listeners, handle, listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--receive-size", type=int, default=RECEIVE_SIZE)
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.receive_size)
    sys.stderr.flush()
    # Like the others: leave without the interpreter's teardown.
    os._exit(0)
