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


class MemoryOutError(ServiceError):
    """The memory the server needs could not be allocated."""


@contextlib.contextmanager
def defer_to_the_fault() -> Iterator[None]:
    """Let one service fault out of the nurseries inside as itself, not in exception groups.

    A nursery whose task failed with a :class:`ServiceError` cancels its other tasks, which
    stop quietly; what leaves is a group (or nested groups) holding that one fault. When that
    is all it holds, the fault is raised alone, so that callers catch it by its type. Any
    other group, with a second fault, a bug or a KeyboardInterrupt in it, leaves untouched.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        faults, others = group.split(ServiceError)
        leaves = [] if faults is None or others is not None else list(_leaves(faults))
        if len(leaves) != 1:
            raise
        raise leaves[0] from None


def _leaves(group: BaseExceptionGroup[ServiceError]) -> Iterator[ServiceError]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error
