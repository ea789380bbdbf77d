"""Framing and validation of client bytes: pure functions, no sockets, no clocks.

A hypothesis test checks the framer against the byte-at-a-time reference model of
``_reference.py``, which reads the spec literally: which numbers are kept, whether the
connection is closed or terminates, and at which byte that is decided, for arbitrary streams
cut at arbitrary points. The fuzz target ``fuzz/fuzz_framing.py`` makes the same check.
"""

from __future__ import annotations

import pytest
from _reference import check_framer, cuts, feed_all, numbers_of, streams
from hypothesis import given

from numlog_trio import Framed, LineFramer, Outcome


def test_numbers_in_one_buffer_keep_their_order_and_leading_zeros() -> None:
    framed = LineFramer().feed(b"314159265\n007007009\n000000000\n999999999\n")
    assert numbers_of(framed) == [314159265, 7007009, 0, 999999999]
    assert framed.outcome is Outcome.MORE
    assert [len(part) for part in framed.lines] == [40]


def test_an_empty_buffer_changes_nothing() -> None:
    framer = LineFramer()
    assert framer.feed(b"12") == Framed((), Outcome.MORE)
    framed = framer.feed(b"")
    assert framed.outcome is Outcome.MORE
    assert framer.pending == 2


@pytest.mark.parametrize(
    "line",
    [
        b"\n",
        b"12345678\n",
        b"1234567890\n",
        b"123456789\r\n",
        b"12345678\r\n",
        b" 12345678\n",
        b"+12345678\n",
        b"-12345678\n",
        b"1234a6789\n",
        b"123456789 \n",
        b"12345678\x00\n",
        "١٢٣٤٥٦٧٨٩\n".encode(),
        b"terminate\r\n",
        b"TERMINATE\n",
        b"terminate \n",
        b"terminat\n",
        b"terminatee\n",
        b"\xff\xfe\xfd",
    ],
)
def test_every_invalid_form_closes_and_keeps_the_numbers_before(line: bytes) -> None:
    framed = LineFramer().feed(b"000000001\n000000002\n" + line + b"000000003\n")
    assert framed.outcome is Outcome.INVALID
    assert numbers_of(framed) == [1, 2]


@pytest.mark.parametrize("garbage", [b"x", b"12a", b"\n", b"1234567890", b"term1", b"\r"])
def test_a_line_is_rejected_as_soon_as_it_cannot_become_valid(garbage: bytes) -> None:
    framed = LineFramer().feed(garbage)
    assert framed.outcome is Outcome.INVALID


@pytest.mark.parametrize("partial", [b"", b"1", b"12345678", b"123456789", b"t", b"terminate"])
def test_a_line_that_can_still_become_valid_waits_for_more(partial: bytes) -> None:
    framer = LineFramer()
    assert framer.feed(partial).outcome is Outcome.MORE
    assert framer.pending == len(partial)


def test_terminate_in_mid_buffer_keeps_the_numbers_before_and_nothing_after() -> None:
    framed = LineFramer().feed(b"000000001\n000000002\nterminate\n000000003\nrubbish")
    assert framed.outcome is Outcome.TERMINATE
    assert numbers_of(framed) == [1, 2]


def test_terminate_alone() -> None:
    assert LineFramer().feed(b"terminate\n") == Framed((), Outcome.TERMINATE)


STREAM = b"000000001\n123456789\nterminate\n"


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_lines_split_across_two_buffers_at_every_offset(cut: int) -> None:
    assert feed_all([STREAM[:cut], STREAM[cut:]])[:2] == ([1, 123456789], Outcome.TERMINATE)


@pytest.mark.parametrize("cut", range(1, 10))
def test_a_carried_line_joins_the_next_buffer_without_copying_it(cut: int) -> None:
    framer = LineFramer()
    framer.feed(b"000000001\n"[:cut])
    rest = b"000000001\n"[cut:] + b"000000002\n" * 3
    framed = framer.feed(rest)
    assert numbers_of(framed) == [1, 2, 2, 2]
    head, body = framed.lines
    assert bytes(head) == b"000000001\n"
    assert isinstance(body, memoryview)
    assert body.obj is rest


def test_a_line_sent_one_byte_at_a_time() -> None:
    stream = b"000000042\n" * 3 + b"terminate\n"
    numbers, outcome, used = feed_all([bytes([byte]) for byte in stream])
    assert (numbers, outcome, used) == ([42, 42, 42], Outcome.TERMINATE, len(stream))


def test_a_partial_line_at_end_of_stream_is_never_returned() -> None:
    numbers, outcome, _ = feed_all([b"000000001\n00000", b"0002"])
    assert (numbers, outcome) == ([1], Outcome.MORE)


def test_megabytes_without_a_newline_are_rejected_within_the_first_line() -> None:
    framer = LineFramer()
    framed = framer.feed(b"1" * 1_000_000)
    assert framed.outcome is Outcome.INVALID
    assert framed.lines == ()


def test_one_bad_byte_in_a_large_buffer_keeps_exactly_the_lines_before() -> None:
    lines = [f"{n:09d}\n".encode() for n in range(100_000)]
    lines[54_321] = b"00005432x\n"
    framed = LineFramer().feed(b"".join(lines))
    assert framed.outcome is Outcome.INVALID
    assert numbers_of(framed) == list(range(54_321))


# Bytes just outside the valid ranges, and ones whose shifted value crosses 128, where the
# word-at-a-time check could carry into the next byte.
BAD_BYTES = (b"/", b":", b"\n", b"0", b" ", b"\x80", b"\xb0", b"\xff")


@pytest.mark.parametrize("lead", [0, 3])
@pytest.mark.parametrize("bad", BAD_BYTES)
def test_a_bad_byte_anywhere_in_a_group_of_words_stops_at_its_line(lead: int, bad: bytes) -> None:
    # 64 lines are 640 bytes, many 40-byte groups checked a word at a time. ``lead`` bytes of
    # a line carried from a previous buffer shift the rest off the word boundary.
    numbers = [n * 12_345_678 % 1_000_000_000 for n in range(64)]
    valid = b"".join(b"%09d\n" % number for number in numbers)
    for position in range(lead, len(valid)):
        if (bad == b"\n") == (position % 10 == 9) and (bad == b"\n" or bad.isdigit()):
            continue  # the line stays valid
        stream = valid[:position] + bad + valid[position + 1 :]
        framer = LineFramer()
        kept = numbers_of(framer.feed(stream[:lead])) if lead else []
        framed = framer.feed(stream[lead:])
        kept += numbers_of(framed)
        assert (kept, framed.outcome) == (numbers[: position // 10], Outcome.INVALID), position


@given(streams, cuts)
def test_framer_matches_the_reference_for_any_stream_cut_anywhere(
    stream: bytes, offsets: list[int]
) -> None:
    check_framer(stream, offsets)
