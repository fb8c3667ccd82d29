"""The loop's side of spawning: inline or pooled, and the inbox that brings pooled outcomes back.

:func:`inline_allowed` decides whether a spawn's step runs here, on the loop
thread (:func:`fork_here`), or goes to the pool (:func:`enqueue`: the jobs of
one loop iteration are handed over together, ``_submit_batch``); a requester
cancelled meanwhile cleans up with :func:`cancelled`. A worker's outcome goes
into its loop's :class:`_Inbox` and is delivered on the loop thread
(``_deliver``). This module holds the one pool instance, the counts of pooled
spawns in flight per loop, and the process-wide hooks: at exit (discard
outcomes nobody will take) and after a fork in the child (start afresh).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from .. import _waiting
from .._forklock import fork_lock
from .._util import PerLoop, anchor_loop, owned_by_loop
from ._direct import spawn_sync
from ._fallback import _close_all, _reap_failed
from ._spec import Spawned, SpawnSpec
from ._workers import Finisher, SpawnPool, SpecBuilder, _Job

__all__ = [
    "cancelled",
    "discard",
    "enqueue",
    "fork_here",
    "fork_here_locked",
    "get_spawn_workers",
    "inline_allowed",
    "must_stay_inline",
    "pooled_in_flight",
    "set_spawn_workers",
]

T = TypeVar("T")


class _Inbox:
    """Outcomes of pooled spawns on their way to one loop.

    A worker that finishes a step appends the outcome here and wakes the loop
    only if no wake-up is pending already: in a burst, one wake-up (one write
    to the loop's self-pipe, one GIL hand-over) carries many outcomes. The
    loop delivers them for at most ``BUDGET`` seconds per turn and leaves the
    rest for the next one, so a pile of outcomes never stalls it.

    While more jobs wait in the pool's queue, a worker does not wake the loop
    for each outcome: more will follow within microseconds, and it lets up to
    ``GATHER`` of them collect first. A wake-up costs the loop a turn (an
    epoll_wait, the self-pipe read, the loop's own bookkeeping): in a storm of
    1,000 spawns the loop ran 2.7 turns per child, and 0.6 with 16 gathered;
    its CPU per child fell by 20-30 % and the storm ran ~10 % faster. No
    outcome can be left waiting for a wake-up that never comes (its worker may
    then block for long in its next job: a slow exec, a user lookup, the fork
    lock): while this loop has pooled jobs in flight, it looks for gathered
    outcomes itself every ``POLL`` seconds (backing off to ``POLL_MAX`` while
    it finds none), so a gathered outcome waits about a millisecond at most.
    """

    BUDGET = 0.001
    GATHER = 16
    POLL = 0.001
    POLL_MAX = 0.016

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the loop owns its inbox (see _inboxes), and the inbox must
        # not keep a dropped loop alive. (A worker holds its job's loop while
        # it puts.)
        self._loop_ref = weakref.ref(loop)
        self._items: collections.deque[
            tuple[_Job[Any], tuple[SpawnSpec, Spawned] | None, BaseException | None]
        ] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False  # a drain is queued on the loop, or running
        # Whether a poll is queued on the loop. (Not its handle, which would
        # hold the loop.)
        self._polling = False
        self._poll_delay = self.POLL
        self._pid = os.getpid()  # the process whose children the outcomes hold

    def put(
        self, job: _Job[Any], result: tuple[SpawnSpec, Spawned] | None, exc: BaseException | None
    ) -> None:
        """Worker side."""
        with self._lock:
            self._items.append((job, result, exc))
            if self._scheduled:
                return
            if (
                len(self._items) < self.GATHER
                and _pool.has_queued()
                and _inflight.get(job.loop, 0) > len(self._items)
            ):
                # A burst: jobs wait in the queue, and this loop has some not
                # done yet, whose outcomes will follow (or the poll finds these).
                return
            self._scheduled = True
        try:
            job.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop was closed meanwhile: nobody will ever want them
            self.discard_all()

    def discard_all(self) -> None:
        """Kill and reap the children of outcomes nobody will take; close their pipes.

        For a closed loop: a worker found it closed, the inbox is being freed
        with its loop (a loop closed with pooled spawns in flight and no
        shutdown, so a queued drain never ran), or the process is exiting.
        Never in a forked child: those children are its parent's.
        """
        if os.getpid() != self._pid:
            return
        with self._lock:
            items = list(self._items)
            self._items.clear()
            # No drain will run: a later outcome tries (and fails) to queue one
            # again, and is discarded too.
            self._scheduled = False
        for job, res, _ in items:
            _abandon(job, res)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # late in interpreter shutdown
            self.discard_all()

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Loop side: pooled jobs of ``loop`` are in flight; poll for outcomes."""
        self._poll_delay = self.POLL
        if not self._polling:
            self._polling = True
            loop.call_later(self.POLL, self._poll)

    def _poll(self) -> None:
        loop = self._loop_ref()
        if loop is None:  # pragma: no cover - this runs on the loop
            return
        with self._lock:
            gathered = bool(self._items) and not self._scheduled
            if gathered:
                self._scheduled = True
        if gathered:
            self._poll_delay = self.POLL
            self._drain()
        else:
            self._poll_delay = min(self._poll_delay * 2, self.POLL_MAX)
        if loop in _inflight:
            loop.call_later(self._poll_delay, self._poll)
        else:
            self._polling = False

    def _drain(self) -> None:
        deadline = time.perf_counter() + self.BUDGET
        while True:
            with self._lock:
                if not self._items:
                    self._scheduled = False
                    return
                job, result, exc = self._items.popleft()
            _deliver(job, result, exc)
            if time.perf_counter() > deadline:
                # Still scheduled as far as workers can tell: continue next turn.
                # (We run on the loop, so it is alive.)
                loop = self._loop_ref()
                assert loop is not None
                loop.call_soon(self._drain)
                return


# The inboxes, by the loop they serve (a worker looks one up for every
# outcome). The loop owns its inbox (_util.owned_by_loop), the registry holds
# it weakly: a loop closed with outcomes on their way (a drain queued that
# never runs, or gathered ones) frees the inbox, which kills and reaps those
# children and closes their pipes (_Inbox.discard_all); a worker that finds no
# inbox for its outcome's loop does the same with that one.
_inboxes: PerLoop[_Inbox] = PerLoop()
_inbox_of = _inboxes.get


def _inbox_for(loop: asyncio.AbstractEventLoop) -> _Inbox:
    """``loop``'s inbox, made if needed. On the loop's thread, before any of
    its jobs reaches the pool (_submit_batch), so that every outcome finds
    it."""
    inbox = _inbox_of(loop)
    if inbox is None:
        anchor_loop(loop)  # OSError with no descriptor free, before the inbox exists
        inbox = _Inbox(loop)
        owned_by_loop(loop, inbox)
        _inboxes.add(loop, inbox)
    return inbox


def _hand_over(
    job: _Job[Any], result: tuple[SpawnSpec, Spawned] | None, exc: BaseException | None
) -> None:
    """Deliver a worker's outcome to the waiting coroutine, from the worker thread."""
    inbox = _inbox_of(job.loop)
    if inbox is not None:
        inbox.put(job, result, exc)
    else:  # the loop was closed: nobody will ever want it
        _abandon(job, result)


def _abandon(job: _Job[Any], result: tuple[SpawnSpec, Spawned] | None) -> None:
    """An outcome for a closed loop: discard the child, stop counting the job.

    Off the loop's thread, but that loop runs no more, so nothing else
    touches its count in _inflight (which would otherwise keep it alive).
    """
    if result is not None:
        discard(result[1])
    if job.loop in _inflight:
        _job_ended(job.loop)


def _deliver(
    job: _Job[Any], result: tuple[SpawnSpec, Spawned] | None, exc: BaseException | None
) -> None:
    """On the loop thread: the step's outcome reaches its requester."""
    job.state = "done"
    _job_ended(job.loop)
    future, finish = job.future, job.finish
    job.build = job.finish = job.future = None
    assert future is not None
    assert finish is not None
    if job.abandoned or future.cancelled():
        # The requester is gone (see cancelled()): nobody will use the child.
        if result is not None:
            discard(result[1])
        if job.abandoned and not future.done():
            future.set_result(None)
        return
    if exc is not None:
        future.set_exception(exc)
        return
    assert result is not None
    try:
        value = finish(result[0], result[1], job.loop)
    except BaseException as err:  # finish() has discarded the child
        future.set_exception(err)
    else:
        future.set_result(value)


def discard(result: Spawned) -> None:
    """Kill and reap a child nobody wants any more, and close its descriptors."""
    for fd in (result.stdin, result.stdout, result.stderr):
        if fd is not None:
            _close_all([fd])
    if result.pidfd is not None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(result.pidfd, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, result.pidfd, os.WEXITED)
        os.close(result.pidfd)
    else:
        # pid mode: unreaped and ours, so the PID still names the child.
        with contextlib.suppress(ProcessLookupError):
            os.kill(result.pid, signal.SIGKILL)
        _reap_failed(result.pid)


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# Its workers hand every outcome to _hand_over (above), into the inbox of the
# outcome's loop.
_pool = SpawnPool(_default_workers(), _hand_over)
_inflight: dict[asyncio.AbstractEventLoop, int] = {}  # pooled spawns per loop


# The task that last spawned inline on this thread's loop, and when. The same
# task spawning again (sequential code) stays inline; another task within
# _BURST_WINDOW seconds is taken for a burst and goes to the pool, which from
# then on stays in use until the burst's jobs are done (_inflight). (A loop
# callback to mark the end of each iteration would be exact, but costs a loop
# turn per sequential spawn, spent right beside the newly forked child.) The
# loop and the task are kept by id: a reference would keep the loop alive, or
# the task's result, a Process; a new task that reuses the id of a finished
# one just counts as the same. One record per thread, since a loop runs on one.
class _InlineRecord(threading.local):
    last: tuple[int, int, float] | None = None  # (id(loop), id(task), time)


_inlined = _InlineRecord()
_BURST_WINDOW = 0.001
_batches: dict[
    asyncio.AbstractEventLoop, list[_Job[Any]]
] = {}  # jobs waiting for the iteration end


def set_spawn_workers(workers: int) -> None:
    """Set how many threads may run fork/exec steps at once (default ``min(4, CPUs)``).

    ``0`` runs every spawn inline on the event loop thread. Waiting for
    children never uses these threads.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative int, not {workers!r}")
    _pool.resize(workers)


def pooled_in_flight() -> bool:
    """Whether a spawn handed to the pool has not reached its loop yet (any loop).

    Its child may exist already, unknown to ``_waiting`` until the outcome is
    delivered on the loop thread (``_deliver``: the count drops there, in the same
    step as the child is registered). See ``aioproc.reap_orphans``.
    """
    return bool(_inflight)


def get_spawn_workers() -> int:
    """The current size of the spawn worker pool."""
    return _pool.size


def inline_allowed(
    loop: asyncio.AbstractEventLoop, inline: bool = False, heavy: bool = False
) -> int | None:
    """Whether this spawn should run its fork/exec step here, on the loop thread.

    Yes when no pooled spawn of this loop is in flight and no *other* task
    spawned inline in the last millisecond: one spawn blocks the loop for a
    fraction of a millisecond, and skipping the thread hand-off keeps
    sequential spawning as fast as a bare ``posix_spawn`` with no extra
    thread. Always with ``inline=True`` (a child with a parent-death signal
    must be forked by a thread that outlives it) or with no pool. Never for a
    ``heavy`` spawn (one with a user or group) while there is a pool: its
    name lookups may ask a directory server (NSS), and it needs a real fork.

    Returns None for "no, use the pool", else the id of the current task, for
    :func:`fork_here` to record.
    """
    if not inline and _pool.size and (heavy or loop in _inflight):
        return None  # the common answer in a burst, found cheaply
    task = id(asyncio.current_task(loop))
    if inline or not _pool.size:
        return task
    last = _inlined.last
    if (
        last is None
        or last[0] != id(loop)
        or last[1] == task
        or time.monotonic() - last[2] >= _BURST_WINDOW
    ):
        return task
    return None


def fork_here(
    spec: SpawnSpec, mode: Literal["pidfd", "pid"], loop: asyncio.AbstractEventLoop, task: int
) -> Spawned | None:
    """The fork/exec step on the loop thread; None if the fork lock is busy.

    ``task`` is what :func:`inline_allowed` returned.
    """
    if not fork_lock.try_acquire_spawning():
        return None
    # Work that would otherwise run right after the fork, beside the new
    # child, runs before it instead.
    _waiting.flush_put_off(loop)
    try:
        return spawn_sync(spec, mode)
    finally:
        fork_lock.release_spawning()
        # From the end of the spawn: the next task of a burst asks right after
        # it, however long this fork took.
        _inlined.last = (id(loop), task, time.monotonic())


def must_stay_inline(inline: bool) -> bool:
    """Whether a spawn that found the fork lock busy must still not use the pool."""
    return inline or _pool.size == 0


async def fork_here_locked(spec: SpawnSpec, mode: Literal["pidfd", "pid"]) -> Spawned:
    """The fork/exec step on the loop thread, waiting for the fork lock first."""
    async with fork_lock.spawning():
        return spawn_sync(spec, mode)


def enqueue(
    build: SpecBuilder,
    mode: Literal["pidfd", "pid"],
    finish: Finisher[T],
    loop: asyncio.AbstractEventLoop,
) -> _Job[T]:
    """Queue the step for the pool; ``job.future`` resolves to ``finish(spec, spawned, loop)``.

    This is all a spawn costs the loop in a burst, and a burst runs it once
    per task within a single loop iteration, so it does as little as it can:
    argument checking runs on the worker, and the jobs of one iteration are
    handed to the pool together once it is over (waking a worker mid-burst
    would have it compete with the loop thread for the GIL). ``loop`` is the
    running loop, which the caller has at hand already.
    """
    job = _Job(build, mode, loop, finish)
    _inflight[loop] = _inflight.get(loop, 0) + 1
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = []
        loop.call_soon(_submit_batch, loop)
    batch.append(job)
    return job


async def cancelled(
    job: _Job[T], future: asyncio.Future[Any], close: Callable[[T], object]
) -> None:
    """Clean up after a requester cancelled while awaiting ``future`` (its ``job.future``).

    ``close`` disposes of a finished result that arrived just before the
    cancellation (for a ``Process``: kill and reap the child, close its pipes).

    If no worker has started the step, withdraw it: nothing was created. If
    one has, the child may exist any moment now: wait for the outcome (as
    long as the child's exec takes, usually under a millisecond, longer on a
    busy machine; see ``_Started``), kill and reap the child, close its
    pipes, and only then let the cancellation through, so that a cancelled
    spawn() never leaves anything behind, not even for a moment. (Outcomes
    are delivered on the loop thread, so the state checked here cannot
    change under us.)
    """
    if job.withdraw():
        _job_ended(job.loop)
        return
    if job.state == "withdrawn":
        return  # the pool refused it (see _submit_batch): nothing was created
    if job.state == "done":
        # Delivered already, to the future the requester was awaiting; its
        # cancellation came after. deliver() discarded the outcome if that
        # future was cancelled by then; otherwise it holds a finished result.
        if not future.cancelled() and future.exception() is None:
            close(future.result())
        return
    job.abandoned = True
    outcome = job.future = job.loop.create_future()
    while not outcome.done():
        try:
            await asyncio.wait([outcome])
        except asyncio.CancelledError:
            continue  # cancelled again: the outcome still has to be cleaned up


def _job_ended(loop: asyncio.AbstractEventLoop) -> None:
    left = _inflight[loop] - 1
    if left:
        _inflight[loop] = left
    else:
        del _inflight[loop]


def _submit_batch(loop: asyncio.AbstractEventLoop) -> None:
    # Jobs withdrawn before the hand-over have nothing left to do.
    jobs = [job for job in _batches.pop(loop, ()) if job.state == "queued"]
    if not jobs:
        return
    try:
        # The inbox first: making it can fail too (owned_by_loop needs a
        # descriptor the first time), and no outcome may come without one.
        inbox = _inbox_for(loop)
        _pool.submit(jobs)
    except Exception as exc:
        # Nothing was created; every requester of the batch gets the error.
        for job in jobs:
            if job.withdraw():
                _job_ended(loop)
            if job.future is not None and not job.future.done():
                job.future.set_exception(exc)
        return
    inbox.watch(loop)


def _discard_unclaimed_at_exit() -> None:
    for inbox in _inboxes.objects():
        inbox.discard_all()


atexit.register(_discard_unclaimed_at_exit)


def _after_fork_in_child() -> None:
    _inboxes.clear()  # (the inboxes know they are the parent's: see discard_all)
    _batches.clear()
    _pool._after_fork_in_child()
    _inflight.clear()
    _inlined.last = None


os.register_at_fork(after_in_child=_after_fork_in_child)
