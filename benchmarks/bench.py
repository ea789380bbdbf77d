"""Benchmark numlog-trio against the per-line baseline, in one run, on one workload.

Generates the numbers once, then alternates runs of the installed ``numlog-trio`` and of
``baseline_server.py``, each started fresh in its own temporary directory, pushed by the load
tool, stopped with terminate and its log checked. Prints the median of each and their ratio.
Run it as ``nox -s bench`` (or ``nox -s bench -- --numbers 100000000 --baseline-runs 0``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from numlog_trio._load import (
    Summary,
    Workload,
    installed_server_command,
    make_workload,
    run_against_spawned,
)

BASELINE = Path(__file__).with_name("baseline_server.py")


def measure(command: list[str], workload: Workload, clients: int) -> Summary:
    with tempfile.TemporaryDirectory(prefix="numlog-bench-") as directory:
        return run_against_spawned(command, workload, clients, Path(directory))


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class Row:
    server: str
    runs: int
    median_numbers_per_second: float
    min_numbers_per_second: float
    max_numbers_per_second: float
    median_seconds: float
    median_peak_rss_mib: float
    max_peak_rss_mib: float
    logs_exact: bool

    @classmethod
    def of(cls, server: str, runs: list[Summary]) -> Row:
        rates = [run.numbers_per_second for run in runs]
        rss = [(run.peak_rss_bytes or 0) / 2**20 for run in runs]
        return cls(
            server,
            len(runs),
            statistics.median(rates),
            min(rates),
            max(rates),
            statistics.median(run.seconds for run in runs),
            statistics.median(rss),
            max(rss),
            all(run.log_ok for run in runs),
        )

    def as_text(self) -> str:
        return (
            f"{self.server:<12} median {self.median_numbers_per_second / 1e6:6.2f} M numbers/s "
            f"over {self.runs} runs (min {self.min_numbers_per_second / 1e6:.2f}, max "
            f"{self.max_numbers_per_second / 1e6:.2f}); median {self.median_seconds:.3f} s; "
            f"peak RSS median {self.median_peak_rss_mib:.1f} MiB, max "
            f"{self.max_peak_rss_mib:.1f} MiB; logs {'exact' if self.logs_exact else 'WRONG'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numbers", type=int, default=20_000_000)
    parser.add_argument("--duplicates", type=float, default=0.2)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=5, help="runs of numlog-trio")
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of the baseline")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    started = time.perf_counter()
    workload = make_workload(args.numbers, args.duplicates, args.seed)
    print(
        f"bench: {workload.count:,} numbers ({args.duplicates:.0%} duplicates, seed "
        f"{args.seed}, {len(workload.distinct):,} distinct) generated in "
        f"{time.perf_counter() - started:.1f} s; {args.clients} clients; "
        f"{os.cpu_count()} CPUs ({cpu_model()}); Python {platform.python_version()}",
        file=sys.stderr,
        flush=True,
    )
    commands = {
        "numlog-trio": installed_server_command(),
        "baseline": [sys.executable, str(BASELINE)],
    }
    results: dict[str, list[Summary]] = {name: [] for name in commands}
    # Interleave the two servers, so that a slow spell of the shared machine hits both.
    for turn in range(max(args.runs, args.baseline_runs)):
        for name, runs in (("numlog-trio", args.runs), ("baseline", args.baseline_runs)):
            if turn < runs:
                summary = measure(commands[name], workload, args.clients)
                results[name].append(summary)
                print(f"bench: {name:<12} {summary.as_text()}", file=sys.stderr, flush=True)

    rows = [Row.of(name, runs) for name, runs in results.items() if runs]
    speedup = (
        rows[0].median_numbers_per_second / rows[1].median_numbers_per_second
        if len(rows) == 2
        else None
    )
    if args.json:
        print(
            json.dumps(
                {
                    "numbers": workload.count,
                    "results": [asdict(row) for row in rows],
                    "speedup": speedup,
                }
            )
        )
    else:
        for row in rows:
            print(row.as_text())
        if speedup is not None:
            print(f"speedup of numlog-trio over the baseline (ratio of medians): {speedup:.1f}x")
    return 0 if all(row.logs_exact for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
