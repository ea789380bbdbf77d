"""The writer: the only owner of the dedup bitmap, the counters and the log file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import BinaryIO, TypeAlias, final

import attrs
import numpy as np
import trio
from numpy.typing import NDArray

from ._dedup import SeenNumbers
from ._errors import LogWriteError
from ._framing import parse_numbers
from ._report import Totals

Batch: TypeAlias = tuple[NDArray[np.uint8], ...]
"""Valid number lines from one receive buffer: ``(n, 10)`` record arrays, in arrival order."""


@final
@attrs.define(eq=False)
class LogWriter:
    """Deduplicate batches of number lines and append the new numbers to the log.

    Args:
        log_file: The open log, in binary mode. Each distinct number is written once, as
            the 10 bytes it arrived as (9 digits and a newline), in order of first arrival.
    """

    _log_file: BinaryIO
    _seen: SeenNumbers = attrs.field(factory=SeenNumbers, init=False)
    _unique: int = attrs.field(default=0, init=False)
    _duplicates: int = attrs.field(default=0, init=False)

    @property
    def totals(self) -> Totals:
        """Counts since the writer was created."""
        return Totals(self._unique, self._duplicates)

    def accept(self, batch: Iterable[NDArray[np.uint8]]) -> None:
        """Write the new numbers of a batch to the log and count the rest as duplicates.

        Numbers are marked as seen and counted only after they reached the operating system,
        so a failed write never leaves a number counted but missing from the log.

        Raises:
            LogWriteError: Writing or flushing the log failed.
        """
        for records in batch:
            numbers = parse_numbers(records)
            new = self._seen.find_new(numbers)
            try:
                self._log_file.write(records[new.first_sightings].data)
                self._log_file.flush()
            except OSError as error:
                raise LogWriteError(f"cannot write {self._name}: {error.strerror}") from error
            self._seen.mark(new)
            self._unique += len(new.values)
            self._duplicates += len(numbers) - len(new.values)

    def sync(self) -> None:
        """Flush the log and wait until the operating system has it on disk.

        Raises:
            LogWriteError: Flushing or syncing failed.
        """
        try:
            self._log_file.flush()
            os.fsync(self._log_file.fileno())
        except OSError as error:
            raise LogWriteError(f"cannot sync {self._name}: {error.strerror}") from error

    @property
    def _name(self) -> str:
        return str(getattr(self._log_file, "name", "the log file"))

    async def run(self, batches: trio.MemoryReceiveChannel[Batch]) -> None:
        """Accept batches until every sender has closed the channel, then sync the log.

        Args:
            batches: The receiving end of the handlers' channel.
        """
        async with batches:
            async for batch in batches:
                self.accept(batch)
        self.sync()
