"""A deliberately simple per-line number server: the baseline that the benchmark compares with.

Same Trio shape as numlog-trio (handlers limited to five at a time, a channel of batches into
one writer task, a reporter, terminate cancels everything), but each line is handled by a
Python loop and remembered in a set. Like numlog-trio, it fsyncs the log and exits without
the interpreter's teardown, so the comparison is of the per-number work.

Usage: ``python baseline_server.py --host H --port P``; it writes numbers.log in the current
directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO

import trio

MAX_CLIENTS = 5
REPORT_INTERVAL = 10.0


async def main(host: str, port: int, log: BinaryIO, seen: set[bytes]) -> None:
    send_numbers, receive_numbers = trio.open_memory_channel[list[bytes]](8)
    counts = {"unique": 0, "duplicates": 0}

    async def writer() -> None:
        async for numbers in receive_numbers:
            for number in numbers:
                if number in seen:
                    counts["duplicates"] += 1
                else:
                    seen.add(number)
                    counts["unique"] += 1
                    log.write(number + b"\n")

    async def reporter() -> None:
        reported = {"unique": 0, "duplicates": 0}
        while True:
            await trio.sleep(REPORT_INTERVAL)
            print(
                f"Received {counts['unique'] - reported['unique']} unique numbers, "
                f"{counts['duplicates'] - reported['duplicates']} duplicates. "
                f"Unique total: {counts['unique']}",
                flush=True,
            )
            reported = dict(counts)

    async with trio.open_nursery() as root:
        root.start_soon(writer)
        async with send_numbers, trio.open_nursery() as serving:
            limiter = trio.CapacityLimiter(MAX_CLIENTS)

            async def handle(stream: trio.SocketStream) -> None:
                async with limiter:
                    pending = b""
                    while data := await stream.receive_some(65536):
                        *lines, pending = (pending + data).split(b"\n")
                        numbers: list[bytes] = []
                        for line in lines:
                            if line == b"terminate":
                                await send_numbers.send(numbers)
                                serving.cancel_scope.cancel()
                                return
                            if len(line) != 9 or not line.isdigit():
                                await send_numbers.send(numbers)
                                return
                            numbers.append(line)
                        await send_numbers.send(numbers)

            listeners = await trio.open_tcp_listeners(port, host=host)
            bound = listeners[0].socket.getsockname()
            print(f"listening on {bound[0]} port {bound[1]}", file=sys.stderr, flush=True)
            serving.start_soon(trio.serve_listeners, handle, listeners)
            serving.start_soon(reporter)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    args = parser.parse_args()
    seen: set[bytes] = set()
    with open("numbers.log", "wb") as log:
        trio.run(main, args.host, args.port, log, seen)
        log.flush()
        os.fsync(log.fileno())
    # Like numlog-trio: the log synced and closed, leave without freeing millions of objects
    # (freeing a set of 16 million took two seconds, which would count against the baseline).
    os._exit(0)
