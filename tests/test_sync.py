"""When the log reaches the disk: the writer's sync schedule, in process, on virtual time.

The writer runs in the test's Trio run on a real file, fed through a channel, with no socket;
a recorder notes the virtual time each sync begins and the size of the log it covers. The
autojump clock makes seconds of trickle and an idle hour take milliseconds. A write's time is
taken as the test sees it counted: the test waits for that at every checkpoint (no virtual
time passes meanwhile), and bounds the wait in real time.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import pytest
import trio
import trio.testing
from helpers import TIMEOUT, lines, real_time_limit

from numlog_trio import LogWriteError, LogWriter, Totals, _writer
from numlog_trio._writer import Batch


def batch(*numbers: int) -> Batch:
    return Batch((memoryview(bytearray(lines(*numbers))),))


@attrs.define
class Syncs:
    """Each sync of the log: the virtual time it began, and the log's size then.

    Recorded where the writer hands the sync to its thread, in the Trio thread: from inside
    the thread, the time read would be later by whatever virtual time the autojump clock
    skipped while the thread started.
    """

    log: Path
    done: list[tuple[float, int]] = attrs.Factory(list)
    fail: bool = False

    async def run_sync_recording(self, function: Callable[..., T], *args: Any, **options: Any) -> T:
        if getattr(function, "__func__", None) is LogWriter.sync:
            self.done.append((trio.current_time(), os.stat(self.log).st_size))
        return await _RUN_SYNC(function, *args, **options)

    def fdatasync(self, fd: int) -> None:
        if self.fail:
            raise OSError(errno.EIO, os.strerror(errno.EIO))


_RUN_SYNC: Final = trio.to_thread.run_sync
T = TypeVar("T")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "numbers.log"


@pytest.fixture
def syncs(log: Path, monkeypatch: pytest.MonkeyPatch) -> Syncs:
    recorder = Syncs(log)
    monkeypatch.setattr(trio.to_thread, "run_sync", recorder.run_sync_recording)
    monkeypatch.setattr(os, "fdatasync", recorder.fdatasync)
    return recorder


async def wait_counted(writer: LogWriter, unique: int) -> float:
    """Wait, within real seconds, until the writer counted ``unique``; the virtual time then."""
    with real_time_limit(TIMEOUT):
        while writer.totals.unique < unique:
            await trio.lowlevel.checkpoint()
        return trio.current_time()
    raise AssertionError(f"{writer.totals} after {TIMEOUT} s; expected {unique} unique")


async def test_a_trickle_is_synced_within_the_interval_of_each_write(
    log: Path, syncs: Syncs, autojump_clock: trio.testing.MockClock
) -> None:
    # One number every 50 ms for 5 s, as a slow source sends them; a sync each second or
    # so covers them all, not a sync for each.
    interval = 1.0
    written: list[tuple[float, int]] = []
    send, receive = trio.open_memory_channel[Batch](0)
    with LogWriter.open(log, sync_interval=interval) as writer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, receive)
            async with send:
                for number in range(100):
                    await send.send(batch(number))
                    written.append((await wait_counted(writer, number + 1), (number + 1) * 10))
                    await trio.sleep(0.05)
                trickle_ended = trio.current_time()
                await trio.sleep(interval)
                background = list(syncs.done)
    for at, size in written:
        assert any(
            at <= synced_at <= at + interval and covered >= size
            for synced_at, covered in background
        ), (
            f"the write that made the log {size} bytes at {at:.2f} s was not synced within "
            f"{interval} s: {background}"
        )
    assert len(background) <= (trickle_ended - written[0][0]) / interval + 2, background


async def test_an_idle_writer_makes_no_sync_calls(
    log: Path, syncs: Syncs, autojump_clock: trio.testing.MockClock
) -> None:
    send, receive = trio.open_memory_channel[Batch](0)
    with LogWriter.open(log, sync_interval=1.0) as writer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, receive)
            async with send:
                await trio.sleep(3600)
                assert syncs.done == []
                await send.send(batch(1, 2))
                written_at = await wait_counted(writer, 2)
                await trio.sleep(3600)
                # One sync for the write, within the interval, and none in the idle hour after.
                assert len(syncs.done) == 1, syncs.done
                assert syncs.done[0][0] <= written_at + 1.0
            # Closing the channel: the final sync.
        assert len(syncs.done) == 2
    assert await trio.Path(log).read_bytes() == lines(1, 2)


async def test_a_write_is_synced_at_once_when_the_unsynced_bytes_reach_the_bound(
    log: Path,
    syncs: Syncs,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    monkeypatch.setattr(_writer, "SYNC_EVERY", 30)  # bytes: three lines
    send, receive = trio.open_memory_channel[Batch](0)
    with LogWriter.open(log, sync_interval=3600) as writer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, receive)
            async with send:
                await send.send(batch(1, 2))
                await wait_counted(writer, 2)
                await trio.sleep(60)
                assert syncs.done == []  # 20 bytes: an hour may pass before they are synced
                await send.send(batch(3))
                written_at = await wait_counted(writer, 3)
                await trio.sleep(1)
                assert [size for _, size in syncs.done] == [30]
                assert syncs.done[0][0] < written_at + 1


async def test_a_failing_background_sync_stops_the_writer_with_one_error(
    log: Path, syncs: Syncs, autojump_clock: trio.testing.MockClock
) -> None:
    syncs.fail = True
    send, receive = trio.open_memory_channel[Batch](0)
    with LogWriter.open(log, sync_interval=1.0) as writer:
        failed = pytest.RaisesExc(LogWriteError, match=r"^cannot sync .*numbers.log: Input/output")
        with pytest.RaisesGroup(failed):  # the writer's error, out of the test's nursery
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run, receive)
                async with send:
                    await send.send(batch(1))
                    await trio.sleep(3600)  # the writer fails meanwhile, and so the nursery
        assert [size for _, size in syncs.done] == [10]


async def test_at_interval_0_a_write_is_synced_before_it_is_counted(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = threading.Event()
    release = threading.Event()
    counted_while_syncing: list[Totals] = []

    def slow_fdatasync(fd: int) -> None:
        counted_while_syncing.append(writer.totals)
        entered.set()
        assert release.wait(TIMEOUT), "the test never released the sync"

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    send, receive = trio.open_memory_channel[Batch](0)
    with trio.fail_after(TIMEOUT), LogWriter.open(log, sync_interval=0) as writer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, receive)
            async with send:
                await send.send(batch(1, 2, 1))
                assert await trio.to_thread.run_sync(entered.wait, TIMEOUT), "no sync"
                assert await trio.Path(log).read_bytes() == lines(1, 2)  # written, being synced
                await trio.testing.wait_all_tasks_blocked()
                assert writer.totals == Totals()  # and not counted yet
                release.set()
                await wait_counted(writer, 2)
        assert writer.totals == Totals(unique=2, duplicates=1)
        assert counted_while_syncing[0] == Totals()


def test_at_interval_0_a_failing_sync_takes_the_write_back(log: Path, syncs: Syncs) -> None:
    with LogWriter.open(log, sync_interval=0) as writer:
        writer.accept(batch(1))
        syncs.fail = True
        with pytest.raises(LogWriteError, match=r"^cannot sync .*numbers.log: Input/output"):
            writer.accept(batch(2, 3))
        # Not on disk for sure, so neither counted nor in the log, nor marked as seen.
        assert writer.totals == Totals(unique=1)
        assert log.read_bytes() == lines(1)
        syncs.fail = False
        writer.accept(batch(2, 3))
    assert writer.totals == Totals(unique=3)
    assert log.read_bytes() == lines(1, 2, 3)


@pytest.mark.parametrize("interval", [-1.0, float("inf"), float("nan")])
def test_a_sync_interval_that_cannot_work_is_refused(log: Path, interval: float) -> None:
    with pytest.raises(ValueError, match="sync_interval"):
        LogWriter.open(log, sync_interval=interval)


async def test_a_write_during_a_sync_is_synced_by_the_next(
    log: Path, syncs: Syncs, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    # The sync in progress may or may not cover a write that lands while it runs: the next
    # one must, within the interval of that write.
    entered = threading.Event()
    release = threading.Event()

    def held_first_fdatasync(fd: int) -> None:
        if not entered.is_set():
            entered.set()
            assert release.wait(TIMEOUT), "the test never released the sync"

    monkeypatch.setattr(os, "fdatasync", held_first_fdatasync)
    send, receive = trio.open_memory_channel[Batch](0)
    with LogWriter.open(log, sync_interval=1.0) as writer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, receive)
            async with send:
                await send.send(batch(1))
                await wait_counted(writer, 1)
                assert await trio.to_thread.run_sync(entered.wait, TIMEOUT), "no sync"
                await send.send(batch(2))
                written_at = await wait_counted(writer, 2)
                release.set()
                # No virtual time may pass until the writer has the held sync back (its
                # thread returns in real time), or the clock could jump past the second
                # sync's deadline meanwhile: this task stays runnable until the thread's
                # token is returned, then waits for the writer to block on that deadline.
                limiter = trio.to_thread.current_default_thread_limiter()
                with real_time_limit(TIMEOUT):
                    while limiter.statistics().borrowed_tokens:
                        await trio.lowlevel.checkpoint()
                await trio.testing.wait_all_tasks_blocked()
                with real_time_limit(TIMEOUT):
                    while len(syncs.done) < 2:  # noqa: ASYNC110 (a thread syncs)
                        await trio.sleep(0.01)
                assert len(syncs.done) == 2, syncs.done
    second_at, second_covers = syncs.done[1]
    assert written_at <= second_at <= written_at + 1.0
    assert second_covers == 20


@pytest.mark.parametrize("interval", [0.0, 1.0])
async def test_a_group_of_duplicates_only_makes_no_sync_call(
    log: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    interval: float,
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    send, receive = trio.open_memory_channel[Batch](0)
    with LogWriter.open(log, sync_interval=interval) as writer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, receive)
            async with send:
                await send.send(batch(1))
                await wait_counted(writer, 1)
                with real_time_limit(TIMEOUT):  # its sync, if any, has run (interval 1)
                    while interval and not synced:  # noqa: ASYNC110 (a thread syncs)
                        await trio.sleep(0.01)
                before = len(synced)
                for group in range(5):
                    await send.send(batch(1, 1))
                    with real_time_limit(TIMEOUT):
                        while writer.totals.duplicates < 2 * (group + 1):
                            await trio.lowlevel.checkpoint()
                    await trio.sleep(10)
                assert writer.totals == Totals(unique=1, duplicates=10)
                assert len(synced) == before, "a sync with nothing new to sync"
