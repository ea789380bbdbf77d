"""Both kernels (compiled and pure Python: ``kernel``), called directly, against reference models.

``frame`` is checked against the byte-at-a-time reference model of ``_reference.py``: for
streams cut at arbitrary points (hypothesis), and for every byte value at every position of a
line, alone, after valid lines, and completing a line carried over with every carry length.
Every call's result is also checked against the contract in its docstring: only number lines
kept, the carry at most 9 bytes, empty unless the connection reads on, and nothing dropped.

``select_new`` and ``unmark`` are checked against a Python set: the exact bytes copied out,
the end offset, the duplicate count and the bitmap's bits afterwards, over several buffers
with numbers repeated inside one buffer and across buffers, at the ends of the range, with the
output buffer exactly full or one byte short, with more and fewer lines than the prefetch
distance, and with lines that parse out of range (the bitmap is then left as it was).

``mark_new`` is checked against a Python set read line by line: ``(count, stop)`` and the bits
afterwards, over generated logs cut into chunks (mostly distinct numbers, with repeats and lines
that are not numbers anywhere, after numbers marked before the call), for every byte value at
every position of a line (alone, after valid lines, and at and around the prefetch distance),
for repeats within the call and numbers marked before it at and around that distance, for a
repeat just before a line that is not a number, at the ends of the range, and over a chunk of
the size ``--resume`` reads. Lines after the stop must be left unmarked, and so must lines that
are not numbers, including one that the kernel's parse would put inside the range.

The 125 MB bitmap is one anonymous mmap for the module; each test clears the bytes it touched,
and the tests that do not use hypothesis (and that of ``mark_new``, after each example) check
afterwards that the whole bitmap is zero.
"""

from __future__ import annotations

import ctypes
import mmap
import random
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import numpy as np
import pytest
from _reference import NEAR_MISSES, cut, cuts, numbers_in, reference, streams
from hypothesis import given, settings
from hypothesis import strategies as st
from kernels import Kernel

from numlog_trio import Outcome, _kernel, _kernel_py
from numlog_trio._server import RECEIVE_SIZE

LINE: Final = _kernel.LINE_SIZE
AHEAD: Final = _kernel.PREFETCH_DISTANCE
CHUNK: Final = _kernel_py._CHUNK_SIZE // _kernel.LINE_SIZE
"""Lines the pure-Python kernel takes at a time: where its chunks meet is a case of its own."""
AROUND_CHUNK: Final = (CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK)
OUTCOMES: Final = {
    _kernel.MORE: Outcome.MORE,
    _kernel.INVALID: Outcome.INVALID,
    _kernel.TERMINATE: Outcome.TERMINATE,
}
NUMBER_LINES: Final = re.compile(rb"(?:[0-9]{9}\n)*")
FILL: Final = 0xA5
"""What ``out`` holds before ``select_new``: bytes it must leave alone stay this."""


def line(number: int) -> bytes:
    return b"%09d\n" % number


def lines_of(numbers: Iterable[int]) -> bytes:
    return b"".join(line(number) for number in numbers)


# ---------------------------------------------------------------------------------------------
# frame


def frame_buffers(kernel: Kernel, buffers: list[bytes]) -> tuple[list[int], Outcome, int]:
    """Frame buffers in turn with the kernel, carrying ``carry`` from each call to the next.

    Checks every call against ``frame``'s contract: ``head`` followed by ``data[start:stop]``
    is whole number lines and begins the carried bytes and ``data``; the carry is at most 9
    bytes, empty unless the outcome is MORE, and then is the rest of the buffer.

    Returns:
        The numbers kept, the outcome, and how many buffers were framed (up to the one that
        decided the outcome).
    """
    numbers: list[int] = []
    carried = b""
    for index, data in enumerate(buffers):
        head, start, stop, outcome, carry = kernel.frame(carried, data)
        where = f"buffer {index} {data!r} after carrying {carried!r}"
        assert 0 <= start <= stop <= len(data), where
        assert (stop - start) % LINE == 0, where
        assert head is not None or start == 0, where
        kept = (head or b"") + data[start:stop]
        assert NUMBER_LINES.fullmatch(kept), f"kept {kept!r} from {where}"
        assert (carried + data).startswith(kept), f"kept {kept!r} from {where}"
        assert len(carry) <= 9, f"carry {carry!r} from {where}"
        numbers += numbers_in(kept)
        if outcome != _kernel.MORE:
            assert carry == b"", f"carry {carry!r} with outcome {outcome} from {where}"
            return numbers, OUTCOMES[outcome], index + 1
        assert kept + carry == carried + data, f"kept {kept!r}, carry {carry!r} from {where}"
        carried = carry
    return numbers, Outcome.MORE, len(buffers)


def check_frame(
    kernel: Kernel,
    buffers: list[bytes],
    expected: tuple[list[int], Outcome, int | None] | None = None,
) -> None:
    """Check the kernel's framing of ``buffers`` against the reference for their stream.

    Args:
        kernel: The kernel under test.
        buffers: The receive buffers, in order.
        expected: ``reference()`` of the joined buffers, when the caller has it already.
    """
    stream = b"".join(buffers)
    expected_numbers, expected_outcome, decided_at = expected or reference(stream)
    numbers, outcome, used = frame_buffers(kernel, buffers)
    assert (numbers, outcome) == (expected_numbers, expected_outcome), (
        f"kernel: {outcome} after {numbers}; reference: {expected_outcome} after "
        f"{expected_numbers}; buffers {buffers!r}"
    )
    if decided_at is None:
        assert used == len(buffers)
    else:
        # The kernel decides in the buffer holding the deciding byte, not later.
        decided_in = sum(len(buffer) for buffer in buffers[:used])
        assert decided_in - len(buffers[used - 1]) <= decided_at < decided_in, (
            f"decided at byte {decided_at}, but the kernel stopped after buffer {used} of "
            f"{buffers!r}"
        )


@given(streams, cuts)
def test_frame_matches_the_reference_for_any_stream_cut_anywhere(
    kernel: Kernel, stream: bytes, offsets: list[int]
) -> None:
    check_frame(kernel, cut(stream, offsets)[0])


@given(
    st.lists(st.one_of(st.sampled_from([*NEAR_MISSES, b"terminate\n"]), st.binary(max_size=12))),
    st.lists(st.integers(0, 12), max_size=30),
)
def test_frame_matches_the_reference_for_short_buffers_of_any_bytes(
    kernel: Kernel, pieces: list[bytes], sizes: list[int]
) -> None:
    # Buffers of 0 to 12 bytes: most complete a carried line, or carry one on.
    stream = b"".join(pieces)
    buffers: list[bytes] = []
    offset = 0
    for size in sizes:
        buffers.append(stream[offset : offset + size])
        offset += size
    buffers.append(stream[offset:])
    check_frame(kernel, buffers)


BASES: Final = (b"123456789\n", b"terminate\n")
BEFORE: Final = lines_of([314_159_265, 0])
AFTER: Final = line(999_999_999)


@pytest.mark.parametrize("position", range(LINE))
def test_every_byte_value_at_every_position_of_a_line(kernel: Kernel, position: int) -> None:
    for base in BASES:
        for value in range(256):
            changed = base[:position] + bytes([value]) + base[position + 1 :]
            upto = changed[: position + 1]
            # Alone, and cut just after the changed byte: rejected at once or waiting.
            check_frame(kernel, [changed])
            check_frame(kernel, [upto])
            # After valid lines (which are kept), followed by a valid line.
            check_frame(kernel, [BEFORE + changed + AFTER])
            check_frame(kernel, [BEFORE + upto])
            # Completing a line carried from the previous buffer, with every carry length;
            # the previous buffer also holds valid lines, or nothing else.
            stream = changed + AFTER
            expected = reference(stream)
            expected_upto = reference(upto)
            expected_after = reference(BEFORE + stream)
            for held in range(1, LINE):
                check_frame(kernel, [stream[:held], stream[held:]], expected)
                check_frame(kernel, [BEFORE + stream[:held], stream[held:]], expected_after)
                if held <= position:
                    # The completion ends at the changed byte: it is shorter than a line.
                    check_frame(kernel, [upto[:held], upto[held:]], expected_upto)
                    check_frame(
                        kernel, [stream[:held], upto[held:], stream[position + 1 :]], expected
                    )


@pytest.mark.parametrize("position", [0, 1, *AROUND_CHUNK], ids=str)
@pytest.mark.parametrize("held", [0, 4])
@pytest.mark.parametrize("deciding", [b"terminate\n", b"12345678\n\n", b"1234x6789\n"])
def test_frame_a_deciding_line_at_and_around_where_chunks_meet(
    kernel: Kernel, position: int, held: int, deciding: bytes
) -> None:
    # Many lines in one buffer, after a line carried over (which shifts every chunk), then
    # the line that decides: every line before it kept, none after.
    before = lines_of(range(1_000, 1_000 + position))
    stream = line(7) + before + deciding + lines_of(range(5))
    check_frame(kernel, [stream[:held], stream[held:]])


@pytest.mark.parametrize("carried", [b"1234567890", b"12345678901", b"0" * 20, b"terminate\n"])
@pytest.mark.parametrize("data", [b"", b"5", b"123456789\n"])
def test_a_carried_line_of_ten_bytes_or_more_is_refused(
    kernel: Kernel, carried: bytes, data: bytes
) -> None:
    with pytest.raises(ValueError, match="carried"):
        kernel.frame(carried, data)


@pytest.mark.parametrize("partial", [b"123456789", b"terminate", b"000000000"])
def test_the_carry_holds_at_most_nine_bytes(kernel: Kernel, partial: bytes) -> None:
    # Nine bytes carried, from one buffer or across several, and more bytes that can't fit.
    assert kernel.frame(b"", partial) == (None, 0, 0, _kernel.MORE, partial)
    assert kernel.frame(partial[:4], partial[4:]) == (None, 0, 0, _kernel.MORE, partial)
    assert kernel.frame(partial, b"") == (None, 0, 0, _kernel.MORE, partial)
    assert kernel.frame(b"", line(7) + partial) == (None, 0, 10, _kernel.MORE, partial)
    head, _, _, outcome, carry = kernel.frame(partial, b"x")
    assert (head, outcome, carry) == (None, _kernel.INVALID, b"")
    assert kernel.frame(b"", partial + b"x") == (None, 0, 0, _kernel.INVALID, b"")


def test_a_carried_line_completed_is_the_head_and_the_rest_follows(kernel: Kernel) -> None:
    assert kernel.frame(b"1234", b"56789\n000000001\n00") == (
        b"123456789\n",
        6,
        16,
        _kernel.MORE,
        b"00",
    )
    assert kernel.frame(b"termi", b"nate\n000000001\n") == (None, 0, 0, _kernel.TERMINATE, b"")
    assert kernel.frame(b"1234", b"56789\nterminate\n") == (
        b"123456789\n",
        6,
        6,
        _kernel.TERMINATE,
        b"",
    )


# ---------------------------------------------------------------------------------------------
# select_new and unmark


def marked_bytes(bits: mmap.mmap) -> list[int]:
    """Return the offsets of (up to 16 of) the 8-byte words of the bitmap that are not zero."""
    words = np.frombuffer(bits, dtype=np.uint64)
    try:
        return [8 * int(index) for index in np.flatnonzero(words)[:16]]
    finally:
        del words  # release the mmap's buffer, so that it can be closed


@pytest.fixture(scope="module")
def bitmap() -> Iterator[mmap.mmap]:
    """One zeroed bitmap for the module: each test clears the bytes it touched."""
    bits = mmap.mmap(-1, _kernel.BITMAP_BYTES)
    yield bits
    left = marked_bytes(bits)
    bits.close()
    assert left == [], "the module's tests left bits set in these words"


@pytest.fixture
def clean_bitmap(bitmap: mmap.mmap) -> Iterator[mmap.mmap]:
    """The module's bitmap, checked (all of it) to be all zero again after the test."""
    yield bitmap
    left = marked_bytes(bitmap)
    if left:
        bitmap[:] = bytes(len(bitmap))
    assert left == [], "the test left bits set in these words"


def clear(bits: mmap.mmap, numbers: Iterable[int]) -> None:
    """Zero the bitmap bytes that hold these numbers' bits."""
    for number in numbers:
        bits[number >> 3] = 0


def bits_of(bits: mmap.mmap, numbers: Iterable[int]) -> dict[int, int]:
    """Return the bitmap bytes that hold these numbers' bits, by offset."""
    return {number >> 3: bits[number >> 3] for number in numbers}


def expected_bits(marked: set[int], numbers: Iterable[int]) -> dict[int, int]:
    """Return what the bitmap bytes holding these numbers are when exactly ``marked`` are set."""
    expected = {number >> 3: 0 for number in numbers}
    for number in marked:
        if number >> 3 in expected:
            expected[number >> 3] |= 1 << (number & 7)
    return expected


def first_sightings(seen: set[int], numbers: Iterable[int]) -> list[int]:
    """The set model of ``select_new``: the numbers not in ``seen``, in order, now added."""
    new: list[int] = []
    for number in numbers:
        if number not in seen:
            seen.add(number)
            new.append(number)
    return new


def check_select_new(
    kernel: Kernel, bits: mmap.mmap, seen: set[int], numbers: list[int], at: int = 0, slack: int = 0
) -> memoryview:
    """Call ``select_new`` on the lines of ``numbers`` and check it against the set ``seen``.

    Checks the bytes of ``out`` (first sightings in arrival order from ``at``; nothing changed
    before ``at`` or past the room the lines need, whatever the kernel left in between as
    scratch), the end offset and the duplicate count. ``seen`` is updated.

    Returns:
        The first sightings copied out: ``out[at:end]``.
    """
    lines = lines_of(numbers)
    out = bytearray([FILL]) * (at + len(lines) + slack)
    end, duplicates = kernel.select_new(bits, lines, out, at)
    new = first_sightings(seen, numbers)
    assert (end, duplicates) == (at + LINE * len(new), len(numbers) - len(new))
    room_end = at + len(lines)
    assert out[:end] == bytes([FILL]) * at + lines_of(new)
    assert out[room_end:] == bytes([FILL]) * slack
    return memoryview(out)[at:end]


# Numbers from small ranges at both ends of the space (repeats are common, and neighbours share
# bitmap bytes), 0 and 999999999, and some from anywhere.
some_numbers = st.one_of(
    st.integers(0, 40),
    st.integers(999_999_960, 999_999_999),
    st.sampled_from([0, 999_999_999]),
    st.integers(0, 999_999_999),
)


def with_a_run(parts: tuple[list[int], int, int, list[int]]) -> list[int]:
    """Numbers, then a run of consecutive ones, then more, then the first ones again."""
    head, start, length, tail = parts
    return head + list(range(start, start + length)) + tail + head


runs = st.tuples(
    st.lists(some_numbers, max_size=20),
    st.one_of(st.just(0), st.integers(0, _kernel.NUMBER_SPACE - 3 * AHEAD)),
    st.integers(0, 3 * AHEAD),
    st.lists(some_numbers, max_size=20),
).map(with_a_run)
"""Buffers longer than the prefetch distance, with many new numbers in order."""
batches = st.lists(
    st.one_of(st.lists(some_numbers, max_size=3 * AHEAD), runs), min_size=1, max_size=4
)


@settings(deadline=None)
@given(batches, st.integers(0, 25), st.integers(0, 15))
def test_select_new_matches_a_set_over_several_buffers(
    kernel: Kernel, bitmap: mmap.mmap, numbers_by_buffer: list[list[int]], at: int, slack: int
) -> None:
    everything = [number for numbers in numbers_by_buffer for number in numbers]
    seen: set[int] = set()
    try:
        for numbers in numbers_by_buffer:
            check_select_new(kernel, bitmap, seen, numbers, at, slack)
            assert bits_of(bitmap, everything) == expected_bits(seen, everything)
    finally:
        clear(bitmap, everything)


@settings(deadline=None)
@given(batches, st.integers(0, 25))
def test_select_new_in_place_compacts_the_first_sightings_at_the_front(
    kernel: Kernel, bitmap: mmap.mmap, numbers_by_buffer: list[list[int]], lead: int
) -> None:
    # The writer passes a batch's lines as their own out: first sightings move to the front
    # of the lines, in order, while the lines after them are still being read. ``lead``
    # bytes before the lines make the view start inside the buffer, as the server's do.
    everything = [number for numbers in numbers_by_buffer for number in numbers]
    seen: set[int] = set()
    try:
        for numbers in numbers_by_buffer:
            buffer = bytearray([FILL]) * lead + bytearray(lines_of(numbers)) + bytes([FILL])
            lines = memoryview(buffer)[lead : lead + LINE * len(numbers)]
            end, duplicates = kernel.select_new(bitmap, lines, lines, 0)
            new = first_sightings(seen, numbers)
            assert (end, duplicates) == (LINE * len(new), len(numbers) - len(new))
            assert bytes(lines[:end]) == lines_of(new)
            assert buffer[:lead] + buffer[-1:] == bytes([FILL]) * (lead + 1)
            assert bits_of(bitmap, everything) == expected_bits(seen, everything)
    finally:
        clear(bitmap, everything)


@settings(deadline=None)
@given(st.lists(some_numbers, max_size=30), batches, st.integers(0, 25))
def test_unmark_restores_the_bitmap_exactly(
    kernel: Kernel,
    bitmap: mmap.mmap,
    before: list[int],
    numbers_by_buffer: list[list[int]],
    at: int,
) -> None:
    everything = before + [number for numbers in numbers_by_buffer for number in numbers]
    seen: set[int] = set()
    try:
        check_select_new(kernel, bitmap, seen, before)
        for numbers in numbers_by_buffer:
            marked_before = bits_of(bitmap, everything)
            kernel.unmark(bitmap, check_select_new(kernel, bitmap, set(seen), numbers, at))
            assert bits_of(bitmap, everything) == marked_before == expected_bits(seen, everything)
    finally:
        clear(bitmap, everything)


def test_the_ends_of_the_range_and_their_neighbours(
    kernel: Kernel, clean_bitmap: mmap.mmap
) -> None:
    ends = [0, 999_999_999, 1, 999_999_998, 7, 8, 999_999_992, 999_999_991]
    seen: set[int] = set()
    try:
        check_select_new(kernel, clean_bitmap, seen, [0, 999_999_999, 0, 999_999_999])
        check_select_new(kernel, clean_bitmap, seen, ends + ends)
        assert clean_bitmap[0] == 0b1000_0011  # 7, 1 and 0
        assert clean_bitmap[1] == 0b0000_0001  # 8
        assert clean_bitmap[-1] == 0b1100_0001  # 999999999, 999999998 and 999999992
        assert clean_bitmap[-2] == 0b1000_0000  # 999999991
    finally:
        clear(clean_bitmap, ends)


def spread(count: int) -> list[int]:
    """``count`` distinct numbers, far apart (each in its own bitmap page, mostly)."""
    return [(index * 387_420_489 + 12_345) % _kernel.NUMBER_SPACE for index in range(count)]


COUNTS: Final = (1, 2, AHEAD - 1, AHEAD, AHEAD + 1, 2 * AHEAD - 1, 2 * AHEAD, 2 * AHEAD + 1, 1000)


@pytest.mark.parametrize("count", COUNTS)
def test_more_and_fewer_lines_than_the_prefetch_distance(
    kernel: Kernel, clean_bitmap: mmap.mmap, count: int
) -> None:
    generator = random.Random(count)
    pool = spread(count // 3 + 1) + list(range(count // 4 + 1))
    repeated = [generator.choice(pool) for _ in range(count)]
    distinct = spread(count)
    seen: set[int] = set()
    try:
        # Distinct numbers: each must come out in order, from the ring of parsed numbers.
        check_select_new(kernel, clean_bitmap, seen, distinct, at=3)
        # Repeats at every distance, inside the buffer and of the buffer before.
        check_select_new(kernel, clean_bitmap, seen, repeated, at=0, slack=7)
        check_select_new(kernel, clean_bitmap, seen, repeated[::-1], at=11)
        everything = distinct + repeated
        assert bits_of(clean_bitmap, everything) == expected_bits(seen, everything)
    finally:
        clear(clean_bitmap, distinct + repeated)


def test_select_new_a_buffer_as_the_server_receives_it(
    kernel: Kernel, clean_bitmap: mmap.mmap
) -> None:
    # A whole receive buffer of lines (the pure-Python kernel takes it a part at a time), in
    # place as the writer passes it: repeats across its whole length, and of a buffer before.
    count = RECEIVE_SIZE // LINE
    generator = random.Random(count)
    earlier = spread(count // 10)
    numbers = [generator.choice(earlier) if index % 4 == 0 else index for index in range(count)]
    generator.shuffle(numbers)
    seen: set[int] = set()
    try:
        check_select_new(kernel, clean_bitmap, seen, earlier)
        lines = memoryview(bytearray(lines_of(numbers)))
        end, duplicates = kernel.select_new(clean_bitmap, lines, lines, 0)
        new = first_sightings(seen, numbers)
        assert (end, duplicates) == (LINE * len(new), count - len(new))
        assert bytes(lines[:end]) == lines_of(new)
        assert bits_of(clean_bitmap, numbers) == expected_bits(seen, numbers)
    finally:
        clear(clean_bitmap, earlier + numbers)


@pytest.mark.parametrize("count", [1, AHEAD, 1000])
@pytest.mark.parametrize("at", [0, 13])
def test_an_output_buffer_exactly_full(
    kernel: Kernel, clean_bitmap: mmap.mmap, count: int, at: int
) -> None:
    numbers = spread(count)
    lines = lines_of(numbers)
    out = bytearray(b"x" * at) + bytearray(len(lines))
    try:
        assert kernel.select_new(clean_bitmap, lines, out, at) == (len(out), 0)
        assert out == b"x" * at + lines
        assert bits_of(clean_bitmap, numbers) == expected_bits(set(numbers), numbers)
    finally:
        clear(clean_bitmap, numbers)


@pytest.mark.parametrize("count", [1, AHEAD, 1000])
@pytest.mark.parametrize("at", [0, 13])
def test_an_output_buffer_one_byte_short_is_refused_and_nothing_is_marked(
    kernel: Kernel, clean_bitmap: mmap.mmap, count: int, at: int
) -> None:
    lines = lines_of(spread(count))
    out = bytearray(at + len(lines) - 1)
    with pytest.raises(ValueError, match="room"):
        kernel.select_new(clean_bitmap, lines, out, at)
    assert out == bytes(len(out))


def test_a_negative_offset_is_refused(kernel: Kernel, clean_bitmap: mmap.mmap) -> None:
    with pytest.raises(ValueError, match="room"):
        kernel.select_new(clean_bitmap, line(5), bytearray(20), -1)


@pytest.mark.parametrize("at", [0, 4, 10])
def test_no_lines_select_nothing(kernel: Kernel, clean_bitmap: mmap.mmap, at: int) -> None:
    out = bytearray(b"y" * 10)
    assert kernel.select_new(clean_bitmap, b"", out, at) == (at, 0)
    assert out == b"y" * 10
    kernel.unmark(clean_bitmap, b"")


@pytest.mark.parametrize("size", [1, 9, 11, 19, 1001])
def test_lines_that_are_not_whole_lines_are_refused(
    kernel: Kernel, clean_bitmap: mmap.mmap, size: int
) -> None:
    lines = (line(123) * 101)[:size]
    with pytest.raises(ValueError, match="whole"):
        kernel.select_new(clean_bitmap, lines, bytearray(2000), 0)
    with pytest.raises(ValueError, match="whole"):
        kernel.unmark(clean_bitmap, lines)


@pytest.mark.parametrize("size", [0, 1, 1000, _kernel.BITMAP_BYTES - 1])
def test_a_bitmap_too_small_is_refused(kernel: Kernel, size: int) -> None:
    small = mmap.mmap(-1, max(size, 1))
    try:
        view = memoryview(small)[:size]
        with pytest.raises(ValueError, match="bitmap"):
            kernel.select_new(view, line(0), bytearray(10), 0)
        with pytest.raises(ValueError, match="bitmap"):
            kernel.unmark(view, line(0))
        view.release()
        assert small.find(b"\x01") == -1
    finally:
        small.close()


# Lines that are not numbers and that the kernel's parse puts outside 0..999999999. (Not every
# non-number line does: see the report on b"abcdefghi\n".)
OUT_OF_RANGE: Final = (
    b"\xff" * 9 + b"\n",
    b":::::::::\n",
    b"/////////\n",
    b"99999999:\n",
    # Its parse is 0 * 10 + ("/" - "0"): -1, which is 4,294,967,295 as the 32 bits it is.
    b"00000000/\n",
)


@pytest.mark.parametrize("bad", OUT_OF_RANGE)
@pytest.mark.parametrize(
    "position", [0, 1, AHEAD - 1, AHEAD, AHEAD + 1, 2 * AHEAD + 5, 999, *AROUND_CHUNK], ids=str
)
def test_a_line_out_of_range_is_refused_and_the_bitmap_left_as_it_was(
    kernel: Kernel, clean_bitmap: mmap.mmap, bad: bytes, position: int
) -> None:
    # Lines before the bad one: new numbers (some repeated), and one seen before, which must
    # stay marked; lines after it too.
    old = 77
    before = [(index * 7 + 3) % 300 for index in range(position)] + [old]
    after = list(range(500, 520))
    everything = [*before, *after]
    try:
        kernel.select_new(clean_bitmap, line(old), bytearray(10), 0)
        marked_before = bits_of(clean_bitmap, everything)
        lines = lines_of(before[:position]) + bad + lines_of(before[position:] + after)
        with pytest.raises(ValueError, match="nine digits"):
            kernel.select_new(clean_bitmap, lines, bytearray(len(lines)), 0)
        assert bits_of(clean_bitmap, everything) == marked_before
        assert marked_before == expected_bits({old}, everything)
    finally:
        clear(clean_bitmap, everything)


@pytest.mark.parametrize("shift", [1, 9, 10, 25])
def test_an_out_that_starts_inside_the_lines_is_refused(
    kernel: Kernel, clean_bitmap: mmap.mmap, shift: int
) -> None:
    # Copying a line ahead of where it is read would overwrite lines not read yet; only the
    # lines themselves (compaction in place) or a separate buffer may be the out.
    buffer = bytearray(lines_of([1, 2, 3])) + bytearray(shift)
    lines = memoryview(buffer)[:30]
    with pytest.raises(ValueError, match="overlaps"):
        kernel.select_new(clean_bitmap, lines, buffer, shift)


# ---------------------------------------------------------------------------------------------
# Buffers of the wrong kind, refused alike by both kernels

A_LINE: Final = line(5)
MISUSES: Final[dict[str, tuple[type[Exception], Callable[[Kernel, mmap.mmap], object]]]] = {
    "carried None": (TypeError, lambda kernel, bits: kernel.frame(None, A_LINE)),  # type: ignore[arg-type]
    "data a str": (TypeError, lambda kernel, bits: kernel.frame(b"", "123456789\n")),  # type: ignore[arg-type]
    "data in 2 dimensions": (
        ValueError,
        lambda kernel, bits: kernel.frame(b"", memoryview(bytearray(20)).cast("B", (2, 10))),
    ),
    "data of signed bytes": (
        ValueError,
        lambda kernel, bits: kernel.frame(b"", memoryview(bytearray(A_LINE)).cast("b")),
    ),
    "data of 16-bit items": (
        ValueError,
        lambda kernel, bits: kernel.frame(b"", memoryview(bytearray(A_LINE)).cast("H")),
    ),
    "data not contiguous": (
        BufferError,
        lambda kernel, bits: kernel.frame(b"", memoryview(bytearray(A_LINE * 2))[::2]),
    ),
    "out read-only": (
        BufferError,
        lambda kernel, bits: kernel.select_new(bits, A_LINE, bytes(10), 0),
    ),
    "lines None": (TypeError, lambda kernel, bits: kernel.unmark(bits, None)),  # type: ignore[arg-type]
    "bitmap read-only (select_new)": (
        BufferError,
        lambda kernel, bits: kernel.select_new(bytes(bits), A_LINE, bytearray(10), 0),
    ),
    "bitmap read-only (mark_new)": (
        BufferError,
        lambda kernel, bits: kernel.mark_new(memoryview(bits).toreadonly(), A_LINE),
    ),
    # Every buffer is taken before any size is checked.
    "carried too long, data a str": (
        TypeError,
        lambda kernel, bits: kernel.frame(A_LINE, "123456789\n"),  # type: ignore[arg-type]
    ),
    "bitmap short, out read-only": (
        BufferError,
        lambda kernel, bits: kernel.select_new(bytearray(100), b"", b"", 0),
    ),
    "lines not whole, out read-only": (
        BufferError,
        lambda kernel, bits: kernel.select_new(bits, b"1" * 15, bytes(20), 0),
    ),
    "at not an integer": (
        TypeError,
        lambda kernel, bits: kernel.select_new(bits, b"", bytearray(10), 1.5),  # type: ignore[arg-type]
    ),
    "at beyond 64 bits": (
        OverflowError,
        lambda kernel, bits: kernel.select_new(bits, A_LINE, bytearray(10), 1 << 70),
    ),
}


@pytest.mark.parametrize("misuse", MISUSES)
def test_buffers_of_the_wrong_kind_are_refused(
    kernel: Kernel, clean_bitmap: mmap.mmap, misuse: str
) -> None:
    error, call = MISUSES[misuse]
    with pytest.raises(error):
        call(kernel, clean_bitmap)


def test_buffers_of_chars_and_bools_are_bytes(kernel: Kernel) -> None:
    # A ctypes array of char is a buffer of format "<c"; both kernels read it as bytes, and
    # a buffer of format "?" too.
    data = (ctypes.c_char * 25).from_buffer_copy(lines_of([1, 2]) + b"termi")
    assert kernel.frame(memoryview(b"").cast("c"), data) == (None, 0, 20, _kernel.MORE, b"termi")
    as_bools = memoryview(bytearray(lines_of([1, 2]) + b"termi")).cast("?")
    assert kernel.frame(b"", as_bools) == (None, 0, 20, _kernel.MORE, b"termi")


def test_an_out_over_the_lines_through_another_object_is_refused(
    kernel: Kernel, clean_bitmap: mmap.mmap
) -> None:
    # The same memory, exported by a ctypes array over the buffer: out starts 10 bytes in.
    numbers = spread(3 * 512)
    buffer = bytearray(lines_of(numbers)) + bytearray(10)
    lines = (ctypes.c_char * (len(buffer) - 10)).from_buffer(buffer)
    with pytest.raises(ValueError, match="overlaps"):
        kernel.select_new(clean_bitmap, lines, buffer, 10)
    del lines


def test_an_out_over_read_only_lines_is_refused_or_safe(
    kernel: Kernel, clean_bitmap: mmap.mmap
) -> None:
    # Lines read-only, out the writable buffer under them, starting 10 bytes in: the compiled
    # kernel sees the overlap and refuses; the pure-Python one cannot see it, and reads every
    # line before it writes. Either way nothing is corrupted.
    numbers = spread(3 * 512)
    buffer = bytearray(lines_of(numbers)) + bytearray(10)
    lines = memoryview(buffer)[:-10].toreadonly()
    try:
        if kernel is not _kernel_py:
            with pytest.raises(ValueError, match="overlaps"):
                kernel.select_new(clean_bitmap, lines, buffer, 10)
            assert marked_bytes(clean_bitmap) == []
        else:
            end, duplicates = kernel.select_new(clean_bitmap, lines, buffer, 10)
            assert (end, duplicates) == (10 + len(lines), 0)
            assert buffer[10:] == lines_of(numbers)
    finally:
        lines.release()
        clear(clean_bitmap, numbers)


# ---------------------------------------------------------------------------------------------
# mark_new


STOPS: Final = {
    _kernel.ALL_MARKED: "ALL_MARKED",
    _kernel.NOT_A_NUMBER: "NOT_A_NUMBER",
    _kernel.SEEN_BEFORE: "SEEN_BEFORE",
}
NUMBER_LINE: Final = re.compile(rb"[0-9]{9}\n")
NOT_NUMBERS: Final = (
    b"terminate\n",
    b"123456789\r",
    b"12345678\n\n",
    b"\n123456789",
    b"1234567890",
    b" 12345678\n",
    b"-12345678\n",
    b"12345678a\n",
    b"123456789\x00",
    bytes(10),
    # Not numbers, but the kernel's parse puts it inside 0..999999999: parsed before it is
    # checked, it would mark a number.
    b"abcdefghi\n",
    *OUT_OF_RANGE,
)
"""10-byte lines that are not nine digits and a newline."""


def mark_model(marked: set[int], lines: bytes) -> tuple[int, int]:
    """The set model of ``mark_new``: add each line's number, up to the first line a log can't hold.

    Returns:
        ``(count, stop)`` as ``mark_new`` returns them; ``marked`` is updated.
    """
    count = len(lines) // LINE
    for index in range(count):
        piece = lines[index * LINE : (index + 1) * LINE]
        if not NUMBER_LINE.fullmatch(piece):
            return index, _kernel.NOT_A_NUMBER
        number = int(piece[:9])
        if number in marked:
            return index, _kernel.SEEN_BEFORE
        marked.add(number)
    return count, _kernel.ALL_MARKED


def numbers_of_lines(lines: bytes) -> list[int]:
    """The numbers of the number lines among ``lines`` (wherever they are), in order."""
    pieces = (lines[index : index + LINE] for index in range(0, len(lines), LINE))
    return [int(piece[:9]) for piece in pieces if NUMBER_LINE.fullmatch(piece)]


def check_mark_new(
    kernel: Kernel, bits: mmap.mmap, marked: set[int], lines: bytes
) -> tuple[int, int]:
    """Call ``mark_new`` on ``lines`` and check it against the set ``marked``, which is updated.

    Checks ``(count, stop)`` and the bits of every number of ``lines`` and of ``marked``: set
    exactly for the numbers marked before and those of the lines before the stop.

    Returns:
        ``(count, stop)``.
    """
    touched = [*marked, *numbers_of_lines(lines)]
    result = kernel.mark_new(bits, lines)
    expected = mark_model(marked, lines)
    count, stop = expected
    assert result == expected, (
        f"kernel: {result[0]} lines, {STOPS.get(result[1], result[1])}; model: {count} lines, "
        f"{STOPS[stop]}; at the stop: {lines[count * LINE : (count + 1) * LINE]!r}"
    )
    assert bits_of(bits, touched) == expected_bits(marked, touched)
    return result


@st.composite
def logs(draw: st.DrawFn) -> bytes:
    """Lines of a log: mostly distinct numbers, and some repeats and lines not numbers.

    Each repeat and line that is not a number goes in at any position, so some come before the
    prefetch distance, some inside it and some beyond.
    """
    numbers = draw(st.one_of(st.lists(some_numbers, max_size=3 * AHEAD, unique=True), runs))
    pieces = [line(number) for number in dict.fromkeys(numbers)]
    changes = draw(st.lists(st.booleans(), max_size=3))
    for repeat in changes:
        if repeat and pieces:
            piece = draw(st.sampled_from(pieces))
        elif repeat:
            continue
        else:
            piece = draw(
                st.one_of(
                    st.sampled_from(NOT_NUMBERS),
                    st.binary(min_size=LINE, max_size=LINE),
                    st.tuples(some_numbers, st.integers(0, LINE - 1), st.integers(0, 255)).map(
                        lambda change: changed_line(*change)
                    ),
                )
            )
        pieces.insert(draw(st.integers(0, len(pieces))), piece)
    return b"".join(pieces)


def changed_line(number: int, position: int, value: int) -> bytes:
    """The line of ``number`` with the byte at ``position`` changed to ``value``."""
    base = line(number)
    return base[:position] + bytes([value]) + base[position + 1 :]


@settings(deadline=None)
@given(st.lists(some_numbers, max_size=5), st.lists(logs(), min_size=1, max_size=3))
def test_mark_new_matches_a_set(
    kernel: Kernel, bitmap: mmap.mmap, before: list[int], chunks: list[bytes]
) -> None:
    # Numbers marked before, then chunks marked in turn (whatever the last one's stop).
    marked = set(before)
    touched = [*before, *(number for chunk in chunks for number in numbers_of_lines(chunk))]
    try:
        for number in before:
            bitmap[number >> 3] |= 1 << (number & 7)
        for chunk in chunks:
            check_mark_new(kernel, bitmap, marked, chunk)
    finally:
        clear(bitmap, touched)
    # Nothing else was marked: not a line after a stop, nor one that is not a number.
    assert marked_bytes(bitmap) == []


# Positions around the prefetch distance: the line checked as the look-ahead meets it, and
# those a line before and after, and well beyond.
AROUND_AHEAD: Final = (AHEAD - 1, AHEAD, AHEAD + 1, 2 * AHEAD + 5)


@pytest.mark.parametrize("position", range(LINE))
def test_mark_new_every_byte_value_at_every_position_of_a_line(
    kernel: Kernel, clean_bitmap: mmap.mmap, position: int
) -> None:
    # Distinct numbers before and after, none of the form 1x3456789 that a changed digit makes.
    before = [number * 2 for number in range(2 * AHEAD + 5)]
    after = list(range(500_000_000, 500_000_000 + 2 * AHEAD))
    for value in range(256):
        changed = changed_line(123_456_789, position, value)
        for at in (0, 2, *AROUND_AHEAD):
            lines = lines_of(before[:at]) + changed + lines_of(after)
            numbers = numbers_of_lines(lines)
            try:
                count, stop = check_mark_new(kernel, clean_bitmap, set(), lines)
                assert (stop == _kernel.NOT_A_NUMBER) == (not NUMBER_LINE.fullmatch(changed))
                assert count == (at if stop == _kernel.NOT_A_NUMBER else len(numbers))
            finally:
                clear(clean_bitmap, numbers)
        # Alone.
        try:
            check_mark_new(kernel, clean_bitmap, set(), changed)
        finally:
            clear(clean_bitmap, numbers_of_lines(changed))


REPEATS: Final = (
    (0, 1),
    (0, 2),
    (0, AHEAD - 1),
    (0, AHEAD),
    (0, AHEAD + 1),
    (1, AHEAD + 1),
    (AHEAD - 2, AHEAD - 1),
    (AHEAD - 1, AHEAD),
    (AHEAD, AHEAD + 1),
    (AHEAD + 1, AHEAD + 2),
    (AHEAD - 1, 2 * AHEAD - 1),
    (AHEAD, 2 * AHEAD),
    (AHEAD + 1, 2 * AHEAD + 1),
    (5, 2 * AHEAD + 5),
    (700, 999),
)
"""(first, second): where a number is, and where it is repeated, in the same call."""


@pytest.mark.parametrize(("first", "second"), REPEATS, ids=str)
def test_mark_new_stops_at_a_repeat_within_the_call(
    kernel: Kernel, clean_bitmap: mmap.mmap, first: int, second: int
) -> None:
    # Distinct numbers, far apart, with the first one's number again at ``second``; lines after
    # the repeat (beyond the prefetch distance) stay unmarked, and the repeat's bit stays set.
    numbers = spread(second + 2 * AHEAD)
    numbers[second] = numbers[first]
    try:
        assert check_mark_new(kernel, clean_bitmap, set(), lines_of(numbers)) == (
            second,
            _kernel.SEEN_BEFORE,
        )
    finally:
        clear(clean_bitmap, numbers)


@pytest.mark.parametrize("position", [0, 1, 2, *AROUND_AHEAD, 999], ids=str)
@pytest.mark.parametrize("lines_after", [0, 1, 2 * AHEAD])
def test_mark_new_stops_at_a_number_marked_before_the_call(
    kernel: Kernel, clean_bitmap: mmap.mmap, position: int, lines_after: int
) -> None:
    numbers = spread(position + 1 + lines_after)
    old = numbers[position]
    try:
        clean_bitmap[old >> 3] |= 1 << (old & 7)
        assert check_mark_new(kernel, clean_bitmap, {old}, lines_of(numbers)) == (
            position,
            _kernel.SEEN_BEFORE,
        )
    finally:
        clear(clean_bitmap, numbers)


@pytest.mark.parametrize("bad", NOT_NUMBERS)
@pytest.mark.parametrize("position", [0, 1, *AROUND_AHEAD, 999, *AROUND_CHUNK], ids=str)
def test_mark_new_stops_at_a_line_that_is_not_a_number(
    kernel: Kernel, clean_bitmap: mmap.mmap, bad: bytes, position: int
) -> None:
    # The lines before it are marked, in order; none after it, valid ones included.
    numbers = spread(position + 2 * AHEAD)
    lines = lines_of(numbers[:position]) + bad + lines_of(numbers[position:])
    try:
        assert check_mark_new(kernel, clean_bitmap, set(), lines) == (
            position,
            _kernel.NOT_A_NUMBER,
        )
    finally:
        clear(clean_bitmap, numbers)


@pytest.mark.parametrize("bad", [b"abcdefghi\n", b"\xff" * 9 + b"\n"])
@pytest.mark.parametrize(
    ("repeat", "invalid"),
    [(1, 2), (AHEAD - 1, AHEAD), (1, AHEAD), (2, AHEAD + 1), (AHEAD, AHEAD + 1), (3, 2 * AHEAD)],
    ids=str,
)
def test_mark_new_a_repeat_before_a_line_not_a_number_stops_first(
    kernel: Kernel, clean_bitmap: mmap.mmap, bad: bytes, repeat: int, invalid: int
) -> None:
    # The look-ahead meets the line that is not a number while the repeat before it is still
    # to be tested: marking stops at the repeat. The other way round, at the line.
    numbers = spread(invalid + AHEAD)
    numbers[repeat] = numbers[0]
    lines = lines_of(numbers[:invalid]) + bad + lines_of(numbers[invalid:])
    swapped = lines_of(numbers[:repeat]) + bad + lines_of(numbers[repeat:])
    try:
        assert check_mark_new(kernel, clean_bitmap, set(), lines) == (repeat, _kernel.SEEN_BEFORE)
        clear(clean_bitmap, numbers)
        assert check_mark_new(kernel, clean_bitmap, set(), swapped) == (
            repeat,
            _kernel.NOT_A_NUMBER,
        )
    finally:
        clear(clean_bitmap, numbers)


@pytest.mark.parametrize("count", COUNTS)
def test_mark_new_marks_every_line_of_distinct_numbers(
    kernel: Kernel, clean_bitmap: mmap.mmap, count: int
) -> None:
    # Then the same lines again: the first is seen before.
    numbers = spread(count)
    lines = lines_of(numbers)
    marked: set[int] = set()
    try:
        assert check_mark_new(kernel, clean_bitmap, marked, lines) == (count, _kernel.ALL_MARKED)
        assert check_mark_new(kernel, clean_bitmap, marked, lines) == (0, _kernel.SEEN_BEFORE)
    finally:
        clear(clean_bitmap, numbers)


def test_mark_new_a_chunk_as_resume_reads_it(kernel: Kernel, clean_bitmap: mmap.mmap) -> None:
    # 1 MiB of whole lines, in order from the bitmap's start, and a last line seen before.
    numbers = list(range(0, 1_048_570 // LINE * 9, 9))
    lines = bytearray(lines_of(numbers))
    lines[-LINE:] = line(numbers[0])
    try:
        assert kernel.mark_new(clean_bitmap, memoryview(lines)) == (
            len(numbers) - 1,
            _kernel.SEEN_BEFORE,
        )
        assert bits_of(clean_bitmap, numbers) == expected_bits(set(numbers[:-1]), numbers)
    finally:
        clear(clean_bitmap, numbers)


def test_mark_new_the_ends_of_the_range_and_their_neighbours(
    kernel: Kernel, clean_bitmap: mmap.mmap
) -> None:
    ends = [0, 999_999_999, 1, 999_999_998, 7, 8, 999_999_992, 999_999_991]
    marked: set[int] = set()
    try:
        assert check_mark_new(kernel, clean_bitmap, marked, lines_of(ends)) == (
            8,
            _kernel.ALL_MARKED,
        )
        assert clean_bitmap[0] == 0b1000_0011  # 7, 1 and 0
        assert clean_bitmap[1] == 0b0000_0001  # 8
        assert clean_bitmap[-1] == 0b1100_0001  # 999999999, 999999998 and 999999992
        assert clean_bitmap[-2] == 0b1000_0000  # 999999991
        for end in ends:
            assert check_mark_new(kernel, clean_bitmap, marked, line(end)) == (
                0,
                _kernel.SEEN_BEFORE,
            )
    finally:
        clear(clean_bitmap, ends)


def test_mark_new_no_lines_mark_nothing(kernel: Kernel, clean_bitmap: mmap.mmap) -> None:
    assert kernel.mark_new(clean_bitmap, b"") == (0, _kernel.ALL_MARKED)
    assert kernel.mark_new(clean_bitmap, memoryview(bytearray(line(5)))[:0]) == (
        0,
        _kernel.ALL_MARKED,
    )


@pytest.mark.parametrize("size", [1, 9, 11, 19, 1001])
def test_mark_new_refuses_lines_that_are_not_whole_lines(
    kernel: Kernel, clean_bitmap: mmap.mmap, size: int
) -> None:
    with pytest.raises(ValueError, match="whole"):
        kernel.mark_new(clean_bitmap, (line(123) * 101)[:size])


@pytest.mark.parametrize("size", [0, 1, 1000, _kernel.BITMAP_BYTES - 1])
def test_mark_new_refuses_a_bitmap_too_small(kernel: Kernel, size: int) -> None:
    small = mmap.mmap(-1, max(size, 1))
    try:
        view = memoryview(small)[:size]
        with pytest.raises(ValueError, match="bitmap"):
            kernel.mark_new(view, line(0))
        view.release()
        assert small.find(b"\x01") == -1
    finally:
        small.close()
