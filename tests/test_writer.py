"""The writer task: dedup, counting and the log file, on real files, without sockets."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
import trio
from numpy.typing import NDArray

from numlog_trio import LogWriteError, LogWriter, Totals
from numlog_trio._writer import Batch


def records(*numbers: int) -> NDArray[np.uint8]:
    text = "".join(f"{n:09d}\n" for n in numbers).encode()
    return np.frombuffer(text, dtype=np.uint8).reshape(len(numbers), 10)


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


async def test_run_drains_every_batch_sent_then_syncs_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    log = tmp_path / "numbers.log"
    send, receive = trio.open_memory_channel[Batch](10)
    with log.open("wb") as file:
        writer = LogWriter(file)
        async with send:
            for number in range(5):
                send.send_nowait((records(number, number),))
        await writer.run(receive)
        assert synced == [file.fileno()]
    assert writer.totals == Totals(unique=5, duplicates=5)
    assert log.read_bytes() == records(*range(5)).tobytes()
