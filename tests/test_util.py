"""Tests for aioproc._util: shielded cleanup, loop ownership.

Every async test runs on the default asyncio loop and on uvloop (see conftest.py).
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from aioproc._util import shielded

pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------- shielded
async def test_shielded_finishes_the_work_then_reraises_the_cancellation() -> None:
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


async def test_shielded_reraises_a_cancellation_that_arrives_as_the_work_finishes() -> None:
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


async def test_shielded_work_error_wins_over_a_simultaneous_cancellation() -> None:
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
async def test_shielded_keeps_asyncio_timeout_counts_right() -> None:
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
async def test_shielded_timeout_expiring_as_the_work_finishes_is_a_timeout() -> None:
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
