"""The writer: the only owner of the dedup bitmap, the counters and the log file."""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable, Sequence
from typing import Final, final

import attrs
import trio

from ._dedup import BITMAP_BYTES, SeenNumbers
from ._errors import LogWriteError, MemoryOutError, defer_to_the_fault
from ._framing import LINE_SIZE
from ._logfile import Loaded, LogFile, no_checkpoint
from ._report import Totals

SYNC_EVERY: Final = 32 << 20
"""Bytes written to the log that call for a background sync at once, however recent."""

SYNC_INTERVAL: Final = 1.0
"""Default seconds from the first write not yet synced to the background sync that covers it."""


def _keep() -> None:
    """Release nothing: the lines are not in a pooled buffer."""


@final
@attrs.frozen
class Batch:
    """Valid number lines from one receive buffer, on their way to the writer.

    Attributes:
        lines: Whole number lines, in arrival order: writable views of the receive buffer,
            where the writer compacts the new ones in place.
        release: Called once the writer is done with the lines (written or forgotten), in
            the Trio thread: gives the receive buffer back to its pool.
    """

    lines: tuple[memoryview, ...]
    release: Callable[[], None] = _keep


@final
@attrs.frozen
class Selection:
    """The first sightings of some batches, marked as seen but not yet written.

    Attributes:
        lines: Their lines, in arrival order: the front of each batch's lines, where the
            kernel compacted them.
        duplicates: How many lines of the batches were numbers seen before.
        batches: The batches, to release once the lines are written or forgotten.
    """

    lines: tuple[memoryview, ...]
    duplicates: int
    batches: Sequence[Batch]

    @property
    def size(self) -> int:
        """Bytes of new lines."""
        return sum(len(part) for part in self.lines)

    def release(self) -> None:
        """Give the batches' buffers back: their lines are no longer needed."""
        for batch in self.batches:
            batch.release()


def _sync_interval(writer: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value < math.inf:
        raise ValueError(f"{attribute.name} must be 0 or more seconds, not {value}")


@final
@attrs.define(eq=False)
class LogWriter:
    """Deduplicate batches of number lines and append the new numbers to the log.

    Each distinct number is written once, as the 10 bytes it arrived as (9 digits and a
    newline), in order of first arrival. Writes go straight to the file descriptor, with no
    buffer in between, so what was accepted is with the operating system at once and nothing
    is left to write (or to fail) when the file is closed.

    Args:
        file: The log, open; the writer closes it.
        sync_interval: Seconds within which a write is synced to disk, in the background
            (see :meth:`run`). 0: each write is synced before its numbers are counted.
    """

    _file: LogFile
    sync_interval: float = attrs.field(default=SYNC_INTERVAL, validator=_sync_interval)
    _seen: SeenNumbers = attrs.field(factory=SeenNumbers, init=False)
    # One object replaced whole after each batch: a reader in another thread never sees the
    # unique count of one batch with the duplicate count of another.
    _totals: Totals = attrs.field(factory=Totals, init=False)
    # Selections marked in the bitmap but not yet written, oldest first: if their write never
    # happens, their marks are taken back.
    _unwritten: collections.deque[Selection] = attrs.field(factory=collections.deque, init=False)
    # The background sync's schedule, kept in the Trio thread: bytes written since the last
    # sync began, when the first of them must be synced by, and events that wake the syncer.
    _unsynced_bytes: int = attrs.field(default=0, init=False)
    _sync_due: float = attrs.field(default=math.inf, init=False)
    _unsynced: trio.Event = attrs.field(factory=trio.Event, init=False)
    _sync_now: trio.Event = attrs.field(factory=trio.Event, init=False)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, sync_interval: float = SYNC_INTERVAL
    ) -> LogWriter:
        """Open (or create) the log for appending, without emptying it yet.

        Raises:
            LogOpenError: The file cannot be created or opened for writing.
        """
        file = LogFile.open(path)
        try:
            return cls(file, sync_interval=sync_interval)
        except BaseException:
            file.close()
            raise

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        """The log's path."""
        return self._file.name

    def close(self) -> None:
        """Close the log.

        Raises:
            LogWriteError: The operating system reported an error on close.
        """
        self._file.close()

    @property
    def totals(self) -> Totals:
        """Numbers in the log (loaded ones included), and duplicates received by this writer."""
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
        """Empty the log, durably (a device such as /dev/null is left as it is).

        Raises:
            LogWriteError: The file could not be emptied.
        """
        self._file.truncate(0, "empty")

    def load(self, checkpoint: Callable[[], None] = no_checkpoint) -> Loaded:
        """Take the numbers of the log as seen and counted, to carry on where it ends.

        Call it before any batch; it reads the whole log (:meth:`LogFile.load`), which may
        take seconds, and leaves it as it is: :meth:`keep` then cuts a damaged tail.

        Args:
            checkpoint: Called between reads; an exception from it stops loading.

        Raises:
            LogResumeError: The log cannot be read or is not one this server wrote. The
                writer must not be used after that.
        """
        loaded = self._file.load(self._seen, checkpoint)
        self._totals = Totals(unique=loaded.lines)
        return loaded

    def keep(self, loaded: Loaded) -> None:
        """Keep the log :meth:`load` loaded, cutting off what followed its whole lines.

        Raises:
            LogWriteError: The tail could not be cut off.
        """
        self._file.truncate(loaded.size, "cut the damaged end of")

    def accept(self, *batches: Batch) -> None:
        """Write the new numbers of batches to the log and count the rest as duplicates.

        What :meth:`run` does for each group of batches, in one call: :meth:`select`, then
        :meth:`append`. Numbers are counted only after they reached the operating system;
        if the write fails, their marks are taken back, so a failed write never leaves a
        number counted, or marked as seen, but missing from the log.

        Raises:
            LogWriteError: Writing the log failed. Whatever part of the failed write reached
                the file is cut off again, so the log holds exactly the numbers counted.
        """
        selection = self.select(batches)
        try:
            self.append(selection)
        except LogWriteError:
            self.forget_unwritten()
            raise
        selection.release()

    def select(self, batches: Sequence[Batch]) -> Selection:
        """Mark the batches' new numbers as seen and gather their lines for :meth:`append`.

        The kernel tests and sets each number's bit and compacts the lines of first
        sightings at the front of the batch's lines, in one pass. Until :meth:`append` has
        written them, the selection counts as unwritten (see :meth:`forget_unwritten`).
        """
        new_lines: list[memoryview] = []
        duplicates = 0
        try:
            for batch in batches:
                for lines in batch.lines:
                    end, seen_before = self._seen.select_new(lines, lines, 0)
                    new_lines.append(lines[:end])
                    duplicates += seen_before
        except BaseException:
            for marked in new_lines:  # the bitmap as it was (the kernel undid the failed part)
                self._seen.unmark(marked)
            raise
        selection = Selection(tuple(new_lines), duplicates, batches)
        self._unwritten.append(selection)
        return selection

    def append(self, selection: Selection) -> None:
        """Write the oldest unwritten selection to the log, then count its numbers.

        With a :attr:`sync_interval` of 0, the write is also synced before the numbers are
        counted. The caller releases the selection's batches afterwards.

        Raises:
            LogWriteError: Writing (or syncing) the log failed; whatever part of the write
                reached the file is cut off again, and nothing is counted. The selection
                stays unwritten.
        """
        self._write_out(selection)
        self._count(selection)

    def _write_out(self, selection: Selection) -> None:
        assert self._unwritten[0] is selection, "selections are written in the order made"
        if selection.size:  # duplicates only: nothing to write, or to sync
            self._file.append(selection.lines, sync=self.sync_interval == 0)
        self._unwritten.popleft()

    def _count(self, selection: Selection) -> None:
        self._totals = Totals(
            self._totals.unique + selection.size // LINE_SIZE,
            self._totals.duplicates + selection.duplicates,
        )

    def forget_unwritten(self) -> None:
        """Take back the marks of every selection not written, so the bitmap matches the log.

        Their batches are released. Call it only while no :meth:`select` runs, from the
        thread that owns the batches' pool.
        """
        while self._unwritten:
            selection = self._unwritten.pop()
            for lines in selection.lines:
                self._seen.unmark(lines)
            selection.release()

    def sync(self) -> None:
        """Wait until the operating system has the log on disk.

        Raises:
            LogWriteError: Syncing failed.
        """
        self._file.sync()

    async def run(self, batches: trio.MemoryReceiveChannel[Batch]) -> None:
        """Accept batches until every sender has closed the channel, then sync the log.

        Two stages, each handing its work to a worker thread (the compiled kernel and the
        write release the interpreter lock), so the event loop goes on receiving and framing
        meanwhile: one selects the new numbers of batches while the other writes the
        selection before. Each hand-off to the first takes every batch waiting, not just one:
        the writer is the pipeline's slowest stage, and a hand-off to a thread costs about a
        millisecond on a busy machine (benchmarks/RESULTS.md).

        Writes are synced by a third thread in the background, one sync at a time: at the
        latest :attr:`sync_interval` seconds after the first write not yet synced (or as
        soon as the sync before it ends, if that took longer), and at once when
        :data:`SYNC_EVERY` bytes are waiting. A writer with nothing new to sync makes no
        sync calls. With a :attr:`sync_interval` of 0, every write is synced before it is
        counted instead.

        Args:
            batches: The receiving end of the handlers' channel.

        Raises:
            LogWriteError: Writing or syncing the log failed. Selections not written are
                taken back first (see :meth:`forget_unwritten`). A write and a background
                sync failing together are raised as one ExceptionGroup of both.
        """
        try:
            with defer_to_the_fault():
                await self._run_stages(batches)
        finally:
            self.forget_unwritten()
        await trio.to_thread.run_sync(self.sync)

    async def _run_stages(self, batches: trio.MemoryReceiveChannel[Batch]) -> None:
        # Unbuffered: the next group is selected while one is written, not more.
        send_selections, receive_selections = trio.open_memory_channel[Selection](0)
        async with trio.open_nursery() as stages:
            stages.start_soon(self._append_all, receive_selections)
            async with send_selections, batches:
                async for batch in batches:
                    group = [batch, *_waiting(batches)]
                    selection = await trio.to_thread.run_sync(self.select, group)
                    try:
                        await send_selections.send(selection)
                    except trio.BrokenResourceError:
                        return  # the other stage failed: its error is the one to report

    async def _append_all(self, selections: trio.MemoryReceiveChannel[Selection]) -> None:
        async with trio.open_nursery() as background, selections:
            if self.sync_interval > 0:
                background.start_soon(self._sync_in_background)
            async for selection in selections:
                # Due from when the write began, not from when the thread handed it back.
                began = trio.current_time()
                await trio.to_thread.run_sync(self._write_out, selection)
                # Counted here, in the same step as the sync is scheduled: once a number
                # counts, its sync is due.
                self._count(selection)
                selection.release()  # here, not in the thread: the pool is Trio's
                if selection.size:
                    self._schedule_sync(selection.size, began)
            # What is left unsynced is for the sync at the end of run().
            background.cancel_scope.cancel()

    def _schedule_sync(self, written: int, began: float) -> None:
        self._unsynced_bytes += written
        if not self._unsynced.is_set():
            self._sync_due = began + self.sync_interval
            self._unsynced.set()
        if self._unsynced_bytes >= SYNC_EVERY:
            self._sync_now.set()

    async def _sync_in_background(self) -> None:
        while True:
            await self._unsynced.wait()
            with trio.move_on_at(self._sync_due):
                await self._sync_now.wait()
            # Writes from here on are not covered for sure: they call for the next sync.
            self._unsynced_bytes = 0
            self._unsynced = trio.Event()
            self._sync_now = trio.Event()
            await trio.to_thread.run_sync(self.sync)


def _waiting(batches: trio.MemoryReceiveChannel[Batch]) -> list[Batch]:
    """Take the batches already in the channel, without waiting for more."""
    waiting: list[Batch] = []
    while True:
        try:
            waiting.append(batches.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return waiting
