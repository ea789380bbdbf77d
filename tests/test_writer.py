"""The writer task: dedup, counting and the log file, on real files, without sockets."""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from helpers import lines

from numlog_trio import LogOpenError, LogWriteError, LogWriter, MemoryOutError, Totals, _writer
from numlog_trio._writer import Batch


def batch(*parts: bytes) -> Batch:
    """A batch of these lines, in writable buffers as the server's are."""
    return Batch(tuple(memoryview(bytearray(part)) for part in parts))


async def run_on(writer: LogWriter, *batches: Batch) -> None:
    """Run the writer on these batches, sent at once through a channel then closed."""
    send, receive = trio.open_memory_channel[Batch](len(batches))
    async with send:
        for batch in batches:
            send.send_nowait(batch)
    await writer.run(receive)


def test_writer_logs_each_distinct_number_once_in_arrival_order(tmp_path: Path) -> None:
    log = tmp_path / "numbers.log"
    with LogWriter.open(log) as writer:
        writer.accept(batch(lines(42, 7, 42), lines(7, 0, 999_999_999)))
        assert writer.totals == Totals(unique=4, duplicates=2)
        writer.accept(batch(lines(0)))
        writer.sync()
        assert log.read_bytes() == b"000000042\n000000007\n000000000\n999999999\n"
    assert writer.totals == Totals(unique=4, duplicates=3)


def test_each_batch_reaches_the_file_when_accepted(tmp_path: Path) -> None:
    log = tmp_path / "numbers.log"
    with LogWriter.open(log) as writer:
        writer.accept(batch(lines(1, 2)))
        assert log.read_bytes() == b"000000001\n000000002\n"


def test_opening_keeps_an_old_log_until_it_is_cleared(tmp_path: Path) -> None:
    log = tmp_path / "numbers.log"
    log.write_bytes(b"000000009\n")
    with LogWriter.open(log) as writer:
        assert log.read_bytes() == b"000000009\n"
        writer.clear()
        writer.accept(batch(lines(1)))
    assert log.read_bytes() == b"000000001\n"


def test_a_log_that_cannot_be_created_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LogOpenError, match=r"cannot open log file .*missing/numbers.log: No such"):
        LogWriter.open(tmp_path / "missing" / "numbers.log")


def test_a_fifo_without_a_reader_fails_at_once_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "numbers.log"
    os.mkfifo(fifo)
    with pytest.raises(LogOpenError, match="No such device or address"):
        LogWriter.open(fifo)


def test_a_device_can_be_the_log() -> None:
    with LogWriter.open("/dev/null") as writer:
        writer.clear()
        writer.accept(batch(lines(1, 1)))
        writer.sync()
    assert writer.totals == Totals(unique=1, duplicates=1)


def test_a_failed_write_is_cut_back_and_its_numbers_neither_counted_nor_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "numbers.log"
    real_writev = os.writev
    disk_full = True

    def write_then_fill_up(fd: int, parts: Sequence[memoryview]) -> int:
        """On the log: write two and a half lines, then fail as a full disk does."""
        if disk_full and os.fstat(fd).st_ino == log.stat().st_ino:
            if os.fstat(fd).st_size == 10:  # after the first line
                return os.write(fd, b"".join(parts)[:25])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_writev(fd, parts)

    monkeypatch.setattr(os, "writev", write_then_fill_up)
    with LogWriter.open(log) as writer:
        disk_full = False
        writer.accept(batch(lines(1)))
        disk_full = True
        with pytest.raises(LogWriteError, match=r"cannot write .*numbers.log: No space left"):
            writer.accept(batch(lines(2, 3, 4)))
        assert log.read_bytes() == b"000000001\n"
        assert writer.totals == Totals(unique=1, duplicates=0)
        disk_full = False
        writer.accept(batch(lines(2, 3, 4)))
    assert writer.totals == Totals(unique=4, duplicates=0)
    assert log.read_bytes() == lines(1, 2, 3, 4)


def test_a_full_device_raises_a_clear_error() -> None:
    with LogWriter.open("/dev/full") as writer:
        with pytest.raises(LogWriteError, match=r"cannot write /dev/full: No space left"):
            writer.accept(batch(lines(*range(10_000))))
        assert writer.totals == Totals()


async def test_run_drains_every_batch_sent_then_syncs_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    log = tmp_path / "numbers.log"
    with LogWriter.open(log, sync_interval=3600) as writer:
        await run_on(writer, *(batch(lines(number, number)) for number in range(5)))
        assert len(synced) == 1
        assert os.fstat(synced[0]).st_ino == log.stat().st_ino
    assert writer.totals == Totals(unique=5, duplicates=5)
    assert log.read_bytes() == lines(*range(5))


def test_a_bitmap_that_cannot_be_mapped_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    monkeypatch.setattr(mmap, "mmap", no_memory)
    with (
        LogWriter.open(tmp_path / "numbers.log") as writer,
        pytest.raises(MemoryOutError, match=r"^cannot allocate the 125 MB bitmap"),
    ):
        writer.reserve_memory()


def test_reserving_maps_the_whole_bitmap_before_any_number(tmp_path: Path) -> None:
    def resident_kib() -> int:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0])

    with LogWriter.open(tmp_path / "numbers.log") as writer:
        before = resident_kib()
        writer.reserve_memory()
        assert resident_kib() - before > 120_000  # KiB: the 125 MB bitmap is resident


async def test_run_syncs_in_the_background_as_the_log_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_sizes: list[int] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced_sizes.append(os.fstat(fd).st_size))
    monkeypatch.setattr(_writer, "SYNC_EVERY", 20)  # bytes: two lines
    monkeypatch.setattr(_writer, "_waiting", lambda batches: [])  # one batch per hand-off
    log = tmp_path / "numbers.log"
    with LogWriter.open(log, sync_interval=3600) as writer:  # the size calls for it, not time
        await run_on(writer, *(batch(lines(n, n + 1)) for n in range(0, 12, 2)))
    assert log.read_bytes() == lines(*range(12))
    # A background sync after some batches, and the final one after all of them.
    assert len(synced_sizes) >= 2
    assert synced_sizes[0] < log.stat().st_size
    assert synced_sizes[-1] == log.stat().st_size


async def test_run_has_one_background_sync_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow disk must not pile up syncs: while one runs, growth calls for no other.
    release = threading.Event()
    syncs_started: list[int] = []

    def slow_fdatasync(fd: int) -> None:
        syncs_started.append(fd)
        assert release.wait(5), "the test never released the sync"

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    monkeypatch.setattr(_writer, "SYNC_EVERY", 10)  # bytes: every write calls for a sync
    log = tmp_path / "numbers.log"
    with trio.fail_after(5), LogWriter.open(log) as writer:
        send, receive = trio.open_memory_channel[Batch](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, receive)
            async with send:
                for number in range(5):
                    await send.send(batch(lines(number)))
                    while writer.totals.unique <= number:  # noqa: ASYNC110 (a thread writes)
                        await trio.sleep(0.001)
                assert len(syncs_started) == 1, f"{len(syncs_started)} syncs at once"
                release.set()
    assert log.read_bytes() == lines(*range(5))


async def test_run_hands_waiting_batches_to_its_thread_together_and_writes_them_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "numbers.log"
    writes: list[int] = []
    real_writev = os.writev

    def counted_writev(fd: int, parts: Sequence[memoryview]) -> int:
        writes.append(sum(len(part) for part in parts))
        return real_writev(fd, parts)

    monkeypatch.setattr(os, "writev", counted_writev)
    with LogWriter.open(log) as writer:
        await run_on(writer, *(batch(lines(number, number)) for number in range(5)))
    assert writes == [50]  # 5 new lines out of 10, all five batches in one write
    assert log.read_bytes() == lines(*range(5))


async def test_a_failed_write_in_run_takes_back_every_selection_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer selects the next group while it writes the one before; when that write
    # fails, the next group is already marked in the bitmap, and must be unmarked too.
    monkeypatch.setattr(_writer, "_waiting", lambda batches: [])  # one batch per hand-off
    second_selected = threading.Event()
    real_select = LogWriter.select

    def select(self: LogWriter, batches: Sequence[Batch]) -> _writer.Selection:
        selection = real_select(self, batches)
        if b"000000003" in bytes(batches[0].lines[0]):
            second_selected.set()
        return selection

    def fail_once_the_second_is_selected(fd: int, parts: Sequence[memoryview]) -> int:
        assert second_selected.wait(5)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LogWriter, "select", select)
    monkeypatch.setattr(os, "writev", fail_once_the_second_is_selected)
    log = tmp_path / "numbers.log"
    with LogWriter.open(log) as writer:
        with pytest.raises(LogWriteError, match="No space left"):
            await run_on(writer, batch(lines(1, 2)), batch(lines(3, 4)))
        assert second_selected.is_set()
        assert writer.totals == Totals()
        monkeypatch.undo()
        writer.accept(batch(lines(1, 2, 3, 4)))  # all four are new again
        assert writer.totals == Totals(unique=4, duplicates=0)
    assert log.read_bytes() == lines(1, 2, 3, 4)


async def test_run_writes_a_group_of_more_parts_than_one_writev_takes(tmp_path: Path) -> None:
    # Every batch is a part of the group's write; Linux takes at most 1024 per writev.
    log = tmp_path / "numbers.log"
    with LogWriter.open(log) as writer:
        await run_on(writer, *(batch(lines(number)) for number in range(1025)))
    assert log.read_bytes() == lines(*range(1025))
    assert writer.totals == Totals(unique=1025, duplicates=0)


def test_a_batch_that_cannot_be_selected_leaves_the_bitmap_as_it_was(tmp_path: Path) -> None:
    # Lines reach the writer validated; one that parses out of range is a caller's mistake,
    # refused without marking the parts of the group before it.
    out_of_range = b"\xff" * 9 + b"\n"
    with LogWriter.open(tmp_path / "numbers.log") as writer:
        with pytest.raises(ValueError, match="not nine digits"):
            writer.accept(batch(lines(1, 2)), batch(lines(3) + out_of_range))
        writer.accept(batch(lines(1, 2, 3)))
        assert writer.totals == Totals(unique=3, duplicates=0)


@pytest.mark.parametrize("write_fails", [False, True], ids=["written", "write failed"])
async def test_run_releases_each_batch_once_in_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_fails: bool
) -> None:
    # Releasing gives a receive buffer back to the server's pool, which only Trio's thread
    # may touch; a buffer released twice would be read into by two clients.
    trio_thread = threading.get_ident()
    released: list[tuple[int, int]] = []

    def released_batch(number: int) -> Batch:
        buffer = memoryview(bytearray(lines(number)))
        return Batch((buffer,), lambda: released.append((number, threading.get_ident())))

    def full_disk(fd: int, parts: Sequence[memoryview]) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    if write_fails:
        monkeypatch.setattr(os, "writev", full_disk)
    with LogWriter.open(tmp_path / "numbers.log") as writer:
        if write_fails:
            with pytest.raises(LogWriteError, match="No space left"):
                await run_on(writer, *(released_batch(number) for number in range(3)))
        else:
            await run_on(writer, *(released_batch(number) for number in range(3)))
    assert sorted(released) == [(number, trio_thread) for number in range(3)]
