"""Operational faults: each ends the server with a one-line message and a non-zero exit."""

from __future__ import annotations


class ServiceError(Exception):
    """A fault of the environment, not of the code; its message is the line shown to users."""


class ListenError(ServiceError):
    """The server could not listen on the requested address."""


class LogWriteError(ServiceError):
    """The log file could not be written; the numbers of the failed batch were not counted."""


class LogOpenError(ServiceError):
    """The log file could not be created or opened for writing."""


class MemoryOutError(ServiceError):
    """The memory the server needs could not be allocated."""
