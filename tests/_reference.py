"""A reference model of one connection's input, and Hypothesis strategies to feed it.

The model reads the specification literally, one byte at a time, with no buffers and no
NumPy, so that the framer and the server's connection handler can both be checked against it
for arbitrary streams cut at arbitrary points. The check of the framer against it is here too,
shared by the hypothesis test and the atheris fuzz target (``fuzz/fuzz_framing.py``).
"""

from __future__ import annotations

import itertools
from typing import Final

from hypothesis import strategies as st

from numlog_trio import Framed, LineFramer, Outcome


def reference(stream: bytes) -> tuple[list[int], Outcome, int | None]:
    """Read the spec literally, byte by byte: numbers kept, outcome, index where decided."""
    numbers: list[int] = []
    line = b""
    for index, byte in enumerate(stream):
        line += bytes([byte])
        if line == b"terminate\n":
            return numbers, Outcome.TERMINATE, index
        if byte == ord("\n"):
            if len(line) == 10 and line[:9].isdigit():
                numbers.append(int(line[:9]))
                line = b""
                continue
            return numbers, Outcome.INVALID, index
        if not (len(line) <= 9 and (line.isdigit() or b"terminate".startswith(line))):
            return numbers, Outcome.INVALID, index
    return numbers, Outcome.MORE, None


number_lines = st.integers(0, 999_999_999).map(lambda n: f"{n:09d}\n".encode())
NEAR_MISSES: Final = (
    b"12345678\n",
    b"1234567890\n",
    b"123456789\r\n",
    b"terminate\r\n",
    b"termin",
    b"\n",
)
"""Pieces that are almost valid input, mixed into generated streams."""
near_misses = st.sampled_from(NEAR_MISSES)
pieces = st.one_of(
    number_lines, number_lines, number_lines, st.just(b"terminate\n"), near_misses, st.binary()
)
"""Parts of a stream: mostly valid lines, some terminate, near misses and arbitrary bytes."""
streams = st.tuples(st.lists(number_lines, max_size=30), st.lists(pieces, max_size=30)).map(
    lambda parts: b"".join(parts[0] + parts[1])
)
"""Whole client streams: a run of valid lines, then a mix of :data:`pieces`.

Without the run, the first piece that is not a number decides most streams within a line or
two, and a line carried from one buffer into a next one that holds more lines is rare.
"""
cuts = st.lists(st.integers(0, 400), max_size=20)
"""Offsets at which to cut a stream into receive buffers (clipped to its length)."""


def cut(stream: bytes, offsets: list[int]) -> tuple[list[bytes], list[int]]:
    """Cut a stream at the offsets into non-empty buffers.

    Returns:
        The buffers in order, and their bounds: buffer ``i`` is
        ``stream[bounds[i]:bounds[i + 1]]``.
    """
    bounds = sorted({0, len(stream), *(min(offset, len(stream)) for offset in offsets)})
    return [stream[start:stop] for start, stop in itertools.pairwise(bounds)], bounds


def numbers_in(lines: bytes | bytearray | memoryview) -> list[int]:
    """Return the numbers of whole number lines, in order, read by Python's ``int``."""
    data = bytes(lines)
    assert len(data) % 10 == 0, f"{len(data)} bytes are not whole lines"
    return [int(data[start : start + 9]) for start in range(0, len(data), 10)]


def numbers_of(framed: Framed) -> list[int]:
    """Return the numbers of a framed buffer, in order."""
    return [number for part in framed.lines for number in numbers_in(part)]


def feed_all(pieces: list[bytes]) -> tuple[list[int], Outcome, int]:
    """Feed pieces until the framer stops; return numbers, outcome, pieces consumed.

    Also checks, after every piece, that the framer holds at most 9 bytes.
    """
    framer = LineFramer()
    numbers: list[int] = []
    for index, piece in enumerate(pieces):
        framed = framer.feed(piece)
        assert framer.pending <= 9, f"the framer holds {framer.pending} bytes"
        numbers += numbers_of(framed)
        if framed.outcome is not Outcome.MORE:
            return numbers, framed.outcome, index + 1
    return numbers, Outcome.MORE, len(pieces)


def check_framer(stream: bytes, offsets: list[int]) -> None:
    """Feed ``stream``, cut at ``offsets``, to a framer, and check it against the reference.

    Raises:
        AssertionError: The framer kept other numbers, came to another outcome, decided in
            another buffer than the one holding the deciding byte, or held more than 9 bytes.
    """
    buffers, bounds = cut(stream, offsets)

    expected_numbers, expected_outcome, decided_at = reference(stream)
    numbers, outcome, used = feed_all(buffers)

    assert (numbers, outcome) == (expected_numbers, expected_outcome), (
        f"framer: {outcome} after {numbers}; reference: {expected_outcome} after "
        f"{expected_numbers}; stream {stream!r} cut at {bounds}"
    )
    if decided_at is not None:
        # The framer stops at the buffer holding the deciding byte, not later.
        assert bounds[used - 1] <= decided_at < bounds[used], (
            f"decided at byte {decided_at}, but the framer stopped after buffer {used} of "
            f"{stream!r} cut at {bounds}"
        )
