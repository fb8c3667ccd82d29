"""The counted fork lock and the exec lock (seeds 003 and 004).

Two locks live here:

``fork_lock`` (a :class:`ForkLock`)
    A reader/writer lock whose *shared* side is taken by every spawn
    ("spawning") and whose *exclusive* side is taken by code that must not
    overlap a spawn: code that makes descriptors inheritable non-atomically,
    calls :func:`os.fork`, or replaces the process image.  It works from
    coroutines (on any event loop, asyncio or uvloop) and from plain threads
    at the same time.

``exec_lock`` (a :class:`threading.Lock`)
    Serializes :func:`exec_replace` (``execve`` of the current process) with
    the creation of aioproc's own threads, working around a Linux execve/clone
    race (see the comment above ``exec_lock``).

Lock order: take the fork lock (either side) before ``exec_lock``, never the
other way round, and never wait on the fork lock while holding ``exec_lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import NoReturn, TypeAlias, final

from ._durations import check_duration

__all__ = ["ForkLock", "exec_lock", "exec_replace", "fork_lock"]

_StrOrBytesPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]
"""What :func:`exec_replace` accepts as one argument."""


# ---------------------------------------------------------------------------
# Waiters
#
# A waiter is queued when an acquisition cannot be granted at once.  Granting
# always happens under the lock's internal mutex, by whichever thread released
# (or cancelled) last: it sets ``granted``, updates the counters on the
# waiter's behalf and then wakes it.  The woken side therefore never has to
# re-check anything -- except when it gives up (cancellation, timeout,
# KeyboardInterrupt, coroutine closed) and finds that it was granted anyway, in
# which case it hands the grant back.
# ---------------------------------------------------------------------------


class _Waiter:
    """One queued acquisition, of either side."""

    __slots__ = ("exclusive", "generation", "granted")

    def __init__(self, exclusive: bool, generation: int) -> None:
        self.exclusive = exclusive
        # The lock's generation when the waiter queued; a fork in between makes
        # the waiter stale (see ForkLock._reset_after_fork).
        self.generation = generation
        self.granted = False

    def wake(self) -> bool:
        """Wake the waiter after it was granted.

        Called with the lock's mutex held; must not block.  Returns False if the
        waiter can never run again (its event loop is closed), in which case
        the grant is taken back and offered to the next waiter.
        """
        raise NotImplementedError


class _ThreadWaiter(_Waiter):
    """A thread blocked in ``spawning_sync()`` / ``exclusive_sync()``."""

    __slots__ = ("event",)

    def __init__(self, exclusive: bool, generation: int) -> None:
        super().__init__(exclusive, generation)
        self.event = threading.Event()

    def wake(self) -> bool:
        self.event.set()
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    # Runs on the waiter's loop.  The future may already be cancelled: then the
    # task sees CancelledError, finds ``granted`` set and releases the grant.
    if not future.done():
        future.set_result(None)


class _TaskWaiter(_Waiter):
    """A coroutine suspended in ``spawning()`` / ``exclusive()``."""

    __slots__ = ("future", "loop")

    def __init__(
        self,
        exclusive: bool,
        generation: int,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[None],
    ) -> None:
        super().__init__(exclusive, generation)
        self.loop = loop
        self.future = future

    def wake(self) -> bool:
        loop = self.loop
        if loop.is_closed():
            # Nobody will ever run this task again; skip it.  (If its coroutine
            # is closed later, the GeneratorExit path finds it not granted.)
            return False
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # Released from the waiter's own loop thread: resolve directly.
            if self.future.done():
                # Cancelled and about to run its cleanup; it is no longer in the
                # queue, so dropping it here is all the cleanup needs.
                return False
            self.future.set_result(None)
            return True
        # Released from another thread (or another loop): futures are not
        # thread-safe, so hand the wake-up to the waiter's loop.  The loop may
        # be closed between the check above and this call; that raises
        # RuntimeError and we skip the waiter as above.
        try:
            loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:
            return False
        return True


# ---------------------------------------------------------------------------
# Context managers returned by spawning() / exclusive() and their _sync forms
# ---------------------------------------------------------------------------


class _AsyncHold:
    """``async with`` support for one side of a :class:`ForkLock`."""

    __slots__ = ("_exclusive", "_generation", "_lock")

    def __init__(self, lock: ForkLock, exclusive: bool) -> None:
        self._lock = lock
        self._exclusive = exclusive
        self._generation = -1

    async def __aenter__(self) -> None:
        self._generation = await self._lock._acquire_async(self._exclusive)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock._release(self._exclusive, self._generation)


class _SyncHold:
    """``with`` support for one side of a :class:`ForkLock`."""

    __slots__ = ("_exclusive", "_generation", "_lock", "_timeout")

    def __init__(self, lock: ForkLock, exclusive: bool, timeout: float | None) -> None:
        self._lock = lock
        self._exclusive = exclusive
        self._timeout = timeout
        self._generation = -1

    def __enter__(self) -> None:
        self._generation = self._lock._acquire_sync(self._exclusive, self._timeout)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock._release(self._exclusive, self._generation)


# ---------------------------------------------------------------------------
# ForkLock
# ---------------------------------------------------------------------------

# Every ForkLock, so that the at-fork hook can reset them all in the child.
_instances: weakref.WeakSet[ForkLock] = weakref.WeakSet()


@final
class ForkLock:
    """A counted, fair reader/writer lock around process creation.

    The *spawning* side is shared: any number of spawns hold it at once, so
    spawns never serialize against each other (seed 004: Go made its ForkLock
    counted for exactly this reason).  aioproc holds it for every spawn from
    before the spawn's pipes exist until the child has exec'd and its pidfd is
    open -- the window in which a descriptor that is inheritable at that
    moment would leak into the child.

    The *exclusive* side waits until no spawn is in flight and keeps new spawns
    out while held.  Take it around code that creates inheritable descriptors
    non-atomically (``os.pipe()`` followed by ``os.set_inheritable(fd, True)``
    and a close before leaving), around :func:`os.fork`, and around replacing
    the process image (:func:`exec_replace` does this for you).

    Fairness, both ways (FIFO phases): an acquisition that cannot be granted
    at once queues, and the queue is served in order.  A queued exclusive
    waiter therefore makes later spawns queue behind it, so a stream of spawns
    cannot starve it; and when an exclusive holder releases, *all* spawns
    queued before the next exclusive waiter are admitted together, so a stream
    of exclusive holders cannot starve spawns either.

    Usable from coroutines (``async with lock.spawning()``) and from threads
    (``with lock.spawning_sync()``) at the same time.  A waiting coroutine never
    blocks its event loop; cancelling it leaves the lock consistent.  The lock
    is not reentrant: acquiring either side again while holding the exclusive
    side, or while an exclusive waiter is queued, deadlocks.  The ``_sync``
    forms block the calling thread, so do not use them on an event loop thread
    while a spawn that needs that loop to finish may be in flight.

    Holds are not owned by a thread or task: the spawn path may take the
    spawning side on the loop thread and release it from a worker thread.

    After :func:`os.fork` the child gets a fresh, unlocked lock (the parent's
    holders and waiters do not exist there); leaving a ``with``/``async with``
    block entered before the fork is then a no-op in the child.

    Normally you use the process-wide instance, :data:`aioproc.fork_lock`.
    """

    # State, all guarded by _mutex (a short, non-blocking-in-practice
    # threading.Lock; it is never held while waiting or running user code).
    _mutex: threading.Lock
    _spawning: int  # number of spawning holds
    _exclusive: bool  # whether the exclusive side is held
    _waiters: deque[_Waiter]  # FIFO of queued acquisitions
    _orphans: list[_TaskWaiter]  # closed coroutines' waiters, see _unlock()
    _generation: int  # bumped by every reset after fork

    def __init__(self) -> None:
        self._generation = 0
        self._init_state()
        _instances.add(self)

    def _init_state(self) -> None:
        self._mutex = threading.Lock()
        self._spawning = 0
        self._exclusive = False
        self._waiters = deque()
        self._orphans = []
        self._generation += 1

    def _reset_after_fork(self) -> None:
        # In the child only the forking thread survives.  Other threads'
        # holds, and every waiter, belong to threads or loops that are gone, so
        # the child starts from a fresh lock.  The mutex is recreated because
        # another thread may have held it at the moment of the fork.  Holds that
        # the forking thread itself entered before the fork carry the old
        # generation, and releasing them is a no-op here.
        self._init_state()

    def __repr__(self) -> str:
        return (
            f"<ForkLock spawning={self._spawning} exclusive={self._exclusive} "
            f"waiting={len(self._waiters)}>"
        )

    # -- introspection (snapshots; for tests and debugging) -----------------

    @property
    def spawning_count(self) -> int:
        """The number of spawning holds right now (a snapshot)."""
        return self._spawning

    @property
    def exclusive_held(self) -> bool:
        """Whether the exclusive side is held right now (a snapshot)."""
        return self._exclusive

    @property
    def waiting_count(self) -> int:
        """The number of queued acquisitions, both sides (a snapshot)."""
        return len(self._waiters)

    # -- public API -----------------------------------------------------------

    def spawning(self) -> contextlib.AbstractAsyncContextManager[None]:
        """``async with lock.spawning():`` -- hold the shared (spawning) side."""
        return _AsyncHold(self, exclusive=False)

    def exclusive(self) -> contextlib.AbstractAsyncContextManager[None]:
        """``async with lock.exclusive():`` -- hold the exclusive side."""
        return _AsyncHold(self, exclusive=True)

    def spawning_sync(
        self, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with lock.spawning_sync():`` -- the spawning side, from a thread.

        Raises :class:`TimeoutError` if not granted within *timeout* seconds.
        """
        return _SyncHold(self, False, _check_timeout(timeout))

    def exclusive_sync(
        self, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with lock.exclusive_sync():`` -- the exclusive side, from a thread.

        Raises :class:`TimeoutError` if not granted within *timeout* seconds.
        """
        return _SyncHold(self, True, _check_timeout(timeout))

    async def acquire_spawning(self) -> None:
        """Take the spawning side; pair with :meth:`release_spawning`."""
        await self._acquire_async(False)

    async def acquire_exclusive(self) -> None:
        """Take the exclusive side; pair with :meth:`release_exclusive`."""
        await self._acquire_async(True)

    def try_acquire_spawning(self) -> bool:
        """Take the spawning side if that needs no waiting; never blocks.

        Fails while the exclusive side is held *or anything is queued* (a
        queued exclusive waiter must not be overtaken; see the class docstring).
        This is the entry point of the spawn path, which runs on the loop
        thread and falls back to awaiting :meth:`spawning` when it fails.
        """
        # _try_acquire(False), flattened: every spawn passes here.
        mutex = self._mutex
        mutex.acquire()
        try:
            entered = not self._waiters and not self._exclusive
            if entered:
                self._spawning += 1
        finally:
            self._unlock_fast()
        return entered

    def try_acquire_exclusive(self) -> bool:
        """Take the exclusive side if that needs no waiting; never blocks."""
        return self._try_acquire(True)

    def release_spawning(self) -> None:
        """Release one spawning hold (from any thread).

        Raises :class:`RuntimeError` if no spawning hold is held.
        """
        # _release(False, None), flattened: every spawn passes here.
        mutex = self._mutex
        mutex.acquire()
        try:
            if self._spawning <= 0 or self._waiters:
                self._leave_locked(False)  # the error, or waiters to admit
            else:
                self._spawning -= 1
        finally:
            self._unlock_fast()

    def release_exclusive(self) -> None:
        """Release the exclusive hold (from any thread).

        Raises :class:`RuntimeError` if the exclusive side is not held.
        """
        self._release(True, None)

    # -- the mutex -----------------------------------------------------------

    def _unlock(self) -> None:
        """Release ``_mutex``, first handling any orphaned waiters.

        A coroutine that is *closed* while waiting (``coro.close()``, or the
        garbage collector finalizing a task whose loop was closed) runs its
        cleanup at an arbitrary point -- possibly inside another critical
        section of this very lock on the same thread, where taking the
        non-reentrant mutex would deadlock.  So that path only appends the
        waiter to ``_orphans`` (atomic under the GIL) and tries the mutex
        without blocking.  Whoever holds the mutex handles orphans before
        releasing it, and looks once more afterwards in case one was added in
        between; if it then cannot get the mutex, the thread that has it will
        do the same on its way out.
        """
        mutex = self._mutex
        while True:
            if self._orphans:
                self._reap_orphans_locked()
            mutex.release()
            if not self._orphans or not mutex.acquire(blocking=False):
                return

    def _unlock_fast(self) -> None:
        """:meth:`_unlock` for the common case of no orphans, without its loop."""
        if self._orphans:
            self._unlock()
            return
        mutex = self._mutex
        mutex.release()
        if self._orphans and mutex.acquire(blocking=False):
            self._unlock()

    def _reap_orphans_locked(self) -> None:
        orphans = self._orphans
        while orphans:
            self._abandon_locked(orphans.pop())

    # -- the state machine (all *_locked methods need _mutex held) -----------

    def _can_enter_locked(self, exclusive: bool) -> bool:
        # Anything queued means somebody is blocked; a newcomer of either kind
        # goes behind it.  This is what keeps a waiting exclusive from being
        # starved by a stream of spawns (seed 004 lets waiting readers go first
        # for the same reason, in the other direction).
        if self._waiters or self._exclusive:
            return False
        return not exclusive or self._spawning == 0

    def _enter_locked(self, exclusive: bool) -> None:
        if exclusive:
            self._exclusive = True
        else:
            self._spawning += 1

    def _leave_locked(self, exclusive: bool) -> None:
        if exclusive:
            if not self._exclusive:
                raise RuntimeError("ForkLock.release_exclusive(): the exclusive side is not held")
            self._exclusive = False
        else:
            if self._spawning <= 0:
                raise RuntimeError(
                    "ForkLock.release_spawning(): no spawning hold is held "
                    "(released more often than acquired)"
                )
            self._spawning -= 1
            if self._spawning:
                # Other spawns still in flight: nothing queued can go yet.
                return
        self._grant_locked()

    def _grant_locked(self) -> None:
        """Admit queued waiters from the front, in FIFO phases.

        Invariant afterwards: the queue is empty or its head cannot enter.
        Spawning waiters at the head are admitted together until an exclusive
        waiter is reached; that one is admitted only when no spawn is in
        flight, and then alone.  So after an exclusive hold ends, every spawn
        queued before the next exclusive waiter gets in at once, and an
        exclusive waiter is admitted as soon as the spawns ahead of it are done.
        """
        waiters = self._waiters
        while waiters:
            head = waiters[0]
            if self._exclusive or (head.exclusive and self._spawning):
                return
            waiters.popleft()
            head.granted = True
            if not head.wake():
                head.granted = False
                continue
            self._enter_locked(head.exclusive)
            if head.exclusive:
                return

    def _abandon_locked(self, waiter: _Waiter) -> None:
        """A waiter gives up: hand back its grant, or leave the queue."""
        if waiter.generation != self._generation:
            return  # queued before a fork; this lock was reset since
        if waiter.granted:
            # The grant raced with the cancellation (or timeout): it was
            # granted after all, but its owner will not use it.
            waiter.granted = False
            self._leave_locked(waiter.exclusive)
            return
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return  # already dropped (its loop was closed)
        # If it was the head (say, an exclusive waiter ahead of spawns), the
        # waiters behind it may be able to go now.
        self._grant_locked()

    # -- acquisition and release ---------------------------------------------

    def _try_acquire(self, exclusive: bool) -> bool:
        self._mutex.acquire()
        try:
            if not self._can_enter_locked(exclusive):
                return False
            self._enter_locked(exclusive)
            return True
        finally:
            self._unlock()

    def _release(self, exclusive: bool, generation: int | None) -> None:
        self._mutex.acquire()
        try:
            if generation is not None and generation != self._generation:
                # Entered before a fork, released in the child, whose lock was
                # reset: there is nothing to release.
                return
            self._leave_locked(exclusive)
        finally:
            self._unlock()

    def _abandon(self, waiter: _Waiter) -> None:
        self._mutex.acquire()
        try:
            self._abandon_locked(waiter)
        finally:
            self._unlock()

    def _acquire_sync(self, exclusive: bool, timeout: float | None) -> int:
        """Block the calling thread until granted; returns the generation."""
        self._mutex.acquire()
        try:
            generation = self._generation
            if self._can_enter_locked(exclusive):
                self._enter_locked(exclusive)
                return generation
            waiter = _ThreadWaiter(exclusive, generation)
            self._waiters.append(waiter)
        finally:
            self._unlock()
        try:
            if waiter.event.wait(timeout):
                return generation
        except BaseException:
            # KeyboardInterrupt (or another asynchronous exception) while
            # waiting: give the place or the grant back.
            self._abandon(waiter)
            raise
        self._mutex.acquire()
        try:
            if waiter.granted:
                return generation  # granted just as the wait timed out: keep it
            self._abandon_locked(waiter)
        finally:
            self._unlock()
        side = "exclusive" if exclusive else "spawning"
        raise TimeoutError(f"ForkLock: the {side} side was not granted within {timeout} s")

    async def _acquire_async(self, exclusive: bool) -> int:
        """Suspend the calling task until granted; returns the generation."""
        loop = asyncio.get_running_loop()
        # Only the short state mutex is taken on the loop thread; waiting is a
        # future that the releasing side resolves (thread-safely if needed).
        self._mutex.acquire()
        try:
            generation = self._generation
            if self._can_enter_locked(exclusive):
                self._enter_locked(exclusive)
                return generation
            waiter = _TaskWaiter(exclusive, generation, loop, loop.create_future())
            self._waiters.append(waiter)
        finally:
            self._unlock()
        try:
            await waiter.future
        except GeneratorExit:
            # The coroutine is being closed, maybe by the garbage collector in
            # the middle of one of our own critical sections: do not block on
            # the mutex (see _unlock).
            self._orphans.append(waiter)
            if self._mutex.acquire(blocking=False):
                self._unlock()
            raise
        except BaseException:
            # Cancelled (or another exception thrown in) while queued.  If the
            # grant happened at the same moment -- the future resolved, or the
            # wake-up already in flight from another thread -- ``granted`` is
            # set and _abandon_locked releases the hold again.
            self._abandon(waiter)
            raise
        return generation


def _check_timeout(timeout: float | None) -> float | None:
    # None waits for ever; infinity is refused (threading's waits overflow on it).
    return None if timeout is None else check_duration(timeout, "timeout")


fork_lock: ForkLock = ForkLock()
"""The process-wide :class:`ForkLock`; every aioproc spawn holds its spawning side."""


# ---------------------------------------------------------------------------
# The exec lock (seed 003)
#
# Linux's execve() has long raced with clone() of a thread in the same process
# (Launchpad bug 1672819, kernel bugzilla 195453; Go bug 19546).  execve's
# check_unsafe_exec() compares the number of threads that share the process's
# fs_struct with the fs_struct's user count.  A thread being created with
# CLONE_FS bumps that count before it shows up in the thread list, so an execve
# that lands in the window sees "shared with someone outside the process",
# marks the exec unsafe (LSM_UNSAFE_SHARE), and the new image silently runs
# *without* the set-user-ID / set-group-ID / file-capability credentials it
# should have gained.  The process-side cure is Go's: never let execve overlap
# thread creation.  aioproc takes exec_lock around starting its own threads
# (the spawn worker pool does ``with exec_lock: thread.start()``), and
# exec_replace() holds it across execve.  Threads that other code starts are
# not covered; neither is a Python thread's own exit, which the kernel handles
# consistently.
#
# Order: fork_lock (either side) first, then exec_lock.  exec_replace() waits
# for the exclusive side *before* taking exec_lock, because a spawn in flight
# may itself be waiting for exec_lock to start a worker thread.
# ---------------------------------------------------------------------------

exec_lock: threading.Lock = threading.Lock()
"""Serializes :func:`exec_replace` with the creation of aioproc's threads."""


def _after_fork_in_child() -> None:
    # A thread that held exec_lock at the moment of the fork (starting a thread
    # or in execve) does not exist in the child and will never release it.  A
    # threading.Lock may be released by any thread, so release it here.  (Do
    # not fork while holding exec_lock yourself: the child would then find it
    # released under your feet.)
    if exec_lock.locked():
        with contextlib.suppress(RuntimeError):
            exec_lock.release()
    for lock in list(_instances):
        lock._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------
# exec_replace
# ---------------------------------------------------------------------------


def exec_replace(
    argv: Sequence[_StrOrBytesPath],
    env: Mapping[str, str] | Mapping[bytes, bytes] | None = None,
) -> NoReturn:
    """Replace the current process image with *argv*, like :func:`os.execvpe`.

    If ``argv[0]`` contains no slash it is looked up on ``PATH`` (taken from
    *env* when given, else from the current environment; :data:`os.defpath`
    if unset).  *env* defaults to the current environment.

    Arguments are checked before any lock is taken:

    * :class:`TypeError` if *argv* is a single ``str``/``bytes``/path instead
      of a sequence, or an element is not ``str``, ``bytes`` or
      :class:`os.PathLike`;
    * :class:`ValueError` if *argv* or ``argv[0]`` is empty, or an argument,
      environment name or value contains a NUL byte (or a name contains
      ``=``);
    * :class:`FileNotFoundError` (naming the program) if it does not exist, or
      :class:`PermissionError` if it is found on ``PATH`` but not executable.

    Then ``sys.stdout`` and ``sys.stderr`` are flushed (buffered output would
    otherwise be lost with the old image), and ``execve`` runs under the
    exclusive side of :data:`fork_lock` -- so no aioproc spawn is in flight and
    none of its half-set-up descriptors or children passes into the new image
    -- and under :data:`exec_lock`, so it cannot race with aioproc creating a
    thread.  If ``execve`` fails, both locks are released and the
    :class:`OSError` propagates.

    The exclusive side is taken with a blocking wait: do not call this on an
    event loop thread while a spawn that needs that loop to complete is in
    flight.
    """
    path, args, env_bytes = _prepare_exec(argv, env)
    _flush_std_streams()
    with fork_lock.exclusive_sync(), exec_lock:
        os.execve(path, args, env_bytes)


def _prepare_exec(
    argv: Sequence[_StrOrBytesPath],
    env: Mapping[str, str] | Mapping[bytes, bytes] | None,
) -> tuple[bytes, list[bytes], dict[bytes, bytes]]:
    """Validate and encode exec_replace's arguments; resolve the program."""
    if isinstance(argv, (str, bytes, os.PathLike)):
        raise TypeError(
            f"argv must be a sequence of arguments, not a single {type(argv).__name__}; "
            f"did you mean [{argv!r}]? (use shlex.split() to split a command line)"
        )
    if not isinstance(argv, Sequence):
        raise TypeError(
            f"argv must be a sequence of str, bytes or os.PathLike, not {type(argv).__name__}"
        )
    if not argv:
        raise ValueError("argv must not be empty: argv[0] names the program")
    args: list[bytes] = []
    for index, arg in enumerate(argv):
        try:
            encoded = os.fsencode(arg)
        except TypeError:
            raise TypeError(
                f"argv[{index}] must be str, bytes or os.PathLike, not {type(arg).__name__}"
            ) from None
        if b"\0" in encoded:
            raise ValueError(f"argv[{index}] contains a NUL byte: {arg!r}")
        args.append(encoded)
    if not args[0]:
        raise ValueError("argv[0] (the program) must not be empty")
    env_bytes = _encode_env(env)
    return _find_program(args[0], env_bytes), args, env_bytes


def _encode_env(env: Mapping[str, str] | Mapping[bytes, bytes] | None) -> dict[bytes, bytes]:
    source: Mapping[str, str] | Mapping[bytes, bytes] = os.environb if env is None else env
    encoded: dict[bytes, bytes] = {}
    for key, value in source.items():
        name = os.fsencode(key)
        if not name or b"=" in name or b"\0" in name:
            raise ValueError(f"illegal environment variable name: {key!r}")
        data = os.fsencode(value)
        if b"\0" in data:
            raise ValueError(f"environment variable {key!r} contains a NUL byte")
        encoded[name] = data
    return encoded


def _find_program(program: bytes, env: Mapping[bytes, bytes]) -> bytes:
    """Resolve *program* the way execvp(3) would, or raise naming it."""
    name = os.fsdecode(program)
    if b"/" in program:
        if not os.path.exists(program):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        return program  # anything else (EACCES, ENOEXEC) is execve's to report
    search_path = env.get(b"PATH")
    if search_path is None:
        search_path = os.fsencode(os.defpath)
    denied: bytes | None = None
    for directory in search_path.split(b":"):
        # An empty entry means the current directory, as in execvp(3).
        candidate = os.path.join(directory, program)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = denied or candidate
    if denied is not None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(denied))
    raise FileNotFoundError(errno.ENOENT, f"{os.strerror(errno.ENOENT)} (not found on PATH)", name)


def _flush_std_streams() -> None:
    seen: list[object] = []
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is None or any(stream is other for other in seen):
            continue
        seen.append(stream)
        # A closed or broken stream must not prevent the exec.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
