"""pidfd mode: the loop watches each child's pidfd; signals and the reap go through it.

A pidfd names one process for as long as the descriptor is open, whatever
happens to its PID number, so in this mode no race with PID reuse exists:

* waiting: ``loop.add_reader(pidfd)``. The kernel makes a pidfd readable when
  the process exits. No thread, no SIGCHLD, no polling.
* reaping: ``waitid(P_PIDFD, pidfd, WEXITED)``, never by PID.
* signalling: ``pidfd_send_signal``, never ``kill(pid)``.

What remains is the descriptor's own lifetime (seed 002). The number is used
by the loop's registration, by signal senders and by the reap, possibly from
finalizers on other threads. If it were closed while one of them still held
the number, the number could be reopened as some other pidfd (for a different
process) and the late user would act on that one. So the descriptor is
reference-counted: one reference for the handle, one while registered with the
loop, one for the duration of each use; whoever drops the last closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import weakref
from collections.abc import Iterator

from .._status import ExitStatus
from . import _sys
from ._child import Child, lost_status, status_from_waitid

assert sys.platform == "linux" or not sys.platform.startswith("win")

__all__ = ["PidfdChild", "run_put_off"]


# Guards every pidfd's reference count. Held for a compare-and-update only, so
# one lock for all children costs nothing and saves a lock per child. Nothing
# inside allocates a container, so no garbage collection (and no finalizer
# wanting this lock) can start while it is held.
_refs_lock = threading.Lock()


class PidfdChild(Child):
    __slots__ = ("_fd", "_handle_ref", "_refs", "_registered")

    mode = "pidfd"

    def __init__(self, pid: int, pidfd: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(pid, loop)
        self._fd = pidfd
        self._refs = 1  # the handle's own reference
        self._registered = False
        self._handle_ref = True

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
        fd = self._acquire_fd()
        assert fd is not None
        self._registered = True
        self._loop.add_reader(fd, self._notify_exited)

    def _unwatch(self) -> None:
        if self._registered:
            self._registered = False
            self._loop.remove_reader(self._fd)
            self._release_fd()

    def _notify_exited(self) -> None:
        # The common case of Child._notify_exited, flattened: the time from a
        # child's exit to its waiters' wake-up is a handful of Python calls,
        # each slow on caches the idle loop left cold. The order: reap under
        # the signalling lock, wake the waiters, then (put off) unregister and
        # release the descriptor.
        if self._exited:
            return
        if self._reap_holds or self._exited_fut is not None:
            super()._notify_exited()
            return
        self._exited = True
        with self._lock:
            if self._status is None:
                # No _acquire_fd(): the handle's and the registration's
                # references are both held until below, so the fd is ours.
                try:
                    res = _sys.waitid(_sys.P_PIDFD, self._fd, os.WEXITED | os.WNOHANG)
                except ChildProcessError:
                    self._status = lost_status(self.pid)
                else:
                    if res is not None:
                        self._status = status_from_waitid(res)
            status = self._status
        if status is not None:
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(status)
        # The handle's reference goes with the registration's, after the
        # wake-ups (see _unwatch_soon); a reaped child is never signalled
        # through it, since send_signal() checks the status first.
        self._put_off()

    def _put_off(self) -> None:
        pending = _put_off_by_loop.get(self._loop)
        if pending is None:
            pending = _put_off_by_loop[self._loop] = {}
        pending[id(self)] = weakref.ref(self)
        self._loop.call_soon(self._unwatch_and_release)

    def _unwatch_and_release(self) -> None:
        pending = _put_off_by_loop.get(self._loop)
        if pending is not None:
            pending.pop(id(self), None)
        self._unwatch()
        if self._status is not None:
            self._release()

    def _unwatch_soon(self) -> None:  # the generic path (Child._notify_exited)
        # Unregistering and closing the pidfd cost ~15 us that are not needed
        # to deliver the status, so they run after the waiters: the wake-ups
        # that _reap() scheduled come first in the loop's ready queue. Until
        # then the loop may report the descriptor readable once more, which
        # _notify_exited ignores. If the loop is closed before this runs, the
        # selector is gone and __del__ gives the registration's reference back.
        self._put_off()

    def __del__(self) -> None:
        # The loop closed before the put-off step of _notify_exited ran.
        if self._registered and self._loop.is_closed():
            self._registered = False
            self._release_fd()
            if self._status is not None:
                self._release()

    def _forget_watch(self) -> None:
        if not self._registered:
            return
        if self._loop.is_closed():
            # The selector is gone with the loop; nothing to unregister.
            self._registered = False
            self._release_fd()
            return
        # The loop runs in another thread: only it may unregister the reader.
        # The registration keeps its reference to the descriptor until then,
        # so the number cannot be reused under the loop's feet.
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self._loop.call_soon_threadsafe(self._unwatch)

    def _poll_exited(self) -> bool:
        with self._using_fd() as fd:
            if fd is None:
                return True
            try:
                res = _sys.waitid(_sys.P_PIDFD, fd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True  # reaped by somebody else
            return res is not None

    def _reap_now(self, block: bool) -> ExitStatus | None:
        # On the path from a child's exit to its waiters' wake-up: explicit
        # acquire/release rather than the _using_fd() generator.
        fd = self._acquire_fd()
        if fd is None:  # pragma: no cover - the handle holds a reference until reaped
            return lost_status(self.pid)
        try:
            if block:
                res = _sys.wait_pidfd_blocking(fd)
            else:
                res = _sys.waitid(_sys.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
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


# Children of each loop whose unregistering and close are put off until after
# their waiters' wake-ups (weak references: a loop closed before the put-off
# step runs must not keep them alive; their __del__ closes the pidfd then).
_put_off_by_loop: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[int, weakref.ReferenceType[PidfdChild]]
] = weakref.WeakKeyDictionary()


def run_put_off(loop: asyncio.AbstractEventLoop) -> None:
    """Do the put-off unregistering and closing for ``loop`` now (on its thread).

    Called right before an inline fork: a child that has just been forked
    runs on a CPU shared with the parent's work (on this VM, every microsecond
    the parent spends after the fork shows up in the child's run time), so
    work that can go before the fork should.
    """
    pending = _put_off_by_loop.get(loop)
    if pending:
        for ref in list(pending.values()):
            child = ref()
            if child is not None:
                child._unwatch_and_release()
        pending.clear()


# The children belong to the parent process; a forked child must not touch them.
os.register_at_fork(after_in_child=_put_off_by_loop.clear)
