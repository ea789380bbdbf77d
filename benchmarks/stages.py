"""Cost of each stage of the server's pipeline, in-process, one thread, no sockets.

Generates the benchmark's workload, cuts it into receive buffers of the server's size and runs
them through the real code, the bitmap reserved first as the server does: framing (the event
loop's share: the kernel's frame pass), then the writer's two stages, select (the kernel's
select_new pass: parse, test-and-set, compact the first sightings in place) and append (one
writev to the log). Prints nanoseconds per number for each, the median of ``--rounds``
rounds on fresh bitmaps. Usage: ``python benchmarks/stages.py [--numbers N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from load import make_workload

from numlog_trio._framing import LineFramer
from numlog_trio._server import RECEIVE_SIZE
from numlog_trio._writer import Batch, LogWriter

STAGES = ("framing", "select", "append")


def one_round(payload: bytes, directory: Path) -> dict[str, float]:
    buffers = [
        bytearray(payload[i : i + RECEIVE_SIZE]) for i in range(0, len(payload), RECEIVE_SIZE)
    ]
    spent = dict.fromkeys(STAGES, 0.0)
    framer = LineFramer()
    with LogWriter.open(directory / "numbers.log") as writer:
        writer.reserve_memory()
        for buffer in buffers:
            started = time.perf_counter()
            batch = Batch(framer.feed(memoryview(buffer)).lines)
            framed = time.perf_counter()
            selection = writer.select([batch])
            selected = time.perf_counter()
            writer.append(selection)
            appended = time.perf_counter()
            spent["framing"] += framed - started
            spent["select"] += selected - framed
            spent["append"] += appended - selected
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numbers", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    payload = make_workload(args.numbers, 0.2, seed=0).payload.tobytes()
    rounds = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.rounds):
            rounds.append(one_round(payload, Path(directory)))
    for stage in STAGES:
        each = [spent[stage] / args.numbers * 1e9 for spent in rounds]
        print(
            f"{stage:<8} {statistics.median(each):6.1f} ns a number (rounds: "
            + ", ".join(f"{value:.1f}" for value in each)
            + ")"
        )
    totals = [sum(spent.values()) / args.numbers * 1e9 for spent in rounds]
    print(f"{'total':<8} {statistics.median(totals):6.1f} ns a number")


if __name__ == "__main__":
    main()
