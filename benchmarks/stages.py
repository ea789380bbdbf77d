"""Cost of each stage of the server's pipeline, in-process, one thread, no sockets.

Generates the benchmark's workload, cuts it into receive buffers of the server's size and runs
them through the real code: framing (the event loop's share: the kernel's frame pass) and
LogWriter.accept (the writer's thread), split into the kernel's select_new pass (parse,
test-and-set, copy out) and the write, the bitmap reserved first as the server does. Prints
nanoseconds per number for each. Usage: ``python benchmarks/stages.py [numbers]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from numlog_trio._dedup import SeenNumbers
from numlog_trio._framing import LineFramer
from numlog_trio._load import make_workload
from numlog_trio._server import RECEIVE_SIZE
from numlog_trio._writer import Batch, LogWriter


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    payload = make_workload(count, 0.2, seed=0).payload.tobytes()
    buffers = [payload[i : i + RECEIVE_SIZE] for i in range(0, len(payload), RECEIVE_SIZE)]
    spent = {"framing": 0.0, "accept": 0.0}
    framer = LineFramer()
    batches = []
    with (
        tempfile.TemporaryDirectory() as directory,
        LogWriter.open(Path(directory) / "numbers.log") as writer,
    ):
        writer.reserve_memory()
        for buffer in buffers:
            started = time.perf_counter()
            batch = Batch(framer.feed(buffer).lines)
            framed = time.perf_counter()
            writer.accept(batch)
            accepted = time.perf_counter()
            spent["framing"] += framed - started
            spent["accept"] += accepted - framed
            batches.append(batch)
    # The kernel's dedup pass alone, on a second bitmap: the same lookups without the write.
    seen = SeenNumbers()
    seen.reserve()
    out = bytearray(RECEIVE_SIZE + 10)
    started = time.perf_counter()
    for batch in batches:
        end = 0
        for lines in batch.lines:
            end, _ = seen.select_new(lines, out, end)
    select = time.perf_counter() - started
    for stage, seconds in spent.items():
        print(f"{stage:<12} {seconds / count * 1e9:6.1f} ns a number")
    print(f"  select_new {select / count * 1e9:6.1f} ns a number (of accept)")
    print(f"  write      {(spent['accept'] - select) / count * 1e9:6.1f} ns a number (of accept)")
    print(f"{'total':<12} {sum(spent.values()) / count * 1e9:6.1f} ns a number")


if __name__ == "__main__":
    main()
