"""Which numbers have been seen this run: a bitmap over 0..999,999,999, free of I/O."""

from __future__ import annotations

import contextlib
import enum
import mmap
from typing import Final, final

import attrs

from . import _kernel

NUMBER_SPACE: Final = _kernel.NUMBER_SPACE
BITMAP_BYTES: Final = _kernel.BITMAP_BYTES
_PAGE_SIZE: Final = 4096


class Stop(enum.Enum):
    """Why :meth:`SeenNumbers.mark_new` stopped marking."""

    ALL_MARKED = _kernel.ALL_MARKED
    """Every line was a number not marked before, and is marked now."""
    NOT_A_NUMBER = _kernel.NOT_A_NUMBER
    """The next line is not nine digits and a newline."""
    SEEN_BEFORE = _kernel.SEEN_BEFORE
    """The next line's number was marked already."""


@final
@attrs.define(eq=False)
class SeenNumbers:
    """One bit for each possible 9-digit number: set once the number has been accepted.

    The 125,000,000-byte bitmap is allocated zeroed on first use, or at once by
    :meth:`reserve`; unless reserved, the operating system maps its pages only as they are
    touched, so memory grows with the spread of the numbers seen, up to that fixed bound.

    :meth:`select_new` marks numbers as it finds them new; :meth:`unmark` takes a batch's
    marks back when its lines could not be written after all.
    """

    _bits: mmap.mmap | None = attrs.field(default=None, init=False)

    def _bitmap(self) -> mmap.mmap:
        if self._bits is None:
            # Anonymous memory is zeroed. Huge pages (where the system offers them) cut the
            # address-translation misses of scattered lookups and make the final unmapping
            # almost free; freeing 30,000 small pages at exit takes a tenth of a second.
            bits = mmap.mmap(-1, BITMAP_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            with contextlib.suppress(AttributeError, OSError):
                bits.madvise(mmap.MADV_HUGEPAGE)
            self._bits = bits
        return self._bits

    def reserve(self) -> None:
        """Allocate the whole bitmap now and have the operating system map all of it.

        A server calls this before it listens: mapping 125 MB of zeroed pages takes a tenth
        of a second or more, better spent at start than on the first clients' numbers, and a
        machine short of memory fails at start rather than mid-run.

        Raises:
            OSError: The bitmap could not be mapped (ENOMEM).
        """
        bits = self._bitmap()
        # Writing one byte per page makes the operating system map (and zero) every page.
        for offset in range(0, BITMAP_BYTES, _PAGE_SIZE):
            bits[offset] = 0

    def select_new(
        self, lines: bytes | bytearray | memoryview, out: bytearray | memoryview, at: int
    ) -> tuple[int, int]:
        """Mark the numbers of ``lines`` seen, and copy the lines of first sightings to ``out``.

        The kernel does it in one pass (the compiled one without the interpreter lock). A
        number repeated within ``lines`` is new at most once, at its first position.

        Args:
            lines: Whole, valid number lines, as the framer gives them.
            out: Receives the first sightings from offset ``at``; it must have room for all
                of ``lines``. It may be ``lines`` itself (writable, ``at`` 0), to compact
                the first sightings in place.
            at: Where in ``out`` the first sighting goes.

        Returns:
            The offset in ``out`` after the last first sighting, and how many of ``lines``
            were seen before (duplicates).
        """
        return _kernel.select_new(self._bitmap(), lines, out, at)

    def mark_new(self, lines: bytes | bytearray | memoryview) -> tuple[int, Stop]:
        """Mark the numbers of a log's lines seen, up to the first that is not a new number.

        The kernel checks, parses and marks them in one pass (the compiled one without the
        interpreter lock).

        Args:
            lines: Whole 10-byte lines read from a log.

        Returns:
            How many lines were marked (the first ones), and why marking stopped there.
        """
        count, stop = _kernel.mark_new(self._bitmap(), lines)
        return count, Stop(stop)

    def unmark(self, lines: bytes | bytearray | memoryview) -> None:
        """Forget numbers that :meth:`select_new` marked (the first sightings it copied out)."""
        _kernel.unmark(self._bitmap(), lines)
