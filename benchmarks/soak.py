"""Soak: one server, minutes of load rounds and connection churn; RSS and fds must stay flat.

Starts the installed ``numlog-trio`` in a temporary directory and, until the time is up,
repeats a round: push a fresh seeded workload over five connections (each opened for the
round, half-closed, and closed by the server once read), then churn: connections that close
at once, reset, stop mid-line or send an invalid line. Every second it samples the server's
resident memory and open file descriptors. At the end it sends terminate and checks that
numbers.log holds exactly the distinct numbers of all rounds. Run it as ``nox -s soak``
(``nox -s soak -- --minutes 1`` for a shorter one).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from numlog_trio._load import (
    SpawnedServer,
    check_log,
    installed_server_command,
    make_workload,
    push,
    send_terminate,
    sorted_unique,
)

HOST = "127.0.0.1"


def sample(pid: int) -> tuple[int, int]:
    """Return the resident memory (KiB) and the number of open file descriptors of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(status.split("VmRSS:")[1].split()[0])
    return rss_kib, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def churn(port: int, connections: int) -> None:
    """Open and drop connections in every way a careless or broken client might."""
    for index in range(connections):
        with socket.create_connection((HOST, port), timeout=10) as connection:
            kind = index % 4
            if kind == 1:  # reset: close with SO_LINGER 0
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif kind == 2:
                connection.sendall(b"12345")  # half a line, then gone
            elif kind == 3:
                # A valid number, then an invalid line: the server keeps 1 and closes.
                connection.sendall(b"000000001\nnot a number\n")
                connection.settimeout(10)
                while connection.recv(4096):
                    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--numbers-per-round", type=int, default=300_000)
    parser.add_argument("--churn-per-round", type=int, default=40)
    parser.add_argument("--warm-up-rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="numlog-soak-") as directory:
        server = SpawnedServer.start(installed_server_command(), Path(directory))
        pid = server.server_pid()
        samples: list[tuple[float, int, int, int]] = []  # time, round, rss KiB, fds
        current_round = [0]
        stop = threading.Event()

        def sampler() -> None:
            while not stop.wait(1.0):
                samples.append((time.monotonic(), current_round[0], *sample(pid)))

        threading.Thread(target=sampler, daemon=True).start()
        distinct: list[np.ndarray] = []
        sent = 0
        deadline = time.monotonic() + args.minutes * 60
        try:
            while time.monotonic() < deadline:
                current_round[0] += 1
                workload = make_workload(args.numbers_per_round, 0.2, seed=current_round[0])
                push(HOST, server.port, workload.payload, clients=5)
                churn(server.port, args.churn_per_round)
                distinct.append(workload.distinct)
                sent += workload.count
                print(
                    f"soak: round {current_round[0]}: {sent:,} numbers sent; "
                    f"server RSS {samples[-1][2] / 1024 if samples else 0:.1f} MiB, "
                    f"{samples[-1][3] if samples else 0} fds",
                    file=sys.stderr,
                    flush=True,
                )
            stop.set()
            send_terminate(HOST, server.port)
            status, peak_rss, cpu = server.wait()
        finally:
            stop.set()
            server.close()
        # The churn's invalid connections send one valid number first: it is kept.
        expected = sorted_unique(np.concatenate([*distinct, np.array([1], dtype=np.uint32)]))
        problem = check_log(server.log, expected)

    warm = [s for s in samples if s[1] > args.warm_up_rounds]
    rss = [s[2] / 1024 for s in warm]
    fds = [s[3] for s in warm]
    half = len(warm) // 2
    print(
        f"soak: {current_round[0]} rounds, {sent:,} numbers ({len(expected):,} distinct), "
        f"{args.churn_per_round * current_round[0]:,} churn connections, "
        f"{args.minutes:g} min; exit status {status}; server CPU {cpu:.1f} s; "
        f"peak RSS {peak_rss / 2**20:.1f} MiB"
    )
    if warm:
        print(
            f"soak: after round {args.warm_up_rounds} ({len(warm)} samples, 1/s): RSS min "
            f"{min(rss):.1f} / median {statistics.median(rss):.1f} / max {max(rss):.1f} MiB; "
            f"max RSS first half {max(rss[:half] or rss):.1f}, second half "
            f"{max(rss[half:]):.1f} MiB; open fds min {min(fds)} / max {max(fds)}, "
            f"last {fds[-1]}"
        )
    print(f"soak: numbers.log {'exact' if problem is None else 'WRONG: ' + problem}")
    flat = bool(warm) and max(rss[half:]) <= max(rss[:half] or rss) + 8
    return 0 if problem is None and status == 0 and flat else 1


if __name__ == "__main__":
    sys.exit(main())
