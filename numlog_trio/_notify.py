"""Telling a service manager (systemd, ``Type=notify``) that the server is ready or stopping.

The sd_notify protocol, without libsystemd: the manager names a datagram socket in
``$NOTIFY_SOCKET``, a path, or with a leading ``@`` a name in Linux's abstract namespace, and
the service sends it newline-separated assignments (``READY=1``, ``STOPPING=1``,
``STATUS=...``), one datagram each time, with no reply. Without the variable there is no
manager, and nothing is sent.

The command owns the :class:`Notifier`; :func:`~numlog_trio.serve` knows nothing of it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Final, final

import attrs

logger = logging.getLogger("numlog_trio")

READY: Final = "READY=1"
"""The service has started: the port accepts connections."""
STOPPING: Final = "STOPPING=1"
"""The service has begun to shut down."""


def notify_address(variable: str) -> bytes | None:
    """Return the socket address that a value of ``$NOTIFY_SOCKET`` names; None for none.

    A leading ``@`` stands for the NUL byte that starts an abstract-namespace name.
    """
    if not variable:
        return None
    if variable.startswith("@"):
        return b"\0" + os.fsencode(variable[1:])
    return os.fsencode(variable)


@final
@attrs.define(eq=False)
class Notifier:
    """Sends notifications to the service manager, if there is one, and never stops the server.

    Each is one datagram, sent without blocking: a manager that does not read cannot hold up
    the event loop. A notification that cannot be sent (no such socket, its queue full) is
    lost, and the first such loss is logged as one warning line; later ones are not, as they
    would tell nothing new.

    Attributes:
        socket_name: ``$NOTIFY_SOCKET`` as given; empty when there is no manager to tell.
    """

    socket_name: str
    _socket: socket.socket | None = attrs.field(default=None, init=False)
    _warned: bool = attrs.field(default=False, init=False)

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] = os.environ) -> Notifier:
        """Return a notifier to the socket that ``$NOTIFY_SOCKET`` names, if it names one."""
        return cls(environment.get("NOTIFY_SOCKET", ""))

    def notify(self, *assignments: str) -> None:
        """Send assignments such as ``READY=1`` in one datagram; nothing without a manager."""
        address = notify_address(self.socket_name)
        if address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(assignments).encode(), address)
        except OSError as error:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "cannot notify the service manager (NOTIFY_SOCKET=%s): %s",
                    *(self.socket_name, error.strerror or error),
                )

    def close(self) -> None:
        """Close the socket, if one was opened."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
