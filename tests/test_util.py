"""Tests for aioproc._util: shielded cleanup, loop ownership.

Every async test runs on the default asyncio loop and on uvloop (see conftest.py).
"""

from __future__ import annotations

import asyncio
import gc
import re
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from aioproc._durations import check_duration
from aioproc._util import owned_by_loop
from aioproc._util import shielded as core_shielded

pytestmark = pytest.mark.timeout(30)


NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------- check_duration
def test_check_duration_takes_numbers_of_seconds() -> None:
    assert check_duration(0, "t") == 0.0
    assert type(check_duration(3, "t")) is float
    assert check_duration(0.5, "t", positive=True) == 0.5
    assert check_duration(INF, "t", finite=False) == INF


@pytest.mark.parametrize(
    ("value", "kwargs", "error", "message"),
    [
        (NAN, {}, ValueError, "stop_timeout must be a number of seconds, not NaN"),
        (NAN, {"finite": False}, ValueError, "not NaN"),
        (-NAN, {}, ValueError, "not NaN"),
        (INF, {}, ValueError, "stop_timeout must be a finite number of seconds, not inf"),
        (-INF, {"finite": False}, ValueError, "stop_timeout must not be negative"),
        (10**400, {}, ValueError, "must be a finite number of seconds"),
        (-1, {}, ValueError, "stop_timeout must not be negative"),
        (0, {"positive": True}, ValueError, "stop_timeout must be positive"),
        (True, {}, TypeError, "stop_timeout must be a number of seconds, not bool"),
        ("1", {}, TypeError, "not str"),
        (None, {}, TypeError, "not NoneType"),
    ],
)
def test_check_duration_refuses_nan_infinity_and_the_rest_naming_the_parameter(
    value: object, kwargs: dict[str, bool], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        check_duration(value, "stop_timeout", **kwargs)


# ---------------------------------------------------------------- shielded
# The supervisor has its own copy (it uses nothing private of the core's):
# both are held to the same behaviour.
@pytest.fixture
def shielded() -> Callable[..., Any]:
    # One implementation, shared by the core and the supervisor.
    return core_shielded


async def test_shielded_finishes_the_work_then_reraises_the_cancellation(
    shielded: Callable[..., Any],
) -> None:
    release = asyncio.Event()
    finished = []

    async def work() -> int:
        await release.wait()
        finished.append(True)
        return 1

    task = asyncio.ensure_future(shielded(work()))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    assert not task.done()  # absorbed while the work runs
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [True]


async def test_shielded_reraises_a_cancellation_that_arrives_as_the_work_finishes(
    shielded: Callable[..., Any],
) -> None:
    # The work's completion and the caller's cancellation reach the caller in
    # the same loop turn: the caller wakes up with the CancelledError while the
    # work is already done. asyncio.shield raises it; so must shielded().
    done = asyncio.get_running_loop().create_future()
    after = []

    async def work() -> int:
        return await done

    async def caller() -> None:
        after.append(await shielded(work()))

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0)  # caller waits in shielded(), work waits for `done`
    done.set_result(1)  # the work's next step is queued...
    task.cancel()  # ...and then the caller's cancellation
    with pytest.raises(asyncio.CancelledError):
        await task
    assert after == []


async def test_shielded_work_error_wins_over_a_simultaneous_cancellation(
    shielded: Callable[..., Any],
) -> None:
    done = asyncio.get_running_loop().create_future()

    async def work() -> None:
        await done
        raise KeyError("cleanup failed")

    task = asyncio.ensure_future(shielded(work()))
    await asyncio.sleep(0)
    done.set_result(None)
    task.cancel()
    with pytest.raises(KeyError):
        await task


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
async def test_shielded_keeps_asyncio_timeout_counts_right(shielded: Callable[..., Any]) -> None:
    # asyncio.timeout() turns its own cancellation into TimeoutError only if
    # nobody else's is pending (Task.cancelling()): one request, one
    # CancelledError out of shielded(), the count back to zero afterwards.
    release = asyncio.Event()

    async def work() -> None:
        await release.wait()

    asyncio.get_running_loop().call_later(0.05, release.set)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):  # type: ignore[attr-defined,unused-ignore]
            await shielded(work())
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # type: ignore[attr-defined,unused-ignore]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
async def test_shielded_timeout_expiring_as_the_work_finishes_is_a_timeout(
    shielded: Callable[..., Any],
) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    async def work() -> None:
        await done

    async def expire_as_it_finishes(cm: asyncio.Timeout) -> None:  # type: ignore[name-defined,unused-ignore]
        await asyncio.sleep(0)  # the work waits for `done` now
        done.set_result(None)  # its last step runs in the next turn...
        cm.reschedule(loop.time())  # ...and so does the timeout's cancellation

    triggers = []

    async def under_a_timeout() -> None:
        async with asyncio.timeout(None) as cm:  # type: ignore[attr-defined,unused-ignore]
            triggers.append(asyncio.ensure_future(expire_as_it_finishes(cm)))
            await shielded(work())

    with pytest.raises(TimeoutError):
        await under_a_timeout()
    await triggers[0]
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # type: ignore[attr-defined,unused-ignore]


# ------------------------------------------------------------ owned_by_loop
class _Owned:
    pass


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_owned_objects_are_freed_when_the_loop_is_closed(loop_name: str, no_leaks: None) -> None:
    import uvloop

    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
    first, second = _Owned(), _Owned()
    owned_by_loop(loop, first)
    owned_by_loop(loop, second)
    refs = [weakref.ref(first), weakref.ref(second)]
    del first, second
    gc.collect()
    assert all(ref() is not None for ref in refs)  # the loop keeps them
    loop.run_until_complete(asyncio.sleep(0.01))  # a few turns: nothing fires, nothing is lost
    assert all(ref() is not None for ref in refs)
    loop.close()
    assert all(ref() is None for ref in refs)  # at the close, without a collection
    del loop  # the anchor's eventfd is closed already: no_leaks checks


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_owned_objects_are_freed_with_a_loop_dropped_unclosed(loop_name: str) -> None:
    import uvloop

    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
    obj = _Owned()
    owned_by_loop(loop, obj)
    ref = weakref.ref(obj)
    del obj
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # "unclosed event loop"
        del loop
        gc.collect()
    assert ref() is None


async def test_the_keep_alive_cannot_disturb_the_loop_s_timers() -> None:
    # Ownership used to be a timer due in ten years. Beside it, two NaN timers
    # (anyone's call_later(nan): NaN compares false both ways) broke the
    # heap's order, the ten-year timer came first, and wait_for(..., 0.05)
    # never fired. uvloop refuses NaN itself: huge timers there.
    # From 3.13 a NaN timer at the heap's top makes asyncio's own select() raise
    # (it rounds the timeout with math.ceil): no loop survives it, so huge timers there.
    loop = asyncio.get_running_loop()
    owned_by_loop(loop, _Owned())
    try:
        if sys.version_info >= (3, 13):
            raise ValueError("NaN timers crash the loop itself")
        odd = [loop.call_later(float("nan"), _Owned) for _ in range(3)]
    except ValueError:  # uvloop: "cannot convert float NaN to integer"
        odd = [loop.call_later(1e300, _Owned) for _ in range(3)]
    never = loop.create_future()
    # The rescue comes through the ready queue, outside the heap: a thread.
    rescue = threading.Timer(5, loop.call_soon_threadsafe, (never.cancel,))
    rescue.start()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(never, 0.05)
    finally:
        rescue.cancel()
        rescue.join()
        for handle in odd:
            handle.cancel()
