"""The installed ``numlog-trio`` command (``python -m numlog_trio``), run as a subprocess.

What a user of the command sees: numbers logged once each, reports on standard output and
nothing else there, ``terminate`` and signals shutting down cleanly, one-line errors and exact
exit statuses when it cannot start or cannot write, the client limit and the idle timeout on
real loopback sockets. The servers run as commands under the rules in ``helpers.py``.

Two things are checked in-process instead: the option parser's rejection of bad values, where
a process per value would add nothing but start-up time, and faults that come together, which
cannot be timed from outside.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import signal
import socket
import sys
from contextlib import AsyncExitStack
from importlib.metadata import version
from pathlib import Path

import pytest
import trio
from helpers import (
    HOST,
    QUICK,
    Finished,
    after_start,
    console_script,
    limited_server,
    line,
    lines,
    logged,
    report_counts,
    run_command,
    run_server,
    signalled_server,
    start_server,
    sums,
)

from numlog_trio import LogWriteError
from numlog_trio._cli import PLATFORM_CALLS, build_parser, main, missing_calls

SIGNALS = pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)


def _assert_one_line_error(stderr: str) -> None:
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("numlog-trio: "), stderr
    assert "Traceback" not in stderr


async def test_numbers_are_logged_once_each_with_leading_zeros(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        await server.send_and_wait_closed(lines("000000001", "007007009", "314159265", "000000001"))
        await server.send_and_wait_closed(lines("007007009", "000000000", "999999999"))
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [
        line("000000000"),
        line("000000001"),
        line("007007009"),
        line("314159265"),
        line("999999999"),
    ]


async def test_terminate_exits_quickly_and_stdout_holds_only_reports(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.1")
        async with await server.connect() as idle:
            await server.send_and_wait_closed(lines("000000001", "000000002"))
            await server.wait_for_report(lambda unique, _: unique == 2, "2 unique")
            started = trio.current_time()
            async with await server.connect() as terminating:
                # Numbers before terminate, in the same stream, still reach the log.
                await terminating.send_all(lines("000000003", "terminate"))
                finished = await server.finish(within=QUICK)
                elapsed = trio.current_time() - started
                assert await server.wait_closed(terminating) == b""
            # The idle client was disconnected, and shutdown did not wait for it to leave.
            assert await server.wait_closed(idle) == b""
    assert finished.returncode == 0, finished.stderr
    assert elapsed < QUICK
    counts = report_counts(finished.stdout)
    assert counts
    assert sums(counts)[0] in {2, 3}
    assert logged(tmp_path) == [line("000000001"), line("000000002"), line("000000003")]


async def test_reports_count_new_unique_and_duplicate_numbers(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.2")
        await server.send_and_wait_closed(lines("000000001", "000000002", "000000001", "000000003"))
        await server.send_and_wait_closed(lines("000000002"))
        await server.wait_for_report(
            lambda unique, duplicates: unique >= 3 and duplicates >= 2, "3 unique, 2 duplicates"
        )
        assert server.report_sums() == (3, 2)
        assert "Unique total: 3" in server.stdout
        # Counts are per period: with nothing new, the next report has only the total.
        assert await server.wait_for_next_report() == (0, 0, 3)
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert sums(report_counts(finished.stdout)) == (3, 2)


async def test_log_is_cleared_at_start(tmp_path: Path) -> None:
    log = tmp_path / "numbers.log"
    log.write_bytes(b"junk from an earlier run\n" + lines("123456789", "000000042"))
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        assert log.read_bytes() == b""
        await server.send_and_wait_closed(lines("000000042"))
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000042")]


@SIGNALS
async def test_signal_exits_cleanly_and_keeps_the_numbers_received(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        async with await server.connect() as idle:
            # The server closes after the client's end of stream: everything sent has been read.
            await server.send_and_wait_closed(lines("000000001", "000000002", "000000001"))
            await server.send_and_wait_closed(lines("000000003"))
            server.signal(signum)
            finished = await server.finish(within=QUICK)
            assert await server.wait_closed(idle) == b""
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    report_counts(finished.stdout)
    assert logged(tmp_path) == [line("000000001"), line("000000002"), line("000000003")]


@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT), (signal.SIGTERM,) * 2],
    ids=["SIGINT-SIGTERM", "SIGTERM-SIGINT", "SIGTERM-SIGTERM"],
)
async def test_a_second_signal_while_shutting_down_is_ignored(
    tmp_path: Path, first: signal.Signals, second: signal.Signals
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        await server.send_and_wait_closed(lines("000000001"))
        server.signal(first)
        await server.wait_until(lambda: "shutting down" in server.stderr, "'shutting down'")
        # The process still has its drain and exit ahead (tens of milliseconds at least).
        server.signal(second)
        finished = await server.finish(within=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert logged(tmp_path) == [line("000000001")]


async def test_port_in_use_fails_with_one_line_and_keeps_the_old_log(tmp_path: Path) -> None:
    (tmp_path / "numbers.log").write_bytes(b"000000001\n")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = await run_server(tmp_path, "--host", HOST, "--port", str(port))
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
async def test_unwritable_log_file_fails_before_listening(
    tmp_path: Path, log_file: str, reason: str
) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    finished = await run_server(tmp_path, "--log-file", log_file)
    assert finished.returncode == 1
    _assert_one_line_error(finished.stderr)
    assert re.search(f"cannot open log file {re.escape(log_file)}: ({reason})$", finished.stderr)
    assert "listening" not in finished.stderr
    assert finished.stdout == ""
    assert not (tmp_path / "missing").exists()
    assert (tmp_path / "a-file").read_bytes() == b""


async def test_a_device_can_be_the_log(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--log-file", "/dev/null")
        await server.send_and_wait_closed(lines("000000001", "000000001"))
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr


async def test_a_full_device_stops_the_server_with_one_line(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--log-file", "/dev/full")
        async with await server.connect() as client:
            await client.send_all(lines("000000001"))
            await server.wait_closed(client)
        finished = await server.finish()
    assert finished.returncode == 1
    assert after_start(finished.stderr) == [
        "numlog-trio: cannot write /dev/full: No space left on device"
    ]


FILE_SIZE_LIMIT = 500
LIMITED_SERVER = limited_server("RLIMIT_FSIZE", FILE_SIZE_LIMIT)


async def test_a_disk_filling_up_stops_the_server_and_the_log_keeps_whole_lines(
    tmp_path: Path,
) -> None:
    first = [f"{n:09d}" for n in range(30)]  # 300 bytes: fit
    second = [f"{n:09d}" for n in range(1000, 1030)]  # 300 more: cross the limit mid-write
    async with trio.open_nursery() as nursery:
        server = await start_server(
            nursery, tmp_path, "--report-interval", "0.1", command=LIMITED_SERVER
        )
        await server.send_and_wait_closed(lines(*first))
        await server.wait_for_report(lambda unique, _: unique == 30, "30 unique")
        async with await server.connect() as client:
            await client.send_all(lines(*second))
            await server.wait_closed(client)
        finished = await server.finish()
    assert finished.returncode == 1
    assert "numlog-trio: cannot write numbers.log: File too large" in finished.stderr.splitlines()
    assert "Traceback" not in finished.stderr
    # Only what was written in full is in the log, and only that was ever reported.
    assert logged(tmp_path) == sorted(line(number) for number in first)
    assert sums(report_counts(finished.stdout)) == (30, 0)


DESCRIPTOR_LIMIT = 30
FEW_DESCRIPTORS_SERVER = limited_server("RLIMIT_NOFILE", DESCRIPTOR_LIMIT)


async def test_running_out_of_file_descriptors_is_reported_in_one_line_and_survived(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, command=FEW_DESCRIPTORS_SERVER)
        async with AsyncExitStack() as crowd:
            for _ in range(DESCRIPTOR_LIMIT):
                await crowd.enter_async_context(await server.connect())
            await server.wait_until(
                lambda: "Too many open files" in server.stderr, "'Too many open files'"
            )
        await server.send_and_wait_closed(lines("000000001"))
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert all(text.startswith("numlog-trio: ") for text in finished.stderr.splitlines())
    assert logged(tmp_path) == [line("000000001")]


async def test_reports_stop_quietly_when_standard_output_is_closed(tmp_path: Path) -> None:
    # The pipeline's reader exits at once, so the server's first report meets a closed pipe.
    closed_stdout = (
        "bash",
        "-c",
        'set -o pipefail; "$0" -P -m numlog_trio "$@" | true',
        sys.executable,
    )
    async with trio.open_nursery() as nursery:
        server = await start_server(
            nursery, tmp_path, "--report-interval", "0.05", command=closed_stdout
        )
        await server.wait_until(lambda: "reports stop" in server.stderr, "'reports stop'")
        # Real time is what is tested: several more reports fall due meanwhile, and they
        # must go unsaid (nothing on stderr either), which only time passing can show.
        await trio.sleep(0.3)
        await server.send_and_wait_closed(lines("000000001"))
        await server.send_terminate()
        finished = await server.finish()
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
        ("--sync-interval", "-1"),
        ("--sync-interval", "inf"),
        ("--sync-interval", "soon"),
        ("--no-such-option",),
    ],
    ids=" ".join,
)
async def test_bad_option_exits_2_with_one_line(tmp_path: Path, options: tuple[str, ...]) -> None:
    finished = await run_server(tmp_path, *options)
    assert finished.returncode == 2
    _assert_one_line_error(finished.stderr)
    assert finished.stdout == ""
    assert not (tmp_path / "numbers.log").exists()


RULES = {
    "--port": "a port number 0..65535",
    "--max-clients": "a whole number, 1 or more",
    "--report-interval": "a finite number of seconds above 0",
    "--idle-timeout": "a finite number of seconds above 0",
    "--sync-interval": "a finite number of seconds, 0 or more",
}
BAD_VALUES = [
    pytest.param(option, value, id=f"{option}={value}")
    for option, values in [
        ("--port", ["abc", "", "40.5", "-1", "65536"]),
        ("--max-clients", ["five", "1.5", "0", "-3"]),
        ("--report-interval", ["soon", "0", "-0.5", "nan", "inf", "-inf"]),
        ("--idle-timeout", ["soon", "0", "-0.5", "nan", "inf", "-inf"]),
        ("--sync-interval", ["soon", "-1", "nan", "inf"]),
    ]
    for value in values
]


@pytest.mark.parametrize(("option", "value"), BAD_VALUES)
def test_a_bad_value_says_in_one_line_what_the_option_must_be(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The parser alone, in-process: the test above checks that path through the command.
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([f"{option}={value}"])
    assert exited.value.code == 2
    # In the user's words: no "invalid _port value", no name of a function of the code.
    assert capsys.readouterr().err == (
        f"numlog-trio: error: argument {option}: must be {RULES[option]}, not {value!r} "
        "(see --help)\n"
    )


async def test_help_mentions_every_option(tmp_path: Path) -> None:
    finished = await run_server(tmp_path, "--help")
    assert finished.returncode == 0
    assert finished.stderr == ""
    options = ("--host", "--port", "--log-file", "--max-clients", "--report-interval")
    for option in (*options, "--idle-timeout", "--resume", "--sync-interval"):
        assert option in finished.stdout
    assert "-v, --verbose" in finished.stdout
    assert not (tmp_path / "numbers.log").exists()


async def test_version_is_the_installed_package_s(tmp_path: Path) -> None:
    finished = await run_command(tmp_path, [console_script("numlog-trio"), "--version"])
    assert finished == Finished(0, f"numlog-trio {version('numlog-trio')}\n", "")


async def test_console_script_serves_and_terminates(tmp_path: Path) -> None:
    command = [console_script("numlog-trio")]
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, command=command)
        await server.send_and_wait_closed(lines("000000777", "000000777"))
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000777")]


async def test_invalid_line_closes_only_that_connection(tmp_path: Path) -> None:
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
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        for index, invalid in enumerate(invalid_lines):
            before, after = f"{index:09d}", f"{100 + index:09d}"
            async with await server.connect() as client:
                # No end of stream from the client: the invalid line alone ends the connection.
                await client.send_all(line(before) + invalid + line(after))
                assert await server.wait_closed(client) == b"", invalid
        await server.send_and_wait_closed(lines("000000999"))
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    expected = [line(f"{index:09d}") for index in range(len(invalid_lines))]
    assert logged(tmp_path) == [*expected, line("000000999")]
    assert "invalid" not in finished.stderr  # a hostile client cannot flood stderr


async def test_verbose_logs_each_invalid_connection(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--verbose")
        async with await server.connect() as client:
            await client.send_all(b"12345678" + line(""))
            assert await server.wait_closed(client) == b""
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert "numlog-trio: closing a connection that sent an invalid line" in finished.stderr


@pytest.mark.parametrize(
    ("options", "limit"), [((), 5), (("--max-clients", "2"), 2)], ids=["default", "max-2"]
)
async def test_clients_beyond_the_limit_wait_unread(
    tmp_path: Path, options: tuple[str, ...], limit: int
) -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as clients:
        server = await start_server(nursery, tmp_path, "--report-interval", "0.1", *options)
        served = [await clients.enter_async_context(await server.connect()) for _ in range(limit)]
        for index, client in enumerate(served):
            await client.send_all(line(f"{index:09d}"))
        await server.wait_for_report(lambda unique, _: unique == limit, f"{limit} unique")
        waiting = await clients.enter_async_context(await server.connect())
        await waiting.send_all(line("000000999"))
        await waiting.send_eof()
        # Had the server read it, the end of stream would have made it close the connection.
        assert await server.is_open_after(waiting, 0.5)
        assert server.report_sums() == (limit, 0)
        await served[0].send_eof()
        assert await server.wait_closed(served[0]) == b""
        assert await server.wait_closed(waiting) == b""
        await server.wait_for_report(lambda unique, _: unique == limit + 1, f"{limit + 1} unique")
        await server.send_terminate()
        finished = await server.finish(within=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [*(line(f"{i:09d}") for i in range(limit)), line("000000999")]


async def test_idle_timeout_disconnects_a_silent_client_and_keeps_its_numbers(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, "--idle-timeout", "0.2")
        async with await server.connect() as silent:
            await silent.send_all(lines("000000001") + b"0000")
            started = trio.current_time()
            assert await server.wait_closed(silent) == b""
            assert trio.current_time() - started >= 0.1
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000001")]


@SIGNALS
@pytest.mark.parametrize(
    "instant",
    [
        # A supervisor signals as soon as it reads the listening line: the handlers must be
        # in place by then, or the default action kills the server (status -15 for SIGTERM).
        "listening",
        # Between ignoring the signal (so that one during the final drain cannot kill) and
        # installing the receiver, a signal must wait, not be ignored and lost.
        "ignoring",
    ],
)
async def test_a_signal_at_the_critical_instants_of_start_up_is_a_clean_shutdown(
    tmp_path: Path, signum: signal.Signals, instant: str
) -> None:
    # The server raises the signal itself at that instant (see signalled_server): no race.
    async with trio.open_nursery() as nursery:
        command = signalled_server(signum, at=instant)
        server = await start_server(nursery, tmp_path, command=command)
        finished = await server.finish(within=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert f"received {signum.name}: shutting down" in finished.stderr
    assert logged(tmp_path) == []


def test_faults_that_come_together_are_one_line_each_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process: a write and a background sync failing at once cannot be timed from outside.
    def failing_run(*args: object) -> None:
        raise ExceptionGroup(
            "service faults",
            [
                LogWriteError("cannot write numbers.log: Input/output error"),
                LogWriteError("cannot sync numbers.log: Input/output error"),
            ],
        )

    monkeypatch.setattr(trio, "run", failing_run)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # main() adds its own
    monkeypatch.chdir(tmp_path)
    assert main(["--port", "0"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "numlog-trio: cannot write numbers.log: Input/output error",
        "numlog-trio: cannot sync numbers.log: Input/output error",
    ]


def _unsupported(*missing: str) -> str:
    return (
        f"numlog-trio: this platform ({sys.platform}) is not supported: it lacks "
        f"{', '.join(missing)}; numlog-trio runs on Linux and other POSIX systems"
    )


def test_missing_calls_names_those_this_python_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_calls(PLATFORM_CALLS) == []
    monkeypatch.delattr(os, "preadv")
    monkeypatch.delattr(mmap, "MAP_ANONYMOUS")
    assert missing_calls(PLATFORM_CALLS) == ["os.preadv", "mmap.MAP_ANONYMOUS"]
    assert missing_calls(["os.no_such_call", "signal.SIGTERM"]) == ["os.no_such_call"]


@pytest.mark.parametrize(
    "missing",
    [("os.writev",), ("os.writev", "os.preadv", "signal.pthread_sigmask", "mmap.MAP_ANONYMOUS")],
    ids=["writev", "four"],
)
def test_an_unsupported_platform_fails_at_start_with_one_line_and_exit_1(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    missing: tuple[str, ...],
) -> None:
    # In process, as on a platform without these (Windows lacks them all).
    modules = {"os": os, "signal": signal, "mmap": mmap}
    for name in missing:
        module, _, attribute = name.partition(".")
        monkeypatch.delattr(modules[module], attribute)

    def must_not_serve(*args: object) -> None:
        raise AssertionError("the server started on an unsupported platform")

    monkeypatch.setattr(trio, "run", must_not_serve)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # main() adds its own
    monkeypatch.chdir(tmp_path)
    assert main(["--port", "0"]) == 1
    assert capsys.readouterr().err.splitlines() == [_unsupported(*missing)]
    assert not (tmp_path / "numbers.log").exists()


def test_version_and_help_work_on_an_unsupported_platform_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delattr(os, "writev")
    for option in ["--version", "--help"]:
        with pytest.raises(SystemExit) as exited:
            main([option])
        assert exited.value.code == 0
        assert capsys.readouterr().out.startswith(("numlog-trio ", "usage: numlog-trio"))


async def test_an_unsupported_platform_is_one_line_through_the_command_too(
    tmp_path: Path,
) -> None:
    # Nothing the command imports needs os.writev: the check, not a traceback, says so.
    code = "import os, runpy; del os.writev; runpy.run_module('numlog_trio', run_name='__main__')"
    command = [sys.executable, "-P", "-c", code, "--host", HOST, "--port", "0"]
    finished = await run_command(tmp_path, command)
    assert finished == Finished(1, "", _unsupported("os.writev") + "\n")
    assert not (tmp_path / "numbers.log").exists()
