r"""Framing and validation of the client byte stream, free of I/O.

Every valid line, ``terminate\n`` included, is exactly :data:`RECORD_SIZE` bytes long, so a
receive buffer is a table of 10-byte rows plus at most 9 bytes of an unfinished line. The
whole table is validated at once with NumPy instead of a Python loop per line.
"""

from __future__ import annotations

import enum
from typing import Final, final

import attrs
import numpy as np
from numpy.typing import NDArray

RECORD_SIZE: Final = 10
DIGITS: Final = 9
TERMINATE: Final = b"terminate\n"

# Subtracting OFFSET from a row (with uint8 wrap-around) maps the bytes of a valid number line
# to 0..LIMIT column by column: digits to 0..9 and the newline to 0. Any byte above LIMIT
# after the shift is what makes a line invalid.
_OFFSET: Final = np.array([ord("0")] * DIGITS + [ord("\n")], dtype=np.uint8)
_LIMIT: Final = np.array([9] * DIGITS + [0], dtype=np.uint8)
# The same test a 64-bit word at a time, over groups of four rows (40 bytes, five words):
# XOR maps a valid byte to 0..limit; adding 127 - limit sets its high bit if it exceeds it.
_LITTLE_ENDIAN_WORD: Final = np.dtype("<u8")
_GROUP_ROWS: Final = 4
_PATTERN_ROWS: Final = 16384
_XOR_WORDS: Final = np.tile(_OFFSET, _PATTERN_ROWS).view(_LITTLE_ENDIAN_WORD)
_ADD_WORDS: Final = np.tile(np.uint8(0x7F) - _LIMIT, _PATTERN_ROWS).view(_LITTLE_ENDIAN_WORD)
_HIGH_BITS: Final = np.uint64(0x8080_8080_8080_8080)
_ZERO_DIGITS: Final = np.uint64(0x3030_3030_3030_3030)
_PAIRWISE_STEPS: Final = tuple(
    (np.uint64(shift), np.uint64(scale), np.uint64(mask))
    for shift, scale, mask in (
        (8, 10, 0x00FF_00FF_00FF_00FF),
        (16, 100, 0x0000_FFFF_0000_FFFF),
        (32, 10_000, 0x0000_0000_FFFF_FFFF),
    )
)
_EMPTY: Final = np.empty((0, RECORD_SIZE), dtype=np.uint8)
_DIGIT_BYTES: Final = frozenset(b"0123456789")


class Outcome(enum.Enum):
    """What the connection should do after a buffer has been framed."""

    MORE = "more"
    """Every complete line was a number; keep reading."""
    INVALID = "invalid"
    """A line is not valid input: close the connection without comment."""
    TERMINATE = "terminate"
    """The client asked for shutdown with ``terminate`` and a newline."""


@final
@attrs.frozen
class Framed:
    """The result of framing one receive buffer.

    Attributes:
        chunks: The valid number lines, as ``(n, 10)`` uint8 views of the received bytes, in
            arrival order. A chunk is never empty. There are at most two: the line completed
            from the bytes carried over from the previous buffer, and the aligned rest, so
            joining the carried bytes never copies the buffer.
        outcome: What the connection does next. Numbers before an invalid line or before
            ``terminate`` are still in ``chunks``.
    """

    chunks: tuple[NDArray[np.uint8], ...]
    outcome: Outcome


def _first_invalid_row(records: NDArray[np.uint8]) -> int | None:
    """Return the index of the first row that is not a number line, or None if all are."""
    checked = 0
    # Groups of four rows are 40 bytes, five 64-bit words: checked a word at a time.
    for start in range(0, len(records) - _GROUP_ROWS + 1, _PATTERN_ROWS):
        rows = records[
            start : min(start + _PATTERN_ROWS, len(records) // _GROUP_ROWS * _GROUP_ROWS)
        ]
        words = rows.reshape(-1).view(_LITTLE_ENDIAN_WORD)
        shifted = np.bitwise_xor(words, _XOR_WORDS[: len(words)])
        # A byte of ``shifted`` is valid if it is at most its limit: adding 127 - limit keeps
        # it below 128, and a byte already at 128 or more is invalid too. Neither sum carries
        # into the next byte unless the byte itself is invalid, so the first byte flagged is
        # the first invalid byte.
        flagged = np.add(shifted, _ADD_WORDS[: len(words)])
        np.bitwise_or(flagged, shifted, out=flagged)
        np.bitwise_and(flagged, _HIGH_BITS, out=flagged)
        if flagged.any():
            first_byte = int(np.flatnonzero(flagged)[0]) * 8
            row = start + first_byte // RECORD_SIZE
            found = _first_invalid_row_bytewise(records[row : row + 2])
            assert found is not None
            return row + found
        checked = start + len(rows)
    rest = _first_invalid_row_bytewise(records[checked:])
    return None if rest is None else checked + rest


def _first_invalid_row_bytewise(records: NDArray[np.uint8]) -> int | None:
    invalid = (records - _OFFSET) > _LIMIT
    if not invalid.any():
        return None
    return int(np.argmax(invalid.reshape(-1))) // RECORD_SIZE


def _is_line_prefix(partial: bytes) -> bool:
    """Tell whether an unfinished line (at most 9 bytes) can still become a valid line."""
    return all(byte in _DIGIT_BYTES for byte in partial) or TERMINATE.startswith(partial)


def _rows(data: bytes | bytearray, start: int, count: int) -> NDArray[np.uint8]:
    return np.frombuffer(data, dtype=np.uint8, count=count * RECORD_SIZE, offset=start).reshape(
        count, RECORD_SIZE
    )


@final
@attrs.define(eq=False)
class LineFramer:
    """Split one connection's byte stream into validated 10-byte lines.

    Feed each receive buffer to :meth:`feed` in order. The framer keeps only the bytes of the
    unfinished last line, never more than 9, whatever the client sends; it rejects that
    unfinished line as soon as it cannot become valid, without waiting for its end.
    """

    _partial: bytes = b""

    @property
    def pending(self) -> int:
        """How many bytes of an unfinished line are held (0 to 9)."""
        return len(self._partial)

    def feed(self, data: bytes | bytearray) -> Framed:
        """Frame the next receive buffer of the stream.

        Args:
            data: The bytes just received. The returned chunks are views of it, so it must not
                be changed while they are in use (``bytes`` never is).

        Returns:
            The complete number lines up to the first line that is not a number, and what the
            connection should do next. After ``INVALID`` or ``TERMINATE`` the framer must not
            be fed again.
        """
        chunks: list[NDArray[np.uint8]] = []
        start = 0
        if self._partial:
            start = RECORD_SIZE - len(self._partial)
            if len(data) < start:
                self._partial += bytes(data)
                outcome = Outcome.MORE if _is_line_prefix(self._partial) else Outcome.INVALID
                return Framed((), outcome)
            line = self._partial + data[:start]
            self._partial = b""
            if line == TERMINATE:
                return Framed((), Outcome.TERMINATE)
            head = _rows(line, 0, 1)
            if _first_invalid_row(head) is not None:
                return Framed((), Outcome.INVALID)
            chunks.append(head)

        count = (len(data) - start) // RECORD_SIZE
        body = _rows(data, start, count) if count else _EMPTY
        stop = _first_invalid_row(body)
        if stop is not None:
            if stop:
                chunks.append(body[:stop])
            line_start = start + stop * RECORD_SIZE
            is_terminate = data[line_start : line_start + RECORD_SIZE] == TERMINATE
            return Framed(tuple(chunks), Outcome.TERMINATE if is_terminate else Outcome.INVALID)
        if count:
            chunks.append(body)

        self._partial = bytes(data[start + count * RECORD_SIZE :])
        outcome = Outcome.MORE if _is_line_prefix(self._partial) else Outcome.INVALID
        return Framed(tuple(chunks), outcome)


def parse_numbers(records: NDArray[np.uint8]) -> NDArray[np.uint32]:
    """Convert validated number lines to their values.

    Args:
        records: An ``(n, 10)`` array of valid number lines, as :class:`Framed` gives them.

    Returns:
        The ``n`` numbers, in the same order.
    """
    # The first eight digits of each line, read as one little-endian 64-bit word, are
    # combined pairwise (SIMD within a register): digit pairs, then groups of four, then
    # all eight, with one multiply-add each; the ninth digit is added last.
    word = records[:, :8].view(_LITTLE_ENDIAN_WORD)[:, 0] - _ZERO_DIGITS
    for shift, scale, mask in _PAIRWISE_STEPS:
        low = word >> shift
        word *= scale
        word += low
        word &= mask
    values = word.astype(np.uint32)
    values *= np.uint32(10)
    values += records[:, 8]
    values -= np.uint32(ord("0"))
    return values
