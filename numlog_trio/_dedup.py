"""Which numbers have been seen this run: a bitmap over 0..999,999,999, free of I/O."""

from __future__ import annotations

import contextlib
import mmap
from typing import Final, final

import attrs
import numpy as np
from numpy.typing import NDArray

NUMBER_SPACE: Final = 1_000_000_000
BITMAP_BYTES: Final = NUMBER_SPACE // 8
_PAGE_SIZE: Final = 4096
_POSITION_BITS: Final = np.uint64(32)
_POSITION_MASK: Final = np.uint64(0xFFFF_FFFF)


@final
@attrs.frozen
class SortedNumbers:
    """A batch of numbers put in value order, ready to be looked up in the bitmap.

    Everything here depends on the batch alone, not on the bitmap, so it can be computed
    away from the bitmap's owner (in another thread) while that one handles the batch before.

    Attributes:
        keys: Each number shifted up 32 bits, or-ed with its position in the batch; sorted.
            Equal numbers are adjacent, their first arrival first.
        is_first_of_value: True at the first key of each distinct number.
        byte_of_key: For each key, the bitmap byte that holds its number's bit (ascending).
        bits: For each key, its number's bit within that byte.
        starts_byte: True at the first key of each distinct bitmap byte.
        touched_bytes: Those distinct bitmap bytes.
        bits_by_byte: For each touched byte, the bits of all the batch's numbers in it.
    """

    keys: NDArray[np.uint64]
    is_first_of_value: NDArray[np.bool_]
    byte_of_key: NDArray[np.intp]
    bits: NDArray[np.uint8]
    starts_byte: NDArray[np.bool_]
    touched_bytes: NDArray[np.intp]
    bits_by_byte: NDArray[np.uint8]

    @classmethod
    def of(cls, numbers: NDArray[np.uint32]) -> SortedNumbers:
        """Sort a batch of numbers (0..999,999,999, in arrival order) for lookup."""
        # Sorting value and position together as one key groups equal values (first
        # occurrence first) and visits the bitmap in address order, with the memory
        # locality of a scan instead of scattered reads.
        keys = numbers.astype(np.uint64) << _POSITION_BITS
        keys |= np.arange(len(numbers), dtype=np.uint64)
        keys.sort()
        values = (keys >> _POSITION_BITS).astype(np.uint32)
        byte_of_key = (values >> 3).astype(np.intp)
        bits = np.left_shift(np.uint8(1), (values & 7).astype(np.uint8))
        starts_byte = _starts_of_runs(byte_of_key)
        bits_by_byte = bits[starts_byte]
        # A byte shared by several numbers of the batch is rare (a batch covers a tiny part
        # of the bitmap); fold the bits of its later numbers into its first one's.
        later = np.flatnonzero(~starts_byte)
        if len(later):
            byte_starts = np.flatnonzero(starts_byte)
            byte_of_later = np.searchsorted(byte_starts, later, side="right") - 1
            np.bitwise_or.at(bits_by_byte, byte_of_later, bits[later])
        return cls(
            keys=keys,
            is_first_of_value=_starts_of_runs(values),
            byte_of_key=byte_of_key,
            bits=bits,
            starts_byte=starts_byte,
            touched_bytes=byte_of_key[starts_byte],
            bits_by_byte=bits_by_byte,
        )


@final
@attrs.frozen
class NewNumbers:
    """The numbers of a batch that have not been seen before.

    Attributes:
        first_sightings: A boolean mask over the batch: True where a number appears for the
            first time in the run (a number repeated inside the batch is True only at its
            first position).
        values: The same numbers, sorted ascending, each once.
        touched_bytes: The bitmap bytes that the batch's numbers fall in, for :meth:`mark`.
        marked_bytes: What those bytes hold once the batch's numbers are marked.
    """

    first_sightings: NDArray[np.bool_]
    values: NDArray[np.uint32]
    touched_bytes: NDArray[np.intp]
    marked_bytes: NDArray[np.uint8]


@final
@attrs.define(eq=False)
class SeenNumbers:
    """One bit for each possible 9-digit number: set once the number has been accepted.

    The 125,000,000-byte bitmap is allocated zeroed on first use, or at once by
    :meth:`reserve`; unless reserved, the operating system maps its pages only as they are
    touched, so memory grows with the spread of the numbers seen, up to that fixed bound.

    Looking up (:meth:`find_new`) and marking (:meth:`mark`) are separate steps, so the caller
    can mark numbers only once they are safely written.
    """

    _bits: NDArray[np.uint8] | None = attrs.field(default=None, init=False)

    def _bitmap(self) -> NDArray[np.uint8]:
        if self._bits is None:
            # Anonymous memory is zeroed. Huge pages (where the system offers them) cut the
            # address-translation misses of scattered lookups and make the final unmapping
            # almost free; freeing 30,000 small pages at exit takes a tenth of a second.
            region = mmap.mmap(-1, BITMAP_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            with contextlib.suppress(AttributeError, OSError):
                region.madvise(mmap.MADV_HUGEPAGE)
            self._bits = np.frombuffer(region, dtype=np.uint8)
        return self._bits

    def reserve(self) -> None:
        """Allocate the whole bitmap now and have the operating system map all of it.

        A server calls this before it listens: mapping 125 MB of zeroed pages takes a tenth
        of a second or more, better spent at start than on the first clients' numbers, and a
        machine short of memory fails at start rather than mid-run.

        Raises:
            OSError: The bitmap could not be mapped (ENOMEM).
        """
        # Writing one byte per page makes the operating system map (and zero) every page.
        self._bitmap()[::_PAGE_SIZE] = 0

    def find_new(self, batch: SortedNumbers) -> NewNumbers:
        """Find the numbers of a batch that were not seen in this or an earlier batch.

        Args:
            batch: The batch, sorted by :meth:`SortedNumbers.of`.

        Returns:
            Their first sightings; the bitmap is unchanged.
        """
        before = np.take(self._bitmap(), batch.byte_of_key)
        fresh = (before & batch.bits) == 0
        fresh &= batch.is_first_of_value
        fresh_keys = batch.keys[fresh]
        first_sightings = np.zeros(len(batch.keys), dtype=np.bool_)
        first_sightings[(fresh_keys & _POSITION_MASK).astype(np.intp)] = True
        return NewNumbers(
            first_sightings,
            (fresh_keys >> _POSITION_BITS).astype(np.uint32),
            batch.touched_bytes,
            before[batch.starts_byte] | batch.bits_by_byte,
        )

    def mark(self, new: NewNumbers) -> None:
        """Record numbers as seen.

        Args:
            new: What :meth:`find_new` returned for a batch, once that batch is accepted,
                and before the next batch is looked up.
        """
        np.put(self._bitmap(), new.touched_bytes, new.marked_bytes)


def _starts_of_runs(ordered: NDArray[np.uint32] | NDArray[np.intp]) -> NDArray[np.bool_]:
    """Return a mask that is True where a sorted array's value differs from the one before."""
    starts = np.ones(len(ordered), dtype=np.bool_)
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return starts
