"""Which numbers have been seen this run: a bitmap over 0..999,999,999, free of I/O."""

from __future__ import annotations

from typing import Final, final

import attrs
import numpy as np
from numpy.typing import NDArray

NUMBER_SPACE: Final = 1_000_000_000
BITMAP_BYTES: Final = NUMBER_SPACE // 8
_POSITION_BITS: Final = np.uint64(32)
_POSITION_MASK: Final = np.uint64(0xFFFF_FFFF)


@final
@attrs.frozen
class NewNumbers:
    """The numbers of a batch that have not been seen before.

    Attributes:
        first_sightings: A boolean mask over the batch: True where a number appears for the
            first time in the run (a number repeated inside the batch is True only at its
            first position).
        values: The same numbers, sorted ascending, each once.
    """

    first_sightings: NDArray[np.bool_]
    values: NDArray[np.uint32]


@final
@attrs.define(eq=False)
class SeenNumbers:
    """One bit for each possible 9-digit number: set once the number has been accepted.

    The 125,000,000-byte bitmap is allocated zeroed on first use; the operating system maps
    its pages only as they are touched, so memory grows with the spread of the numbers seen,
    up to that fixed bound.

    Looking up (:meth:`find_new`) and marking (:meth:`mark`) are separate steps, so the caller
    can mark numbers only once they are safely written.
    """

    _bits: NDArray[np.uint8] | None = attrs.field(default=None, init=False)

    def _bitmap(self) -> NDArray[np.uint8]:
        if self._bits is None:
            self._bits = np.zeros(BITMAP_BYTES, dtype=np.uint8)
        return self._bits

    def find_new(self, numbers: NDArray[np.uint32]) -> NewNumbers:
        """Find the numbers of a batch that were not seen in this or an earlier batch.

        Args:
            numbers: Numbers in 0..999,999,999, in arrival order.

        Returns:
            Their first sightings; the bitmap is unchanged.
        """
        bits = self._bitmap()
        unseen = (bits[numbers >> 3] & (np.uint8(1) << (numbers & 7).astype(np.uint8))) == 0
        positions = np.flatnonzero(unseen)
        # Sorting value and position together as one key gives the distinct values in order,
        # each with the position of its first occurrence, so the log keeps arrival order.
        keys = (numbers[positions].astype(np.uint64) << _POSITION_BITS) | positions.astype(
            np.uint64
        )
        keys.sort()
        values = (keys >> _POSITION_BITS).astype(np.uint32)
        is_first = np.ones(len(values), dtype=np.bool_)
        np.not_equal(values[1:], values[:-1], out=is_first[1:])
        first_sightings = np.zeros(len(numbers), dtype=np.bool_)
        first_sightings[(keys[is_first] & _POSITION_MASK).astype(np.intp)] = True
        return NewNumbers(first_sightings, values[is_first])

    def mark(self, new: NewNumbers) -> None:
        """Record numbers as seen.

        Args:
            new: What :meth:`find_new` returned for a batch, once that batch is accepted.
        """
        values = new.values
        if not len(values):
            return
        byte_index = values >> 3
        bit = np.uint8(1) << (values & 7).astype(np.uint8)
        # Several new numbers can share one byte of the bitmap; a fancy-indexed |= would keep
        # only one of their bits, so combine the bits of each byte first (values are sorted,
        # hence so are the byte indexes).
        starts = np.flatnonzero(np.diff(byte_index, prepend=np.uint32(NUMBER_SPACE)) != 0)
        self._bitmap()[byte_index[starts]] |= np.bitwise_or.reduceat(bit, starts)
