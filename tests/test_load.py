"""The load tool behind ``nox -s bench`` (benchmarks/load.py): workload, log check, small runs.

Servers started here listen on 127.0.0.1 with port 0 in the test's temporary directory; the
load tool bounds every wait on them.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# The load tool is a script among the benchmarks, not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import load
from helpers import format_lines
from load import check_log, main, make_workload, run_against_spawned

BASELINE = Path(load.__file__).with_name("baseline_server.py")
DISCARD = Path(load.__file__).with_name("discard_server.py")


def is_running(pid: int) -> bool:
    """Tell whether process ``pid`` exists and has not ended (a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def assert_ends_soon(pid_file: Path) -> None:
    """Assert that the process whose id is in ``pid_file`` ends within a few seconds."""
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while is_running(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.01)


def test_format_lines_writes_nine_digits_with_leading_zeros() -> None:
    numbers = np.array([0, 7, 123_456_789, 999_999_999], dtype=np.uint32)
    assert format_lines(numbers).tobytes() == (b"000000000\n000000007\n123456789\n999999999\n")


@pytest.mark.parametrize(
    ("count", "duplicate_share"), [(1000, 0.0), (1000, 0.2), (999, 0.5), (1, 0.9), (10, 0.95)]
)
def test_workload_has_the_asked_share_of_repeats_over_the_whole_range(
    count: int, duplicate_share: float
) -> None:
    workload = make_workload(count, duplicate_share, seed=3)
    lines = workload.payload.reshape(-1, 10)
    sent = lines[:, :9].astype(np.int64) - ord("0")
    values = (sent * 10 ** np.arange(8, -1, -1)).sum(axis=1)
    assert workload.count == count
    assert (lines[:, 9] == ord("\n")).all()
    assert len(workload.distinct) == max(1, count - round(count * duplicate_share))
    assert sorted(set(values.tolist())) == workload.distinct.tolist()
    if count > 100:
        assert values.max() > 900_000_000  # drawn from the full range, not a small corner


def test_the_same_seed_gives_the_same_workload() -> None:
    first, second = make_workload(500, 0.2, seed=7), make_workload(500, 0.2, seed=7)
    assert first.payload.tobytes() == second.payload.tobytes()
    assert first.payload.tobytes() != make_workload(500, 0.2, seed=8).payload.tobytes()


def test_check_log_accepts_exactly_the_distinct_numbers(tmp_path: Path) -> None:
    distinct = np.array([3, 5, 8], dtype=np.uint32)
    log = tmp_path / "numbers.log"
    cases = {
        b"000000005\n000000003\n000000008\n": None,
        b"000000005\n000000003\n": "holds 2 numbers; expected 3",
        b"000000005\n000000003\n000000008\n000000003\n": "holds a number twice",
        b"000000005\n000000003\n000000008\n00000": "ends in a partial line",
        b"000000005\n000000003\n000000008 ": "not nine digits and a newline",
        b"000000005\n000000003\n00000000:\n": "not nine digits and a newline",
    }
    for content, problem in cases.items():
        log.write_bytes(content)
        found = check_log(log, distinct)
        assert found is None if problem is None else problem in (found or ""), content


@pytest.mark.parametrize(
    "command", [[sys.executable, "-P", "-m", "numlog_trio"], [sys.executable, str(BASELINE)]]
)
def test_a_spawned_run_pushes_everything_and_finds_the_log_exact(
    tmp_path: Path, command: list[str]
) -> None:
    workload = make_workload(30_000, 0.2, seed=1)
    summary = run_against_spawned(command, workload, clients=5, directory=tmp_path)
    assert summary.log_ok is True
    assert summary.numbers == 30_000
    assert summary.peak_rss_bytes is not None
    assert summary.peak_rss_bytes > 10 * 2**20
    assert summary.server_cpu_seconds is not None
    assert summary.server_cpu_seconds > 0


def test_the_peak_rss_is_the_servers_own_not_that_of_the_tool_that_started_it(
    tmp_path: Path,
) -> None:
    # A process forked from this one would start with this one's peak RSS as its own (see
    # benchmarks/rusage.py); the receive-and-discard server alone stays near 30 MiB.
    held = np.ones(400 * 2**20, dtype=np.uint8)  # resident: written when allocated
    summary = run_against_spawned(
        [sys.executable, str(DISCARD)], make_workload(1000, 0.0, 0), 1, tmp_path, check=False
    )
    assert held.sum() == len(held)
    assert summary.peak_rss_bytes is not None
    assert 10 * 2**20 < summary.peak_rss_bytes < 100 * 2**20


def test_the_command_prints_a_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--spawn", "--numbers", "2000", "--clients", "3", "--json", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert status == 0
    assert summary["numbers"] == 2000
    assert summary["clients"] == 3
    assert summary["log_ok"] is True
    assert summary["numbers_per_second"] > 0


def test_the_command_fails_with_one_line_when_no_server_listens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as bound_but_not_listening:
        bound_but_not_listening.bind(("127.0.0.1", 0))
        port = bound_but_not_listening.getsockname()[1]
        status = main(["--port", str(port), "--numbers", "10", "--quiet"])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err.startswith("benchmarks/load.py: ")
    assert len(captured.err.splitlines()) == 1


def test_a_server_that_ignores_terminate_is_killed_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Listens like numlog-trio, then never exits: the load tool must not wait forever.
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import os, socket, sys\n"
        "open('pid', 'w').write(str(os.getpid()))\n"
        "listener = socket.create_server(('127.0.0.1', 0))\n"
        "print(f'listening on 127.0.0.1 port {listener.getsockname()[1]}', file=sys.stderr,"
        " flush=True)\n"
        "while True:\n"
        "    connection, _ = listener.accept()\n"
        "    while connection.recv(65536):\n"
        "        pass\n"
        "    connection.close()\n"
    )
    monkeypatch.setattr(load, "_TIMEOUT", 1.0)
    workload = make_workload(10, 0.0, seed=0)
    with pytest.raises(RuntimeError, match="did not exit"):
        run_against_spawned([sys.executable, str(stubborn)], workload, 1, tmp_path)
    assert_ends_soon(tmp_path / "pid")


def test_a_server_that_never_listens_is_reported_and_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text("import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    monkeypatch.setattr(load, "_TIMEOUT", 1.0)
    with pytest.raises(RuntimeError, match="did not start"):
        run_against_spawned([sys.executable, str(silent)], make_workload(10, 0.0, 0), 1, tmp_path)
    assert_ends_soon(tmp_path / "pid")
