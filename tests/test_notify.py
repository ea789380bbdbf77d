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
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
from helpers import TIMEOUT

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


@pytest.mark.parametrize("target", ["missing", "file"], ids=["missing", "not-a-socket"])
def test_a_manager_that_cannot_be_reached_is_one_warning_and_no_error(
    tmp_path: Path, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_bytes(b"")
    name = str(tmp_path / target)
    with Notifier(name) as notifier:
        notifier.notify(READY)
        notifier.notify(STOPPING)  # lost too: nothing new to say
    reason = {"missing": "No such file or directory", "file": "Connection refused"}[target]
    assert _warnings(caplog) == [
        f"cannot notify the service manager (NOTIFY_SOCKET={name}): {reason}"
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
