"""The log file on its own: writing whole, cutting back, loading a log and judging its tail.

Real files in the test's temporary directory, no sockets, no Trio: ``LogFile`` is plain
system calls. Short writes are made by a ``writev`` replaced for the log's descriptor; loads
run on logs made here, some longer than one read (:data:`LOAD_SIZE`) so that a line, a bad
line or a tail falls across two reads.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pytest
from helpers import lines, numbered_lines

from numlog_trio import Loaded, LogFile, LogResumeError, LogWriteError, SeenNumbers, _logfile
from numlog_trio._framing import LINE_SIZE

LOAD_SIZE: Final = _logfile.LOAD_SIZE


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "numbers.log"


@pytest.fixture
def seen() -> SeenNumbers:
    """A bitmap of its own, not reserved: only the pages a test marks are mapped."""
    return SeenNumbers()


def load(log: Path, seen: SeenNumbers) -> Loaded:
    file = LogFile.open(log)
    try:
        return file.load(seen)
    finally:
        file.close()


def marked(seen: SeenNumbers, numbers: Sequence[int]) -> list[bool]:
    bits = seen._bitmap()
    return [bool(bits[number >> 3] >> (number & 7) & 1) for number in numbers]


# ---------------------------------------------------------------------------------------------
# Writing


@pytest.mark.parametrize("step", [1, 3, 7, 10, 13])
def test_a_write_cut_short_is_resumed_where_it_stopped(
    log: Path, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    # A writev may write less than asked (a signal, a pipe): at most ``step`` bytes a call.
    real_writev = os.writev
    calls = 0

    def short_writev(fd: int, parts: Sequence[memoryview]) -> int:
        nonlocal calls
        calls += 1
        # A write that does not move on would repeat its first bytes forever.
        assert calls <= 100, f"{calls} writes for 60 bytes: {log.read_bytes()[:40]!r}..."
        return real_writev(fd, [bytes(b"".join(parts)[:step])])

    monkeypatch.setattr(os, "writev", short_writev)
    parts = [memoryview(lines(1, 2)), memoryview(b""), memoryview(lines(3)), memoryview(lines(4))]
    file = LogFile.open(log)
    try:
        file.append(parts)
        file.append([memoryview(lines(5))])
    finally:
        file.close()
    assert log.read_bytes() == lines(1, 2, 3, 4, 5)
    assert calls >= 50 // step


def test_a_write_of_more_parts_than_one_writev_takes_is_written_whole(log: Path) -> None:
    parts = [memoryview(lines(number)) for number in range(3000)]
    file = LogFile.open(log)
    try:
        file.append(parts)
    finally:
        file.close()
    assert log.read_bytes() == lines(*range(3000))


def test_a_failed_write_is_cut_back_to_what_was_there(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.write_bytes(lines(7))

    def write_some_then_fail(fd: int, parts: Sequence[memoryview]) -> int:
        if os.fstat(fd).st_size == 10:
            return os.write(fd, b"".join(parts)[:15])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "writev", write_some_then_fail)
    file = LogFile.open(log)
    try:
        with pytest.raises(LogWriteError, match=r"^cannot write .*numbers.log: No space left"):
            file.append([memoryview(lines(1, 2, 3))])
    finally:
        file.close()
    assert log.read_bytes() == lines(7)


def test_truncating_cuts_the_log_and_syncs_it_and_its_directory(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[str, bool]] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def record(kind: str, real: object) -> object:
        def sync(fd: int) -> None:
            synced.append((kind, os.path.isdir(f"/proc/self/fd/{fd}")))
            real(fd)  # type: ignore[operator]

        return sync

    log.write_bytes(lines(1, 2, 3))
    monkeypatch.setattr(os, "fsync", record("fsync", real_fsync))
    monkeypatch.setattr(os, "fdatasync", record("fdatasync", real_fdatasync))
    file = LogFile.open(log)
    try:
        file.truncate(20)
    finally:
        file.close()
    assert log.read_bytes() == lines(1, 2)
    assert ("fdatasync", False) in synced
    assert ("fsync", True) in synced


# ---------------------------------------------------------------------------------------------
# Loading


def test_loading_marks_every_number_and_leaves_the_file_as_it_was(
    log: Path, seen: SeenNumbers
) -> None:
    numbers = [5, 0, 999_999_999, 123_456_789, 7]
    log.write_bytes(lines(*numbers))
    assert load(log, seen) == Loaded(lines=5)
    assert marked(seen, numbers) == [True] * 5
    assert marked(seen, [1, 6, 8, 999_999_998]) == [False] * 4
    assert log.read_bytes() == lines(*numbers)


def test_loading_an_empty_or_missing_log_finds_nothing(log: Path, seen: SeenNumbers) -> None:
    assert load(log, seen) == Loaded()  # missing: opening creates it
    assert log.read_bytes() == b""
    assert load(log, seen) == Loaded()


def test_a_device_has_nothing_to_load(seen: SeenNumbers) -> None:
    assert load(Path("/dev/null"), seen) == Loaded()


def test_loading_a_log_longer_than_one_read(log: Path, seen: SeenNumbers) -> None:
    data = numbered_lines(10_000_000, LOAD_SIZE // LINE_SIZE * 2 + 12_345)
    log.write_bytes(data)
    loaded = load(log, seen)
    assert loaded == Loaded(lines=len(data) // LINE_SIZE)
    assert loaded.size == len(data)
    assert loaded.tail == 0
    assert marked(seen, [10_000_000, 10_000_000 + loaded.lines - 1]) == [True, True]
    assert marked(seen, [9_999_999, 10_000_000 + loaded.lines]) == [False, False]


TAILS: Final = [
    (b"1", Loaded(2, torn=1)),
    (b"12345", Loaded(2, torn=5)),
    (b"123456789", Loaded(2, torn=9)),
    (b"\0", Loaded(2, zeros=1)),
    (b"\0" * 10, Loaded(2, zeros=10)),
    (b"\0" * 4091, Loaded(2, zeros=4091)),
    (b"1234\0\0\0\0\0\0", Loaded(2, torn=4, zeros=6)),
    (b"123456789\0", Loaded(2, torn=9, zeros=1)),
    (b"00000" + b"\0" * 5000, Loaded(2, torn=5, zeros=5000)),
]


@pytest.mark.parametrize(("tail", "expected"), TAILS, ids=[repr(t[:12]) for t, _ in TAILS])
def test_what_a_crash_leaves_after_the_last_whole_line_is_found_not_cut(
    log: Path, seen: SeenNumbers, tail: bytes, expected: Loaded
) -> None:
    log.write_bytes(lines(1, 2) + tail)
    loaded = load(log, seen)
    assert loaded == expected
    assert (loaded.size, loaded.tail) == (20, len(tail))
    assert log.read_bytes() == lines(1, 2) + tail  # loading only reads
    assert marked(seen, [1, 2, 12345, 123456789, 1234]) == [True, True, False, False, False]


@pytest.mark.parametrize("step", [3, 7, 10, 13])
def test_reads_cut_short_anywhere_in_a_line_load_the_same(
    log: Path, seen: SeenNumbers, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    # A read from a regular file returns what it asked for (whole lines) but at the end; a
    # read that stops mid-line must carry that line into the next read.
    real_preadv = os.preadv

    def short_preadv(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
        return real_preadv(fd, [buffers[0][:step]], offset)

    monkeypatch.setattr(os, "preadv", short_preadv)
    log.write_bytes(lines(*range(7)) + b"123" + b"\0" * 8)
    assert load(log, seen) == Loaded(7, torn=3, zeros=8)
    assert marked(seen, list(range(8))) == [True] * 7 + [False]
    log.write_bytes(lines(*range(7)) + lines(3))
    with pytest.raises(LogResumeError, match="line 8 repeats"):
        load(log, SeenNumbers())


def test_a_tail_across_reads_is_found_whole(log: Path) -> None:
    whole = LOAD_SIZE // LINE_SIZE - 1
    for tail in (b"12345" + b"\0" * (3 * LOAD_SIZE + 7), b"\0" * 25):
        log.write_bytes(numbered_lines(0, whole) + tail)
        loaded = load(log, SeenNumbers())
        assert (loaded.lines, loaded.tail) == (whole, len(tail))


FOREIGN: Final = [
    (lines(1, 2) + b"12345678\n", 3, "is not nine digits and a newline"),
    (lines(1, 2) + b"1234567890\n", 3, "is not nine digits and a newline"),
    (lines(1, 2) + b"1234567890", 3, "is not nine digits and a newline"),
    (lines(1, 2) + b"123456789\r\n", 3, "is not nine digits and a newline"),
    (lines(1) + b"abc\n" + lines(2), 2, "is not nine digits and a newline"),
    (b"terminate\n", 1, "is not nine digits and a newline"),
    (lines(1, 2) + b"\0" * 10 + lines(3), 3, "is not nine digits and a newline"),
    (lines(1, 2) + b"12\0\0\0" + b"3", 3, "is not nine digits and a newline"),
    (lines(1, 2) + b" ", 3, "is not nine digits and a newline"),
    (lines(1, 2, 3, 2), 4, "repeats a number of an earlier line"),
    (lines(1, 1), 2, "repeats a number of an earlier line"),
]


@pytest.mark.parametrize(
    ("content", "line_number", "problem"), FOREIGN, ids=[repr(c[-12:]) for c, _, _ in FOREIGN]
)
def test_a_file_that_is_not_a_log_is_refused_naming_the_line_and_left_as_it_was(
    log: Path, seen: SeenNumbers, content: bytes, line_number: int, problem: str
) -> None:
    log.write_bytes(content)
    message = (
        rf"^cannot resume from .*numbers.log: line {line_number} {problem}; "
        "it is not a log this server wrote, or it was damaged before its end$"
    )
    with pytest.raises(LogResumeError, match=message):
        load(log, seen)
    assert log.read_bytes() == content


def test_a_bad_line_after_several_reads_is_named_by_its_number(
    log: Path, seen: SeenNumbers
) -> None:
    count = LOAD_SIZE // LINE_SIZE + 3
    log.write_bytes(numbered_lines(0, count) + lines(5) + numbered_lines(count, 10))
    with pytest.raises(LogResumeError, match=rf"line {count + 1} repeats"):
        load(log, seen)


def test_an_unreadable_log_is_refused_in_one_line(
    log: Path, seen: SeenNumbers, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.write_bytes(lines(1))

    def failing_preadv(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "preadv", failing_preadv)
    with pytest.raises(LogResumeError, match=r"^cannot read .*numbers.log: Input/output error$"):
        load(log, seen)


class Stopped(Exception):
    pass


def test_a_checkpoint_can_stop_a_long_load_between_reads(log: Path, seen: SeenNumbers) -> None:
    log.write_bytes(numbered_lines(0, LOAD_SIZE // LINE_SIZE * 3))
    checkpoints = 0

    def stop_at_the_second() -> None:
        nonlocal checkpoints
        checkpoints += 1
        if checkpoints == 2:
            raise Stopped

    file = LogFile.open(log)
    try:
        with pytest.raises(Stopped):
            file.load(seen, stop_at_the_second)
    finally:
        file.close()
    assert checkpoints == 2
    assert marked(seen, [0, LOAD_SIZE // LINE_SIZE]) == [True, False]  # one read, no more
