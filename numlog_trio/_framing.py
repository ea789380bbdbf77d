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
    digits = records[:, :DIGITS] - np.uint8(ord("0"))
    values = digits[:, 0].astype(np.uint32)
    for column in range(1, DIGITS):
        values *= np.uint32(10)
        values += digits[:, column]
    return values
