"""Tests for aioproc._forklock: the counted fork lock, the exec lock, exec_replace.

Async tests run on both the default asyncio loop and uvloop (see conftest.py);
the few sync tests that need an event loop of their own parametrize over both.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

import aioproc
from aioproc._forklock import ForkLock, exec_lock, exec_replace, fork_lock

LOOP_FACTORIES = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(uvloop.new_event_loop, id="uvloop"),
]

# Generous upper bounds: the tests never wait this long unless something is broken.
TIMEOUT = 10.0


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Yield to the loop until *predicate* holds (e.g. a task has queued)."""
    for _ in range(100_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def until_sync(predicate: Callable[[], bool], what: str) -> None:
    """Poll from a thread until *predicate* holds (e.g. a thread has queued).

    There is no event for "that thread is now blocked inside the lock", so this
    polls the lock's own counters.
    """
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.001)


def assert_idle(lock: ForkLock) -> None:
    assert lock.spawning_count == 0
    assert not lock.exclusive_held
    assert lock.waiting_count == 0
    # And both sides really are free.
    assert lock.try_acquire_exclusive()
    lock.release_exclusive()
    assert lock.try_acquire_spawning()
    lock.release_spawning()


class Start:
    """A thread that records the exception it died of, if any."""

    def __init__(self, target: Callable[[], object]) -> None:
        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "thread did not finish"
        if self.error is not None:
            raise self.error


class Checker:
    """Shared bookkeeping of who is inside, checked on every entry."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self.spawning = 0
        self.exclusive = 0
        self.max_spawning = 0
        self.errors: list[str] = []

    def enter(self, exclusive: bool) -> None:
        with self._mutex:
            if exclusive:
                if self.spawning or self.exclusive:
                    self.errors.append(
                        f"exclusive entered with {self.spawning} spawning, "
                        f"{self.exclusive} exclusive inside"
                    )
                self.exclusive += 1
            else:
                if self.exclusive:
                    self.errors.append("spawning entered while exclusive is held")
                self.spawning += 1
                self.max_spawning = max(self.max_spawning, self.spawning)

    def leave(self, exclusive: bool) -> None:
        with self._mutex:
            if exclusive:
                self.exclusive -= 1
            else:
                self.spawning -= 1

    @contextlib.contextmanager
    def inside(self, exclusive: bool) -> Iterator[None]:
        self.enter(exclusive)
        try:
            yield
        finally:
            self.leave(exclusive)


# ---------------------------------------------------------------------------
# Basics and misuse
# ---------------------------------------------------------------------------


def test_module_instance() -> None:
    assert isinstance(fork_lock, ForkLock)
    assert isinstance(exec_lock, type(threading.Lock()))
    assert "spawning=" in repr(fork_lock)


def test_public_reexports() -> None:
    if not hasattr(aioproc, "fork_lock"):
        pytest.skip("aioproc/__init__.py does not re-export the fork lock yet")
    assert getattr(aioproc, "fork_lock", None) is fork_lock
    assert getattr(aioproc, "ForkLock", None) is ForkLock
    assert getattr(aioproc, "exec_replace", None) is exec_replace


def test_release_without_hold_raises() -> None:
    lock = ForkLock()
    with pytest.raises(RuntimeError, match=r"release_spawning\(\): no spawning hold"):
        lock.release_spawning()
    with pytest.raises(RuntimeError, match=r"release_exclusive\(\): the exclusive side is not"):
        lock.release_exclusive()
    assert lock.try_acquire_spawning()
    lock.release_spawning()
    with pytest.raises(RuntimeError, match="released more often than acquired"):
        lock.release_spawning()
    assert_idle(lock)


async def test_release_without_hold_raises_in_async_with() -> None:
    lock = ForkLock()
    with pytest.raises(RuntimeError, match="exclusive side is not held"):
        async with lock.exclusive():
            lock.release_exclusive()  # released behind the context manager's back
    assert_idle(lock)


def test_try_acquire() -> None:
    lock = ForkLock()
    assert lock.try_acquire_spawning()
    assert lock.try_acquire_spawning()
    assert lock.spawning_count == 2
    assert not lock.try_acquire_exclusive()
    lock.release_spawning()
    lock.release_spawning()
    assert lock.try_acquire_exclusive()
    assert not lock.try_acquire_spawning()
    assert not lock.try_acquire_exclusive()
    lock.release_exclusive()
    assert_idle(lock)


def test_try_acquire_spawning_respects_a_queued_exclusive() -> None:
    lock = ForkLock()
    assert lock.try_acquire_spawning()
    waiter = Start(lambda: lock.exclusive_sync(timeout=TIMEOUT).__enter__())
    until_sync(lambda: lock.waiting_count == 1, "exclusive waiter queued")
    # Spawns are in flight, so the exclusive waits; a new spawn must not
    # overtake it even though the spawning side is "open".
    assert not lock.try_acquire_spawning()
    lock.release_spawning()
    waiter.join()
    assert lock.exclusive_held
    lock.release_exclusive()
    assert_idle(lock)


def test_negative_timeout() -> None:
    lock = ForkLock()
    with pytest.raises(ValueError, match="timeout"):
        lock.spawning_sync(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        lock.exclusive_sync(timeout=-0.5)
    for odd in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout must be"):
            lock.spawning_sync(timeout=odd)
        with pytest.raises(ValueError, match="timeout must be"):
            lock.exclusive_sync(timeout=odd)
    assert_idle(lock)


# ---------------------------------------------------------------------------
# Counted: spawns never block each other
# ---------------------------------------------------------------------------


def test_counted_threads() -> None:
    lock = ForkLock()
    n = 16
    # Every thread waits inside for all the others: only possible if all n
    # hold the spawning side at the same time.
    barrier = threading.Barrier(n, timeout=TIMEOUT)
    counts: list[int] = []

    def hold() -> None:
        with lock.spawning_sync(timeout=TIMEOUT):
            barrier.wait()
            counts.append(lock.spawning_count)
            barrier.wait()

    threads = [Start(hold) for _ in range(n)]
    for thread in threads:
        thread.join()
    assert counts == [n] * n
    assert_idle(lock)


async def test_counted_tasks() -> None:
    lock = ForkLock()
    n = 50
    inside = 0
    all_in = asyncio.Event()
    seen: list[int] = []

    async def hold() -> None:
        nonlocal inside
        async with lock.spawning():
            inside += 1
            if inside == n:
                seen.append(lock.spawning_count)
                all_in.set()
            await all_in.wait()

    await asyncio.wait_for(asyncio.gather(*(hold() for _ in range(n))), TIMEOUT)
    assert seen == [n]
    assert_idle(lock)


async def test_counted_threads_and_tasks_together() -> None:
    lock = ForkLock()
    loop = asyncio.get_running_loop()
    n_threads, n_tasks = 8, 8
    total = n_threads + n_tasks
    mutex = threading.Lock()
    inside = 0
    all_in_threads = threading.Event()
    all_in_tasks = asyncio.Event()
    seen: list[int] = []

    def arrived() -> None:
        nonlocal inside
        with mutex:
            inside += 1
            if inside == total:
                seen.append(lock.spawning_count)
                all_in_threads.set()
                loop.call_soon_threadsafe(all_in_tasks.set)

    def thread_holder() -> None:
        with lock.spawning_sync(timeout=TIMEOUT):
            arrived()
            assert all_in_threads.wait(TIMEOUT)

    async def task_holder() -> None:
        async with lock.spawning():
            arrived()
            await all_in_tasks.wait()

    threads = [Start(thread_holder) for _ in range(n_threads)]
    await asyncio.wait_for(asyncio.gather(*(task_holder() for _ in range(n_tasks))), TIMEOUT)
    for thread in threads:
        thread.join()
    assert seen == [total]
    assert_idle(lock)


# ---------------------------------------------------------------------------
# Fairness
# ---------------------------------------------------------------------------


async def test_exclusive_not_starved_by_spawning_tasks() -> None:
    lock = ForkLock()
    checker = Checker()
    stop = False
    rounds = 0

    async def spawner() -> None:
        nonlocal rounds
        while not stop:
            async with lock.spawning():
                with checker.inside(exclusive=False):
                    await asyncio.sleep(0)
            rounds += 1
            # No yield here: re-acquire at once, so that without fairness the
            # spawning count would never drop to zero.

    tasks = [asyncio.create_task(spawner()) for _ in range(50)]
    try:
        await until(lambda: lock.spawning_count >= 25, "spawners running")
        for _ in range(5):
            await asyncio.wait_for(lock.acquire_exclusive(), TIMEOUT)
            try:
                with checker.inside(exclusive=True):
                    assert lock.spawning_count == 0
                    before = rounds
                    # Let the spawners run: none may get in while we hold it.
                    for _ in range(5):
                        await asyncio.sleep(0)
                    assert rounds == before
                    assert checker.spawning == 0
            finally:
                lock.release_exclusive()
            await until(lambda: lock.spawning_count >= 25, "spawners back in")
    finally:
        stop = True
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert checker.errors == []
    assert checker.max_spawning >= 25
    assert_idle(lock)


def test_exclusive_sync_not_starved_by_spawning_threads() -> None:
    lock = ForkLock()
    checker = Checker()
    stop = threading.Event()

    def spawner() -> None:
        while not stop.is_set():
            with lock.spawning_sync(timeout=TIMEOUT), checker.inside(exclusive=False):
                time.sleep(0)

    threads = [Start(spawner) for _ in range(4)]
    try:
        until_sync(lambda: lock.spawning_count > 0, "spawners running")
        for _ in range(5):
            with lock.exclusive_sync(timeout=TIMEOUT), checker.inside(exclusive=True):
                assert lock.spawning_count == 0
                time.sleep(0)
                assert checker.spawning == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert checker.errors == []
    assert_idle(lock)


async def test_spawns_not_starved_by_exclusive_holders() -> None:
    lock = ForkLock()
    checker = Checker()
    stop = False

    async def exclusive_holder() -> None:
        while not stop:
            async with lock.exclusive():
                with checker.inside(exclusive=True):
                    await asyncio.sleep(0)

    tasks = [asyncio.create_task(exclusive_holder()) for _ in range(5)]
    try:
        await until(lambda: lock.waiting_count >= 4, "exclusive holders queued")
        for _ in range(10):
            await asyncio.wait_for(lock.acquire_spawning(), TIMEOUT)
            try:
                with checker.inside(exclusive=False):
                    assert not lock.exclusive_held
                    await asyncio.sleep(0)
            finally:
                lock.release_spawning()
    finally:
        stop = True
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert checker.errors == []
    assert_idle(lock)


def test_spawns_not_starved_by_exclusive_threads() -> None:
    lock = ForkLock()
    checker = Checker()
    stop = threading.Event()

    def exclusive_holder() -> None:
        while not stop.is_set():
            with lock.exclusive_sync(timeout=TIMEOUT), checker.inside(exclusive=True):
                time.sleep(0)

    threads = [Start(exclusive_holder) for _ in range(3)]
    try:
        until_sync(lambda: lock.exclusive_held, "exclusive holders running")
        for _ in range(10):
            with lock.spawning_sync(timeout=TIMEOUT), checker.inside(exclusive=False):
                assert not lock.exclusive_held
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert checker.errors == []
    assert_idle(lock)


async def test_fifo_phases() -> None:
    lock = ForkLock()
    assert lock.try_acquire_exclusive()
    s1 = asyncio.create_task(lock.acquire_spawning())
    s2 = asyncio.create_task(lock.acquire_spawning())
    await until(lambda: lock.waiting_count == 2, "s1, s2 queued")
    e2 = asyncio.create_task(lock.acquire_exclusive())
    await until(lambda: lock.waiting_count == 3, "e2 queued")
    s3 = asyncio.create_task(lock.acquire_spawning())
    await until(lambda: lock.waiting_count == 4, "s3 queued")

    # Phase 1 ends: both spawns queued before e2 get in together; s3 stays
    # behind e2, and so does any newcomer.
    lock.release_exclusive()
    await asyncio.wait_for(asyncio.gather(s1, s2), TIMEOUT)
    assert lock.spawning_count == 2
    assert lock.waiting_count == 2
    assert not lock.try_acquire_spawning()
    assert not e2.done()
    assert not s3.done()

    # e2 gets in once the spawns ahead of it are done, and alone.
    lock.release_spawning()
    await asyncio.sleep(0)
    assert not e2.done()
    lock.release_spawning()
    await asyncio.wait_for(e2, TIMEOUT)
    assert lock.exclusive_held
    assert lock.waiting_count == 1
    assert not s3.done()

    lock.release_exclusive()
    await asyncio.wait_for(s3, TIMEOUT)
    assert lock.spawning_count == 1
    lock.release_spawning()
    assert_idle(lock)


# ---------------------------------------------------------------------------
# Cancellation, timeouts, closed loops
# ---------------------------------------------------------------------------


async def test_cancelled_waiters_leave_lock_usable() -> None:
    lock = ForkLock()
    assert lock.try_acquire_exclusive()
    acquire: list[Callable[[], Coroutine[Any, Any, None]]] = [
        lock.acquire_spawning,
        lock.acquire_exclusive,
    ]
    tasks = [asyncio.create_task(acquire[i % 3 == 0]()) for i in range(9)]
    await until(lambda: lock.waiting_count == 9, "all queued")
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert lock.waiting_count == 0
    assert lock.exclusive_held
    lock.release_exclusive()

    async with lock.spawning():
        assert lock.spawning_count == 1
    async with lock.exclusive():
        assert lock.exclusive_held
    assert_idle(lock)


async def test_wait_for_timeout_on_both_sides() -> None:
    lock = ForkLock()
    assert lock.try_acquire_spawning()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(lock.acquire_exclusive(), 0.01)
    assert lock.waiting_count == 0
    lock.release_spawning()

    assert lock.try_acquire_exclusive()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(lock.acquire_spawning(), 0.01)
    assert lock.waiting_count == 0
    lock.release_exclusive()
    assert_idle(lock)


async def test_cancelling_head_exclusive_admits_spawns_behind_it() -> None:
    lock = ForkLock()
    assert lock.try_acquire_spawning()
    exclusive = asyncio.create_task(lock.acquire_exclusive())
    await until(lambda: lock.waiting_count == 1, "exclusive queued")
    spawning = asyncio.create_task(lock.acquire_spawning())
    await until(lambda: lock.waiting_count == 2, "spawn queued behind it")
    exclusive.cancel()
    with pytest.raises(asyncio.CancelledError):
        await exclusive
    await asyncio.wait_for(spawning, TIMEOUT)
    assert lock.spawning_count == 2
    lock.release_spawning()
    lock.release_spawning()
    assert_idle(lock)


@pytest.mark.parametrize("exclusive", [True, False], ids=["exclusive", "spawning"])
async def test_grant_racing_cancel_on_the_loop(exclusive: bool) -> None:
    lock = ForkLock()
    # Block the side we are going to wait for with the other side.
    assert lock.try_acquire_spawning() if exclusive else lock.try_acquire_exclusive()
    waiter = asyncio.create_task(lock.acquire_exclusive() if exclusive else lock.acquire_spawning())
    await until(lambda: lock.waiting_count == 1, "waiter queued")
    # The release grants the lock to the waiter and resolves its future; the
    # task is cancelled before it gets to run.  It must hand the grant back.
    if exclusive:
        lock.release_spawning()
        assert lock.exclusive_held
    else:
        lock.release_exclusive()
        assert lock.spawning_count == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert_idle(lock)


async def test_grant_racing_cancel_from_a_thread() -> None:
    lock = ForkLock()
    for i in range(100):
        assert lock.try_acquire_spawning()
        waiter = asyncio.create_task(lock.acquire_exclusive())
        await until(lambda: lock.waiting_count == 1, "waiter queued")
        go = threading.Event()

        def release(go: threading.Event = go) -> None:
            assert go.wait(TIMEOUT)
            lock.release_spawning()

        releaser = Start(release)
        # Vary which side tends to go first.
        if i % 2:
            go.set()
            waiter.cancel()
        else:
            waiter.cancel()
            go.set()
        releaser.join()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert_idle(lock)


def test_sync_timeout() -> None:
    lock = ForkLock()
    assert lock.try_acquire_spawning()
    with (
        pytest.raises(TimeoutError, match="exclusive side was not granted"),
        lock.exclusive_sync(timeout=0.01),
    ):
        pass
    assert lock.waiting_count == 0
    assert lock.try_acquire_spawning()
    lock.release_spawning()

    # A spawn queued behind an exclusive waiter that gives up gets in then.
    timed_out = threading.Event()

    def exclusive_waiter() -> None:
        try:
            with lock.exclusive_sync(timeout=0.2):
                pass
        except TimeoutError:
            timed_out.set()

    def spawner() -> None:
        with lock.spawning_sync(timeout=TIMEOUT):
            assert timed_out.is_set()

    first = Start(exclusive_waiter)
    until_sync(lambda: lock.waiting_count == 1, "exclusive queued")
    second = Start(spawner)
    until_sync(lambda: lock.waiting_count == 2 or timed_out.is_set(), "spawn queued")
    first.join()
    second.join()
    assert timed_out.is_set()
    lock.release_spawning()
    assert_idle(lock)

    assert lock.try_acquire_exclusive()
    with pytest.raises(TimeoutError, match="spawning side"), lock.spawning_sync(timeout=0):
        pass
    lock.release_exclusive()
    assert_idle(lock)


@pytest.mark.parametrize("new_loop", LOOP_FACTORIES)
def test_waiter_on_a_closed_loop_is_skipped(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    lock = ForkLock()
    assert lock.try_acquire_exclusive()
    loop = new_loop()
    try:
        task = loop.create_task(lock.acquire_spawning())
        loop.run_until_complete(until(lambda: lock.waiting_count == 1, "task queued"))
    finally:
        loop.close()  # the task is left pending forever
    thread = Start(lambda: lock.spawning_sync(timeout=TIMEOUT).__enter__())
    until_sync(lambda: lock.waiting_count == 2, "thread queued behind the dead task")
    # The grant skips the task of the closed loop and goes on to the thread.
    lock.release_exclusive()
    thread.join()
    assert lock.spawning_count == 1
    assert lock.waiting_count == 0
    lock.release_spawning()
    # Closing the coroutine later (as the garbage collector would) is harmless.
    task.get_coro().close()
    assert_idle(lock)


@pytest.mark.parametrize("new_loop", LOOP_FACTORIES)
def test_grant_lost_to_a_closed_loop_is_returned_when_the_coroutine_closes(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    lock = ForkLock()
    assert lock.try_acquire_spawning()
    loop = new_loop()
    try:
        task = loop.create_task(lock.acquire_exclusive())
        loop.run_until_complete(until(lambda: lock.waiting_count == 1, "task queued"))
        # Released with the loop not running: the wake-up is queued on the loop
        # with call_soon_threadsafe, and the grant belongs to the task.
        lock.release_spawning()
        assert lock.exclusive_held
    finally:
        loop.close()  # ... and the wake-up never runs.
    assert lock.exclusive_held
    task.get_coro().close()  # GeneratorExit inside the wait: the grant is handed back
    assert_idle(lock)


def test_orphan_added_inside_a_critical_section_is_handled() -> None:
    # Simulate the garbage collector closing a waiting coroutine while this
    # thread is inside the lock's critical section.
    lock = ForkLock()
    assert lock.try_acquire_spawning()
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(lock.acquire_exclusive())
        loop.run_until_complete(until(lambda: lock.waiting_count == 1, "task queued"))
    finally:
        loop.close()
    lock._mutex.acquire()
    task.get_coro().close()  # cannot take the mutex; leaves an orphan
    assert lock.waiting_count == 1
    lock._unlock()  # whoever leaves the critical section handles it
    assert lock.waiting_count == 0
    lock.release_spawning()
    assert_idle(lock)


# ---------------------------------------------------------------------------
# Threads and coroutines at the same time
# ---------------------------------------------------------------------------


async def test_threads_and_tasks_mixed() -> None:
    lock = ForkLock()
    checker = Checker()

    def thread_worker(seed: int) -> None:
        for i in range(150):
            exclusive = (i + seed) % 5 == 0
            hold = lock.exclusive_sync if exclusive else lock.spawning_sync
            with hold(timeout=TIMEOUT), checker.inside(exclusive):
                time.sleep(0)

    async def task_worker(seed: int) -> None:
        for i in range(150):
            exclusive = (i + seed) % 7 == 0
            hold = lock.exclusive if exclusive else lock.spawning
            async with hold():
                with checker.inside(exclusive):
                    await asyncio.sleep(0)

    threads = [Start(functools.partial(thread_worker, seed)) for seed in range(3)]
    await asyncio.wait_for(asyncio.gather(*(task_worker(seed) for seed in range(10))), 60)
    for thread in threads:
        thread.join()
    assert checker.errors == []
    assert_idle(lock)


async def test_thread_exclusive_wakes_queued_tasks() -> None:
    lock = ForkLock()
    entered = threading.Event()
    leave = threading.Event()

    def exclusive_thread() -> None:
        with lock.exclusive_sync(timeout=TIMEOUT):
            entered.set()
            assert leave.wait(TIMEOUT)

    thread = Start(exclusive_thread)
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, TIMEOUT)
    tasks = [asyncio.create_task(lock.acquire_spawning()) for _ in range(10)]
    await until(lambda: lock.waiting_count == 10, "tasks queued")
    leave.set()  # the thread's release wakes the tasks via call_soon_threadsafe
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    thread.join()
    assert lock.spawning_count == 10
    for _ in tasks:
        lock.release_spawning()
    assert_idle(lock)


# ---------------------------------------------------------------------------
# After fork
# ---------------------------------------------------------------------------


def _fork_and_check_child(child: Callable[[], None]) -> int:
    """Fork, run *child* in the child and return the child's exit code.

    The child always leaves with os._exit: 0 if *child* returned, 1 if it
    raised (the traceback goes to stderr).
    """
    pid = _fork_quietly()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            child()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_lock_usable_in_child_after_fork() -> None:
    private = ForkLock()
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with (
            fork_lock.spawning_sync(timeout=TIMEOUT),
            private.spawning_sync(timeout=TIMEOUT),
            exec_lock,
        ):
            holding.set()
            assert release.wait(TIMEOUT)

    def queued_exclusive() -> None:
        with private.exclusive_sync(timeout=TIMEOUT):
            pass

    holder_thread = Start(holder)
    assert holding.wait(TIMEOUT)
    waiter_thread = Start(queued_exclusive)
    until_sync(lambda: private.waiting_count == 1, "exclusive waiter queued")

    def child() -> None:
        # The holder and the waiter do not exist here: a fresh lock.
        assert fork_lock.spawning_count == 0
        assert private.waiting_count == 0
        with fork_lock.exclusive_sync(timeout=1), private.exclusive_sync(timeout=1):
            pass
        with private.spawning_sync(timeout=1):
            pass
        assert exec_lock.acquire(timeout=1)
        exec_lock.release()

    codes: list[int] = []
    # Fork from a thread other than the holder's (and not the main thread).
    Start(lambda: codes.append(_fork_and_check_child(child))).join()
    assert codes == [0]

    # The parent's locks are untouched by the child's reset.
    assert fork_lock.spawning_count >= 1
    assert private.spawning_count == 1
    assert private.waiting_count == 1
    release.set()
    holder_thread.join()
    waiter_thread.join()
    assert_idle(private)


def _fork_quietly() -> int:
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a multi-threaded process; that is
        # exactly the situation under test.
        warnings.filterwarnings(
            "ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning
        )
        return os.fork()


def test_hold_entered_before_fork_is_released_cleanly_in_child() -> None:
    private = ForkLock()
    in_child = False
    held_in_child = True
    try:
        # The documented way to fork: under the exclusive side.
        with private.exclusive_sync():
            pid = _fork_quietly()
            in_child = pid == 0
            if in_child:  # pragma: no cover - runs in the child
                held_in_child = private.exclusive_held
        # Leaving the block in the child was a no-op on the reset lock.
    except BaseException:  # pragma: no cover - runs in the child on failure
        if in_child:
            traceback.print_exc()
            os._exit(1)
        raise
    if in_child:  # pragma: no cover - runs in the child
        code = 1
        try:
            assert not held_in_child
            with private.exclusive_sync(timeout=1):
                pass
            with private.spawning_sync(timeout=1):
                pass
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert_idle(private)


# ---------------------------------------------------------------------------
# exec_replace
# ---------------------------------------------------------------------------


def _run_python(code: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


# The child uses the public name once __init__ re-exports it.
_IMPORT_EXEC_REPLACE = """
import aioproc
exec_replace = getattr(aioproc, "exec_replace", None)
if exec_replace is None:
    from aioproc._forklock import exec_replace
"""


def test_exec_replace_replaces_the_process() -> None:
    result = _run_python(
        _IMPORT_EXEC_REPLACE
        + """
import sys
sys.stdout.write("before ")  # buffered: exec_replace must flush it
sys.stderr.write("err ")
exec_replace(["/bin/sh", "-c", "echo replaced; echo $$ >&2"])
raise SystemExit("exec_replace returned")
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "before replaced\n"
    assert result.stderr.startswith("err ")


def test_exec_replace_path_lookup_env_and_bytes() -> None:
    result = _run_python(
        _IMPORT_EXEC_REPLACE
        + """
import pathlib
exec_replace(
    [b"sh", pathlib.Path("-c"), "echo $GREETING; echo PATH=$PATH"],
    env={"GREETING": "hello", "PATH": "/nonexistent:/usr/bin:/bin"},
)
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hello", "PATH=/nonexistent:/usr/bin:/bin"]


@pytest.mark.parametrize(
    ("argv", "env", "error", "match"),
    [
        ("/bin/true", None, TypeError, r"not a single str; did you mean \['/bin/true'\]"),
        (b"/bin/true", None, TypeError, "not a single bytes"),
        (pathlib.Path("/bin/true"), None, TypeError, "not a single"),
        (42, None, TypeError, "sequence of str, bytes or os.PathLike, not int"),
        ([], None, ValueError, "must not be empty"),
        ([""], None, ValueError, r"argv\[0\] \(the program\) must not be empty"),
        (["/bin/true", 3], None, TypeError, r"argv\[1\] must be str, bytes or os.PathLike"),
        (["/bin/true", "a\0b"], None, ValueError, r"argv\[1\] contains a NUL byte"),
        (["/bin/tr\0ue"], None, ValueError, r"argv\[0\] contains a NUL byte"),
        (["/bin/true"], {"A\0": "b"}, ValueError, "illegal environment variable name"),
        (["/bin/true"], {"A=B": "b"}, ValueError, "illegal environment variable name"),
        (["/bin/true"], {"": "b"}, ValueError, "illegal environment variable name"),
        (["/bin/true"], {"A": "b\0"}, ValueError, "contains a NUL byte"),
        (["/nonexistent/program"], None, FileNotFoundError, "/nonexistent/program"),
        (["no-such-program-aioproc"], None, FileNotFoundError, "no-such-program-aioproc"),
        (["true"], {"PATH": "/nonexistent"}, FileNotFoundError, "'true'"),
    ],
)
def test_exec_replace_rejects_bad_input_before_locking(
    argv: Any, env: Any, error: type[BaseException], match: str
) -> None:
    # Hold the spawning side: if exec_replace took the exclusive side before
    # checking its arguments it would block here instead of raising.
    with fork_lock.spawning_sync(timeout=TIMEOUT):
        caller = Start(lambda: exec_replace(argv, env))
        with pytest.raises(error, match=match):
            caller.join()
    assert not exec_lock.locked()


def test_exec_replace_not_executable_on_path(tmp_path: pathlib.Path) -> None:
    program = tmp_path / "not-executable"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o644)
    with pytest.raises(PermissionError, match="not-executable"):
        exec_replace(["not-executable"], {"PATH": str(tmp_path)})


def test_failing_exec_releases_the_locks(tmp_path: pathlib.Path) -> None:
    # Executable bit set but not a valid image: execve fails with ENOEXEC
    # after both locks were taken.
    program = tmp_path / "garbage"
    program.write_bytes(b"\x00\x01\x02 not an executable\n")
    program.chmod(0o755)
    with pytest.raises(OSError, match="Exec format error") as info:
        exec_replace([str(program)])
    assert info.value.errno == errno.ENOEXEC
    assert not exec_lock.locked()
    assert fork_lock.try_acquire_exclusive()
    fork_lock.release_exclusive()


def test_exec_replace_holds_both_locks_across_execve(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, list[bytes], bool, bool, int]] = []

    def fake_execve(path: bytes, args: list[bytes], env: dict[bytes, bytes]) -> None:
        seen.append(
            (path, args, exec_lock.locked(), fork_lock.exclusive_held, fork_lock.spawning_count)
        )
        raise OSError(errno.E2BIG, "fake failure")

    monkeypatch.setattr(os, "execve", fake_execve)
    with pytest.raises(OSError, match="fake failure"):
        exec_replace(["sh", "-c", "true"], {"PATH": "/usr/bin:/bin"})
    [(path, args, exec_held, exclusive_held, spawning)] = seen
    assert path.endswith(b"/sh")
    assert args == [b"sh", b"-c", b"true"]
    assert exec_held
    assert exclusive_held
    assert spawning == 0
    assert not exec_lock.locked()
    assert not fork_lock.exclusive_held


def test_exec_replace_waits_for_spawns_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_execve(path: bytes, args: list[bytes], env: dict[bytes, bytes]) -> None:
        calls.append(fork_lock.spawning_count)
        raise OSError(errno.E2BIG, "fake failure")

    monkeypatch.setattr(os, "execve", fake_execve)
    assert fork_lock.try_acquire_spawning()
    try:
        caller = Start(lambda: exec_replace(["/bin/true"]))
        until_sync(lambda: fork_lock.waiting_count == 1, "exec_replace waiting")
        assert calls == []
    finally:
        fork_lock.release_spawning()
    with pytest.raises(OSError, match="fake failure"):
        caller.join()
    assert calls == [0]
    assert not exec_lock.locked()


# ---------------------------------------------------------------------------
# With real spawns
# ---------------------------------------------------------------------------


async def _concurrent_exec_round(n_hangs: int, n_exits: int) -> None:
    exits_done = asyncio.Event()
    # Line everybody up first, so that the spawns overlap as much as possible.
    waiting = n_hangs + n_exits
    all_ready = asyncio.Event()

    async def ready() -> None:
        nonlocal waiting
        waiting -= 1
        if not waiting:
            all_ready.set()
        await all_ready.wait()

    async def hang() -> None:
        await ready()
        proc = await aioproc.spawn(["cat"], stdin=aioproc.PIPE, stdout=aioproc.DEVNULL)
        await exits_done.wait()
        assert proc.stdin is not None
        proc.stdin.close()
        assert (await proc.wait()).returncode == 0

    async def exit_at_once() -> None:
        await ready()
        proc = await aioproc.spawn(["echo", "done"], stdout=aioproc.PIPE)
        assert proc.stdout is not None
        assert await proc.stdout.read() == b"done\n"  # to EOF
        assert (await proc.wait()).returncode == 0

    async def exits() -> None:
        try:
            await asyncio.gather(*(exit_at_once() for _ in range(n_exits)))
        finally:
            exits_done.set()

    await asyncio.wait_for(asyncio.gather(exits(), *(hang() for _ in range(n_hangs))), TIMEOUT)


async def test_concurrent_exec() -> None:
    """A port of Go's TestConcurrentExec (seed 004, Go issue 61080).

    "hang" children block reading stdin while "exit" children, spawned at the
    same time, exit at once. If a "hang" child inherited the write end of an
    "exit" child's stdout pipe, reading that stdout would not reach EOF until
    the "hang" child ended -- which only happens after every "exit" child is
    done, so the round would time out.
    """
    n = max(2, os.cpu_count() or 2)
    for _ in range(5):
        await _concurrent_exec_round(n_hangs=n, n_exits=n)


def _fd_targets(pid: int) -> set[str]:
    targets = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            targets.add(os.readlink(f"/proc/{pid}/fd/{name}"))
    return targets


async def test_inheritable_fd_inside_exclusive_is_never_inherited() -> None:
    made: set[str] = set()  # "pipe:[inode]" of every inheritable pipe made
    seen: list[set[str]] = []  # every spawned child's descriptors
    stop = False

    async def make_inheritable_descriptors() -> None:
        while not stop:
            async with fork_lock.exclusive():
                r, w = os.pipe()
                os.set_inheritable(r, True)
                os.set_inheritable(w, True)
                made.add(os.readlink(f"/proc/self/fd/{r}"))
                await asyncio.sleep(0)  # let spawners try to start meanwhile
                os.close(r)
                os.close(w)
            await asyncio.sleep(0)

    async def spawner() -> None:
        for _ in range(10):
            proc = await aioproc.spawn(["cat"], stdin=aioproc.PIPE, stdout=aioproc.DEVNULL)
            try:
                seen.append(_fd_targets(proc.pid))  # cat is exec'd and alive
            finally:
                assert proc.stdin is not None
                proc.stdin.close()
                await proc.wait()

    makers = [asyncio.create_task(make_inheritable_descriptors()) for _ in range(2)]
    try:
        await asyncio.wait_for(asyncio.gather(*(spawner() for _ in range(4))), 60)
    finally:
        stop = True
        await asyncio.wait_for(asyncio.gather(*makers), TIMEOUT)
    assert len(seen) == 40
    assert made
    leaked = [targets & made for targets in seen if targets & made]
    assert leaked == []
    assert_idle(fork_lock)
