"""How fast ``numlog-trio --resume`` loads a log, and at what memory.

Run as ``python benchmarks/resume.py`` or through the benchmark, ``nox -s bench --
--resume-numbers 100000000`` (with ``--runs 0 --sync-0-runs 0 --baseline-runs 0
--ceiling-runs 0`` for that alone).

Writes a log of N distinct numbers in a scattered order (``--resume-numbers``, default 100 M:
a 1 GB file), as a long run would leave it, and reads it once so that it is in the page cache.
Then alternates starts of the installed server with ``--resume`` on that log and on an empty
one, each stopped with SIGTERM once it listens. The loading rate is N over the median of the
load times the server states in its "listening" line (from handing the load to its thread
until it has marked every number); the time from start to listening is printed too, and the
peak RSS of both, to show that loading costs no memory that grows with the log. Each server
runs as the child of ``rusage.py``, as in the benchmark.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trio
from load import installed_server_command, run_trio, server_pid, start_measured, wait_exited

# After load: importing it puts the tests' directory, with their helpers, on the path.
from helpers import RESUMED, format_lines  # isort: skip

_STEP = 387_420_489  # 3**18: coprime with 10**9, so i -> i * _STEP mod 10**9 never repeats
_CHUNK = 10_000_000


def write_log(path: Path, count: int) -> None:
    """Write ``count`` distinct numbers, in an order scattered over the whole range."""
    with path.open("wb") as log:
        for start in range(0, count, _CHUNK):
            index = np.arange(start, min(start + _CHUNK, count), dtype=np.uint64)
            numbers = (index * np.uint64(_STEP) + np.uint64(12_345)) % np.uint64(10**9)
            log.write(format_lines(numbers.astype(np.uint32)).tobytes())
        # On disk, as a log left by a run that synced it: resuming syncs what it keeps, and
        # would otherwise pay for writing out the whole new file in its first start.
        log.flush()
        os.fsync(log.fileno())


def read_once(path: Path) -> None:
    with path.open("rb") as log:
        while log.read(16 << 20):
            pass


@dataclass(frozen=True)
class Start:
    listening: float
    """Seconds from the start of the command until it said it listens."""
    loading: float
    """Seconds the server said it took to load the log."""
    peak_rss_mib: float


async def start_and_stop(directory: Path) -> Start:
    """Start the server with ``--resume`` in ``directory``, and stop it once it listens."""
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        server = await start_measured(nursery, [*installed_server_command(), "--resume"], directory)
        listening = time.perf_counter() - started
        os.kill(await server_pid(server), signal.SIGTERM)
        exited = await wait_exited(server)
    resumed = RESUMED.search(server.stderr.encode())
    if exited.status != 0 or resumed is None:
        raise RuntimeError(f"the server exited with status {exited.status}; {server}")
    return Start(listening, float(resumed[2]), exited.peak_rss_bytes / 2**20)


def measure(count: int, rounds: int) -> int:
    with tempfile.TemporaryDirectory(prefix="numlog-resume-") as directory:
        full, empty = Path(directory, "full"), Path(directory, "empty")
        full.mkdir()
        empty.mkdir()
        started = time.perf_counter()
        write_log(full / "numbers.log", count)
        read_once(full / "numbers.log")
        size = (full / "numbers.log").stat().st_size
        print(
            f"resume: a log of {count:,} numbers ({size / 1e9:.2f} GB) written in "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        starts: dict[str, list[Start]] = {"full": [], "empty": []}
        for _ in range(rounds):
            for name, where in (("full", full), ("empty", empty)):
                start = run_trio(functools.partial(start_and_stop, where))
                starts[name].append(start)
                print(
                    f"resume: {name:<5} log: loaded in {start.loading:.3f} s, listening after "
                    f"{start.listening:.3f} s, peak RSS {start.peak_rss_mib:.1f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
        if (full / "numbers.log").stat().st_size != size:
            print("resume: the log changed", file=sys.stderr)
            return 1

    def median(name: str, measure: Callable[[Start], float]) -> float:
        return statistics.median(measure(start) for start in starts[name])

    loading = median("full", lambda start: start.loading)
    print(
        f"resume: {count:,} lines loaded in {loading:.3f} s, {count / loading / 1e6:.1f} M "
        f"lines/s (median of {rounds}; rounds: "
        + ", ".join(f"{count / start.loading / 1e6:.1f}" for start in starts["full"])
        + f"); listening after {median('full', lambda start: start.listening):.3f} s "
        f"(empty log: {median('empty', lambda start: start.listening):.3f} s); peak RSS median "
        f"{median('full', lambda start: start.peak_rss_mib):.1f} MiB (empty log: "
        f"{median('empty', lambda start: start.peak_rss_mib):.1f} MiB)"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resume-numbers", type=int, default=100_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    return measure(args.resume_numbers, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
