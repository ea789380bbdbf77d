"""How service faults leave nurseries: as themselves when nothing else went wrong. No I/O."""

from __future__ import annotations

import pytest
import trio

from numlog_trio import LogWriteError, ServiceError
from numlog_trio._errors import defer_to_the_fault


async def fail(error: BaseException) -> None:
    raise error  # at once, with no checkpoint: tasks started together all fail


async def test_a_fault_alone_in_nested_nurseries_leaves_as_itself() -> None:
    fault = LogWriteError("cannot write numbers.log: No space left on device")
    with pytest.raises(LogWriteError) as caught, defer_to_the_fault():  # noqa: PT012
        async with trio.open_nursery() as outer:
            outer.start_soon(trio.sleep_forever)  # cancelled, quietly, by the failure
            async with trio.open_nursery() as inner:
                inner.start_soon(fail, fault)
    assert caught.value is fault


async def test_several_faults_alone_leave_as_one_flat_group_of_them() -> None:
    write = LogWriteError("cannot write numbers.log: Input/output error")
    sync = LogWriteError("cannot sync numbers.log: Input/output error")
    with pytest.RaisesGroup(LogWriteError, LogWriteError) as caught, defer_to_the_fault():
        async with trio.open_nursery() as outer:
            outer.start_soon(fail, write)
            async with trio.open_nursery() as inner:
                inner.start_soon(fail, sync)
    assert set(caught.value.exceptions) == {write, sync}


async def test_a_fault_keeps_its_cause() -> None:
    cause = OSError(28, "No space left on device")
    fault = LogWriteError("cannot write numbers.log: No space left on device")
    fault.__cause__ = cause
    with pytest.raises(LogWriteError) as caught, defer_to_the_fault():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, fault)
    assert caught.value.__cause__ is cause


@pytest.mark.parametrize(
    "errors",
    [
        [LogWriteError("a fault"), ValueError("a bug")],
        [LogWriteError("a fault"), KeyboardInterrupt()],
    ],
    ids=["a fault and a bug", "a fault and Ctrl-C"],
)
async def test_a_fault_with_anything_else_leaves_in_its_group(
    errors: list[BaseException],
) -> None:
    with pytest.RaisesGroup(*(type(error) for error in errors)), defer_to_the_fault():
        async with trio.open_nursery() as nursery:
            for error in errors:
                nursery.start_soon(fail, error)


def test_an_error_outside_any_group_passes_through() -> None:
    with pytest.raises(ServiceError, match="plain"), defer_to_the_fault():
        raise ServiceError("plain")
