r"""Framing and validation of the client byte stream, free of I/O.

Every valid line, ``terminate\n`` included, is exactly :data:`LINE_SIZE` bytes long, so a
receive buffer is a table of 10-byte lines plus at most 9 bytes of an unfinished line. The
kernel (``_kernel.py``: compiled, or its pure-Python twin) checks the whole table in one pass;
this module keeps the state between buffers and says what it means.
"""

from __future__ import annotations

import enum
from typing import Final, final

import attrs

from . import _kernel

LINE_SIZE: Final = _kernel.LINE_SIZE


class Outcome(enum.Enum):
    """What the connection should do after a buffer has been framed."""

    MORE = "more"
    """Every complete line was a number; keep reading."""
    INVALID = "invalid"
    """A line is not valid input: close the connection without comment."""
    TERMINATE = "terminate"
    """The client asked for shutdown with ``terminate`` and a newline."""


_OUTCOMES: Final = {
    _kernel.MORE: Outcome.MORE,
    _kernel.INVALID: Outcome.INVALID,
    _kernel.TERMINATE: Outcome.TERMINATE,
}


@final
@attrs.frozen
class Framed:
    """The result of framing one receive buffer.

    Attributes:
        lines: The valid number lines, in arrival order, in at most two parts, none empty:
            the line completed from the bytes carried over from the previous buffer (a
            10-byte copy), and a view of the rest of the buffer, so joining the carried bytes
            never copies the buffer. Both are writable where the buffer is.
        outcome: What the connection does next. Numbers before an invalid line or before
            ``terminate`` are still in ``lines``.
    """

    lines: tuple[memoryview, ...]
    outcome: Outcome


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

    def take_partial(self) -> bytes:
        """Hand over the unfinished line held, to be fed again at the front of the next buffer.

        A caller that receives into buffers of its own puts it there, so that a line cut
        between two receives is framed in place like any other, and not copied out.
        """
        partial, self._partial = self._partial, b""
        return partial

    def feed(self, data: bytes | bytearray | memoryview) -> Framed:
        """Frame the next receive buffer of the stream.

        Args:
            data: The bytes just received. The returned lines may be a view of it, so it must
                not be changed while they are in use (``bytes`` never is).

        Returns:
            The complete number lines up to the first line that is not a number, and what the
            connection should do next. After ``INVALID`` or ``TERMINATE`` the framer must not
            be fed again.
        """
        head, start, stop, outcome, self._partial = _kernel.frame(self._partial, data)
        lines: tuple[memoryview, ...] = () if head is None else (memoryview(bytearray(head)),)
        if stop > start:
            lines += (memoryview(data)[start:stop],)
        return Framed(lines, _OUTCOMES[outcome])
