"""Operational faults: each ends the server with a one-line message and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class ServiceError(Exception):
    """A fault of the environment, not of the code; its message is the line shown to users."""


class ListenError(ServiceError):
    """The server could not listen on the requested address."""


class LogWriteError(ServiceError):
    """The log file could not be written; the numbers of the failed batch were not counted."""


class LogOpenError(ServiceError):
    """The log file could not be created or opened for writing."""


class LogResumeError(ServiceError):
    """The log to resume from could not be read, or is not a log this server wrote."""


class MemoryOutError(ServiceError):
    """The memory the server needs could not be allocated."""


@contextlib.contextmanager
def defer_to_the_fault() -> Iterator[None]:
    """Let service faults out of the nurseries inside as themselves, not in nested groups.

    A nursery whose task failed with a :class:`ServiceError` cancels its other tasks, which
    stop quietly; what leaves is a group (or nested groups) holding that fault. When a group
    holds nothing but faults, one fault is raised alone, so that callers catch it by its
    type, and several (a write and a background sync failing together) as one flat
    :class:`ExceptionGroup` of them, for ``except*``. Any other group, with a bug or a
    KeyboardInterrupt in it, leaves untouched.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        faults, others = group.split(ServiceError)
        if faults is None or others is not None:
            raise
        leaves = list(_leaves(faults))
        if len(leaves) == 1:
            raise leaves[0] from leaves[0].__cause__
        raise ExceptionGroup("service faults", leaves) from None


def _leaves(group: BaseExceptionGroup[ServiceError]) -> Iterator[ServiceError]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error
