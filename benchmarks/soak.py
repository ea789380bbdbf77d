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
import functools
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt
import trio
from load import (
    Exited,
    check_log,
    installed_server_command,
    make_workload,
    push,
    run_trio,
    send_terminate,
    server_pid,
    sorted_unique,
    start_measured,
    wait_exited,
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


@attrs.define
class Soak:
    """What one soak run did and saw."""

    rounds: int = 0
    sent: int = 0
    samples: list[tuple[int, int, int]] = attrs.Factory(list)  # round, RSS KiB, fds
    distinct: list[npt.NDArray[np.uint32]] = attrs.Factory(list)

    async def sample_every_second(self, pid: int) -> None:
        while True:
            await trio.sleep(1.0)
            self.samples.append((self.rounds, *sample(pid)))

    async def push_rounds(self, port: int, args: argparse.Namespace) -> None:
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            self.rounds += 1
            workload = make_workload(args.numbers_per_round, 0.2, seed=self.rounds)
            await trio.to_thread.run_sync(
                functools.partial(push, HOST, port, workload.payload, clients=5)
            )
            await trio.to_thread.run_sync(churn, port, args.churn_per_round)
            self.distinct.append(workload.distinct)
            self.sent += workload.count
            rss_kib, fds = self.samples[-1][1:] if self.samples else (0, 0)
            print(
                f"soak: round {self.rounds}: {self.sent:,} numbers sent; "
                f"server RSS {rss_kib / 1024:.1f} MiB, {fds} fds",
                file=sys.stderr,
                flush=True,
            )

    async def run(self, args: argparse.Namespace, directory: Path) -> Exited:
        """Push rounds until the time is up, sampling the server meanwhile; then terminate it."""
        async with trio.open_nursery() as nursery:
            server = await start_measured(nursery, installed_server_command(), directory)
            pid = await server_pid(server)
            async with trio.open_nursery() as rounds:
                rounds.start_soon(self.sample_every_second, pid)
                await self.push_rounds(server.port, args)
                rounds.cancel_scope.cancel()  # before the server exits and its /proc goes
            await trio.to_thread.run_sync(send_terminate, HOST, server.port)
            return await wait_exited(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--numbers-per-round", type=int, default=300_000)
    parser.add_argument("--churn-per-round", type=int, default=40)
    parser.add_argument("--warm-up-rounds", type=int, default=3)
    args = parser.parse_args()

    soak = Soak()
    with tempfile.TemporaryDirectory(prefix="numlog-soak-") as directory:
        exited = run_trio(functools.partial(soak.run, args, Path(directory)))
        # The churn's invalid connections send one valid number first: it is kept.
        expected = sorted_unique(np.concatenate([*soak.distinct, np.array([1], dtype=np.uint32)]))
        problem = check_log(Path(directory) / "numbers.log", expected)

    warm = [s for s in soak.samples if s[0] > args.warm_up_rounds]
    rss = [s[1] / 1024 for s in warm]
    fds = [s[2] for s in warm]
    half = len(warm) // 2
    print(
        f"soak: {soak.rounds} rounds, {soak.sent:,} numbers ({len(expected):,} distinct), "
        f"{args.churn_per_round * soak.rounds:,} churn connections, "
        f"{args.minutes:g} min; exit status {exited.status}; server CPU "
        f"{exited.cpu_seconds:.1f} s; peak RSS {exited.peak_rss_bytes / 2**20:.1f} MiB"
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
    return 0 if problem is None and exited.status == 0 and flat else 1


if __name__ == "__main__":
    sys.exit(main())
