"""How fast the kernel rebuilds the bitmap from a log (``--resume``): ``mark_new`` alone.

Formats N distinct numbers in random order as lines in memory, then times ``mark_new`` over
them in chunks of 1 MiB of whole lines (the size ``--resume`` reads), on a bitmap reserved as
the server reserves it (huge pages where offered, every page mapped first). Prints ns a line
and lines a second, the median of ``--rounds`` rounds, each on a fresh bitmap: in elapsed
time, and in this thread's CPU time, which on a shared machine leaves out the time other work
had the core. Usage: ``python benchmarks/load_rate.py [--numbers N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# The tests' fast formatter (as benchmarks/load.py uses it).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import format_lines

from numlog_trio import _kernel
from numlog_trio._dedup import SeenNumbers

CHUNK = (1 << 20) // _kernel.LINE_SIZE * _kernel.LINE_SIZE


def distinct_numbers(count: int, seed: int) -> np.ndarray[tuple[int], np.dtype[np.uint32]]:
    """``count`` distinct numbers spread over the whole range, in random order.

    One from each of ``count`` equal strata of the range: distinct without a set, and as dense
    in the bitmap as ``count`` random distinct numbers are.
    """
    generator = np.random.default_rng(seed)
    width = _kernel.NUMBER_SPACE // count
    numbers = np.arange(count, dtype=np.uint32) * np.uint32(width)
    numbers += generator.integers(0, width, count, dtype=np.uint32)
    generator.shuffle(numbers)
    return numbers


def one_round(lines: memoryview) -> tuple[float, float]:
    """Mark every line on a fresh reserved bitmap; return the seconds taken, elapsed and CPU."""
    seen = SeenNumbers()
    seen.reserve()
    bits = seen._bitmap()
    chunks = [lines[offset : offset + CHUNK] for offset in range(0, len(lines), CHUNK)]
    started, started_cpu = time.perf_counter(), time.thread_time()
    results = [_kernel.mark_new(bits, chunk) for chunk in chunks]
    spent, spent_cpu = time.perf_counter() - started, time.thread_time() - started_cpu
    expected = [(len(chunk) // _kernel.LINE_SIZE, _kernel.ALL_MARKED) for chunk in chunks]
    assert results == expected, "a line was not marked"
    for chunk in chunks:
        chunk.release()
    bits.close()
    return spent, spent_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numbers", type=int, default=100_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not 0 < args.numbers <= _kernel.NUMBER_SPACE:
        parser.error(f"--numbers must be 1 to {_kernel.NUMBER_SPACE}")
    lines = format_lines(distinct_numbers(args.numbers, seed=0)).data
    rounds = [one_round(lines) for _ in range(args.rounds)]
    for index, clock in enumerate(("elapsed", "CPU")):
        each = [spent[index] / args.numbers * 1e9 for spent in rounds]
        median = statistics.median(each)
        print(
            f"mark_new {median:5.2f} ns a line, {1e3 / median:4.0f} M lines/s ({clock}; rounds: "
            + ", ".join(f"{value:.2f}" for value in each)
            + " ns)"
        )
    print(f"median of {args.rounds} rounds of {args.numbers:,} lines in {CHUNK:,}-byte chunks")


if __name__ == "__main__":
    main()
