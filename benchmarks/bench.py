"""Benchmark numlog-trio against the per-line baseline and a ceiling, in one run, on one workload.

Generates the numbers once, then alternates runs of the installed ``numlog-trio`` (at its
default sync interval; with ``--sync-interval 0``, which syncs each write before counting it;
and with its pure-Python kernel), of ``baseline_server.py`` and of ``discard_server.py`` (the
ceiling: receives and discards), each started fresh in its own temporary directory, pushed by
the load tool and stopped with terminate; the logs of all but the ceiling are checked. Prints
the median of each, each server's median as a fraction of the ceiling's and its speed-up over
the baseline (ratios of medians). Run it as ``nox -s bench`` (or ``nox -s bench -- --numbers
100000000 --baseline-runs 0``). ``--resume-numbers N`` also times ``--resume`` on a log of N
numbers (``resume.py`` beside this file).
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

import resume
from load import Summary, Workload, installed_server_command, make_workload, run_against_spawned

from numlog_trio._kernel import NO_EXTENSIONS_VARIABLE
from numlog_trio._server import RECEIVE_SIZE

BASELINE = Path(__file__).with_name("baseline_server.py")
DISCARD = Path(__file__).with_name("discard_server.py")
SERVERS = ("numlog-trio", "sync-0", "pure", "baseline", "ceiling")
"""``sync-0``: numlog-trio with ``--sync-interval 0``; ``pure``: with the pure-Python kernel."""
CEILING_TEXT = "receive-and-discard ceiling"


def measure(command: list[str], workload: Workload, clients: int, *, check: bool) -> Summary:
    with tempfile.TemporaryDirectory(prefix="numlog-bench-") as directory:
        return run_against_spawned(command, workload, clients, Path(directory), check=check)


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
    logs_exact: bool | None  # None: not checked (the ceiling writes no log)

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
            None if any(run.log_ok is None for run in runs) else all(run.log_ok for run in runs),
        )

    def as_text(self) -> str:
        logs = {None: "not checked", True: "exact", False: "WRONG"}[self.logs_exact]
        return (
            f"{self.server:<12} median {self.median_numbers_per_second / 1e6:6.2f} M numbers/s "
            f"over {self.runs} runs (min {self.min_numbers_per_second / 1e6:.2f}, max "
            f"{self.max_numbers_per_second / 1e6:.2f}); median {self.median_seconds:.3f} s; "
            f"peak RSS median {self.median_peak_rss_mib:.1f} MiB, max "
            f"{self.max_peak_rss_mib:.1f} MiB; logs {logs}"
        )


@dataclass(frozen=True)
class Ratios:
    """One server's median against the ceiling's and the baseline's (None where not run)."""

    server: str
    fraction_of_ceiling: float | None
    speedup_over_baseline: float | None

    @classmethod
    def of(cls, row: Row, medians: dict[str, float]) -> Ratios:
        ceiling, baseline = medians.get("ceiling"), medians.get("baseline")
        return cls(
            row.server,
            row.median_numbers_per_second / ceiling if ceiling else None,
            row.median_numbers_per_second / baseline if baseline else None,
        )

    def as_text(self) -> str | None:
        parts = []
        if self.fraction_of_ceiling is not None:
            parts.append(f"{100 * self.fraction_of_ceiling:5.1f} % of the {CEILING_TEXT}")
        if self.speedup_over_baseline is not None:
            parts.append(f"{self.speedup_over_baseline:5.1f}x the baseline")
        if not parts:
            return None
        return f"{self.server:<12} {'; '.join(parts)} (ratios of medians)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numbers", type=int, default=20_000_000)
    parser.add_argument("--duplicates", type=float, default=0.2)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=5, help="runs of numlog-trio")
    parser.add_argument(
        "--sync-0-runs", type=int, default=3, help="runs of numlog-trio --sync-interval 0"
    )
    parser.add_argument(
        "--pure-runs", type=int, default=3, help="runs of numlog-trio with the pure-Python kernel"
    )
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of the baseline")
    parser.add_argument(
        "--ceiling-runs", type=int, default=5, help="runs of the receive-and-discard server"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--resume-numbers",
        type=int,
        default=0,
        help="also time --resume loading a log of this many numbers (0: not)",
    )
    parser.add_argument("--resume-rounds", type=int, default=5, help="starts timed of each")
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
        "numlog-trio": installed_server_command() if args.runs > 0 else [],
        "sync-0": [*installed_server_command(), "--sync-interval", "0"] if args.sync_0_runs else [],
        # The installed numlog-trio, told to run its pure-Python kernel (env execs it: the
        # resources measured are the server's).
        "pure": ["env", f"{NO_EXTENSIONS_VARIABLE}=1", *installed_server_command()],
        "baseline": [sys.executable, str(BASELINE)],
        # Receives as large as numlog-trio's, whatever they are now.
        "ceiling": [sys.executable, str(DISCARD), "--receive-size", str(RECEIVE_SIZE)],
    }
    counts = {
        "numlog-trio": args.runs,
        "sync-0": args.sync_0_runs,
        "pure": args.pure_runs,
        "baseline": args.baseline_runs,
        "ceiling": args.ceiling_runs,
    }
    results: dict[str, list[Summary]] = {name: [] for name in SERVERS}
    # Interleave the servers, so that a slow spell of the shared machine hits all of them.
    for turn in range(max(counts.values(), default=0)):
        for name in SERVERS:
            if turn < counts[name]:
                # The ceiling writes no log: it is not checked (its log_ok is None).
                summary = measure(commands[name], workload, args.clients, check=name != "ceiling")
                results[name].append(summary)
                print(f"bench: {name:<12} {summary.as_text()}", file=sys.stderr, flush=True)

    rows = [Row.of(name, runs) for name, runs in results.items() if runs]
    medians = {row.server: row.median_numbers_per_second for row in rows}
    ratios = [Ratios.of(row, medians) for row in rows]
    speedup = (
        medians["numlog-trio"] / medians["baseline"]
        if "numlog-trio" in medians and "baseline" in medians
        else None
    )
    if args.json:
        print(
            json.dumps(
                {
                    "numbers": workload.count,
                    "results": [
                        {
                            **asdict(row),
                            "fraction_of_ceiling": ratio.fraction_of_ceiling,
                            "speedup_over_baseline": ratio.speedup_over_baseline,
                        }
                        for row, ratio in zip(rows, ratios, strict=True)
                    ],
                    "speedup": speedup,
                }
            )
        )
    else:
        for row in rows:
            print(row.as_text())
        if speedup is not None:
            print(f"speedup of numlog-trio over the baseline (ratio of medians): {speedup:.1f}x")
        for ratio in ratios:
            if (text := ratio.as_text()) is not None:
                print(text)
        if "numlog-trio" in medians and "sync-0" in medians:
            print(
                "numlog-trio --sync-interval 0 against the default (ratio of medians): "
                f"{medians['sync-0'] / medians['numlog-trio']:.2f}"
            )
        if "numlog-trio" in medians and "pure" in medians:
            print(
                "numlog-trio's compiled kernel against its pure-Python one (ratio of medians): "
                f"{medians['numlog-trio'] / medians['pure']:.1f}x"
            )
    # The ceiling's log is not checked (None): only a checked log that is wrong fails.
    status = 0 if all(row.logs_exact is not False for row in rows) else 1
    if args.resume_numbers:
        status |= resume.measure(args.resume_numbers, args.resume_rounds)
    return status


if __name__ == "__main__":
    sys.exit(main())
