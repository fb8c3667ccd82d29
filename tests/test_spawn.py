"""The fork/exec step and the spawn worker pool (the package aioproc/_spawn/)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import gc
import json
import os
import pwd
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import aioproc
from aioproc import PIPE

from .helpers import DROP_ROOT, children_of, open_fds, run_python, soft_nofile

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture(params=[0, 1, 4], ids=lambda n: f"workers{n}")
def workers(request: pytest.FixtureRequest) -> Iterator[int]:
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(request.param)
    try:
        yield request.param
    finally:
        aioproc.set_spawn_workers(before)


async def test_a_burst_of_spawns_all_succeed(workers: int) -> None:
    procs = await asyncio.gather(
        *(aioproc.spawn(["sh", "-c", f"echo {i}"], stdout=PIPE) for i in range(50))
    )
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    assert [out for out, _ in outs] == [f"{i}\n".encode() for i in range(50)]


async def test_bad_arguments_in_a_burst_raise_and_leave_nothing(workers: int) -> None:
    results = await asyncio.gather(
        *(aioproc.spawn(["/nonexistent/x"] if i % 2 else ["echo", "a\0b"]) for i in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(r, (FileNotFoundError, ValueError)) for r in results), results


async def test_cancelled_pooled_spawns_leave_no_child(workers: int) -> None:
    # Cancel a burst of spawns at every point: before the hand-over to the
    # pool, while a worker forks, after it delivered. A child whose
    # requester is gone is killed and reaped; nothing is left.
    for _ in range(5):
        tasks = [asyncio.ensure_future(_spawn_sleep()) for _ in range(20)]
        await asyncio.sleep(0)
        for i, t in enumerate(tasks):
            if i % 2:
                t.cancel()
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        # A cancelled spawn leaves nothing behind by the time it has returned,
        # not eventually: a child forked meanwhile is already killed and reaped.
        assert not children_of()


async def _spawn_sleep() -> None:
    async with aioproc.spawn(["sleep", "30"], stdout=PIPE):
        await asyncio.sleep(30)


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_loop_that_spawned_through_the_pool_is_freed_once_closed(loop_name: str) -> None:
    # The pool's per-loop inbox of outcomes must not keep its loop alive.
    import uvloop

    async def burst() -> None:
        procs = await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(8)))
        for proc in procs:
            assert (await proc.wait()).success

    loop = (asyncio.new_event_loop if loop_name == "asyncio" else uvloop.new_event_loop)()
    try:
        loop.run_until_complete(burst())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None, gc.get_referrers(gone())


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_an_outcome_on_its_way_to_a_loop_closed_meanwhile_leaves_nothing(
    loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A loop closed, with no shutdown, while a pooled spawn's outcome is on its
    # way: the drain queued for it never runs. The child must not live on
    # unreaped with its pipe open: closing the loop frees its inbox, which
    # kills and reaps the child and closes its descriptors.
    import uvloop

    from aioproc._spawn import _inbox

    _pool_every_spawn(monkeypatch)
    go, arrived = threading.Event(), threading.Event()
    hand_over = _inbox._pool._hand_over  # what the pool's workers call

    def hand_over_and_tell(*args: Any) -> None:
        assert go.wait(10)  # once the loop has stopped: it cannot take the outcome
        hand_over(*args)  # (the worker holds the inbox no longer after this)
        arrived.set()

    monkeypatch.setattr(_inbox._pool, "_hand_over", hand_over_and_tell)
    fds = open_fds()
    children = children_of()
    loop = (asyncio.new_event_loop if loop_name == "asyncio" else uvloop.new_event_loop)()

    async def start() -> asyncio.Future[aioproc.Process]:
        task = asyncio.ensure_future(aioproc.spawn(["sleep", "30"], stdout=PIPE))
        await asyncio.sleep(0)  # its first step queues the job
        await asyncio.sleep(0)  # the batch goes to the pool
        return task

    try:
        task = loop.run_until_complete(start())
        # Its task is destroyed pending, on purpose; asyncio would log that.
        loop.set_exception_handler(lambda loop, context: None)
    finally:
        go.set()
    assert arrived.wait(10)  # forked, and its outcome is in the inbox
    assert len(children_of() - children) == 1
    loop.close()
    assert children_of() == children
    assert open_fds() == fds
    gone = weakref.ref(loop)
    del task, loop
    gc.collect()
    assert gone() is None, "the closed loop is still held"


def test_pool_size_is_validated() -> None:
    with pytest.raises(ValueError, match="workers"):
        aioproc.set_spawn_workers(-1)
    with pytest.raises(ValueError, match="workers"):
        aioproc.set_spawn_workers(True)


async def test_sequential_spawns_use_no_thread() -> None:
    tasks = len(os.listdir("/proc/self/task"))
    for _ in range(20):
        proc = await aioproc.spawn(["true"])
        await proc.wait()
    # Not one more (an idle spawn worker from an earlier test may retire meanwhile).
    assert len(os.listdir("/proc/self/task")) <= tasks


def _sigblk(status: str) -> int:
    return int(status.split("SigBlk:")[1].split()[0], 16)


async def test_pooled_children_get_the_normal_signal_mask(workers: int) -> None:
    # Spawn workers block every signal, but a child must start with the
    # mask of the process, or it would ignore SIGTERM forever.
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
        ours = _sigblk(f.read())
    procs = await asyncio.gather(
        *(aioproc.spawn(["cat", "/proc/self/status"], stdout=PIPE) for _ in range(10))
    )
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    assert {_sigblk(out.decode()) for out, _ in outs if out} == {ours}


async def test_spawn_workers_block_signals() -> None:
    aioproc.set_spawn_workers(2)
    await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(10)))
    workers = [t for t in threading.enumerate() if t.name == "aioproc-spawn"]
    assert workers
    for t in workers:
        with open(f"/proc/self/task/{t.native_id}/status") as f:
            blocked = _sigblk(f.read())
        assert blocked & (1 << (signal.SIGTERM - 1))
        assert blocked & (1 << (signal.SIGINT - 1))


# A child that reports, in order, the parent-death signal (SIGUSR1) and pings (SIGUSR2).
_CATCHER = """
import os, signal
signal.signal(signal.SIGUSR1, lambda *a: os.write(1, b"deathsig\\n"))
signal.signal(signal.SIGUSR2, lambda *a: os.write(1, b"pong\\n"))
os.write(1, b"ready\\n")
while True:
    signal.pause()
"""


async def test_pdeathsig_children_survive_retiring_spawn_workers() -> None:
    # The kernel sends the parent-death signal when the *thread* that forked
    # the child exits, not the process. Had these children been forked by
    # spawn workers (as a burst from several tasks otherwise is), retiring
    # the workers would signal them. They are forked on the loop's thread.
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(4)
    procs: list[aioproc.Process] = []
    try:
        await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(8)))
        workers = [t for t in threading.enumerate() if t.name == "aioproc-spawn"]
        assert workers, "the burst was meant to start spawn workers"
        procs = list(
            await asyncio.gather(
                *(
                    aioproc.spawn(
                        [sys.executable, "-c", _CATCHER], stdout=PIPE, pdeathsig=signal.SIGUSR1
                    )
                    for _ in range(8)
                )
            )
        )
        for proc in procs:
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"ready\n"
        aioproc.set_spawn_workers(0)
        for thread in workers:
            thread.join(10)
            assert not thread.is_alive()
        # Standard signals pending together are delivered lowest number first,
        # so a parent-death SIGUSR1 would be reported before the pong.
        for proc in procs:
            proc.send_signal(signal.SIGUSR2)
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"pong\n"
    finally:
        aioproc.set_spawn_workers(before)
        for proc in procs:
            await proc.stop()
            await proc.aclose()


@pytest.mark.parametrize(
    ("value", "error"), [("TERM", TypeError), (True, TypeError), (0, ValueError), (999, ValueError)]
)
async def test_bad_pdeathsig_is_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="pdeathsig"):
        await aioproc.spawn(["true"], pdeathsig=value)  # type: ignore[arg-type]


async def test_outcomes_of_a_burst_are_delivered_across_loop_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pooled outcomes reach the loop through one inbox per loop: one wake-up
    # for many outcomes, delivered for a bounded time per turn. With no time
    # at all, each turn delivers one outcome and hands the rest to the next
    # turn; none may be lost (the spawn would hang) or delivered twice.
    from aioproc._spawn import _inbox

    monkeypatch.setattr(_inbox._Inbox, "BUDGET", 0.0)
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(2)
    try:
        procs = await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(60)))
        statuses = await asyncio.gather(*(p.wait() for p in procs))
    finally:
        aioproc.set_spawn_workers(before)
    assert [s.returncode for s in statuses] == [0] * 60
    assert len({p.pid for p in procs}) == 60


async def test_pooled_processes_are_freed_as_soon_as_they_are_dropped(workers: int) -> None:
    # A Process that nobody references closes its pipes when it is freed. No
    # part of the spawn machinery may keep it alive (an idle spawn worker held
    # on to its last job, and through it to that job's Process): reference
    # counting alone must free it, without waiting for the cyclic collector.
    procs = await asyncio.gather(*(aioproc.spawn(["true"], stdout=PIPE) for _ in range(8)))
    await asyncio.gather(*(p.wait() for p in procs))
    refs = [weakref.ref(p) for p in procs]
    gc.disable()
    try:
        del procs
        alive = [r for r in refs if r() is not None]
    finally:
        gc.enable()
    assert not alive, f"{len(alive)} dropped processes are still referenced"


def _spawn_workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "aioproc-spawn"}


async def test_idle_spawn_workers_retire_and_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers retire after IDLE_TIMEOUT without work, so one burst does not
    # leave threads behind for good. A burst that arrives while workers are
    # retiring must still find one: a job left in the queue with no worker
    # would hang its spawn (and this test) for ever.
    from aioproc._spawn import _workers

    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(0)  # retire the workers earlier tests started
    for thread in _spawn_workers():
        thread.join(10)
    monkeypatch.setattr(_workers.SpawnPool, "IDLE_TIMEOUT", 0.01)
    aioproc.set_spawn_workers(2)
    try:
        await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(8)))
        started = _spawn_workers()
        assert started, "the burst was meant to start spawn workers"
        for thread in started:
            thread.join(10)
            assert not thread.is_alive()
        # Bursts at gaps around the idle timeout: some land as workers retire.
        for i in range(30):
            procs = await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(4)))
            statuses = await asyncio.gather(*(p.wait() for p in procs))
            assert all(status.success for status in statuses)
            await asyncio.sleep(0.002 * (i % 10))
    finally:
        aioproc.set_spawn_workers(before)


class _RacyQueue:
    """A spawn pool queue that makes a worker time out at the worst moment.

    Armed, the worker's next wait for a job ends with queue.Empty (an idle
    timeout) just as submit() queues a job: submit() has counted the job and,
    counting the worker as idle, started no thread for it. The worker then
    decides whether to retire once submit() lets go of the pool's lock.
    """

    def __init__(self) -> None:
        import queue

        self._inner: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.armed = False
        self._arm_put = False
        self.hit = False  # a put met the armed worker
        self._waiting = threading.Event()
        self._time_out = threading.Event()

    def arm(self) -> None:
        self.armed = self._arm_put = True

    def get(self, timeout: float | None = None) -> object:
        import queue

        while True:
            if self.armed:
                self.armed = False
                self._waiting.set()
                self._time_out.wait(10)
                raise queue.Empty
            try:
                return self._inner.get(timeout=0.005)
            except queue.Empty:
                continue

    def get_nowait(self) -> object:
        return self._inner.get_nowait()

    def put(self, item: object) -> None:
        if self._arm_put:
            self._arm_put = False
            self.hit = self._waiting.wait(10)  # the worker is in its armed wait
            self._time_out.set()
        self._inner.put(item)


async def test_a_worker_timing_out_as_a_job_is_queued_does_not_strand_it() -> None:
    # The race behind retiring idle workers, made deterministic: a worker's
    # idle wait ends just as submit() has counted a job (and, counting that
    # worker as idle, started no thread for it) but not yet queued it. If the
    # worker retired then, the job would sit in the queue with no worker.
    from aioproc._spawn import _inbox

    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(0)
    for thread in _spawn_workers():
        thread.join(10)
    racy = _RacyQueue()
    real_queue = _inbox._pool._queue
    _inbox._pool._queue = racy  # type: ignore[assignment]
    aioproc.set_spawn_workers(1)
    try:
        # Two tasks at once: the second spawn goes to the pool and starts the worker.
        await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(2)))
        racy.arm()
        procs = await asyncio.wait_for(
            asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(2))), 10
        )
        assert racy.hit, "the pooled spawn was meant to meet the armed worker"
        statuses = await asyncio.gather(*(p.wait() for p in procs))
        assert all(status.success for status in statuses)
    finally:
        aioproc.set_spawn_workers(0)
        for thread in _spawn_workers():
            thread.join(10)
        _inbox._pool._queue = real_queue
        aioproc.set_spawn_workers(before)


async def test_a_burst_starts_one_worker_per_queued_job_up_to_the_size() -> None:
    # A burst's jobs are queued in one pass; workers are started for the jobs
    # no idle worker will take, never more, and never past the pool's size.
    from aioproc._spawn import _inbox, _spec, _workers

    loop = asyncio.get_running_loop()
    pool = _workers.SpawnPool(3, _inbox._hand_over)
    release = threading.Event()
    running = threading.Semaphore(0)

    def build() -> _spec.SpawnSpec:
        running.release()
        release.wait(10)  # holds its worker busy
        raise ValueError("not spawned: this test only counts workers")

    def make_job() -> _workers._Job[object]:
        # As enqueue() makes them: counted in flight until delivered, and
        # handed over to the loop's inbox (made as _submit_batch does).
        _inbox._inbox_for(loop)
        _inbox._inflight[loop] = _inbox._inflight.get(loop, 0) + 1
        return _workers._Job(build, "pidfd", loop, lambda spec, res, loop: None)

    jobs = [make_job()]
    try:
        pool.submit(jobs[:1])
        assert len(pool._threads) == 1
        assert running.acquire(timeout=10)  # that worker is busy now
        jobs += [make_job(), make_job(), make_job()]
        pool.submit(jobs[1:])
        assert len(pool._threads) == 3, "two more, then the size stops it"
    finally:
        release.set()
        outcomes = await asyncio.gather(
            *(job.future for job in jobs if job.future is not None), return_exceptions=True
        )
        pool.resize(0)
        for thread in list(pool._threads):
            thread.join(10)
    assert len(outcomes) == 4
    assert all(isinstance(o, ValueError) for o in outcomes)


async def test_a_burst_caught_by_a_resize_to_zero_fails_instead_of_hanging() -> None:
    # set_spawn_workers(0) between a burst's first steps and its hand-over to
    # the pool (one loop iteration): no worker would ever take those jobs.
    from aioproc._spawn import _inbox

    loop = asyncio.get_running_loop()
    before = aioproc.get_spawn_workers()
    if before == 0:
        pytest.skip("the spawn pool is off")
    spawns = [asyncio.ensure_future(aioproc.spawn(["true"])) for _ in range(4)]
    await asyncio.sleep(0)  # their first steps: the jobs wait for the hand-over
    aioproc.set_spawn_workers(0)
    try:
        results = await asyncio.wait_for(asyncio.gather(*spawns, return_exceptions=True), 10)
    finally:
        aioproc.set_spawn_workers(before)
    procs = [r for r in results if isinstance(r, aioproc.Process)]
    errors = [r for r in results if isinstance(r, BaseException)]
    for proc in procs:  # the first may have been forked inline before the burst
        await proc.wait()
    assert errors, results
    assert all(isinstance(e, RuntimeError) and "no workers" in str(e) for e in errors), errors
    assert loop not in _inbox._inflight  # nothing left counted in flight


def _pool_every_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every spawn to the pool, even a lone one that would fork inline."""
    from aioproc import _process

    monkeypatch.setattr(_process, "inline_allowed", lambda loop, inline=False, heavy=False: None)


def _hold_before_exec(
    monkeypatch: pytest.MonkeyPatch, gate_r: int, after_fork: Callable[[], None] = lambda: None
) -> None:
    """Hold the spawn whose last argument is "held" before its exec; pool every spawn.

    Its child is forked with a preexec_fn (the path of pdeathsig, so a real
    fork, not vfork) that reads one byte from ``gate_r`` first: it execs only
    once the test writes to the gate. ``after_fork`` runs on the worker right
    after that fork.

    This is the fallback path (``_posixsubprocess``): ``_clone_exec`` returns only
    once the exec is done, so a worker using it has nothing started to confirm.
    """
    from aioproc._spawn import _direct, _fallback, _spec

    monkeypatch.setattr(_direct, "_clone_exec", None)
    real_fork_exec = _fallback._fork_exec

    def fork_exec(spec: _spec.SpawnSpec, *fds: int) -> int:
        if spec.args[-1] != b"held":
            return real_fork_exec(spec, *fds)
        monkeypatch.setattr(_fallback, "_deathsig_preexec", lambda sig: lambda: os.read(gate_r, 1))
        pid = real_fork_exec(spec._replace(pdeathsig=int(signal.SIGTERM)), *fds)
        after_fork()
        return pid

    monkeypatch.setattr(_fallback, "_fork_exec", fork_exec)
    _pool_every_spawn(monkeypatch)


async def test_a_gathered_outcome_arrives_while_its_worker_is_stuck_in_the_next_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In a burst a worker does not wake the loop for each outcome while more
    # jobs are queued: more outcomes will follow. Unless its next job takes
    # long: here the second spawn's user lookup blocks (a slow directory
    # server), and the first spawn's outcome must reach its task anyway
    # (the loop polls for gathered outcomes while pooled jobs are in flight).
    release = threading.Event()
    getpwuid = pwd.getpwuid

    def slow_getpwuid(uid: int) -> pwd.struct_passwd:
        assert release.wait(10)
        return getpwuid(uid)

    monkeypatch.setattr(pwd, "getpwuid", slow_getpwuid)
    _pool_every_spawn(monkeypatch)
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(1)
    try:
        first = asyncio.ensure_future(aioproc.spawn(["true", "first"]))
        second = asyncio.ensure_future(aioproc.spawn(["true", "second"], user=os.geteuid()))
        proc = await asyncio.wait_for(first, 5)
        assert not second.done()
        assert (await proc.wait()).success
        release.set()
        proc = await asyncio.wait_for(second, 10)
        assert (await proc.wait()).success
    finally:
        release.set()
        aioproc.set_spawn_workers(before)


async def test_a_worker_does_not_wait_for_one_childs_exec_before_forking_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pooled spawn is done when the child's exec closes the error pipe; on a
    # busy machine the child can be preempted between the point where a vfork
    # parent resumes and that close. The worker forks its next job meanwhile
    # (_workers._Started) instead of blocking on the pipe. Made deterministic:
    # the first child is held before its exec (a preexec_fn, so a real fork,
    # that waits on a pipe) and the second spawn, queued behind it on the only
    # worker, must complete while the first is still held.
    gate_r, gate_w = os.pipe()
    _hold_before_exec(monkeypatch, gate_r)
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(1)
    try:
        # One loop turn: both jobs reach the pool together, "held" first.
        held = asyncio.ensure_future(aioproc.spawn(["true", "held"]))
        other = asyncio.ensure_future(aioproc.spawn(["true", "other"]))
        try:
            proc = await asyncio.wait_for(asyncio.shield(other), 10)
            assert not held.done(), "the held child cannot have exec'd yet"
            assert (await proc.wait()).success
        finally:
            os.write(gate_w, b"x")
            await asyncio.gather(held, other, return_exceptions=True)
        assert (await held.result().wait()).success
    finally:
        os.close(gate_r)
        os.close(gate_w)
        aioproc.set_spawn_workers(before)


async def test_a_worker_confirms_its_started_spawns_before_queuing_behind_exclusive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A started spawn keeps its spawning hold until its exec is confirmed, and
    # an exclusive waiter waits for that hold. If the worker then blocked for
    # its next job's hold (queued behind the exclusive waiter) without first
    # confirming what it started, each would wait on the other for ever.
    gate_r, gate_w = os.pipe()
    lock = aioproc.fork_lock
    had_exclusive = threading.Event()

    def exclusive_user() -> None:
        with lock.exclusive_sync(timeout=20):
            had_exclusive.set()

    user = threading.Thread(target=exclusive_user)

    def queue_exclusive_then_open_gate() -> None:
        # The exclusive waiter queues behind this spawn's hold before the
        # worker looks at its next job (no event says "queued": poll).
        user.start()
        deadline = time.monotonic() + 10
        while lock.waiting_count == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        os.write(gate_w, b"x")  # the held child may exec now

    _hold_before_exec(monkeypatch, gate_r, queue_exclusive_then_open_gate)
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(1)
    try:
        procs = await asyncio.wait_for(
            asyncio.gather(aioproc.spawn(["true", "held"]), aioproc.spawn(["true", "next"])), 10
        )
        assert all([(await p.wait()).success for p in procs])
        user.join(10)
        assert had_exclusive.is_set()
    finally:
        os.write(gate_w, b"x")  # in case the test failed before (one byte more is harmless)
        os.close(gate_r)
        os.close(gate_w)
        aioproc.set_spawn_workers(before)


async def test_a_worker_told_to_exit_finishes_the_spawns_it_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # set_spawn_workers(0) while a worker has a child forked and not yet
    # confirmed: the worker confirms it (and hands it over) before it exits,
    # instead of leaving the spawn unanswered and the child unowned.
    gate_r, gate_w = os.pipe()
    forked = threading.Event()

    def tell_the_worker_to_exit() -> None:
        # The worker's exit marker goes in behind the held spawn, before the
        # worker looks at the queue again.
        aioproc.set_spawn_workers(0)
        forked.set()

    _hold_before_exec(monkeypatch, gate_r, tell_the_worker_to_exit)
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(0)  # start from no worker at all
    for thread in _spawn_workers():
        thread.join(10)
    aioproc.set_spawn_workers(1)
    try:
        held = asyncio.ensure_future(aioproc.spawn(["true", "held"]))
        assert await asyncio.to_thread(forked.wait, 10)
        os.write(gate_w, b"x")
        proc = await asyncio.wait_for(held, 10)
        assert (await proc.wait()).success
        for thread in _spawn_workers():
            thread.join(10)
        assert not _spawn_workers()
    finally:
        os.close(gate_r)
        os.close(gate_w)
        aioproc.set_spawn_workers(before)


# --------------------------------------------------------------- user and group
# Changing the child's credentials needs a real fork (see _clone_exec.c), so
# these spawns take the fallback step. The child reports its credentials
# itself: /proc/self/status lists the real, effective, saved and filesystem
# ids, and the supplementary groups.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing a child's user needs root")
OUR_EXTRA_GROUP = 4242  # a supplementary group we give ourselves, to see it is not kept


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' in the password database")


def _unknown_uid() -> int:
    uid = 3_000_000 + os.getpid()
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)
    return uid


@pytest.fixture
def our_groups() -> Iterator[list[int]]:
    """Give this process a supplementary group for the test, as root often has."""
    before = os.getgroups()
    os.setgroups([OUR_EXTRA_GROUP])
    try:
        yield [OUR_EXTRA_GROUP]
    finally:
        os.setgroups(before)


async def _child_credentials(**kwargs: Any) -> tuple[list[int], list[int], set[int]]:
    proc = await aioproc.spawn(["cat", "/proc/self/status"], stdout=PIPE, **kwargs)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert out is not None
    fields = dict(line.split(":", 1) for line in out.decode().splitlines())
    uids = [int(x) for x in fields["Uid"].split()]
    gids = [int(x) for x in fields["Gid"].split()]
    return uids, gids, {int(x) for x in fields["Groups"].split()}


@needs_root
@pytest.mark.parametrize("by", ["name", "id"])
async def test_a_known_user_runs_with_its_own_groups(by: str, our_groups: list[int]) -> None:
    nobody = _nobody()
    user = nobody.pw_name if by == "name" else nobody.pw_uid
    uids, gids, groups = await _child_credentials(user=user)
    assert uids == [nobody.pw_uid] * 4
    assert gids == [nobody.pw_gid] * 4
    assert groups == set(os.getgrouplist(nobody.pw_name, nobody.pw_gid))
    assert OUR_EXTRA_GROUP not in groups


@needs_root
async def test_a_known_user_with_a_group_keeps_its_supplementary_groups_not_ours(
    our_groups: list[int],
) -> None:
    # Before the fix, naming a group as well skipped the supplementary groups
    # altogether: the child kept ours.
    nobody = _nobody()
    gid = 4243
    uids, gids, groups = await _child_credentials(user=nobody.pw_name, group=gid)
    assert uids == [nobody.pw_uid] * 4
    assert gids == [gid] * 4
    assert groups == set(os.getgrouplist(nobody.pw_name, gid))
    assert OUR_EXTRA_GROUP not in groups


@needs_root
@pytest.mark.parametrize("group", [None, 4243])
async def test_a_bare_uid_runs_with_no_supplementary_groups(
    group: int | None, our_groups: list[int]
) -> None:
    # A uid with no password entry: there is no group list to take, and
    # keeping ours would keep root's access.
    uid = _unknown_uid()
    uids, gids, groups = await _child_credentials(user=uid, group=group)
    assert uids == [uid] * 4
    assert gids == [os.getegid() if group is None else group] * 4
    assert groups == set()


@needs_root
async def test_a_group_alone_changes_only_the_primary_group(our_groups: list[int]) -> None:
    uids, gids, groups = await _child_credentials(group=4243)
    assert uids == [os.geteuid()] * 4
    assert gids == [4243] * 4
    assert groups == set(our_groups)


@needs_root
async def test_running_a_child_as_another_user_leaves_our_memory_dumpable() -> None:
    # A credential change marks the memory it runs in non-dumpable, for good;
    # a child made with CLONE_VM runs in ours until its exec (_clone_exec.c
    # leaves user and group to a real fork for this reason). A non-dumpable
    # process loses its core dumps and, to anyone but root, ptrace access.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_get_dumpable = 3
    if libc.prctl(pr_get_dumpable, 0, 0, 0, 0) != 1:
        pytest.skip("this process is not dumpable to begin with")
    uids, _, _ = await _child_credentials(user=_nobody().pw_uid)
    assert uids[0] != os.geteuid()
    assert libc.prctl(pr_get_dumpable, 0, 0, 0, 0) == 1


@pytest.mark.parametrize("pool", [2, 0])
async def test_a_spawn_with_a_user_looks_it_up_off_the_loop_when_there_is_a_pool(
    pool: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even a lone spawn, which would otherwise fork inline: the password and
    # group lookups may ask a directory server. (Our own uid: no root needed.)
    looked_up_on: list[str] = []
    getpwuid = pwd.getpwuid

    def recording_getpwuid(uid: int) -> pwd.struct_passwd:
        looked_up_on.append(threading.current_thread().name)
        return getpwuid(uid)

    monkeypatch.setattr(pwd, "getpwuid", recording_getpwuid)
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(pool)
    try:
        proc = await aioproc.spawn(["true"], user=os.geteuid())
        assert (await proc.wait()).success
    finally:
        aioproc.set_spawn_workers(before)
    expected = "aioproc-spawn" if pool else threading.current_thread().name
    assert looked_up_on == [expected]


NOT_ROOT_PROGRAM = (
    """
    import asyncio, json, os, sys
    import uvloop, aioproc
"""
    + DROP_ROOT
    + """
    def fds():
        return sorted(os.listdir("/proc/self/fd"))

    def children():
        # Of every thread: a spawn worker's children are listed under it.
        found = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                found += f.read().split()
        return found

    async def main():
        # One spawn first, so that what the first spawn sets up for good
        # (the loop's watcher) is there before we count; a waited child's
        # pidfd is closed a loop turn later.
        await (await aioproc.spawn(["true"])).wait()
        await asyncio.sleep(0)
        out = {"fds_before": fds()}
        for key, kwargs in (("user", {"user": 0}), ("group", {"group": 0})):
            try:
                await aioproc.spawn(["true"], **kwargs)
            except OSError as exc:
                out[key] = [type(exc).__name__, exc.errno]
        out["children"] = children()
        out["fds"] = fds()
        return out

    run = uvloop.run if sys.argv[1] == "uvloop" else asyncio.run
    print(json.dumps(run(main())))
"""
)


@needs_root
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_user_change_we_may_not_make_raises_and_leaves_nothing(loop: str) -> None:
    # Without the privilege the child's setreuid/setregid fails before its
    # exec: a PermissionError, and no child or descriptor is left behind.
    res = run_python(NOT_ROOT_PROGRAM, loop)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["user"] == ["PermissionError", errno.EPERM]
    assert out["group"] == ["PermissionError", errno.EPERM]
    assert out["children"] == []
    assert out["fds"] == out["fds_before"]


# ------------------------------------------------------------------ close_fds
_REPORT_OPEN = """
import os, sys
def is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return "closed"
    return "open"
print(*[is_open(int(fd)) for fd in sys.argv[1:]])
"""

# The child's descriptors from 3 up (not the one listdir opened: closed by now).
_LIST_OPEN = """
import os
fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
open_fds = []
for fd in fds:
    try:
        os.fstat(fd)
    except OSError:
        continue
    if fd > 2:
        open_fds.append(fd)
print(*open_fds)
"""


@pytest.mark.parametrize("step", ["clone_exec", "posixsubprocess"])
async def test_close_fds_false_keeps_the_inheritable_descriptors(
    step: str, pidfd_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As subprocess: with close_fds=False the child keeps what is not marked
    # close-on-exec, and only that; pass_fds turns close_fds back on (with
    # subprocess's RuntimeWarning). It used to be refused by aioproc.compat.
    from aioproc._spawn import _direct

    if step == "posixsubprocess":
        monkeypatch.setattr(_direct, "_clone_exec", None)
    elif _direct._clone_exec is None:
        pytest.skip("aioproc._clone_exec is not in use (not built, or AIOPROC_NO_C_SPAWN=1)")
    cloexec_r, cloexec_w = os.pipe()  # os.pipe() makes them close-on-exec
    inheritable_r, inheritable_w = os.pipe()
    os.set_inheritable(inheritable_w, True)
    fds = [str(inheritable_w), str(cloexec_w)]
    try:
        argv = [sys.executable, "-c", _REPORT_OPEN, *fds]
        result = await aioproc.run(argv, capture_output=True, close_fds=False)
        assert result.stdout.split() == [b"open", b"closed"]
        result = await aioproc.run(argv, capture_output=True)  # close_fds=True
        assert result.stdout.split() == [b"closed", b"closed"]
        with pytest.warns(RuntimeWarning, match="pass_fds overriding close_fds"):
            result = await aioproc.run(
                argv, capture_output=True, close_fds=False, pass_fds=[cloexec_w]
            )
        assert result.stdout.split() == [b"closed", b"open"]
        # Nothing else: the descriptors the spawn makes, and the loop's, are
        # close-on-exec. (Whatever ran us may have given us inheritable ones.)
        inheritable = set()
        for fd in open_fds():
            with contextlib.suppress(OSError):  # the one listdir opened is closed
                if fd > 2 and os.get_inheritable(fd):
                    inheritable.add(fd)
        assert inheritable_w in inheritable
        for close_fds in (True, False):
            async with aioproc.spawn(
                [sys.executable, "-c", _LIST_OPEN],
                stdin=PIPE, stdout=PIPE, stderr=PIPE, close_fds=close_fds,
            ) as proc:  # fmt: skip
                out, _ = await proc.communicate()
            assert set(map(int, out.split())) == (set() if close_fds else inheritable)
    finally:
        for fd in (cloexec_r, cloexec_w, inheritable_r, inheritable_w):
            os.close(fd)


# Lists the descriptors it was started with, each with the inode behind it
# (the listing's own directory descriptor is closed again when it looks).
LIST_FDS = """
import os
out = []
for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
    try:
        out.append(f"{fd}:{os.fstat(fd).st_ino}")
    except OSError:
        pass
print(" ".join(out))
"""


@pytest.mark.parametrize("path", ["c", "fallback"])
async def test_the_child_gets_exactly_stdio_and_pass_fds_with_10000_high_descriptors_open(
    wait_mode: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Live children's pidfds are kept at 1024 and up (_waiting/_sys.py's
    # PIDFD_FLOOR), and the C step copies for its child only the descriptors
    # up to the highest one the child keeps. Whatever the numbers, the child
    # must get its stdio and pass_fds, at their numbers, and nothing else:
    # here among 10,000 inheritable descriptors where pidfds go, 20 live
    # children, and pass_fds below, among and above them all.
    from aioproc._spawn import _direct

    floor = 1024  # _waiting/_sys.py's PIDFD_FLOOR
    if path == "fallback":
        monkeypatch.setattr(_direct, "_clone_exec", None)
    elif _direct._clone_exec is None:  # pragma: no cover - built wherever a compiler is at hand
        pytest.skip("aioproc._clone_exec is not built")
    r, w = os.pipe()
    made = [r, w]
    live: list[aioproc.Process] = []
    with soft_nofile(16384):
        try:
            for _ in range(10_000):
                made.append(fcntl.fcntl(r, fcntl.F_DUPFD, floor))  # inheritable
            for _ in range(20):
                live.append(await aioproc.spawn(["sleep", "600"]))
            among, top = made[5000], os.dup2(w, 16000)
            made.append(top)
            made.append(os.dup2(r, 15000))  # inheritable, above them all, not passed
            passed = {fd: os.fstat(fd).st_ino for fd in (w, among, top)}
            proc = await aioproc.spawn(
                [sys.executable, "-c", LIST_FDS],
                stdin=PIPE,
                stdout=PIPE,
                stderr=PIPE,
                pass_fds=sorted(passed),
            )
            out, err = await proc.communicate()
            assert proc.returncode == 0, err
        finally:
            for p in live:
                p.kill()
                await p.wait()
            for fd in made:
                os.close(fd)
    listed = dict(map(int, item.split(":")) for item in out.decode().split())
    assert set(listed) == {0, 1, 2, *passed}
    assert {fd: listed[fd] for fd in passed} == passed
