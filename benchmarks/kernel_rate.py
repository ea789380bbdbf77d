"""How fast each kernel selects new numbers: ``frame`` and ``select_new`` alone, in process.

Generates N seeded numbers (20 % repeats, as ``bench.py``), cuts them into receive buffers of
the server's size, and times, for each kernel installed (the compiled one and its pure-Python
twin), ``frame`` then ``select_new`` in place on each buffer, as a handler and the writer do,
on a bitmap reserved as the server reserves it. Prints ns a number, the median of
``--rounds`` rounds, each on a fresh bitmap and fresh copies of the buffers, and checks the
numbers kept. Run it under each interpreter to compare them: ``python
benchmarks/kernel_rate.py [--numbers N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from types import ModuleType

from load import make_workload

from numlog_trio import _kernel_py
from numlog_trio._dedup import SeenNumbers
from numlog_trio._server import RECEIVE_SIZE

BUFFER = RECEIVE_SIZE // _kernel_py.LINE_SIZE * _kernel_py.LINE_SIZE


def kernels() -> dict[str, ModuleType]:
    """The kernels installed, by name."""
    found: dict[str, ModuleType] = {}
    try:
        from numlog_trio import _kernel_c
    except ImportError:
        pass
    else:
        found["compiled"] = _kernel_c
    found["pure"] = _kernel_py
    return found


def one_round(kernel: ModuleType, payload: bytes) -> tuple[float, int]:
    """Frame and select every buffer on a fresh bitmap; return the seconds and the new count."""
    seen = SeenNumbers()
    seen.reserve()
    bits = seen._bitmap()
    buffers = [bytearray(payload[at : at + BUFFER]) for at in range(0, len(payload), BUFFER)]
    new = 0
    started = time.perf_counter()
    for buffer in buffers:
        lines = memoryview(buffer)
        _, start, stop, _, _ = kernel.frame(b"", lines)
        end, _ = kernel.select_new(bits, lines[start:stop], lines[start:stop], 0)
        new += end // _kernel_py.LINE_SIZE
    spent = time.perf_counter() - started
    bits.close()
    return spent, new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numbers", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workload = make_workload(args.numbers, 0.2, seed=0)
    payload = workload.payload.tobytes()
    print(f"Python {platform.python_version()}, {args.numbers:,} numbers, {BUFFER:,}-byte buffers")
    for name, kernel in kernels().items():
        rounds = [one_round(kernel, payload) for _ in range(args.rounds)]
        assert all(new == len(workload.distinct) for _, new in rounds), "a number was lost"
        each = [spent / args.numbers * 1e9 for spent, _ in rounds]
        median = statistics.median(each)
        print(
            f"{name:8} {median:7.1f} ns a number, {1e3 / median:6.2f} M numbers/s (rounds: "
            + ", ".join(f"{value:.1f}" for value in each)
            + " ns)"
        )


if __name__ == "__main__":
    main()
