"""The dedup bitmap and the writer: pure logic and a real file, no sockets, no clocks."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from numlog_trio import LogWriteError, LogWriter, SeenNumbers, Totals


def array(*numbers: int) -> NDArray[np.uint32]:
    return np.array(numbers, dtype=np.uint32)


def records(*numbers: int) -> NDArray[np.uint8]:
    text = "".join(f"{n:09d}\n" for n in numbers).encode()
    return np.frombuffer(text, dtype=np.uint8).reshape(len(numbers), 10)


def test_duplicates_inside_one_batch_count_once_at_their_first_position() -> None:
    new = SeenNumbers().find_new(array(5, 7, 5, 5, 3, 7))
    assert new.first_sightings.tolist() == [True, True, False, False, True, False]
    assert new.values.tolist() == [3, 5, 7]


def test_marked_numbers_are_duplicates_in_later_batches() -> None:
    seen = SeenNumbers()
    seen.mark(seen.find_new(array(5, 7)))
    new = seen.find_new(array(7, 8, 5))
    assert new.first_sightings.tolist() == [False, True, False]
    assert new.values.tolist() == [8]


def test_finding_does_not_mark() -> None:
    seen = SeenNumbers()
    seen.find_new(array(1, 2))
    assert seen.find_new(array(1, 2)).values.tolist() == [1, 2]


def test_new_numbers_sharing_one_bitmap_byte_are_all_marked() -> None:
    seen = SeenNumbers()
    seen.mark(seen.find_new(array(*range(16))))
    assert not seen.find_new(array(*range(16))).first_sightings.any()
    assert seen.find_new(array(16, 17)).values.tolist() == [16, 17]


def test_the_ends_of_the_range() -> None:
    seen = SeenNumbers()
    seen.mark(seen.find_new(array(0, 999_999_999)))
    assert seen.find_new(array(0, 999_999_999, 1, 999_999_998)).values.tolist() == [
        1,
        999_999_998,
    ]


def test_an_empty_batch() -> None:
    seen = SeenNumbers()
    new = seen.find_new(array())
    seen.mark(new)
    assert (len(new.values), len(new.first_sightings)) == (0, 0)


@given(st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=8))
def test_bitmap_matches_a_set_over_many_batches(batches: list[list[int]]) -> None:
    seen = SeenNumbers()
    reference: set[int] = set()
    for batch in batches:
        expected = []
        for number in batch:
            expected.append(number not in reference)
            reference.add(number)
        new = seen.find_new(array(*batch))
        seen.mark(new)
        assert new.first_sightings.tolist() == expected


# The writer ----------------------------------------------------------------------------------


def test_writer_logs_each_distinct_number_once_in_arrival_order(tmp_path: Path) -> None:
    log = tmp_path / "numbers.log"
    with log.open("wb") as file:
        writer = LogWriter(file)
        writer.accept((records(42, 7, 42), records(7, 0, 999_999_999)))
        assert writer.totals == Totals(unique=4, duplicates=2)
        writer.accept((records(0),))
        writer.sync()
        assert log.read_bytes() == b"000000042\n000000007\n000000000\n999999999\n"
    assert writer.totals == Totals(unique=4, duplicates=3)


def test_each_batch_reaches_the_file_before_the_next(tmp_path: Path) -> None:
    log = tmp_path / "numbers.log"
    with log.open("wb") as file:
        LogWriter(file).accept((records(1, 2),))
        assert log.read_bytes() == b"000000001\n000000002\n"


class FailingFile:
    """A log whose writes fail, as on a full disk, until told otherwise."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.failing = True
        self.name = "numbers.log"

    def write(self, data: object) -> int:
        if self.failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.target.write(data)  # type: ignore[call-overload, no-any-return]

    def flush(self) -> None:
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()


def test_numbers_that_failed_to_write_are_neither_counted_nor_marked(tmp_path: Path) -> None:
    log = tmp_path / "numbers.log"
    with log.open("wb") as file:
        failing = FailingFile(file)
        writer = LogWriter(failing)  # type: ignore[arg-type]
        with pytest.raises(LogWriteError, match="No space left on device"):
            writer.accept((records(1, 2),))
        assert writer.totals == Totals()
        failing.failing = False
        writer.accept((records(1, 2),))
        assert writer.totals == Totals(unique=2, duplicates=0)
    assert log.read_bytes() == b"000000001\n000000002\n"


def test_a_full_device_raises_a_clear_error() -> None:
    with open("/dev/full", "wb") as file:
        writer = LogWriter(file)
        with pytest.raises(LogWriteError, match=r"cannot write /dev/full: No space left"):
            writer.accept((records(*range(10_000)),))
        assert writer.totals == Totals()
