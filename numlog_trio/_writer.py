"""The writer: the only owner of the dedup bitmap, the counters and the log file."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Final, final

import attrs
import trio

from ._dedup import BITMAP_BYTES, SeenNumbers
from ._errors import LogOpenError, LogWriteError, MemoryOutError
from ._framing import RECORD_SIZE, Lines
from ._report import Totals

SYNC_EVERY: Final = 32 << 20
"""Bytes written to the log between background syncs."""


@final
@attrs.frozen
class Batch:
    """Valid number lines from one receive buffer, on their way to the writer.

    Attributes:
        lines: Whole number lines (views of the received bytes), in arrival order.
    """

    lines: tuple[Lines, ...]

    @property
    def size(self) -> int:
        """Bytes of lines in the batch."""
        return sum(len(part) for part in self.lines)


@final
@attrs.define(eq=False)
class LogWriter:
    """Deduplicate batches of number lines and append the new numbers to the log.

    Each distinct number is written once, as the 10 bytes it arrived as (9 digits and a
    newline), in order of first arrival. Writes go straight to the file descriptor, with no
    buffer in between, so what was accepted is with the operating system at once and nothing
    is left to write (or to fail) when the file is closed.

    Args:
        fd: The log's file descriptor, open for appending; the writer closes it.
        name: The log's path, for messages.
    """

    _fd: int
    name: str
    _seen: SeenNumbers = attrs.field(factory=SeenNumbers, init=False)
    # One object replaced whole after each batch: a reader in another thread never sees the
    # unique count of one batch with the duplicate count of another.
    _totals: Totals = attrs.field(factory=Totals, init=False)
    _unsynced_bytes: int = attrs.field(default=0, init=False)
    # The first sightings of the batch in hand, reused batch after batch.
    _out: bytearray = attrs.field(factory=bytearray, init=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> LogWriter:
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

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the log.

        Raises:
            LogWriteError: The operating system reported an error on close.
        """
        try:
            os.close(self._fd)
        except OSError as error:
            raise LogWriteError(f"cannot close {self.name}: {error.strerror}") from error

    @property
    def totals(self) -> Totals:
        """Counts since the writer was created."""
        return self._totals

    def reserve_memory(self) -> None:
        """Allocate and map the whole dedup bitmap now (see :meth:`SeenNumbers.reserve`).

        Raises:
            MemoryOutError: The bitmap could not be allocated.
        """
        try:
            self._seen.reserve()
        except (MemoryError, OSError) as error:
            raise MemoryOutError(
                f"cannot allocate the {BITMAP_BYTES // 1_000_000} MB bitmap of seen numbers"
            ) from error

    def clear(self) -> None:
        """Empty the log (a device such as /dev/null is left as it is).

        Raises:
            LogWriteError: The file could not be emptied.
        """
        try:
            self._truncate(0)
        except OSError as error:
            raise LogWriteError(f"cannot empty {self.name}: {error.strerror}") from error

    def _truncate(self, size: int) -> None:
        if stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.ftruncate(self._fd, size)

    def accept(self, batch: Batch) -> None:
        """Write the new numbers of a batch to the log and count the rest as duplicates.

        The kernel marks each new number in the bitmap as it copies its line out; the copies
        go to the log in one write. Numbers are counted only after they reached the operating
        system; if the write fails, their marks are taken back, so a failed write never
        leaves a number counted, or marked as seen, but missing from the log.

        Raises:
            LogWriteError: Writing the log failed. Whatever part of the failed write reached
                the file is cut off again, so the log holds exactly the numbers counted.
        """
        if len(self._out) < batch.size:
            self._out = bytearray(batch.size)
        end = duplicates = 0
        for lines in batch.lines:
            end, seen_before = self._seen.select_new(lines, self._out, end)
            duplicates += seen_before
        new_lines = memoryview(self._out)[:end]
        try:
            self._append(new_lines)
        except LogWriteError:
            self._seen.unmark(new_lines)
            raise
        self._unsynced_bytes += end
        self._totals = Totals(
            self._totals.unique + end // RECORD_SIZE, self._totals.duplicates + duplicates
        )

    def _append(self, data: memoryview) -> None:
        size_before: int | None = None
        try:
            size_before = os.fstat(self._fd).st_size
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as error:
            if size_before is not None:
                # Best effort: the write error is what we report.
                with contextlib.suppress(OSError):
                    self._truncate(size_before)
            raise LogWriteError(f"cannot write {self.name}: {error.strerror}") from error

    def sync(self) -> None:
        """Wait until the operating system has the log on disk.

        Raises:
            LogWriteError: Syncing failed.
        """
        try:
            os.fsync(self._fd)
        except OSError as error:
            if error.errno != errno.EINVAL:  # EINVAL: a device that cannot sync (/dev/null)
                raise LogWriteError(f"cannot sync {self.name}: {error.strerror}") from error

    async def run(self, batches: trio.MemoryReceiveChannel[Batch]) -> None:
        """Accept batches until every sender has closed the channel, then sync the log.

        Each batch is handled in a worker thread (the kernel and the write release the
        interpreter lock), so the event loop goes on receiving and framing meanwhile. Every
        :data:`SYNC_EVERY` bytes written, another thread syncs the log in the background, so
        the sync at the end has little left to do and a power cut loses little.

        Args:
            batches: The receiving end of the handlers' channel.

        Raises:
            LogWriteError: Writing or syncing the log failed.
        """
        async with trio.open_nursery() as background:
            syncing = trio.Lock()
            async with batches:
                async for batch in batches:
                    await trio.to_thread.run_sync(self.accept, batch)
                    if self._unsynced_bytes >= SYNC_EVERY and not syncing.locked():
                        self._unsynced_bytes = 0
                        background.start_soon(self._sync_in_background, syncing)
        await trio.to_thread.run_sync(self.sync)

    async def _sync_in_background(self, syncing: trio.Lock) -> None:
        async with syncing:
            await trio.to_thread.run_sync(self.sync)
