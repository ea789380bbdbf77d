"""The hot loops of numlog-trio in pure Python: the twin of the compiled ``_kernel_c``.

The same functions, with the same arguments, results and errors, for where the compiled module
could not be built or ``NUMLOG_TRIO_NO_EXTENSIONS`` asks for this one (``_kernel.py`` chooses).
Each works on whole chunks of a buffer with the operations that run in C inside the
interpreter: a chunk of number lines is copied out of the buffer, validated with a strided
slice and ``bytes.translate``, cut with ``bytes.split`` and parsed with ``int``; each
number's bitmap byte is read once in a pass that runs in C (``itemgetter``), so that the cache
misses overlap as a prefetch would make them; only the test-and-set of each number's bit is a
Python loop, and it is most of the cost that remains. Chunks of :data:`_CHUNK_SIZE` bytes keep
the copies and the objects made from them small, whatever the buffer. This is not the test
suite's reference model (``tests/_reference.py``, a byte at a time, obviously correct); it is
checked against it by the same tests as the compiled kernel.

The compiled kernel does not validate the lines ``select_new`` and ``unmark`` are given (the
framer did); it parses whatever 10 bytes it gets within a 64-bit word. So that a caller's
mistake comes out the same here, lines that are not all number lines are parsed by
:func:`_parse_as_compiled`, which does that arithmetic, and are otherwise treated alike.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Iterator
from itertools import repeat
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from typing_extensions import Buffer

LINE_SIZE: Final = 10
NUMBER_SPACE: Final = 1_000_000_000
BITMAP_BYTES: Final = NUMBER_SPACE // 8

MORE: Final = 0
"""Outcome: every complete line was a number; the connection reads on."""
INVALID: Final = 1
"""Outcome: a line is not valid input; the connection is closed."""
TERMINATE: Final = 2
"""Outcome: a line is ``terminate``."""

ALL_MARKED: Final = 0
"""Why :func:`mark_new` stopped: every line was marked."""
NOT_A_NUMBER: Final = 1
"""Why :func:`mark_new` stopped: the next line is not nine digits and a newline."""
SEEN_BEFORE: Final = 2
"""Why :func:`mark_new` stopped: the next line's number was marked already."""

PREFETCH_DISTANCE: Final = 64
"""The compiled kernel's prefetch distance. Nothing is prefetched here; the value is the same
so that the tests' cases around it are the same for both kernels."""

_TERMINATE: Final = b"terminate\n"
_DIGITS: Final = b"0123456789"
_NUMBER_LINES: Final = re.compile(rb"(?:[0-9]{9}\n)*+")
_CHUNK_SIZE: Final = 512 * LINE_SIZE
"""How many bytes of lines are copied out of a buffer, then split and parsed, at a time: it
bounds the objects made from them, and a chunk's bitmap bytes stay in cache between the pass
that reads them and the loop that sets them."""
_WORD: Final = (1 << 64) - 1
_ZEROS: Final = 0x3030303030303030


def _view(buffer: Buffer) -> memoryview:
    """A view of a buffer of bytes, refused as the compiled kernel's typed memoryviews are."""
    view = memoryview(buffer)
    if view.ndim != 1:
        raise ValueError(f"Buffer has wrong number of dimensions (expected 1, got {view.ndim})")
    if view.format.lstrip("@=<>!") not in ("B", "c", "?"):
        raise ValueError(f"Buffer dtype mismatch, expected 'uint8_t' but got {view.format!r}")
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view if view.format == "B" else view.cast("B")


def _writable(buffer: Buffer) -> memoryview:
    view = _view(buffer)
    if view.readonly:
        raise BufferError("Object is not writable.")
    return view


def _check_bitmap(bits: memoryview) -> None:
    if len(bits) < BITMAP_BYTES:
        raise ValueError(f"the bitmap has {len(bits)} bytes; it needs {BITMAP_BYTES}")


def _ssize(value: int) -> int:
    """``value`` as a C ``Py_ssize_t`` argument takes it: an integer, within 64 bits."""
    value = operator.index(value)
    if not -(1 << 63) <= value < 1 << 63:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return value


def _check_whole_lines(size: int) -> None:
    if size % LINE_SIZE:
        raise ValueError(f"{size} bytes are not whole {LINE_SIZE}-byte lines")


def _all_number_lines(chunk: bytes) -> bool:
    """Whether ``chunk`` (whole lines) is nothing but number lines.

    Every tenth byte is a newline, and deleting the digits leaves those newlines only.
    """
    count = len(chunk) // LINE_SIZE
    return (
        chunk[LINE_SIZE - 1 :: LINE_SIZE].count(b"\n") == count
        and len(chunk.translate(None, _DIGITS)) == count
    )


def _chunks(view: memoryview, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
    """Copies of ``view[start:stop]`` (whole lines), a chunk at a time, with their offsets."""
    for offset in range(start, stop, _CHUNK_SIZE):
        yield offset, view[offset : min(offset + _CHUNK_SIZE, stop)].tobytes()


def _leading_number_lines(chunk: bytes) -> int:
    """How many bytes of whole number lines ``chunk`` (whole lines) begins with."""
    if _all_number_lines(chunk):
        return len(chunk)
    run = _NUMBER_LINES.match(chunk)
    assert run is not None  # the pattern matches the empty string
    return run.end()


def _number_lines_end(view: memoryview, start: int, stop: int) -> int:
    """The end of the run of number lines from ``start`` (whole lines, up to ``stop``)."""
    for offset, chunk in _chunks(view, start, stop):
        if (length := _leading_number_lines(chunk)) < len(chunk):
            return offset + length
    return stop


def _is_line_start(start: bytes) -> bool:
    """Whether up to 9 bytes can still become a valid line (digits, or the start of terminate)."""
    return not start or start.isdigit() or _TERMINATE.startswith(start)


def frame(carried: Buffer, data: Buffer) -> tuple[bytes | None, int, int, int, bytes]:
    """Find the run of valid lines in a receive buffer, and why it ends.

    Args:
        carried: The unfinished line carried from the previous buffer (0 to 9 bytes, each
            prefix of which could still become valid).
        data: The new buffer.

    Returns:
        ``(head, start, stop, outcome, carry)``: ``head`` is the carried line completed from
        the first bytes of ``data`` when that makes a number line (else None), followed by the
        number lines ``data[start:stop]``; ``outcome`` is :data:`MORE`, :data:`INVALID` or
        :data:`TERMINATE`; ``carry`` is the unfinished line to carry into the next buffer
        (empty unless the outcome is :data:`MORE`).
    """
    held_bytes, view = _view(carried).tobytes(), _view(data)
    held, size = len(held_bytes), len(view)
    if held >= LINE_SIZE:
        raise ValueError(f"the carried line holds {held} bytes; a line is {LINE_SIZE}")
    head = None
    start = 0
    if held:
        start = LINE_SIZE - held
        line = held_bytes + view[:start].tobytes()
        if size < start:
            if _is_line_start(line):
                return None, 0, 0, MORE, line
            return None, 0, 0, INVALID, b""
        if line[:9].isdigit() and line[9] == 10:
            head = line
        elif line == _TERMINATE:
            return None, 0, 0, TERMINATE, b""
        else:
            return None, 0, 0, INVALID, b""
    whole = size - (size - start) % LINE_SIZE
    stop = _number_lines_end(view, start, whole)
    if stop < whole:
        if view[stop : stop + LINE_SIZE].tobytes() == _TERMINATE:
            return head, start, stop, TERMINATE, b""
        return head, start, stop, INVALID, b""
    rest = view[stop:].tobytes()
    if _is_line_start(rest):
        return head, start, stop, MORE, rest
    return head, start, stop, INVALID, b""


def _parse_as_compiled(line: bytes) -> int:
    """The compiled kernel's parse of any 10 bytes: a 64-bit SWAR sum, then a 32-bit result.

    For a number line, its number; for other bytes, what the compiled kernel makes of them
    (which may or may not be inside 0..999,999,999).
    """
    word = (int.from_bytes(line[:8], "little") - _ZEROS) & _WORD
    word = ((word * 10 & _WORD) + (word >> 8)) & 0x00FF00FF00FF00FF
    word = ((word * 100 & _WORD) + (word >> 16)) & 0x0000FFFF0000FFFF
    word = ((word * 10000 & _WORD) + (word >> 32)) & 0x00000000FFFFFFFF
    return (word * 10 + line[8] - 48) & 0xFFFFFFFF


def _split_lines(data: bytes) -> list[bytes]:
    """The 10-byte lines of ``data`` (whole lines), whatever bytes they hold."""
    return [data[at : at + LINE_SIZE] for at in range(0, len(data), LINE_SIZE)]


def _overlaps_badly(source: memoryview, target: memoryview, at: int, size: int) -> bool:
    """Whether ``target[at:]`` overlaps ``source`` other than starting where it starts.

    The compiled kernel refuses that: it would copy lines over lines not read yet. Both views
    must be writable (Python takes the address of a writable buffer only).
    """
    try:
        import ctypes
    except ImportError:  # an interpreter built without ctypes: nothing to compare
        return False
    source_address = ctypes.addressof(ctypes.c_char.from_buffer(source))
    target_address = ctypes.addressof(ctypes.c_char.from_buffer(target)) + at
    return (
        target_address != source_address
        and source_address < target_address + size
        and target_address < source_address + size
    )


def select_new(bitmap: Buffer, lines: Buffer, out: Buffer, at: int) -> tuple[int, int]:
    """Mark the numbers of some number lines seen, and copy each first sighting to ``out``.

    Each line is parsed, its bit in ``bitmap`` tested and set, and if it was not set the line
    (its 10 bytes as received) is copied to ``out``. A number repeated within ``lines`` is
    copied once, at its first position. The lines are read a chunk at a time, each before
    its first sightings are written (at or before where it was read).

    Args:
        bitmap: One bit per number, :data:`BITMAP_BYTES` long.
        lines: Whole number lines, as :func:`frame` validated them.
        out: Where first sightings go, from offset ``at``. It must have room for all of
            ``lines`` (``len(out) - at >= len(lines)``), however many turn out new; that room
            past the returned ``end`` is left as it was. It may be ``lines`` itself, with
            ``at`` 0: the first sightings are then compacted at the front of ``lines``.
        at: Offset in ``out`` of the first line copied.

    Returns:
        ``(end, duplicates)``: first sightings are ``out[at:end]``, and how many lines were
        numbers seen before.

    Raises:
        ValueError: A buffer has the wrong size, ``out`` overlaps ``lines`` other than at
            their start, or a line parses to a value outside 0..999,999,999 (lines are not
            validated here: the range check only keeps a caller's mistake inside the bitmap).
            Nothing is marked or copied. (An overlap is seen where ``lines`` is writable, as
            every caller's is; read-only lines are all read first, so that any out is safe.)
    """
    # The arguments are taken, then checked, in the compiled kernel's order: so are its errors.
    bits, source, target, at = _writable(bitmap), _view(lines), _writable(out), _ssize(at)
    size = len(source)
    _check_bitmap(bits)
    _check_whole_lines(size)
    if at < 0 or len(target) - at < size:
        raise ValueError(f"out has no room for {size} bytes at offset {at}")
    if size == 0:
        return at, 0
    if not source.readonly:
        if _overlaps_badly(source, target, at, size):
            raise ValueError("out overlaps lines without starting where they start")
    elif not isinstance(source.obj, bytes):
        # A read-only view of memory that may be writable, out's too: where it starts can't
        # be seen, so all of it is read before anything is written, and any out will do.
        source = memoryview(source.tobytes())
    # Every chunk is checked before any number is marked: lines that are not all number
    # lines (a caller's mistake) may parse out of range, and then nothing may be marked.
    if _number_lines_end(source, 0, size) < size:
        return _select_from_any_lines(bits, source.tobytes(), target, at)
    # A chunk's first sightings are written only after it was read, at or before where it was.
    end = at
    for _, chunk in _chunks(source, 0, size):
        digits = chunk.split()
        kept = _test_and_set(bits, digits, list(map(int, digits)))
        fresh = len(kept)
        if fresh == len(digits):
            target[end : end + len(chunk)] = chunk
        elif fresh:
            kept.append(b"")  # joined, it ends the last line with its newline
            target[end : end + LINE_SIZE * fresh] = b"\n".join(kept)
        end += LINE_SIZE * fresh
    return end, (size - (end - at)) // LINE_SIZE


def _select_from_any_lines(
    bits: memoryview, data: bytes, target: memoryview, at: int
) -> tuple[int, int]:
    """:func:`select_new` of lines not all number lines (a caller's mistake), as compiled."""
    lines = _split_lines(data)
    numbers = [_parse_as_compiled(line) for line in lines]
    if not all(number < NUMBER_SPACE for number in numbers):
        raise ValueError("a line is not nine digits and a newline")
    kept = _test_and_set(bits, lines, numbers)
    target[at : at + LINE_SIZE * len(kept)] = b"".join(kept)
    return at + LINE_SIZE * len(kept), len(numbers) - len(kept)


def _touch(bits: memoryview, numbers: list[int]) -> None:
    """Read the bitmap byte of each number, in one pass that runs in C.

    The bytes are scattered over 125 MB: read one at a time in a Python loop, each waits for
    memory in turn; read in a tight loop, their cache misses overlap, and the loop that then
    tests and sets them finds them in cache (in that loop alone, 295 against 365 ns a number).
    """
    if numbers:
        operator.itemgetter(*map(operator.rshift, numbers, repeat(3)))(bits)


def _test_and_set(bits: memoryview, lines: list[bytes], numbers: list[int]) -> list[bytes]:
    """Set the bit of each number; return the lines of those whose bit was not set before."""
    _touch(bits, numbers)
    kept: list[bytes] = []
    keep = kept.append
    for line, number in zip(lines, numbers, strict=True):
        index = number >> 3
        mask = 1 << (number & 7)
        byte = bits[index]
        if not byte & mask:
            bits[index] = byte | mask
            keep(line)
    return kept


def unmark(bitmap: Buffer, lines: Buffer) -> None:
    """Clear the bits of the numbers of some number lines: undo :func:`select_new`.

    Args:
        bitmap: The bitmap :func:`select_new` marked.
        lines: The first sightings it copied out, which were all unmarked before. A line
            that parses outside the range is skipped.
    """
    bits, source = _writable(bitmap), _view(lines)
    _check_bitmap(bits)
    _check_whole_lines(len(source))
    for _, chunk in _chunks(source, 0, len(source)):
        if _all_number_lines(chunk):
            numbers: Iterable[int] = map(int, chunk.split())
        else:
            numbers = map(_parse_as_compiled, _split_lines(chunk))
        for number in numbers:
            if number < NUMBER_SPACE:
                bits[number >> 3] &= 0xFF ^ (1 << (number & 7))


def mark_new(bitmap: Buffer, lines: Buffer) -> tuple[int, int]:
    """Mark the numbers of a log's lines seen, in order, up to the first line a log can't hold.

    Rebuilds the bitmap from a log being resumed, one chunk of it at a time: each line is
    checked, parsed, and its bit in ``bitmap`` tested and set. Marking stops at the first line
    that is not a number line, or whose number is marked already (before the call, or by an
    earlier line of this one).

    Args:
        bitmap: One bit per number, :data:`BITMAP_BYTES` long.
        lines: Whole lines (any bytes, a multiple of :data:`LINE_SIZE` long).

    Returns:
        ``(count, stop)``: the first ``count`` lines were marked (their numbers' bits are all
        set now), and why marking stopped: :data:`ALL_MARKED` (``count`` is every line),
        :data:`NOT_A_NUMBER` (the line at index ``count`` is not a number line) or
        :data:`SEEN_BEFORE` (the number of the line at index ``count`` was marked already; its
        bit stays set). The bits of the lines after ``count`` are left as they were.

    Raises:
        ValueError: The bitmap is too short, or ``lines`` are not whole lines. Nothing is
            marked.
    """
    bits, source = _writable(bitmap), _view(lines)
    size = len(source)
    _check_bitmap(bits)
    _check_whole_lines(size)
    # One pass, in order: a repeat before the first line that is not a number stops first.
    for offset, chunk in _chunks(source, 0, size):
        length = _leading_number_lines(chunk)
        numbers = list(map(int, chunk[:length].split()))
        _touch(bits, numbers)
        for count, number in enumerate(numbers, offset // LINE_SIZE):
            index = number >> 3
            mask = 1 << (number & 7)
            byte = bits[index]
            if byte & mask:
                return count, SEEN_BEFORE
            bits[index] = byte | mask
        if length < len(chunk):
            return (offset + length) // LINE_SIZE, NOT_A_NUMBER
    return size // LINE_SIZE, ALL_MARKED
