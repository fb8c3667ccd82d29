"""The spawn worker pool: :class:`SpawnPool`, the threads that run fork/exec steps off the loop.

A job (:class:`_Job`) is one step queued for the pool; a worker claims it,
builds its spec, runs the C step or forks on the fallback (:class:`_Started`:
confirming the exec later), and hands the outcome to the function the pool
was made with (the inbox's ``_hand_over``, which brings it to the requester's
loop; see ``_inbox``, which also holds the one pool instance).
"""

from __future__ import annotations

import asyncio
import errno
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from .._forklock import exec_lock, fork_lock
from .._signals import c_sigmask
from . import _direct
from ._direct import _spawn_direct
from ._fallback import Forked, _worker, spawn_finish, spawn_start
from ._spec import _ALL_SIGNALS, Spawned, SpawnSpec

__all__ = [
    "Finisher",
    "HandOver",
    "SpawnPool",
    "SpecBuilder",
]

SpecBuilder = Callable[[], SpawnSpec]
T = TypeVar("T")
# Turns a step's outcome into the requester's result, on the loop thread.
Finisher = Callable[[SpawnSpec, Spawned, asyncio.AbstractEventLoop], T]


# One lock for every job's queued -> running / withdrawn transition: held for
# a compare-and-set only, so sharing it costs nothing, and a burst does not pay
# for a lock object per spawn.
_job_state_lock = threading.Lock()


class _Job(Generic[T]):
    """One fork/exec step for the pool: queued -> running -> delivered, or withdrawn.

    ``finish`` turns the step's outcome into what the requester awaits (a
    ``Process``); it runs on the loop thread when the outcome is delivered,
    and is given the loop (asking asyncio for it costs a system call, getpid).
    """

    __slots__ = ("abandoned", "build", "finish", "future", "loop", "mode", "state")

    def __init__(
        self,
        build: SpecBuilder,
        mode: Literal["pidfd", "pid"],
        loop: asyncio.AbstractEventLoop,
        finish: Finisher[T],
    ) -> None:
        # build, finish and future are dropped once the outcome is delivered
        # (see _deliver): the worker thread that ran the job may still hold
        # it for a moment, and must not keep the finished Process alive.
        self.build: SpecBuilder | None = build
        self.mode = mode
        self.loop = loop
        self.finish: Finisher[T] | None = finish
        self.future: asyncio.Future[Any] | None = loop.create_future()
        self.state = "queued"
        # Set when the requester was cancelled while a worker ran the step:
        # the outcome is then discarded on delivery, never finished.
        self.abandoned = False

    def claim(self) -> bool:
        """Worker side: start the job unless its requester withdrew it."""
        with _job_state_lock:
            if self.state != "queued":
                return False
            self.state = "running"
            return True

    def withdraw(self) -> bool:
        """Requester side: take the job back if no worker has started it."""
        with _job_state_lock:
            if self.state != "queued":
                return False
            self.state = "withdrawn"
            return True


# Where a worker puts a step's outcome: the job, then (spec, child) or the
# exception the step raised. From the worker thread.
HandOver = Callable[[_Job[Any], tuple[SpawnSpec, Spawned] | None, BaseException | None], None]


class _Started(NamedTuple):
    """A pooled spawn whose child is forked but whose exec is not confirmed.

    Only on the fallback: ``_clone_exec`` returns once the exec is done.

    Confirming takes the child past its exec: with vfork the worker resumes
    when the exec has gone past its point of no return, but the error pipe's
    close-on-exec write end closes a little later, and on a busy machine the
    child can be preempted in between (the worker then waited ~0.15 ms per
    spawn on average in a 1,000-child storm on 2 cores, with a long tail). A
    worker forks its next job meanwhile and confirms both afterwards. The
    spawning side of the fork lock stays held until the confirmation.
    """

    job: _Job[Any]
    spec: SpawnSpec
    forked: Forked
    release: Callable[[], None]  # ends this spawn's hold on the fork lock


class SpawnPool:
    """A small, bounded pool of threads that run the fork/exec step.

    Forking and exec'ing block the calling thread for a few hundred
    microseconds each (longer for big parents, or without vfork); a thousand
    concurrent spawns done on the loop thread stall it for most of a second.
    The workers take that off the loop, and, since ``_clone_exec`` releases
    the GIL for the whole step (and the fallback's ``fork_exec`` while a vfork
    parent waits for the exec: Python 3.12, and 3.11 since late 2023; not
    3.10, see docs/processes.md), several spawns proceed at once. Only this
    step runs in the pool: waiting for children stays thread-free.

    Threads start lazily, one per queued job up to ``size``, and retire after
    ``IDLE_TIMEOUT`` seconds without work, so a process that spawned a burst
    once does not keep them. They are started under :data:`exec_lock` (seed
    003) and are daemons, so they never hold up exit.

    Each outcome goes to ``hand_over`` (from the worker thread).
    """

    IDLE_TIMEOUT = 10.0

    def __init__(self, size: int, hand_over: HandOver) -> None:
        self._size = size
        self._hand_over = hand_over
        self._lock = threading.Lock()
        self._init_state()

    def _init_state(self) -> None:
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._threads: set[threading.Thread] = set()
        self._idle = 0  # workers blocked on the queue
        self._queued = 0  # items in the queue: jobs, and None for each worker told to exit
        self._exiting = 0  # the None items among them

    @property
    def size(self) -> int:
        return self._size

    def has_queued(self) -> bool:
        """Whether items wait in the queue (read without the lock: a hint)."""
        return self._queued > 0

    def resize(self, size: int) -> None:
        with self._lock:
            self._size = size
            extra = len(self._threads) - self._exiting - size
            for _ in range(max(0, extra)):
                # Each None makes one worker exit once it reaches it; until then
                # that worker no longer counts towards the size.
                self._queued += 1
                self._exiting += 1
                self._queue.put(None)

    def submit(self, jobs: Sequence[_Job[Any]]) -> None:
        """Queue ``jobs``, starting workers as needed (up to the size).

        A burst queues all of its jobs at once: one pass under the lock, so
        the loop thread, which runs this, is not held up for long, nor
        interrupted by a worker, while it does. Raises BlockingIOError (and
        queues nothing) when no worker runs and none can be started, and
        RuntimeError when the pool's size is 0.
        """
        with self._lock:
            self._queued += len(jobs)
            # Items ahead of these jobs (exit markers included) take idle
            # workers first; start a worker for each item none would be left
            # for, up to the size.
            wanted = min(
                self._queued - self._idle, self._size - (len(self._threads) - self._exiting)
            )
            failed: RuntimeError | None = None
            for _ in range(wanted):
                thread = threading.Thread(target=self._work, name="aioproc-spawn", daemon=True)
                self._threads.add(thread)
                try:
                    with exec_lock:  # seed 003: no thread creation during exec_replace
                        thread.start()
                except RuntimeError as exc:
                    # Out of processes/threads (RLIMIT_NPROC, a pids cgroup). A
                    # worker that already runs will take the jobs.
                    self._threads.discard(thread)
                    failed = exc
                    break
            if len(self._threads) - self._exiting <= 0:
                # No worker will ever take these jobs: fail them, queue nothing.
                self._queued -= len(jobs)
                if failed is not None:  # the way fork would have failed
                    raise BlockingIOError(
                        errno.EAGAIN,
                        f"cannot start a spawn worker thread ({failed}): the limit on "
                        "processes (RLIMIT_NPROC or a pids cgroup) is reached",
                    ) from failed
                # Resized to 0 after these spawns chose the pool, in the same
                # loop iteration.
                raise RuntimeError(
                    "the spawn pool has no workers: set_spawn_workers(0) was called "
                    "while these spawns waited to be handed to it"
                )
            put = self._queue.put
            for job in jobs:
                put(job)

    def _work(self) -> None:
        # Block every signal in this thread, so that process-directed signals
        # go to threads that expect them. The signal hub hands a signal back
        # to its previous disposition with the loop's remove_signal_handler,
        # which leaves SIG_DFL in place for a moment; a signal taken by a
        # worker in that moment would get the default action (death, for
        # most). The children get the normal mask: _clone_exec gives it to
        # them (set_child_mask); on the fallback, the fork itself runs with it
        # (_fork_exec).
        _worker.normal_mask = c_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
        if _direct._clone_exec is not None:
            _direct._clone_exec.set_child_mask(_worker.normal_mask)
        me = threading.current_thread()
        # Children forked by this worker whose exec is not confirmed yet (see
        # _Started): the worker forks the next one meanwhile.
        started: list[_Started] = []
        while True:
            if started:
                self._settle(started, wait=False)
            if started:
                # Busy: take a job only if one is there, else wait for the exec.
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    self._settle(started, wait=True)
                    continue
                if job is None:
                    self._settle(started, wait=True)
                was_idle = 0
            else:
                with self._lock:
                    self._idle += 1
                try:
                    job = self._queue.get(timeout=self.IDLE_TIMEOUT)
                except queue.Empty:
                    with self._lock:
                        self._idle -= 1
                        # Retire unless that would strand an item: submit()
                        # counts a job in _queued (under this lock) before
                        # putting it, and starts no thread for it while it
                        # counts enough idle workers, this one included. So
                        # stay while the other idle workers cannot take every
                        # item counted.
                        if self._queued <= self._idle:
                            self._threads.discard(me)
                            return
                    continue
                was_idle = 1
            with self._lock:
                self._idle -= was_idle
                self._queued -= 1
                if job is None:
                    # Nothing of this worker's is left unconfirmed (above).
                    self._exiting -= 1
                    self._threads.discard(me)
                    return
            self._run(job, started)
            # Drop the job before idling: its future holds the finished
            # Process, which must be freed as soon as its owner drops it (its
            # pipes are closed then), not when this worker's next job comes.
            del job

    # At most this many children per worker wait for their exec to be
    # confirmed; with more, the worker waits for the oldest first.
    MAX_STARTED = 4

    def _run(self, job: _Job[Any], started: list[_Started]) -> None:
        if not job.claim():
            return  # withdrawn: its requester was cancelled before we got to it
        try:
            assert job.build is not None  # dropped only after delivery
            spec = job.build()
            if len(started) >= self.MAX_STARTED:
                self._settle(started, wait=True)
            if fork_lock.try_acquire_spawning():
                release: Callable[[], None] = fork_lock.release_spawning
            else:
                # An exclusive holder or waiter is in the way. The spawns this
                # worker started still hold the spawning side, and an
                # exclusive waiter waits for them: confirm them first, or
                # this wait and that one would wait on each other for ever.
                self._settle(started, wait=True)
                hold = fork_lock.spawning_sync()
                hold.__enter__()

                def release() -> None:
                    hold.__exit__(None, None, None)

            try:
                done = _spawn_direct(spec, job.mode)  # exec'd already: nothing to confirm
                if done is None:
                    forked = spawn_start(spec, nonblocking=True)
            except BaseException:
                release()
                raise
        except BaseException as exc:
            self._hand_over(job, None, exc)
            return
        if done is not None:
            release()
            self._hand_over(job, (spec, done), None)
            return
        started.append(_Started(job, spec, forked, release))

    def _settle(self, started: list[_Started], wait: bool) -> None:
        """Hand over the outcome of every started spawn whose exec is confirmed.

        With ``wait``, wait for each one, leaving ``started`` empty.
        """
        left = []
        for item in started:
            job, spec, forked, release = item
            try:
                result = spawn_finish(forked, spec, job.mode, wait=wait)
            except BaseException as exc:
                release()
                self._hand_over(job, None, exc)
                continue
            if result is None:
                left.append(item)
                continue
            # The child exec'd and its pidfd is open: the spawning hold ends.
            release()
            self._hand_over(job, (spec, result), None)
        started[:] = left

    def _after_fork_in_child(self) -> None:
        # The workers did not survive the fork; start afresh.
        self._lock = threading.Lock()
        self._init_state()
