"""The dedup bitmap: pure logic, checked against a Python set."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from numlog_trio import SeenNumbers
from numlog_trio._dedup import SortedNumbers


def batch(*numbers: int) -> SortedNumbers:
    return SortedNumbers.of(np.array(numbers, dtype=np.uint32))


def test_duplicates_inside_one_batch_count_once_at_their_first_position() -> None:
    new = SeenNumbers().find_new(batch(5, 7, 5, 5, 3, 7))
    assert new.first_sightings.tolist() == [True, True, False, False, True, False]
    assert new.values.tolist() == [3, 5, 7]


def test_marked_numbers_are_duplicates_in_later_batches() -> None:
    seen = SeenNumbers()
    seen.mark(seen.find_new(batch(5, 7)))
    new = seen.find_new(batch(7, 8, 5))
    assert new.first_sightings.tolist() == [False, True, False]
    assert new.values.tolist() == [8]


def test_finding_does_not_mark() -> None:
    seen = SeenNumbers()
    seen.find_new(batch(1, 2))
    assert seen.find_new(batch(1, 2)).values.tolist() == [1, 2]


def test_new_numbers_sharing_one_bitmap_byte_are_all_marked() -> None:
    seen = SeenNumbers()
    seen.mark(seen.find_new(batch(*range(16))))
    assert not seen.find_new(batch(*range(16))).first_sightings.any()
    assert seen.find_new(batch(16, 17)).values.tolist() == [16, 17]


def test_the_ends_of_the_range() -> None:
    seen = SeenNumbers()
    seen.mark(seen.find_new(batch(0, 999_999_999)))
    assert seen.find_new(batch(0, 999_999_999, 1, 999_999_998)).values.tolist() == [
        1,
        999_999_998,
    ]


def test_an_empty_batch() -> None:
    seen = SeenNumbers()
    new = seen.find_new(batch())
    seen.mark(new)
    assert (len(new.values), len(new.first_sightings)) == (0, 0)


@given(st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=8))
def test_bitmap_matches_a_set_over_many_batches(batches: list[list[int]]) -> None:
    seen = SeenNumbers()
    reference: set[int] = set()
    for numbers in batches:
        expected = []
        for number in numbers:
            expected.append(number not in reference)
            reference.add(number)
        new = seen.find_new(batch(*numbers))
        seen.mark(new)
        assert new.first_sightings.tolist() == expected
