"""Tests of the ``numlog-trio-client`` command against a real ``numlog-trio`` server process.

Rules for every test here:

- localhost only: the server listens on 127.0.0.1 and the client connects there;
- port 0: the operating system picks the server's port, read back from its stderr line, so
  tests never use port 4000 and never collide;
- a temporary directory (pytest's ``tmp_path``) is the working directory of both processes
  and holds ``numbers.log``;
- an absolute timeout bounds every wait, and a server still running when a test ends is
  killed, so no test can hang.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Protocol, cast

import pytest
from helpers import (
    CLIENT_MODULE,
    HOST,
    NL,
    QUICK,
    TIMEOUT,
    console_script,
    line,
    lines,
    logged,
    run_client,
    running_server,
    send_terminate,
)

from numlog_trio._client import as_line, split_lines


def _assert_said_closed(stderr: str) -> None:
    assert "Traceback" not in stderr
    said = stderr.splitlines()
    assert said, "the client said nothing"
    assert "closed" in said[-1], stderr


@pytest.mark.parametrize(
    "typed",
    [b"000000001\n", b"000000001\r\n", b"000000001"],
    ids=["LF", "CRLF", "no-newline"],
)
def test_as_line_ends_the_line_with_the_native_newline(typed: bytes) -> None:
    assert as_line(typed) == b"000000001" + NL
    assert as_line(b"terminate\r\n") == line("terminate")


def test_native_newline_is_lf_on_posix() -> None:
    if os.name == "posix":
        assert as_line(b"000000001\r\n") == b"000000001\n"
    else:
        assert as_line(b"000000001\n") == b"000000001\r\n"


def test_piped_lines_reach_the_log_and_the_client_says_the_server_closed(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path) as server:
        # Mixed line endings, and a last line without one: each is sent with the native newline.
        typed = b"000000001\n000000002\r\n000000001\n000000003"
        client = run_client(tmp_path, server.port, typed)
        # The client exits only once the server closed, which it does after the client's EOF.
        assert client.returncode == 0, client.stderr
        assert client.stdout == ""
        _assert_said_closed(client.stderr)
        send_terminate(server.port)
        finished = server.finish(timeout=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000001"), line("000000002"), line("000000003")]


def test_terminate_through_the_client_shuts_the_server_down(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        client = run_client(tmp_path, server.port, lines("000000004", "terminate"))
        finished = server.finish(timeout=QUICK)
    assert client.returncode == 0, client.stderr
    _assert_said_closed(client.stderr)
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000004")]


def test_console_script_client_sends_lines(tmp_path: Path) -> None:
    command = [console_script("numlog-trio-client")]
    with running_server(tmp_path) as server:
        client = run_client(tmp_path, server.port, lines("000000042"), command=command)
        assert client.returncode == 0, client.stderr
        _assert_said_closed(client.stderr)
        send_terminate(server.port)
        finished = server.finish(timeout=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000042")]


def test_client_without_server_fails_with_one_line(tmp_path: Path) -> None:
    # A bound socket that does not listen: connections to its port are refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed_port:
        closed_port.bind((HOST, 0))
        client = run_client(tmp_path, closed_port.getsockname()[1], b"")
    assert client.returncode == 1
    assert len(client.stderr.splitlines()) == 1, client.stderr
    assert "cannot connect" in client.stderr
    assert "Traceback" not in client.stderr


class InteractiveClient(Protocol):
    stdin: IO[bytes]
    stderr: IO[bytes]

    def wait(self, timeout: float) -> int: ...

    def send_signal(self, signum: int) -> None: ...


@contextmanager
def interactive_client(port: int) -> Iterator[InteractiveClient]:
    """Run the client with its standard input held open, as a terminal holds it."""
    command = [*CLIENT_MODULE, "--host", HOST, "--port", str(port)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as client:
        try:
            # Popen types its pipes as optional; here both are always open.
            yield cast(InteractiveClient, client)
        finally:
            client.kill()
            assert client.stdin is not None
            client.stdin.close()


@pytest.mark.parametrize(
    "typed", [line("000000005") + line("terminate"), line("bad")], ids=["terminate", "invalid"]
)
def test_client_exits_cleanly_when_the_server_closes_while_stdin_is_open(
    tmp_path: Path, typed: bytes
) -> None:
    with running_server(tmp_path) as server, interactive_client(server.port) as client:
        client.stdin.write(typed)
        client.stdin.flush()
        returncode = client.wait(timeout=TIMEOUT)  # stdin stays open, like a terminal
        stderr = client.stderr.read().decode()
    assert returncode == 0, stderr
    _assert_said_closed(stderr)


def test_split_lines_keeps_the_unfinished_line() -> None:
    assert split_lines(b"0000", b"00001\n000000002\n0000") == (
        [b"000000001", b"000000002"],
        b"0000",
    )
    assert split_lines(b"", b"") == ([], b"")


def test_ctrl_c_ends_the_client_quietly(tmp_path: Path) -> None:
    with running_server(tmp_path) as server, interactive_client(server.port) as client:
        assert b"connected" in client.stderr.readline()
        client.send_signal(signal.SIGINT)
        returncode = client.wait(timeout=TIMEOUT)
        stderr = client.stderr.read().decode()
    assert returncode == 130
    assert "Traceback" not in stderr


def test_a_client_started_with_stdin_closed_sends_nothing_and_ends(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        script = 'exec "$0" "$@" <&-'
        command = ["bash", "-c", script, *CLIENT_MODULE, "--host", HOST, "--port", str(server.port)]
        finished = subprocess.run(command, capture_output=True, timeout=TIMEOUT, check=False)
        send_terminate(server.port)
    assert finished.returncode == 0, finished.stderr
    _assert_said_closed(finished.stderr.decode())
