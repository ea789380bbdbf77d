# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True
"""The hot loops of numlog-trio, compiled: framing and dedup, each one pass, GIL released.

:func:`frame` finds the number lines of a receive buffer, :func:`select_new` marks them seen
and keeps the first sightings, :func:`unmark` takes such marks back, and :func:`mark_new`
marks the lines of a log being resumed, stopping at the first that a log cannot hold.
Everything else (tasks, state, errors, invariants, reading the log) is Python; see
``_framing.py`` and ``_dedup.py``. Every valid line, ``terminate\\n`` included, is
exactly :data:`LINE_SIZE` bytes, so a buffer is read as a table of 10-byte lines: each
is checked with two loads (8 + 2 bytes) and parsed within a 64-bit word (SWAR), with no
per-byte loop. Words are read little-endian (x86-64, AArch64): on a big-endian machine the
build stops with an error saying so, and the package is installed with the pure-Python twin
(``_kernel_py.py``) alone. Both pass the same tests; ``_kernel.py`` chooses.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

cdef extern from *:
    """
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #error "numlog-trio's kernel reads lines as little-endian 64-bit words"
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define NUMLOG_PREFETCH_FOR_WRITE(address) __builtin_prefetch((address), 1, 2)
    #define NUMLOG_PREFETCH_FOR_READ(address) __builtin_prefetch((address), 0, 3)
    #else
    #define NUMLOG_PREFETCH_FOR_WRITE(address) ((void)(address))
    #define NUMLOG_PREFETCH_FOR_READ(address) ((void)(address))
    #endif
    """
    void prefetch_for_write "NUMLOG_PREFETCH_FOR_WRITE"(const void *address) nogil
    void prefetch_for_read "NUMLOG_PREFETCH_FOR_READ"(const void *address) nogil

LINE_SIZE = 10
NUMBER_SPACE = 1_000_000_000
BITMAP_BYTES = NUMBER_SPACE // 8

MORE = 0
"""Outcome: every complete line was a number; the connection reads on."""
INVALID = 1
"""Outcome: a line is not valid input; the connection is closed."""
TERMINATE = 2
"""Outcome: a line is ``terminate``."""

ALL_MARKED = 0
"""Why :func:`mark_new` stopped: every line was marked."""
NOT_A_NUMBER = 1
"""Why :func:`mark_new` stopped: the next line is not nine digits and a newline."""
SEEN_BEFORE = 2
"""Why :func:`mark_new` stopped: the next line's number was marked already."""

PREFETCH_DISTANCE = _AHEAD
"""How many numbers ahead of its test-and-set a number's bitmap byte is prefetched."""

cdef enum:
    _LINE = 10
    _AHEAD = 64
    # A power of two above _AHEAD: the parsed numbers waiting for their test-and-set.
    _RING = 128
    # How many lines ahead of the one it checks mark_new prefetches the lines themselves.
    _LINES_AHEAD = 128
    _SPACE = 1000000000

cdef const char *_TERMINATE = b"terminate\n"
cdef uint64_t _HIGH_NIBBLES = 0xF0F0F0F0F0F0F0F0ULL
cdef uint64_t _ZEROS = 0x3030303030303030ULL
cdef uint64_t _SIXES = 0x0606060606060606ULL


cdef inline uint64_t _load_word(const uint8_t *line) noexcept nogil:
    cdef uint64_t word
    memcpy(&word, line, 8)
    return word


cdef inline void _move_line(uint8_t *target, const uint8_t *source) noexcept nogil:
    """Copy a line, all read before any is written: in place, target may overlap source.

    (A 10-byte memmove is a call into libc; these fixed-size copies compile to four moves.)
    """
    cdef uint64_t head
    cdef uint16_t tail
    memcpy(&head, source, 8)
    memcpy(&tail, source + 8, 2)
    memcpy(target, &head, 8)
    memcpy(target + 8, &tail, 2)


cdef inline bint _is_number(const uint8_t *line) noexcept nogil:
    """Nine ASCII digits and a newline."""
    cdef uint64_t word = _load_word(line)
    cdef uint16_t tail
    memcpy(&tail, line + 8, 2)
    # A byte is a digit (0x30..0x39) if its high nibble is 3 and adding 6 keeps it so. The
    # sums cannot carry between bytes once every high nibble is 3.
    return (
        (word & _HIGH_NIBBLES) == _ZEROS
        and ((word + _SIXES) & _HIGH_NIBBLES) == _ZEROS
        and (tail & 0xFFF0) == 0x0A30
        and (tail & 0x000F) <= 9
    )


cdef inline uint32_t _parse(const uint8_t *line) noexcept nogil:
    """The value of a number line (its first eight digits combined pairwise in one word)."""
    cdef uint64_t word = _load_word(line) - _ZEROS
    word = ((word * 10) + (word >> 8)) & 0x00FF00FF00FF00FFULL
    word = ((word * 100) + (word >> 16)) & 0x0000FFFF0000FFFFULL
    word = ((word * 10000) + (word >> 32)) & 0x00000000FFFFFFFFULL
    return <uint32_t>(word * 10 + (line[8] - 48))


cdef inline bint _is_line_start(const uint8_t *start, Py_ssize_t length) noexcept nogil:
    """Whether up to 9 bytes can still become a valid line (digits, or the start of terminate)."""
    cdef Py_ssize_t index
    cdef bint digits = True
    for index in range(length):
        if not 48 <= start[index] <= 57:
            digits = False
            break
    return digits or memcmp(start, _TERMINATE, length) == 0


def frame(const uint8_t[::1] carried not None, const uint8_t[::1] data not None):
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
    cdef Py_ssize_t held = carried.shape[0]
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t position
    cdef Py_ssize_t last_line_start
    cdef uint8_t line[_LINE]
    cdef const uint8_t *base = &data[0] if size else NULL
    head = None
    if held >= _LINE:
        raise ValueError(f"the carried line holds {held} bytes; a line is {LINE_SIZE}")
    if held:
        memcpy(line, &carried[0], held)
        if size < _LINE - held:
            if size:
                memcpy(line + held, base, size)
            if _is_line_start(line, held + size):
                return None, 0, 0, MORE, PyBytes_FromStringAndSize(<char *>line, held + size)
            return None, 0, 0, INVALID, b""
        start = _LINE - held
        memcpy(line + held, base, start)
        if _is_number(line):
            head = PyBytes_FromStringAndSize(<char *>line, _LINE)
        elif memcmp(line, _TERMINATE, _LINE) == 0:
            return None, 0, 0, TERMINATE, b""
        else:
            return None, 0, 0, INVALID, b""

    position = start
    last_line_start = size - _LINE
    with nogil:
        while position <= last_line_start and _is_number(base + position):
            position += _LINE
    if position <= last_line_start:
        if memcmp(base + position, _TERMINATE, _LINE) == 0:
            return head, start, position, TERMINATE, b""
        return head, start, position, INVALID, b""
    if _is_line_start(base + position, size - position):
        return head, start, position, MORE, PyBytes_FromStringAndSize(
            <const char *>base + position, size - position
        )
    return head, start, position, INVALID, b""


def select_new(
    uint8_t[::1] bitmap not None,
    const uint8_t[::1] lines not None,
    uint8_t[::1] out not None,
    Py_ssize_t at,
):
    """Mark the numbers of some number lines seen, and copy each first sighting to ``out``.

    One pass: each line is parsed, its bit in ``bitmap`` tested and set, and if it was not
    set the line (its 10 bytes as received) is copied to ``out``. A number repeated within
    ``lines`` is copied once, at its first position. Bitmap bytes are prefetched
    :data:`PREFETCH_DISTANCE` numbers ahead: the lookups are scattered over 125 MB, so
    without it each one waits for memory in turn.

    Args:
        bitmap: One bit per number, :data:`BITMAP_BYTES` long.
        lines: Whole number lines, as :func:`frame` validated them.
        out: Where first sightings go, from offset ``at``. It must have room for all of
            ``lines`` (``len(out) - at >= len(lines)``), however many turn out new; that room
            past the returned ``end`` is scratch, its bytes unspecified. It may be ``lines``
            itself, with ``at`` 0: the first sightings are then compacted in place, at the
            front of ``lines`` (each line moves only towards the front, after it was read).
        at: Offset in ``out`` of the first line copied.

    Returns:
        ``(end, duplicates)``: first sightings are ``out[at:end]``, and how many lines were
        numbers seen before.

    Raises:
        ValueError: A buffer has the wrong size, or a line parses to a value outside
            0..999,999,999. Lines are not validated here (:func:`frame` did that): the range
            check only keeps a caller's mistake inside the bitmap. The bitmap is then left
            as it was.
    """
    cdef Py_ssize_t size = lines.shape[0]
    cdef Py_ssize_t count = size // _LINE
    cdef Py_ssize_t index, ahead
    cdef Py_ssize_t end = at
    cdef Py_ssize_t primed
    cdef uint32_t number
    cdef uint32_t ring[_RING]
    cdef uint8_t *bits
    cdef uint8_t *target
    cdef const uint8_t *source
    cdef uint8_t byte, mask
    cdef bint out_of_range = False
    if bitmap.shape[0] < _SPACE // 8:
        raise ValueError(f"the bitmap has {bitmap.shape[0]} bytes; it needs {BITMAP_BYTES}")
    if size % _LINE:
        raise ValueError(f"{size} bytes are not whole {LINE_SIZE}-byte lines")
    if at < 0 or out.shape[0] - at < size:
        raise ValueError(f"out has no room for {size} bytes at offset {at}")
    if count == 0:
        return at, 0
    bits = &bitmap[0]
    source = &lines[0]
    target = &out[0] + at
    if target != source and source < target + size and target < source + size:
        # A line copied ahead of where it was read would overwrite lines not yet read.
        raise ValueError("out overlaps lines without starting where they start")
    target = &out[0]
    with nogil:
        primed = count if count < _AHEAD else _AHEAD
        for index in range(primed):
            number = _parse(source + index * _LINE)
            if number >= _SPACE:
                out_of_range = True
                break
            ring[index] = number
            prefetch_for_write(bits + (number >> 3))
        if not out_of_range:
            for index in range(count):
                ahead = index + _AHEAD
                if ahead < count:
                    number = _parse(source + ahead * _LINE)
                    if number >= _SPACE:
                        out_of_range = True
                        break
                    ring[ahead & (_RING - 1)] = number
                    prefetch_for_write(bits + (number >> 3))
                number = ring[index & (_RING - 1)]
                mask = <uint8_t>(1 << (number & 7))
                byte = bits[number >> 3]
                bits[number >> 3] = byte | mask
                # Copied always, kept only if new: no branch to mispredict on a duplicate.
                _move_line(target + end, source + index * _LINE)
                end += _LINE * ((byte & mask) == 0)
    if out_of_range:
        unmark(bitmap, out[at:end])
        raise ValueError("a line is not nine digits and a newline")
    return end, count - (end - at) // _LINE


def unmark(uint8_t[::1] bitmap not None, const uint8_t[::1] lines not None):
    """Clear the bits of the numbers of some number lines: undo :func:`select_new`.

    Args:
        bitmap: The bitmap :func:`select_new` marked.
        lines: The first sightings it copied out, which were all unmarked before. A line
            that parses outside the range is skipped.
    """
    cdef Py_ssize_t size = lines.shape[0]
    cdef Py_ssize_t index
    cdef uint32_t number
    cdef const uint8_t *source
    if bitmap.shape[0] < _SPACE // 8:
        raise ValueError(f"the bitmap has {bitmap.shape[0]} bytes; it needs {BITMAP_BYTES}")
    if size % _LINE:
        raise ValueError(f"{size} bytes are not whole {LINE_SIZE}-byte lines")
    if size == 0:
        return
    source = &lines[0]
    with nogil:
        for index in range(size // _LINE):
            number = _parse(source + index * _LINE)
            if number < _SPACE:
                bitmap[number >> 3] &= <uint8_t>~(1 << (number & 7))


def mark_new(uint8_t[::1] bitmap not None, const uint8_t[::1] lines not None):
    """Mark the numbers of a log's lines seen, in order, up to the first line a log can't hold.

    Rebuilds the bitmap from a log being resumed, one chunk of it at a time: each line is
    checked, parsed, and its bit in ``bitmap`` tested and set. A log holds nothing but number
    lines, each number once, so marking stops at the first line that is not a number line, or
    whose number is marked already (before the call, or by an earlier line of this one). The
    lines are read where they are, not copied. Bitmap bytes are prefetched
    :data:`PREFETCH_DISTANCE` lines ahead, as in :func:`select_new`; a line is checked before
    it is parsed and prefetched (one that is not a number may parse outside the bitmap), and
    the look-ahead goes no further than the first line that is not a number. The lines are
    prefetched too: with every line's bitmap byte a cache miss the processor's own sequential
    prefetching falls behind, and lines not in cache cost some 2.5 ns each more without it.

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
    cdef Py_ssize_t size = lines.shape[0]
    cdef Py_ssize_t total = size // _LINE
    cdef Py_ssize_t index, ahead, primed
    # The lines before the first that is not a number line, as far as the look-ahead knows:
    # all of them until it meets one.
    cdef Py_ssize_t valid = total
    cdef uint32_t number
    cdef uint32_t ring[_RING]
    cdef uint8_t *bits
    cdef const uint8_t *source
    cdef uint8_t byte, mask
    if bitmap.shape[0] < _SPACE // 8:
        raise ValueError(f"the bitmap has {bitmap.shape[0]} bytes; it needs {BITMAP_BYTES}")
    if size % _LINE:
        raise ValueError(f"{size} bytes are not whole {LINE_SIZE}-byte lines")
    if total == 0:
        return 0, ALL_MARKED
    bits = &bitmap[0]
    source = &lines[0]
    with nogil:
        # Each line is checked before it is parsed: a line that is not a number may parse to
        # any value, outside the bitmap too.
        primed = total if total < _AHEAD else _AHEAD
        for index in range(primed):
            if not _is_number(source + index * _LINE):
                valid = index
                break
            number = _parse(source + index * _LINE)
            ring[index] = number
            prefetch_for_write(bits + (number >> 3))
        index = 0
        while index < valid:
            ahead = index + _AHEAD
            if ahead < valid:
                if ahead + _LINES_AHEAD < total:
                    prefetch_for_read(source + (ahead + _LINES_AHEAD) * _LINE)
                if _is_number(source + ahead * _LINE):
                    number = _parse(source + ahead * _LINE)
                    ring[ahead & (_RING - 1)] = number
                    prefetch_for_write(bits + (number >> 3))
                else:
                    # No look-ahead from here: the lines before this one are still tested
                    # in order (a repeat among them stops marking first), none after it.
                    valid = ahead
            number = ring[index & (_RING - 1)]
            mask = <uint8_t>(1 << (number & 7))
            byte = bits[number >> 3]
            if byte & mask:
                break
            bits[number >> 3] = byte | mask
            index += 1
    if index < valid:
        return index, SEEN_BEFORE
    if valid < total:
        return valid, NOT_A_NUMBER
    return total, ALL_MARKED
