"""Telling a service manager (systemd, ``Type=notify``) that the server is ready or stopping.

The manager is a stand-in of the test's own: an ``AF_UNIX`` datagram socket that the test binds,
at a path in ``tmp_path`` or at a name in the abstract namespace, and names to the notifier,
or to the command as ``NOTIFY_SOCKET``. Nothing needs a real systemd. First the notifier
in-process; then the installed command under the rules in ``helpers.py``. A datagram to a
local socket is queued before ``sendto`` returns, so what a stand-in has not received once the
sender is done (or has exited) was never sent: no test waits to show that nothing came.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
from helpers import (
    HOST,
    QUICK,
    TIMEOUT,
    line,
    lines,
    logged,
    numbered_lines,
    signalled_while_loading,
    start_server,
)

from numlog_trio._notify import READY, STOPPING, Notifier, notify_address


@attrs.frozen
class StandInManager:
    """The test's datagram socket, standing in for systemd's notification socket.

    Attributes:
        name: What ``NOTIFY_SOCKET`` says: a path, or ``@`` and an abstract name.
    """

    name: str
    _socket: socket.socket

    def received(self) -> list[list[str]]:
        """Return every notification waiting, without waiting: the lines of each datagram."""
        notifications: list[list[str]] = []
        while True:
            try:
                datagram = self._socket.recv(65536)
            except BlockingIOError:
                return notifications
            notifications.append(datagram.decode().split("\n"))

    async def receive(self, within: float = TIMEOUT) -> list[str]:
        """Wait for the next notification; return its lines.

        Raises:
            AssertionError: None came within ``within`` seconds.
        """
        with trio.move_on_after(within):
            await trio.lowlevel.wait_readable(self._socket)
            return self._socket.recv(65536).decode().split("\n")
        raise AssertionError(f"no notification reached {self.name} within {within} s")


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StandInManager]:
    """A stand-in manager's socket, named by a path or (``@name``) in the abstract namespace."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as bound:
        if request.param == "path":
            name = str(tmp_path / "notify")
            bound.bind(name)
        else:
            name = f"@numlog-trio-test-{os.getpid()}-{secrets.token_hex(8)}"
            bound.bind(b"\0" + name[1:].encode())
        bound.setblocking(False)
        yield StandInManager(name, bound)


UNREACHABLE = {"missing": "No such file or directory", "not-a-socket": "Connection refused"}
"""Managers that cannot be reached: no file at the path, or a file that is not a socket."""


def unreachable(directory: Path, kind: str) -> str:
    """Return a ``NOTIFY_SOCKET`` in ``directory`` that names an unreachable manager."""
    (directory / "not-a-socket").write_bytes(b"")
    return str(directory / kind)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "numlog_trio" and record.levelno == logging.WARNING
    ]


@pytest.mark.parametrize(
    ("variable", "address"),
    [
        ("", None),
        ("/run/systemd/notify", b"/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/42", b"\0/org/freedesktop/systemd1/notify/42"),
    ],
    ids=["empty", "path", "abstract"],
)
def test_notify_socket_names_a_path_or_an_abstract_name(
    variable: str, address: bytes | None
) -> None:
    assert notify_address(variable) == address


def test_assignments_arrive_together_in_one_datagram(manager: StandInManager) -> None:
    with Notifier.from_environment({"NOTIFY_SOCKET": manager.name}) as notifier:
        notifier.notify(READY, "STATUS=listening on 127.0.0.1 port 4000")
        notifier.notify(STOPPING)
    assert manager.received() == [
        ["READY=1", "STATUS=listening on 127.0.0.1 port 4000"],
        ["STOPPING=1"],
    ]


@pytest.mark.parametrize("environment", [{}, {"NOTIFY_SOCKET": ""}], ids=["absent", "empty"])
def test_without_a_manager_nothing_is_done_at_all(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_socket(*args: object) -> None:
        raise AssertionError("a socket was opened with no manager to tell")

    monkeypatch.setattr(socket, "socket", no_socket)
    with Notifier.from_environment(environment) as notifier:
        notifier.notify(READY)
        notifier.notify(STOPPING)
    assert caplog.records == []


@pytest.mark.parametrize("kind", UNREACHABLE)
def test_a_manager_that_cannot_be_reached_is_one_warning_and_no_error(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = unreachable(tmp_path, kind)
    with Notifier(name) as notifier:
        notifier.notify(READY)
        notifier.notify(STOPPING)  # lost too: nothing new to say
    assert _warnings(caplog) == [
        f"cannot notify the service manager (NOTIFY_SOCKET={name}): {UNREACHABLE[kind]}"
    ]


async def test_a_manager_that_does_not_read_never_blocks_the_sender(
    manager: StandInManager, caplog: pytest.LogCaptureFixture
) -> None:
    # Until its queue is full, then once more: a blocking send would wait there for good
    # (the event loop with it), so the sends run in a thread that a deadline abandons.
    notifier = Notifier(manager.name)

    def notify_until_one_is_lost() -> int:
        for sent in range(100_000):
            notifier.notify(f"STATUS={sent}")
            if _warnings(caplog):
                return sent
        raise AssertionError("100000 notifications queued, none lost")

    with trio.fail_after(TIMEOUT):
        sent = await trio.to_thread.run_sync(notify_until_one_is_lost, abandon_on_cancel=True)
    notifier.notify(STOPPING)
    notifier.close()
    assert _warnings(caplog) == [
        f"cannot notify the service manager (NOTIFY_SOCKET={manager.name}): "
        "Resource temporarily unavailable"
    ]
    assert manager.received() == [[f"STATUS={number}"] for number in range(sent)]


# The command: READY=1 once it listens, STOPPING=1 as shutdown begins, each once.

STATUS = re.compile(r"STATUS=listening on 127\.0\.0\.1 port (\d+)")


async def test_ready_comes_once_the_port_accepts_and_stopping_once_terminate_begins_shutdown(
    tmp_path: Path, manager: StandInManager
) -> None:
    notify = {"NOTIFY_SOCKET": manager.name}
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, env=notify, listening=False)
        ready, status = await manager.receive()
        assert ready == "READY=1"
        match = STATUS.fullmatch(status)
        assert match is not None, status
        # Straight away, before anything else: the port the manager was told of accepts.
        async with await trio.open_tcp_stream(HOST, int(match[1])) as client:
            await client.send_all(lines(1))
            await client.send_eof()
            assert await server.wait_closed(client) == b""
        await server.wait_listening()
        assert server.port == int(match[1])
        assert manager.received() == []  # nothing more while it serves
        await server.send_terminate()
        assert await manager.receive() == ["STOPPING=1"]
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert manager.received() == []  # once each
    assert "notify" not in finished.stderr
    assert logged(tmp_path) == [line(1)]


@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)],
    ids=["SIGTERM", "SIGINT"],
)
async def test_stopping_comes_once_as_a_signal_begins_shutdown(
    tmp_path: Path, manager: StandInManager, first: signal.Signals, second: signal.Signals
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, env={"NOTIFY_SOCKET": manager.name})
        assert (await manager.receive())[0] == "READY=1"
        await server.send_and_wait_closed(lines(2))
        server.signal(first)
        assert await manager.receive() == ["STOPPING=1"]
        # A second signal during the drain is ignored, and is no second shutdown.
        await server.wait_until(lambda: "shutting down" in server.stderr, "'shutting down'")
        server.signal(second)
        finished = await server.finish(within=QUICK)
    assert finished.returncode == 0, finished.stderr
    assert manager.received() == []
    assert logged(tmp_path) == [line(2)]


async def test_a_signal_while_loading_is_stopping_without_ever_being_ready(
    tmp_path: Path, manager: StandInManager
) -> None:
    # --resume of a log of five reads; SIGTERM in the second: it never binds the port.
    (tmp_path / "numbers.log").write_bytes(numbered_lines(0, 500_000))
    command = signalled_while_loading(signal.SIGTERM, at="second")
    async with trio.open_nursery() as nursery:
        server = await start_server(
            nursery,
            tmp_path,
            "--resume",
            command=command,
            listening=False,
            env={"NOTIFY_SOCKET": manager.name},
        )
        finished = await server.finish(within=QUICK + TIMEOUT)
    assert finished.returncode == 0, finished.stderr
    assert "listening" not in finished.stderr
    assert manager.received() == [["STOPPING=1"]]


async def test_a_server_that_cannot_listen_is_never_ready(
    tmp_path: Path, manager: StandInManager
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        async with trio.open_nursery() as nursery:
            server = await start_server(
                nursery,
                tmp_path,
                "--port",
                port,
                listening=False,
                env={"NOTIFY_SOCKET": manager.name},
            )
            finished = await server.finish()
    assert finished.returncode == 1
    assert "cannot listen" in finished.stderr
    assert manager.received() == []  # it exited: anything sent would be here


@pytest.mark.parametrize("kind", UNREACHABLE)
async def test_a_manager_that_cannot_be_reached_costs_one_warning_line_and_nothing_else(
    tmp_path: Path, kind: str
) -> None:
    name = unreachable(tmp_path, kind)
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, env={"NOTIFY_SOCKET": name})
        await server.send_and_wait_closed(lines(3, 3, 4))
        await server.send_terminate()  # its STOPPING=1 is lost too, and said no more
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert [text for text in finished.stderr.splitlines() if "notify" in text] == [
        f"numlog-trio: cannot notify the service manager (NOTIFY_SOCKET={name}): "
        f"{UNREACHABLE[kind]}"
    ]
    assert logged(tmp_path) == [line(3), line(4)]


async def test_an_empty_notify_socket_is_no_manager(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, env={"NOTIFY_SOCKET": ""})
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    assert "notify" not in finished.stderr
