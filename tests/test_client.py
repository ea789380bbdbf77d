"""The ``numlog-trio-client`` command against a real ``numlog-trio`` server process.

Its line endings and line splitting, checked in-process; then, with both commands run as
subprocesses under the rules in ``helpers.py``: lines piped or typed reach the log, the client
says when the server closed, ``terminate`` through it shuts the server down, and it ends
quietly on Ctrl-C, with standard input closed, or with no server to connect to.
"""

from __future__ import annotations

import os
import signal
import socket
from importlib.metadata import version
from pathlib import Path

import pytest
import trio
from helpers import (
    CLIENT_MODULE,
    HOST,
    NL,
    QUICK,
    Finished,
    console_script,
    line,
    lines,
    logged,
    run_client,
    run_command,
    start_client,
    start_server,
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


async def test_piped_lines_reach_the_log_and_the_client_says_the_server_closed(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        # Mixed line endings, and a last line without one: each is sent with the native newline.
        typed = b"000000001\n000000002\r\n000000001\n000000003"
        client = await run_client(tmp_path, server.port, typed)
        # The client exits only once the server closed, which it does after the client's EOF.
        assert client.returncode == 0, client.stderr
        assert client.stdout == ""
        _assert_said_closed(client.stderr)
        await server.send_terminate()
        finished = await server.finish(within=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000001"), line("000000002"), line("000000003")]


async def test_terminate_through_the_client_shuts_the_server_down(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        client = await run_client(tmp_path, server.port, lines("000000004", "terminate"))
        finished = await server.finish(within=QUICK)
    assert client.returncode == 0, client.stderr
    _assert_said_closed(client.stderr)
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000004")]


async def test_version_is_the_installed_package_s(tmp_path: Path) -> None:
    finished = await run_command(tmp_path, [console_script("numlog-trio-client"), "--version"])
    assert finished == Finished(0, f"numlog-trio-client {version('numlog-trio')}\n", "")


async def test_console_script_client_sends_lines(tmp_path: Path) -> None:
    command = [console_script("numlog-trio-client")]
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        client = await run_client(tmp_path, server.port, lines("000000042"), command=command)
        assert client.returncode == 0, client.stderr
        _assert_said_closed(client.stderr)
        await server.send_terminate()
        finished = await server.finish(within=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert logged(tmp_path) == [line("000000042")]


async def test_client_without_server_fails_with_one_line(tmp_path: Path) -> None:
    # A bound socket that does not listen: connections to its port are refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed_port:
        closed_port.bind((HOST, 0))
        client = await run_client(tmp_path, closed_port.getsockname()[1], b"")
    assert client.returncode == 1
    assert len(client.stderr.splitlines()) == 1, client.stderr
    assert "cannot connect" in client.stderr
    assert "Traceback" not in client.stderr


@pytest.mark.parametrize("port", ["abc", "4000.5", "-1", "65536"])
async def test_a_bad_port_says_in_one_line_what_it_must_be(tmp_path: Path, port: str) -> None:
    finished = await run_command(tmp_path, [*CLIENT_MODULE, f"--port={port}"])
    assert finished == Finished(
        2,
        "",
        f"numlog-trio-client: error: argument --port: must be a port number 0..65535, not "
        f"{port!r} (see --help)\n",
    )


@pytest.mark.parametrize(
    "typed", [line("000000005") + line("terminate"), line("bad")], ids=["terminate", "invalid"]
)
async def test_client_exits_cleanly_when_the_server_closes_while_stdin_is_open(
    tmp_path: Path, typed: bytes
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        client = await start_client(nursery, tmp_path, server.port)
        await client.type(typed)  # and stdin stays open, like a terminal
        finished = await client.finish()
        server.signal(signal.SIGTERM)  # if terminate has not stopped it already
        await server.finish()
    assert finished.returncode == 0, finished.stderr
    _assert_said_closed(finished.stderr)


def test_split_lines_keeps_the_unfinished_line() -> None:
    assert split_lines(b"0000", b"00001\n000000002\n0000") == (
        [b"000000001", b"000000002"],
        b"0000",
    )
    assert split_lines(b"", b"") == ([], b"")


async def test_ctrl_c_ends_the_client_quietly(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        client = await start_client(nursery, tmp_path, server.port)
        await client.wait_until(lambda: "connected" in client.stderr, "'connected'")
        client.signal(signal.SIGINT)
        finished = await client.finish()
        await server.send_terminate()
        await server.finish()
    assert finished.returncode == 130
    assert "Traceback" not in finished.stderr


async def test_a_client_started_with_stdin_closed_sends_nothing_and_ends(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path)
        stdin_closed = ["bash", "-c", 'exec "$0" "$@" <&-', *CLIENT_MODULE]
        client = await run_client(tmp_path, server.port, b"", command=stdin_closed)
        await server.send_terminate()
        await server.finish()
    assert client.returncode == 0, client.stderr
    _assert_said_closed(client.stderr)
