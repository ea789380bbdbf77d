"""The dedup bitmap: pure logic, checked against a Python set."""

from __future__ import annotations

from _reference import numbers_in
from hypothesis import given, settings
from hypothesis import strategies as st

from numlog_trio import SeenNumbers


def lines(*numbers: int) -> bytes:
    return b"".join(b"%09d\n" % number for number in numbers)


def select_new(seen: SeenNumbers, *numbers: int) -> tuple[list[int], int]:
    """Return the first sightings among ``numbers`` (in order) and the duplicate count."""
    out = bytearray(10 * len(numbers))
    end, duplicates = seen.select_new(lines(*numbers), out, 0)
    return numbers_in(out[:end]), duplicates


def test_duplicates_inside_one_batch_count_once_at_their_first_position() -> None:
    assert select_new(SeenNumbers(), 5, 7, 5, 5, 3, 7) == ([5, 7, 3], 3)


def test_selected_numbers_are_duplicates_in_later_batches() -> None:
    seen = SeenNumbers()
    select_new(seen, 5, 7)
    assert select_new(seen, 7, 8, 5) == ([8], 2)


def test_unmarking_forgets_exactly_the_lines_given() -> None:
    seen = SeenNumbers()
    select_new(seen, 1, 2, 3)
    seen.unmark(lines(2))
    assert select_new(seen, 1, 2, 3) == ([2], 2)


def test_new_numbers_sharing_one_bitmap_byte_are_all_marked() -> None:
    seen = SeenNumbers()
    assert select_new(seen, *range(16)) == (list(range(16)), 0)
    assert select_new(seen, *range(16)) == ([], 16)
    assert select_new(seen, 16, 17) == ([16, 17], 0)


def test_the_ends_of_the_range() -> None:
    seen = SeenNumbers()
    select_new(seen, 0, 999_999_999)
    assert select_new(seen, 0, 999_999_999, 1, 999_999_998) == ([1, 999_999_998], 2)


def test_an_empty_batch() -> None:
    assert select_new(SeenNumbers(), *()) == ([], 0)


def test_lines_are_copied_out_as_received_after_what_out_holds() -> None:
    seen = SeenNumbers()
    out = bytearray(b"x" * 5 + b"\0" * 30)
    end, duplicates = seen.select_new(lines(7, 7, 42), out, 5)
    assert (bytes(out[:end]), duplicates) == (b"xxxxx000000007\n000000042\n", 1)


_SHARED = SeenNumbers()  # one 125 MB bitmap for all examples; each cleans up after itself


@settings(max_examples=50)
@given(st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=8))
def test_bitmap_matches_a_set_over_many_batches(batches: list[list[int]]) -> None:
    reference: set[int] = set()
    for numbers in batches:
        expected = [n for i, n in enumerate(numbers) if n not in reference | set(numbers[:i])]
        reference.update(numbers)
        assert select_new(_SHARED, *numbers) == (expected, len(numbers) - len(expected))
    _SHARED.unmark(lines(*reference))
