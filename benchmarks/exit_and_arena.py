"""Measure what ``os._exit`` and one malloc arena (``mallopt``) buy the server, interleaved.

Three variants of the installed server, each started as ``python -c`` around
``numlog_trio._cli.run`` with one thing changed:

- ``current``: the code as it is (``os._exit`` after flushing, glibc's malloc as it comes);
- ``sys-exit``: ``os._exit`` replaced by ``sys.exit``, so the interpreter tears down as usual;
- ``mallopt``: one malloc arena for all threads first, ``mallopt(M_ARENA_MAX, 1)``, as the
  server did until issue 9 measured it.

Each turn runs every variant twice, in turn order ABC, then CBA on the next turn: once idle
(start, wait until it listens, read its resident memory, send terminate) and once loaded
(push the numbers over the clients as ``numlog-trio-load --spawn`` does, then terminate). The
server runs as the child of a small launcher that waits for it with ``wait4`` and stamps the
moment it exits on the monotonic clock, which this process shares: so terminate -> exit is
timed from just before terminate is sent to the server's exit, not to the launcher's.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from numlog_trio._load import Workload, check_log, make_workload, push, send_terminate

WRAPPER = "import os, sys, numlog_trio._cli as cli\n{patch}\ncli.run()"
VARIANTS = {
    "current": "",
    "sys-exit": "os._exit = sys.exit",
    "mallopt": "import ctypes; ctypes.CDLL(None).mallopt(-8, 1)",  # -8: M_ARENA_MAX
}
LAUNCHER = """
import os, sys, time
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
exited = time.monotonic()
print(usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, exited, status, flush=True)
"""
TIMEOUT = 120.0


@dataclass(frozen=True)
class Run:
    variant: str
    numbers: int
    idle_rss_mib: float
    terminate_to_exit: float
    wall: float  # first byte sent -> exit (equal to terminate_to_exit when idle)
    peak_rss_mib: float
    cpu: float
    log_ok: bool | None


def _stderr_reader(process: subprocess.Popen[bytes], port: queue.SimpleQueue[int | None]) -> None:
    assert process.stderr is not None
    told = False
    for raw in process.stderr:
        text = raw.decode(errors="replace")
        if not told and "listening on " in text:
            port.put(int(text.rsplit(" port ", 1)[1].split(",")[0]))
            told = True
    if not told:
        port.put(None)


def measure(variant: str, workload: Workload | None, clients: int) -> Run:
    command = [sys.executable, "-c", WRAPPER.format(patch=VARIANTS[variant])]
    with tempfile.TemporaryDirectory(prefix="numlog-exit-") as directory:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *command, "--host", "127.0.0.1", "--port", "0"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            listening: queue.SimpleQueue[int | None] = queue.SimpleQueue()
            reader = threading.Thread(target=_stderr_reader, args=(process, listening))
            reader.start()
            port = listening.get(timeout=TIMEOUT)
            if port is None:
                raise RuntimeError(f"{variant}: the server did not start")
            launcher = process.pid
            (server,) = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
            status_lines = Path(f"/proc/{server}/status").read_text().splitlines()
            idle_kib = next(int(line.split()[1]) for line in status_lines if "VmRSS:" in line)
            started = time.monotonic()
            if workload is not None:
                push("127.0.0.1", port, workload.payload, clients)
            terminating = time.monotonic()
            send_terminate("127.0.0.1", port)
            output, _ = process.communicate(timeout=TIMEOUT)
            reader.join(TIMEOUT)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        peak, cpu, exited, status = output.split()
        if int(status) != 0:
            raise RuntimeError(f"{variant}: the server exited with wait status {int(status)}")
        log_ok = None
        if workload is not None:
            log_ok = check_log(Path(directory) / "numbers.log", workload.distinct) is None
    return Run(
        variant,
        workload.count if workload is not None else 0,
        idle_kib / 1024,
        float(exited) - terminating,
        float(exited) - started,
        int(peak) / 2**20,
        float(cpu),
        log_ok,
    )


def describe(runs: list[Run], field: str, unit: str, scale: float = 1.0) -> str:
    values = [getattr(run, field) * scale for run in runs]
    return (
        f"{field} median {statistics.median(values):.{3 if unit == 's' else 1}f} {unit} "
        f"({min(values):.{3 if unit == 's' else 1}f}-{max(values):.{3 if unit == 's' else 1}f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numbers", type=int, default=20_000_000)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--runs", type=int, default=9, help="turns (runs of each variant)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    workload = make_workload(args.numbers, 0.2, 0)
    runs: list[Run] = []
    for turn in range(args.runs):
        order = args.variants if turn % 2 == 0 else args.variants[::-1]
        for variant in order:
            for load in (None, workload):
                run = measure(variant, load, args.clients)
                runs.append(run)
                print(
                    f"turn {turn} {variant:<10} {run.numbers:>10,}: terminate->exit "
                    f"{run.terminate_to_exit:.3f} s, wall {run.wall:.3f} s, idle RSS "
                    f"{run.idle_rss_mib:.1f} MiB, peak {run.peak_rss_mib:.1f} MiB, "
                    f"CPU {run.cpu:.2f} s, log {run.log_ok}",
                    file=sys.stderr,
                    flush=True,
                )
    medians: dict[tuple[str, int], dict[str, float]] = {}
    for numbers in (0, workload.count):
        for variant in args.variants:
            chosen = [run for run in runs if run.variant == variant and run.numbers == numbers]
            fields = ["terminate_to_exit", "wall", "idle_rss_mib", "peak_rss_mib", "cpu"]
            medians[variant, numbers] = {
                field: statistics.median(getattr(run, field) for run in chosen) for field in fields
            }
            rate = [numbers / run.wall / 1e6 for run in chosen] if numbers else [0.0]
            print(
                f"{variant:<10} {numbers:>10,} numbers, {len(chosen)} runs: "
                + "; ".join(
                    describe(chosen, field, "MiB" if "rss" in field else "s") for field in fields
                )
                + (
                    f"; {statistics.median(rate):.2f} M numbers/s ({min(rate):.2f}-{max(rate):.2f})"
                    if numbers
                    else ""
                )
                + f"; logs exact: {all(run.log_ok is not False for run in chosen)}"
            )
    if "current" in args.variants:
        for variant in args.variants:
            if variant == "current":
                continue
            for numbers in (0, workload.count):
                ours, theirs = medians["current", numbers], medians[variant, numbers]
                print(
                    f"ratio current / {variant} at {numbers:,} numbers (of medians): "
                    + ", ".join(f"{field} {ours[field] / theirs[field]:.3f}" for field in ours)
                )
    return 0 if all(run.log_ok is not False for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
