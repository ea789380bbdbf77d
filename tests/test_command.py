"""Subprocess tests of the installed ``numlog-trio`` command (``python -m numlog_trio``).

Rules for every test here:

- localhost only: servers listen on 127.0.0.1 and clients are plain blocking sockets;
- port 0: the operating system picks a free port, read back from the server's stderr line, so
  tests never use port 4000 and never collide;
- a temporary directory (pytest's ``tmp_path``) is the server's working directory and holds
  its ``numbers.log``;
- an absolute timeout bounds every wait (process, pipe and socket), and a server still running
  when a test ends is killed, so no test can hang.

Only the option parser's rejection of bad values is also checked in-process, where a process
per value would add nothing but start-up time.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import trio
from helpers import (
    HOST,
    QUICK,
    connect,
    console_script,
    is_open_after,
    limited_server,
    line,
    lines,
    logged,
    report_counts,
    run_server,
    running_server,
    send_and_close,
    send_terminate,
    start_server,
    sums,
    wait_closed,
)

from numlog_trio._cli import build_parser


def _assert_one_line_error(stderr: str) -> None:
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("numlog-trio: "), stderr
    assert "Traceback" not in stderr


def test_numbers_are_logged_once_each_with_leading_zeros(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        send_and_close(server.port, lines("000000001", "007007009", "314159265", "000000001"))
        send_and_close(server.port, lines("007007009", "000000000", "999999999"))
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [
        line("000000000"),
        line("000000001"),
        line("007007009"),
        line("314159265"),
        line("999999999"),
    ]


def test_terminate_exits_quickly_and_stdout_holds_only_reports(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, "--report-interval", "0.1") as server,
        connect(server.port) as idle,
    ):
        send_and_close(server.port, lines("000000001", "000000002"))
        server.wait_for_report(lambda unique, _: unique == 2)
        started = time.monotonic()
        with connect(server.port) as terminating:
            # Numbers before terminate, in the same stream, still reach the log.
            terminating.sendall(lines("000000003", "terminate"))
            finished = server.finish(timeout=QUICK)
            elapsed = time.monotonic() - started
            assert wait_closed(terminating) == b""
        # The idle client was disconnected, and shutdown did not wait for it to leave.
        assert wait_closed(idle) == b""
    assert finished.returncode == 0, finished.stderr
    assert elapsed < QUICK
    counts = report_counts(finished.stdout)
    assert counts
    assert sums(counts)[0] in {2, 3}
    assert logged(tmp_path) == [line("000000001"), line("000000002"), line("000000003")]


def test_reports_count_new_unique_and_duplicate_numbers(tmp_path: Path) -> None:
    with running_server(tmp_path, "--report-interval", "0.2") as server:
        send_and_close(server.port, lines("000000001", "000000002", "000000001", "000000003"))
        send_and_close(server.port, lines("000000002"))
        server.wait_for_report(lambda unique, duplicates: unique >= 3 and duplicates >= 2)
        assert server.report_sums() == (3, 2)
        assert "Unique total: 3" in server.stdout
        # Counts are per period: with nothing new, the next report has only the total.
        assert server.wait_for_next_report() == (0, 0, 3)
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr
    assert sums(report_counts(finished.stdout)) == (3, 2)


def test_log_is_cleared_at_start(tmp_path: Path) -> None:
    log = tmp_path / "numbers.log"
    log.write_bytes(b"junk from an earlier run\n" + lines("123456789", "000000042"))
    with running_server(tmp_path) as server:
        assert log.read_bytes() == b""
        send_and_close(server.port, lines("000000042"))
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000042")]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_exits_cleanly_and_keeps_the_numbers_received(
    tmp_path: Path, signum: signal.Signals
) -> None:
    with running_server(tmp_path) as server, connect(server.port) as idle:
        # The server closes after the client's end of stream: everything sent has been read.
        send_and_close(server.port, lines("000000001", "000000002", "000000001"))
        send_and_close(server.port, lines("000000003"))
        server.signal(signum)
        finished = server.finish(timeout=QUICK)
        assert wait_closed(idle) == b""
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    report_counts(finished.stdout)
    assert logged(tmp_path) == [line("000000001"), line("000000002"), line("000000003")]


@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT), (signal.SIGTERM,) * 2],
    ids=["SIGINT-SIGTERM", "SIGTERM-SIGINT", "SIGTERM-SIGTERM"],
)
def test_a_second_signal_while_shutting_down_is_ignored(
    tmp_path: Path, first: signal.Signals, second: signal.Signals
) -> None:
    with running_server(tmp_path) as server:
        send_and_close(server.port, lines("000000001"))
        server.signal(first)
        server.read_until(lambda: "shutting down" in server.stderr)
        # The process still has its drain and exit ahead (tens of milliseconds at least).
        server.signal(second)
        finished = server.finish(timeout=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert logged(tmp_path) == [line("000000001")]


def test_port_in_use_fails_with_one_line_and_keeps_the_old_log(tmp_path: Path) -> None:
    (tmp_path / "numbers.log").write_bytes(b"000000001\n")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = run_server(tmp_path, "--host", HOST, "--port", str(port))
    assert finished.returncode == 1
    _assert_one_line_error(finished.stderr)
    assert str(port) in finished.stderr
    assert "listening" not in finished.stderr
    assert finished.stdout == ""
    assert (tmp_path / "numbers.log").read_bytes() == b"000000001\n"


@pytest.mark.parametrize(
    ("log_file", "reason"),
    [
        ("missing/numbers.log", "No such file or directory"),
        (".", "Is a directory"),
        # Root may write anywhere chmod forbids, but not new files into sysfs: a directory
        # that denies creating the log to every user (EROFS where /sys is mounted read-only).
        ("/sys/numbers.log", "Permission denied|Read-only file system"),
        ("a-file/numbers.log", "Not a directory"),
    ],
    ids=["missing-dir", "a-dir", "no-permission", "parent-is-a-file"],
)
def test_unwritable_log_file_fails_before_listening(
    tmp_path: Path, log_file: str, reason: str
) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    finished = run_server(tmp_path, "--log-file", log_file)
    assert finished.returncode == 1
    _assert_one_line_error(finished.stderr)
    assert re.search(f"cannot open log file {re.escape(log_file)}: ({reason})$", finished.stderr)
    assert "listening" not in finished.stderr
    assert finished.stdout == ""
    assert not (tmp_path / "missing").exists()
    assert (tmp_path / "a-file").read_bytes() == b""


def test_a_device_can_be_the_log(tmp_path: Path) -> None:
    with running_server(tmp_path, "--log-file", "/dev/null") as server:
        send_and_close(server.port, lines("000000001", "000000001"))
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr


def test_a_full_device_stops_the_server_with_one_line(tmp_path: Path) -> None:
    with running_server(tmp_path, "--log-file", "/dev/full") as server:
        with connect(server.port) as client:
            client.sendall(lines("000000001"))
            wait_closed(client)
        finished = server.finish()
    assert finished.returncode == 1
    assert finished.stderr.splitlines()[1:] == [
        "numlog-trio: cannot write /dev/full: No space left on device"
    ]


FILE_SIZE_LIMIT = 500
LIMITED_SERVER = limited_server("RLIMIT_FSIZE", FILE_SIZE_LIMIT)


def test_a_disk_filling_up_stops_the_server_and_the_log_keeps_whole_lines(
    tmp_path: Path,
) -> None:
    first = [f"{n:09d}" for n in range(30)]  # 300 bytes: fit
    second = [f"{n:09d}" for n in range(1000, 1030)]  # 300 more: cross the limit mid-write
    with running_server(tmp_path, "--report-interval", "0.1", command=LIMITED_SERVER) as server:
        send_and_close(server.port, lines(*first))
        server.wait_for_report(lambda unique, _: unique == 30)
        with connect(server.port) as client:
            client.sendall(lines(*second))
            wait_closed(client)
        finished = server.finish()
    assert finished.returncode == 1
    assert "numlog-trio: cannot write numbers.log: File too large" in finished.stderr.splitlines()
    assert "Traceback" not in finished.stderr
    # Only what was written in full is in the log, and only that was ever reported.
    assert logged(tmp_path) == sorted(line(number) for number in first)
    assert sums(report_counts(finished.stdout)) == (30, 0)


DESCRIPTOR_LIMIT = 30
FEW_DESCRIPTORS_SERVER = limited_server("RLIMIT_NOFILE", DESCRIPTOR_LIMIT)


def test_running_out_of_file_descriptors_is_reported_in_one_line_and_survived(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, command=FEW_DESCRIPTORS_SERVER) as server, ExitStack() as stack:
        crowd = [stack.enter_context(connect(server.port)) for _ in range(DESCRIPTOR_LIMIT)]
        server.read_until(lambda: "Too many open files" in server.stderr)
        for sock in crowd:
            sock.close()
        send_and_close(server.port, lines("000000001"))
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert all(text.startswith("numlog-trio: ") for text in finished.stderr.splitlines())
    assert logged(tmp_path) == [line("000000001")]


def test_reports_stop_quietly_when_standard_output_is_closed(tmp_path: Path) -> None:
    # The pipeline's reader exits at once, so the server's first report meets a closed pipe.
    closed_stdout = (
        "bash",
        "-c",
        'set -o pipefail; "$0" -P -m numlog_trio "$@" | true',
        sys.executable,
    )
    with running_server(tmp_path, "--report-interval", "0.05", command=closed_stdout) as server:
        server.read_until(lambda: "reports stop" in server.stderr)
        time.sleep(0.3)  # several more reports are due meanwhile: they must go unsaid
        send_and_close(server.port, lines("000000001"))
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert finished.stderr.count("reports stop") == 1
    assert logged(tmp_path) == [line("000000001")]


@pytest.mark.parametrize(
    "options",
    [
        ("--port", "70000"),
        ("--port", "-1"),
        ("--port", "http"),
        ("--max-clients", "0"),
        ("--report-interval", "0"),
        ("--report-interval", "soon"),
        ("--no-such-option",),
    ],
    ids=" ".join,
)
def test_bad_option_exits_2_with_one_line(tmp_path: Path, options: tuple[str, ...]) -> None:
    finished = run_server(tmp_path, *options)
    assert finished.returncode == 2
    _assert_one_line_error(finished.stderr)
    assert finished.stdout == ""
    assert not (tmp_path / "numbers.log").exists()


@pytest.mark.parametrize("seconds", ["0", "-0.5", "nan", "-inf", "soon"])
def test_idle_timeout_must_be_a_positive_number(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The parser alone, in-process: the test above checks that path through the command.
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--idle-timeout", seconds])
    assert exited.value.code == 2
    _assert_one_line_error(capsys.readouterr().err)


def test_help_mentions_every_option(tmp_path: Path) -> None:
    finished = run_server(tmp_path, "--help")
    assert finished.returncode == 0
    assert finished.stderr == ""
    options = ("--host", "--port", "--log-file", "--max-clients", "--report-interval")
    for option in (*options, "--idle-timeout"):
        assert option in finished.stdout
    assert "-v, --verbose" in finished.stdout
    assert not (tmp_path / "numbers.log").exists()


def test_console_script_serves_and_terminates(tmp_path: Path) -> None:
    command = [console_script("numlog-trio")]
    with running_server(tmp_path, command=command) as server:
        send_and_close(server.port, lines("000000777", "000000777"))
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000777")]


def test_invalid_line_closes_only_that_connection(tmp_path: Path) -> None:
    invalid_lines = [
        b"12345678" + line(""),
        b"0000000001" + line(""),
        b"00000000a" + line(""),
        b" 00000001" + line(""),
        b"000000001\r" + line(""),
        line(""),
        line("terminate "),
        line("TERMINATE"),
    ]
    with running_server(tmp_path) as server:
        for index, invalid in enumerate(invalid_lines):
            before, after = f"{index:09d}", f"{100 + index:09d}"
            with connect(server.port) as sock:
                # No end of stream from the client: the invalid line alone ends the connection.
                sock.sendall(line(before) + invalid + line(after))
                assert wait_closed(sock) == b"", invalid
        send_and_close(server.port, lines("000000999"))
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    expected = [line(f"{index:09d}") for index in range(len(invalid_lines))]
    assert logged(tmp_path) == [*expected, line("000000999")]
    assert "invalid" not in finished.stderr  # a hostile client cannot flood stderr


def test_verbose_logs_each_invalid_connection(tmp_path: Path) -> None:
    with running_server(tmp_path, "--verbose") as server:
        with connect(server.port) as sock:
            sock.sendall(b"12345678" + line(""))
            assert wait_closed(sock) == b""
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr
    assert "numlog-trio: closing a connection that sent an invalid line" in finished.stderr


@pytest.mark.parametrize(
    ("options", "limit"), [((), 5), (("--max-clients", "2"), 2)], ids=["default", "max-2"]
)
def test_clients_beyond_the_limit_wait_unread(
    tmp_path: Path, options: tuple[str, ...], limit: int
) -> None:
    with (
        running_server(tmp_path, "--report-interval", "0.1", *options) as server,
        ExitStack() as stack,
    ):
        served = [stack.enter_context(connect(server.port)) for _ in range(limit)]
        for index, sock in enumerate(served):
            sock.sendall(line(f"{index:09d}"))
        server.wait_for_report(lambda unique, _: unique == limit)
        waiting = stack.enter_context(connect(server.port))
        waiting.sendall(line("000000999"))
        waiting.shutdown(socket.SHUT_WR)
        # Had the server read it, the end of stream would have made it close the connection.
        assert is_open_after(waiting, 0.5)
        assert server.report_sums() == (limit, 0)
        served[0].shutdown(socket.SHUT_WR)
        assert wait_closed(served[0]) == b""
        assert wait_closed(waiting) == b""
        server.wait_for_report(lambda unique, _: unique == limit + 1)
        send_terminate(server.port)
        finished = server.finish(timeout=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [*(line(f"{i:09d}") for i in range(limit)), line("000000999")]


def test_idle_timeout_disconnects_a_silent_client_and_keeps_its_numbers(tmp_path: Path) -> None:
    with running_server(tmp_path, "--idle-timeout", "0.2") as server:
        with connect(server.port) as silent:
            silent.sendall(lines("000000001") + b"0000")
            started = time.monotonic()
            assert wait_closed(silent) == b""
            assert time.monotonic() - started >= 0.1
        send_terminate(server.port)
        finished = server.finish()
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000001")]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_the_moment_the_server_says_it_listens_is_a_clean_shutdown(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # A supervisor signals as soon as it reads the listening line: the handlers must be in
    # place by then, or the default action kills the server (status -15 for SIGTERM).
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        server.signal(signum)
        finished = await server.finish(within=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert f"received {signum.name}: shutting down" in finished.stderr
    assert logged(tmp_path) == []
