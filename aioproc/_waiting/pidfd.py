"""pidfd mode: the loop watches each child's pidfd; signals and the reap go through it.

A pidfd names one process for as long as the descriptor is open, whatever
happens to its PID number, so in this mode no race with PID reuse exists:

* waiting: every pidfd of a loop sits in one epoll instance of ours (a
  :class:`_Watcher`), which is itself registered with the loop through its
  public ``add_reader``. The kernel makes a pidfd readable when the process
  exits. No thread, no SIGCHLD, no polling.
* reaping: ``waitid(P_PIDFD, pidfd, WEXITED)``, never by PID.
* signalling: ``pidfd_send_signal``, never ``kill(pid)``.

Why an epoll of our own rather than ``loop.add_reader`` per pidfd: the loop's
reader machinery (a handle, a selector key, bookkeeping in Python on the
default loop) costs about as much per child as everything else aioproc does
between a spawn and its wait, and it runs right beside the new child. Adding a
pidfd to our epoll, and taking it out again, is one system call each.

What remains is the descriptor's own lifetime (seed 002). The number is used
by the watcher's registration, by signal senders and by the reap, possibly
from finalizers on other threads. If it were closed while one of them still
held the number, the number could be reopened as some other pidfd (for a
different process) and the late user would act on that one. So the descriptor
is reference-counted: one reference for the handle, one while registered with
the watcher, one for the duration of each use; whoever drops the last closes
it. A reaped child's references are dropped right after its waiters have run
(in the loop turn after the reap; before it, if the loop thread spawns first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import sys
import threading
import weakref
from collections.abc import Iterator

from .._status import ExitStatus
from .._util import PerLoop
from . import _sys
from ._child import Child, lost_status, status_from_waitid

assert sys.platform == "linux" or not sys.platform.startswith("win")

__all__ = ["PidfdChild", "close_watcher", "flush_put_off"]


# Guards every pidfd's reference count. Held for a compare-and-update only, so
# one lock for all children costs nothing and saves a lock per child. Nothing
# inside allocates a container, so no garbage collection (and no finalizer
# wanting this lock) can start while it is held.
_refs_lock = threading.Lock()

_P_PIDFD = _sys.P_PIDFD
# One-shot: the epoll reports a pidfd's exit once, after which the registration
# is disabled and needs no EPOLL_CTL_DEL before the close (_Watcher.remove).
# The single-child shortcut of _Watcher._ready takes no event, so that case
# still unregisters as before.
_EVENTS = select.EPOLLIN | select.EPOLLONESHOT
_REAP = os.WEXITED | os.WNOHANG


class PidfdChild(Child):
    __slots__ = ("_fd", "_handle_ref", "_refs", "_spent", "_watcher")

    mode = "pidfd"

    def __init__(self, pid: int, pidfd: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(pid, loop)
        self._fd = pidfd
        self._refs = 1  # the handle's own reference
        self._handle_ref = True
        self._watcher: _Watcher | None = None
        # The watcher took this pidfd's one-shot readiness event (_Watcher._ready).
        self._spent = False

    # ------------------------------------------------------------ the descriptor
    def _acquire_fd(self) -> int | None:
        with _refs_lock:
            if self._refs == 0:
                return None
            self._refs += 1
            return self._fd

    def _release_fd(self) -> None:
        with _refs_lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            os.close(self._fd)

    @contextlib.contextmanager
    def _using_fd(self) -> Iterator[int | None]:
        fd = self._acquire_fd()
        try:
            yield fd
        finally:
            if fd is not None:
                self._release_fd()

    def fileno(self) -> int:
        return self._fd

    # ------------------------------------------------------------ backend hooks
    def _watch(self) -> None:
        watcher = _watcher_for(self._loop)
        # The registration's reference. Nobody else can see this child yet,
        # so the count needs no lock here.
        self._refs += 1
        try:
            watcher.add(self._fd, self)
        except BaseException:
            self._refs -= 1
            raise
        self._watcher = watcher

    def _unwatch(self) -> None:
        watcher = self._watcher
        if watcher is not None:
            self._watcher = None
            watcher.remove(self._fd)
            self._release_fd()

    def _notify_exited(self) -> None:
        # The common case of Child._notify_exited, flattened: the time from a
        # child's exit to its waiters' wake-up is a handful of Python calls,
        # each slow on caches the idle loop left cold. The order: reap under
        # the signalling lock, wake the waiters, then unregister and release
        # the descriptor (a reaped child is never signalled through it, since
        # send_signal() checks the status first).
        if self._exited:
            return
        if self._reap_holds or self._exited_fut is not None:
            # The general path marks the child exited before reaping, so it
            # must not run on a report that is not about this child: the
            # watcher skips asking epoll which pidfd is ready when only one is
            # registered, and a report can be stale by a loop turn (the ready
            # pidfd was unregistered, and this one added, in between). Ask the
            # kernel (off the fast path: a reap is held or awaited here).
            if not self._poll_exited():
                return
            super()._notify_exited()
            return
        with self._lock:
            if self._status is None:
                # No _acquire_fd(): the handle's and the registration's
                # references are both held until below, so the fd is ours.
                try:
                    res = _sys.waitid(_P_PIDFD, self._fd, _REAP)
                except ChildProcessError:
                    self._status = lost_status(self.pid)
                else:
                    if res is None:
                        # Readable but not yet waitable: not seen on any kernel
                        # we know of. Stay registered: the watcher arms a spent
                        # one-shot registration again, and the epoll is
                        # level-triggered, so it reports the pidfd again.
                        return
                    self._status = status_from_waitid(res)
            status = self._status
        self._exited = True
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(status)
        watcher = self._watcher
        if watcher is not None:
            # Unregistering and closing cost ~10 us (on caches the idle loop
            # left cold) that the status does not need, so they come after the
            # woken waiters have run: see _Watcher.put_off.
            watcher.put_off(self)
        else:  # pragma: no cover - a watched child is registered until here
            self._release()

    def _unwatch_and_release(self) -> None:
        """:meth:`_unwatch` and :meth:`_release` in one: both references go together."""
        watcher = self._watcher
        drop = 1 if self._handle_ref else 0
        self._handle_ref = False
        if watcher is not None:
            self._watcher = None
            watcher.remove(self._fd)
            drop += 1
        if drop:
            with _refs_lock:
                self._refs -= drop
                last = self._refs == 0
            if last:
                os.close(self._fd)

    def _forget_watch(self) -> None:
        watcher = self._watcher
        if watcher is None:
            return
        if self._loop.is_closed():
            # No loop thread runs any more: the watcher is ours to change.
            self._unwatch()
            return
        # The loop runs in another thread: only it may change the watcher.
        # The registration keeps its reference to the descriptor until then,
        # so the number cannot be reused under the watcher's feet.
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self._loop.call_soon_threadsafe(self._unwatch)

    def _poll_exited(self) -> bool:
        with self._using_fd() as fd:
            if fd is None:
                return True
            try:
                res = _sys.waitid(_P_PIDFD, fd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True  # reaped by somebody else
            return res is not None

    def _reap_now(self, block: bool) -> ExitStatus | None:
        fd = self._acquire_fd()
        if fd is None:  # pragma: no cover - the handle holds a reference until reaped
            return lost_status(self.pid)
        try:
            res = _sys.wait_pidfd_blocking(fd) if block else _sys.waitid(_P_PIDFD, fd, _REAP)
        except ChildProcessError:
            # Another piece of code reaped our child (waitpid(-1) or
            # SIGCHLD=SIG_IGN). The status is gone; say so.
            return lost_status(self.pid)
        finally:
            self._release_fd()
        return None if res is None else status_from_waitid(res)

    def _kill_raw(self, sig: int) -> None:
        with self._using_fd() as fd:
            if fd is None:
                raise ProcessLookupError(f"process {self.pid} has already exited")
            _sys.pidfd_send_signal(fd, sig)

    def _release(self) -> None:
        if self._handle_ref:
            self._handle_ref = False
            self._release_fd()


class _Watcher:
    """One epoll instance holding the pidfds of one loop's running children.

    Registered with the loop once, through ``add_reader``; when any of its
    pidfds turns readable, the loop calls :meth:`_ready`, which hands each
    exited child its notification. Used on the loop's thread only (and, once
    the loop is closed, by whoever cleans up after it).

    Lifetime: the loop owns it (through the reader registration; aioproc's
    registry holds it weakly, since its children hold the loop and would keep
    it alive). It is closed when the loop shuts down (``close_watcher``, from
    aioproc's shutdown hook), or when the loop drops it: ``loop.close()``
    drops its readers, or the loop is garbage collected. After ``fork()`` in
    the child it is left alone and takes no event: the epoll instance is
    shared with the parent (see ``_after_fork_in_child``).
    """

    __slots__ = (
        "__weakref__",
        "_children",
        "_done",
        "_ep",
        "_fd",
        "_forked",
        "_loop_ref",
        "_poll",
    )

    # At most this many exits are handled per loop turn; the rest are
    # reported again in the next turn (the epoll is level-triggered).
    BATCH = 256

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Everything close() reads is set before the epoll instance is made:
        # that can fail (EMFILE), and __del__ then runs on a half-built watcher.
        self._forked = False
        self._children: dict[int, PidfdChild] = {}
        self._done: list[PidfdChild] = []  # reaped, to unregister and close (put_off)
        self._loop_ref = weakref.ref(loop)
        self._ep = select.epoll()  # close-on-exec
        self._fd = self._ep.fileno()
        self._poll = self._ep.poll
        try:
            loop.add_reader(self._fd, self._ready)
        except BaseException:
            self._ep.close()
            raise

    def put_off(self, child: PidfdChild) -> None:
        """Unregister and close a reaped child's pidfd once its waiters have run.

        The waiters' wake-ups are queued already; a flush queued now runs
        right after them, in the next loop turn. A spawn on this loop's thread
        flushes first (``flush_put_off``): work left for after a fork would
        compete with the new child for a CPU.
        """
        done = self._done
        done.append(child)
        if len(done) == 1:
            loop = self._loop_ref()
            if loop is not None and not loop.is_closed():
                loop.call_soon(self.flush)
            else:  # pragma: no cover - the loop is running this very callback
                self.flush()

    def flush(self) -> None:
        done = self._done
        if done:
            self._done = []
            for child in done:
                child._unwatch_and_release()

    def add(self, fd: int, child: PidfdChild) -> None:
        self._ep.register(fd, _EVENTS)
        self._children[fd] = child

    def remove(self, fd: int) -> None:
        """Stop watching ``fd``.

        A child whose one-shot event was taken already (``_spent``) has a
        disabled registration: it can never report again, so it is left for
        the kernel to drop when the pidfd is closed, one system call less per
        exit. It could only linger if a copy of the descriptor lived on (a
        child forked with ``os.fork()`` that has not closed it yet), and then
        it lingers disabled, and a new pidfd given the same number is a
        different registration (epoll keys them by open file and number).
        """
        child = self._children.pop(fd, None)
        # Never in a forked child: the epoll instance is the parent's too.
        if child is not None and not child._spent and not self._forked:
            self._ep.unregister(fd)

    def _ready(self) -> None:
        if self._forked:
            # A forked child running the loop it inherited (asyncio.run's
            # cleanup after sys.exit): the readiness is the parent's, and so
            # are the one-shot events it would take. The epoll stays readable
            # until the parent takes them, which it does on its next turn.
            return
        children = self._children
        if len(children) == 1:
            # One pidfd registered: it is the only thing that can make the
            # epoll readable, so skip asking which (a system call and a list,
            # ~5 us on the caches the idle loop left cold, right between the
            # child's exit and its waiters' wake-up; sequential code always
            # has one child here). A repeat report for a child already reaped
            # and not yet unregistered finds _exited set and does nothing.
            # (Taken out of the dict first: the notification may unregister it.)
            next(iter(children.values()))._notify_exited()
            return
        for fd, _ in self._poll(0, self.BATCH):
            child = children.get(fd)
            if child is not None:
                child._spent = True
                child._notify_exited()
                if not child._exited:
                    # Reported, yet not exited (the held-reap path's stale
                    # report, or readable before waitable; see _notify_exited):
                    # the one-shot registration is spent, so arm it again, or
                    # the real exit would never be reported.
                    child._spent = False
                    self._ep.modify(fd, _EVENTS)

    def close(self) -> None:
        """Stop watching: unregister from the loop, drop every registration."""
        ep = getattr(self, "_ep", None)  # None: epoll() failed in __init__
        if self._forked or ep is None or ep.closed:
            return
        self.flush()
        loop = self._loop_ref()
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.remove_reader(self._fd)
        for child in list(self._children.values()):
            child._unwatch()
        self._ep.close()

    def __del__(self) -> None:
        # The loop dropped us (closed without shutting down, or collected):
        # give back the children's registrations, and close the epoll.
        self.close()


# The watchers, by the loop they serve (looked up on every spawn), held
# weakly: the loop owns each (see _Watcher).
_watchers: PerLoop[_Watcher] = PerLoop()
_watcher_of = _watchers.get


def _watcher_for(loop: asyncio.AbstractEventLoop) -> _Watcher:
    watcher = _watcher_of(loop)
    if watcher is not None:
        return watcher
    if loop.is_closed():
        raise RuntimeError("the event loop is closed")
    watcher = _Watcher(loop)
    _watchers.add(loop, watcher)
    return watcher


def flush_put_off(loop: asyncio.AbstractEventLoop) -> None:
    """Do the put-off unregistering and closing for ``loop`` now (on its thread).

    Called right before a fork on the loop's thread: a child that has just
    been forked runs beside whatever the parent does next, so work that can go
    before the fork should.
    """
    watcher = _watcher_of(loop)
    if watcher is not None and watcher._done:
        watcher.flush()


def close_watcher(loop: asyncio.AbstractEventLoop) -> None:
    """Close ``loop``'s watcher, if it has one (the loop is shutting down)."""
    watcher = _watcher_of(loop)
    if watcher is not None:
        _watchers.discard(loop)
        watcher.close()


def _after_fork_in_child() -> None:
    # The epoll instances are shared with the parent: registering or removing
    # a descriptor in the child would change the parent's set, and taking an
    # event would steal the parent's one-shot exit report (_ready ignores
    # them from now on). Forget the watchers: the children they hold are the
    # parent's. The loop's own registration of a watcher is in an epoll shared
    # with the parent too, and a loop closed in the child would take it out
    # of the parent's loop (uvloop removes every reader with EPOLL_CTL_DEL).
    # So this process's copy of the number is pointed at a fresh, empty epoll
    # instance: never readable, and a removal by number then finds nothing of
    # the parent's. (Not closed: uvloop re-adds its readers by number to a
    # new epoll of its own in a forked child, and aborts on a closed one. It
    # stays open, unused, for the child's life.)
    #
    # The children themselves are the parent's: here they count as gone with
    # their status lost, as pid mode finds them (waitid says ECHILD), so that
    # nothing in the child signals them or waits for an exit report it will
    # never get (leaving `async with spawn(...)` in asyncio.run's cleanup
    # after sys.exit waited for ever).
    for watcher in _watchers.objects():
        watcher._forked = True
        for child in watcher._children.values():
            if child._status is None:
                child._status = lost_status(child.pid)
                child._exited = True
        with contextlib.suppress(OSError, ValueError):
            blank = select.epoll()
            try:
                os.dup2(blank.fileno(), watcher._fd, inheritable=False)
            finally:
                blank.close()
    _watchers.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
