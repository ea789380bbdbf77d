"""The log file: its descriptor and every system call on it.

The writer (``_writer.py``) decides what to write and when to sync; this module does the
writing, syncing, emptying, loading and repairing, and turns the operating system's errors
into the service's one-line faults. A log is a sequence of :data:`~._framing.LINE_SIZE`-byte
lines, nine digits and a newline each, every number at most once.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, final

import attrs

from ._dedup import SeenNumbers, Stop
from ._errors import LogOpenError, LogResumeError, LogWriteError
from ._framing import LINE_SIZE

LOAD_SIZE: Final = LINE_SIZE * 104_857
"""Bytes read at a time when loading a log (just under 1 MiB, whole lines), into one of two
fixed buffers, however long the log."""

_IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
"""Buffers one writev takes at most (1024 on Linux)."""

_DIGITS: Final = b"0123456789"


def no_checkpoint() -> None:
    """Go on loading: nothing interrupts it."""


def _datasync(fd: int) -> None:
    # fdatasync where the platform has it: the log's data and size, not its times.
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


@final
@attrs.frozen
class Loaded:
    """What :meth:`LogFile.load` found in a log.

    Attributes:
        lines: Whole number lines, all marked as seen.
        torn: Digits of an unfinished line after them (a write cut short), 0 to 9.
        zeros: NUL bytes after those (a size that reached the disk before the data did).
    """

    lines: int = 0
    torn: int = 0
    zeros: int = 0

    @property
    def size(self) -> int:
        """Bytes of whole lines: the log's size once its tail is cut."""
        return self.lines * LINE_SIZE

    @property
    def tail(self) -> int:
        """Bytes after the whole lines, to be cut off."""
        return self.torn + self.zeros


@final
@attrs.define(eq=False)
class LogFile:
    """The log, open for appending, without a buffer in the process.

    Args:
        fd: The file descriptor, open for writing in append mode; :meth:`close` closes it.
        name: The log's path, for messages.
    """

    _fd: int
    name: str

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> LogFile:
        """Open (or create) the log for appending, without emptying it yet.

        Raises:
            LogOpenError: The file cannot be created or opened for writing.
        """
        # O_NONBLOCK only for the open itself: a FIFO without a reader fails at once (ENXIO)
        # instead of blocking before the server listens.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as error:
            raise LogOpenError(f"cannot open log file {path}: {error.strerror}") from error
        os.set_blocking(fd, True)
        return cls(fd, os.fspath(path))

    def close(self) -> None:
        """Close the log.

        Raises:
            LogWriteError: The operating system reported an error on close.
        """
        try:
            os.close(self._fd)
        except OSError as error:
            raise LogWriteError(f"cannot close {self.name}: {error.strerror}") from error

    def _is_regular(self) -> bool:
        return stat.S_ISREG(os.fstat(self._fd).st_mode)

    def truncate(self, size: int, doing: str = "cut") -> None:
        """Cut the log to ``size`` bytes, and sync that (a device is left as it is).

        The directory is synced too, so that a log this run created is still there after
        a power cut.

        Args:
            size: What the log keeps, in bytes.
            doing: What the caller does, for the message: "cannot {doing} numbers.log".

        Raises:
            LogWriteError: The file could not be cut or synced.
        """
        try:
            if self._is_regular():
                os.ftruncate(self._fd, size)
        except OSError as error:
            raise LogWriteError(f"cannot {doing} {self.name}: {error.strerror}") from error
        self.sync()
        self._sync_directory()

    def _sync_directory(self) -> None:
        # Best effort: some file systems cannot sync a directory, or not opened read-only.
        with contextlib.suppress(OSError):
            directory = os.open(os.path.dirname(self.name) or ".", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def append(self, parts: Sequence[memoryview], *, sync: bool = False) -> None:
        """Write the parts at the end of the log, whole, in one or more writev calls.

        A call that writes less than asked (a signal, a pipe) is resumed where it stopped.

        Args:
            parts: The bytes to write, in order.
            sync: Also wait until the operating system has them on disk.

        Raises:
            LogWriteError: Writing (or syncing) failed. Whatever part of the write reached
                the file is cut off again (on a regular file), so the log is as it was.
        """
        size_before: int | None = None
        doing = "write"
        try:
            size_before = os.fstat(self._fd).st_size
            pending = [part for part in parts if part]
            while pending:
                written = os.writev(self._fd, pending[:_IOV_MAX])
                while pending and written >= len(pending[0]):
                    written -= len(pending.pop(0))
                if written:
                    pending[0] = pending[0][written:]
            if sync:
                doing = "sync"
                self._sync()
        except OSError as error:
            if size_before is not None:
                # Best effort: the write error is what we report.
                with contextlib.suppress(OSError):
                    if self._is_regular():
                        os.ftruncate(self._fd, size_before)
            raise LogWriteError(f"cannot {doing} {self.name}: {error.strerror}") from error

    def sync(self) -> None:
        """Wait until the operating system has the log on disk.

        Raises:
            LogWriteError: Syncing failed.
        """
        try:
            self._sync()
        except OSError as error:
            raise LogWriteError(f"cannot sync {self.name}: {error.strerror}") from error

    def _sync(self) -> None:
        try:
            _datasync(self._fd)
        except OSError as error:
            if error.errno != errno.EINVAL:  # EINVAL: a device that cannot sync (/dev/null)
                raise

    def load(self, seen: SeenNumbers, checkpoint: Callable[[], None] = no_checkpoint) -> Loaded:
        """Mark every number of the log as seen, reading it in large sequential reads.

        The log must be one this server wrote: whole lines of nine digits and a newline,
        each number once. Its end may be damaged the ways a crash damages it, and is then
        only reported, not repaired (see :meth:`truncate`): up to nine digits of a line
        whose write was cut short, then any number of NUL bytes. A log that is not a
        regular file (a device, a pipe) has nothing to load. The file is only read.

        Args:
            seen: Where the numbers are marked; numbers marked before count as logged.
            checkpoint: Called before each read; an exception from it stops loading (a
                long load stays interruptible).

        Returns:
            What was found.

        Raises:
            LogResumeError: The file cannot be read, or holds anything else: the message
                names the first line that is not part of a log. Numbers before it stay
                marked.
        """
        if not self._is_regular():
            return Loaded()
        try:
            reader = os.open(self.name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise LogResumeError(f"cannot read {self.name}: {error.strerror}") from error
        try:
            if not os.path.samestat(os.fstat(reader), os.fstat(self._fd)):
                raise LogResumeError(f"cannot read {self.name}: it was replaced at start")
            return self._load(reader, seen, checkpoint)
        except OSError as error:
            raise LogResumeError(f"cannot read {self.name}: {error.strerror}") from error
        finally:
            os.close(reader)

    def _load(self, reader: int, seen: SeenNumbers, checkpoint: Callable[[], None]) -> Loaded:
        # Two buffers: another thread reads the next part of the log into one while the
        # kernel marks the lines of the other (both release the interpreter lock, the
        # pure-Python kernel excepted), so the copy from the page cache costs no time of its
        # own. Each buffer keeps a line's room in front, for the unfinished line carried from
        # the part before.
        buffers = [memoryview(bytearray(LINE_SIZE + LOAD_SIZE)) for _ in range(2)]
        lines = 0
        offset = 0  # of the next part to read
        carried = b""
        with ThreadPoolExecutor(1, thread_name_prefix="numlog-trio-load") as reading:
            next_part = reading.submit(os.preadv, reader, [buffers[0][LINE_SIZE:]], 0)
            for turn in itertools.cycle((0, 1)):
                checkpoint()
                received = next_part.result()
                if not received:
                    break
                offset += received
                next_part = reading.submit(
                    os.preadv, reader, [buffers[1 - turn][LINE_SIZE:]], offset
                )
                part = buffers[turn][LINE_SIZE - len(carried) : LINE_SIZE + received]
                part[: len(carried)] = carried
                whole = len(part) - len(part) % LINE_SIZE
                count, stop = seen.mark_new(part[:whole])
                lines += count
                if stop is Stop.SEEN_BEFORE:
                    raise self._not_a_log(lines, "repeats a number of an earlier line")
                if stop is Stop.NOT_A_NUMBER:
                    tail = part[count * LINE_SIZE :].tobytes()
                    free = buffers[turn]  # (the other may still be read into)
                    return self._load_tail(reader, lines, tail, offset, free, checkpoint)
                carried = part[whole:].tobytes()
            return self._load_tail(reader, lines, carried, offset, buffers[0], checkpoint)

    def _load_tail(
        self,
        reader: int,
        lines: int,
        tail: bytes,
        offset: int,
        buffer: memoryview,
        checkpoint: Callable[[], None],
    ) -> Loaded:
        """Check that the rest of the log is what a crash leaves: up to 9 digits, then NULs.

        The rest is ``tail`` and all from ``offset`` on.
        """
        torn = len(tail[:LINE_SIZE]) - len(tail[:LINE_SIZE].lstrip(_DIGITS))
        zeros = len(tail) - torn
        if torn >= LINE_SIZE or tail[torn:].strip(b"\0"):
            raise self._not_a_log(lines, "is not nine digits and a newline")
        while True:
            checkpoint()
            received = os.preadv(reader, [buffer], offset)
            if not received:
                return Loaded(lines, torn, zeros)
            if buffer[:received].tobytes().strip(b"\0"):
                raise self._not_a_log(lines, "is not nine digits and a newline")
            offset += received
            zeros += received

    def _not_a_log(self, lines: int, problem: str) -> LogResumeError:
        return LogResumeError(
            f"cannot resume from {self.name}: line {lines + 1} {problem}; it is not a log "
            "this server wrote, or it was damaged before its end"
        )
