"""SIGKILL a loaded numlog-trio server at random instants; count torn last lines.

``python benchmarks/torn_writes.py`` (with the package and NumPy installed: the ``tests`` or
``load`` extra) starts the installed server N times (``--kills``, 20 by default), each time in
a fresh temporary directory. Five clients stream distinct numbers at it, each its own set
over and over (``keep_busy`` of the tests), so it writes new numbers for a while and then
only deduplicates. A seeded random delay after the clients start (uniform within
``--window`` seconds), the server is killed with SIGKILL, and its log checked against the
crash contract (``assert_crash_consistent`` of the tests): whole lines of nine digits, each
number at most once and sent by a client, every number a report counted is in it, and only
its last line may be torn (1 to 9 digits, no newline), as Linux can stop a large write at a
page boundary when a fatal signal arrives.

It prints one line per kill and then how many logs ended with a torn line, how many were
otherwise consistent, and how many kills came while the server still had new numbers to
write (only those can tear a line); its exit status is 1 if any log was not consistent.

The servers are started by the tests' subprocess harness (``start_server`` in
``tests/helpers.py``), as ``benchmarks/load.py`` starts its own.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Final

import attrs
import trio

try:
    import numpy  # noqa: F401  (the tests' helpers need it)
except ImportError:
    raise SystemExit("benchmarks/torn_writes.py needs NumPy: pip install '.[load]'") from None

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import (
    CLIENTS,
    assert_crash_consistent,
    keep_busy,
    report_counts,
    sent_by_clients,
    start_server,
)

PROG: Final = "benchmarks/torn_writes.py"
_TIMEOUT: Final = 30.0
"""Upper bound in seconds of any single wait on the server."""


@attrs.frozen
class Kill:
    """What one kill left behind.

    Attributes:
        delay: Seconds from the start of the load to the kill.
        size: Bytes of the log.
        writing: Whether the log lacked some of the numbers sent: the server still had new
            numbers to write when it was killed.
        unique_total: The last unique total the server reported.
        problem: Why the log is not consistent, or None.
    """

    delay: float
    size: int
    writing: bool
    unique_total: int
    problem: str | None

    def as_text(self) -> str:
        """Return the kill as one line of text."""
        tail = self.size % 10
        torn = f"torn last line of {tail} bytes" if tail else "no torn line"
        phase = "while writing" if self.writing else "all written"
        verdict = "consistent" if self.problem is None else f"NOT CONSISTENT: {self.problem}"
        return (
            f"killed at {self.delay * 1000:5.1f} ms ({phase}): {self.size:,} bytes, {torn}, "
            f"last unique total {self.unique_total:,}; {verdict}"
        )


async def kill_once(directory: Path, delay: float, per_client: int) -> Kill:
    """Start a server in ``directory``, load it, SIGKILL it ``delay`` s after the load starts."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        server = await start_server(nursery, directory, "--report-interval", "0.05")
        clients = [await stack.enter_async_context(await server.connect()) for _ in range(CLIENTS)]
        async with trio.open_nursery() as busy:
            keep_busy(busy, server, clients, per_client)
            await trio.sleep(delay)
            server.signal(signal.SIGKILL)
            finished = await server.finish(within=_TIMEOUT)
    if finished.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the server ended with {finished.returncode}, not by the kill")
    stdout = finished.stdout
    counts = report_counts(stdout[: stdout.rfind("\n") + 1])
    unique_total = counts[-1][2] if counts else 0
    data = (directory / "numbers.log").read_bytes()
    writing = len(data) < CLIENTS * per_client * 10
    try:
        assert_crash_consistent(data, sent_by_clients(per_client), unique_total=unique_total)
    except AssertionError as error:
        return Kill(delay, len(data), writing, unique_total, str(error))
    return Kill(delay, len(data), writing, unique_total, None)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--kills", type=int, default=20, help="servers to start and kill")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random delays")
    parser.add_argument(
        "--window",
        type=float,
        default=0.3,
        help="seconds after the clients start within which each kill falls",
    )
    parser.add_argument(
        "--per-client",
        type=int,
        default=2_000_000,
        help="distinct numbers each of the five clients sends, over and over",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the kills; print each and the counts; return 1 if a log was not consistent."""
    args = build_parser().parse_args(argv)
    rng = random.Random(args.seed)
    kills: list[Kill] = []
    for number in range(1, args.kills + 1):
        delay = rng.uniform(0, args.window)
        with tempfile.TemporaryDirectory(prefix="torn-writes-") as directory:
            kill = trio.run(kill_once, Path(directory), delay, args.per_client)
        kills.append(kill)
        print(f"{number:3d}. {kill.as_text()}", flush=True)
    torn = sum(kill.size % 10 != 0 for kill in kills)
    consistent = sum(kill.problem is None for kill in kills)
    writing = sum(kill.writing for kill in kills)
    print(
        f"{len(kills)} kills: {torn} logs ended with a torn line; {consistent} were otherwise "
        f"consistent, {len(kills) - consistent} not; {writing} kills came while the server "
        "still had new numbers to write"
    )
    return 0 if consistent == len(kills) else 1


if __name__ == "__main__":
    sys.exit(main())
