"""The per-child state machine shared by both waiting modes.

A child goes through three states, in this order and never back:

    running  ->  exited (observed, still a zombie)  ->  reaped (status known)

Between "exited" and "reaped" the kernel keeps the zombie's PID (and, if it led
a process group, the group id) allocated, so signalling by PID or group is
still safe. After "reaped" the PID may belong to anybody. The whole design
rests on one rule, taken from Go (seed 000): *mark the child done and reap it
under the same lock that every signal sender takes*. A signal is therefore
sent either strictly before the reap (the PID still names our zombie or our
child) or it sees the child done and raises :class:`ProcessLookupError`.

Subclasses (``pidfd.py``, ``pid.py``) supply the system calls; this module
owns the ordering.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from typing import ClassVar

from .._status import ExitStatus
from . import _sys

__all__ = ["Child", "is_watched"]

# Every Child by PID, for is_watched(). Weak: the handle's finalizer (kill and reap)
# must still run once nobody holds it.
_by_pid: weakref.WeakValueDictionary[int, Child] = weakref.WeakValueDictionary()


def is_watched(pid: int) -> bool:
    """Whether ``pid`` is a child aioproc spawned and has not reaped yet.

    Only a reap frees a PID, so an unreaped child's entry cannot name another
    process. A child forked by a spawn worker is entered once its outcome reaches
    the loop thread (see :func:`aioproc.reap_orphans`).
    """
    child = _by_pid.get(pid)
    return child is not None and child._status is None


def _after_fork_in_child() -> None:
    _by_pid.clear()  # the parent's children are not ours


os.register_at_fork(after_in_child=_after_fork_in_child)


class Child:
    """One spawned child, watched by its event loop until it has been reaped."""

    # Slots: with thousands of live children, each saves a per-instance dict.
    __slots__ = (
        "__weakref__",
        "_exited",
        "_exited_fut",
        "_lock",
        "_loop",
        "_peeked",
        "_pinned",
        "_reap_holds",
        "_status",
        "_waiters",
        "pid",
    )

    mode: ClassVar[str]

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = pid
        self._loop = loop
        # Taken by every signal sender and by the reap (see the module docstring).
        self._lock = threading.Lock()
        self._status: ExitStatus | None = None
        self._exited = False
        self._reap_holds = 0
        # pin(): a hold that still lets waiters have the status (read with
        # WNOWAIT into _peeked) while the zombie keeps the PID and group id.
        self._pinned = False
        self._peeked: ExitStatus | None = None
        # One future per waiting task, so that cancelling one waiter cancels
        # only its own future (no shield(), which costs an extra loop turn
        # between the reap and the waiter's wake-up).
        self._waiters: list[asyncio.Future[ExitStatus]] = []
        self._exited_fut: asyncio.Future[None] | None = None
        _by_pid[pid] = self

    # ---------------------------------------------------------------- backend hooks
    def _watch(self) -> None:
        """Start asking the loop to call :meth:`_notify_exited` when the child exits."""
        raise NotImplementedError

    def _unwatch(self) -> None:
        """Stop watching. Called on the loop thread, or after the loop closed."""
        raise NotImplementedError

    def _poll_exited(self) -> bool:
        """Whether the child has exited (without reaping it). True if it is gone."""
        raise NotImplementedError

    def _reap_now(self, block: bool) -> ExitStatus | None:
        """Reap the exited child. Called with ``_lock`` held. None if not exited."""
        raise NotImplementedError

    def _kill_raw(self, sig: int) -> None:
        """Deliver ``sig`` to the child. Called with ``_lock`` held, child unreaped."""
        raise NotImplementedError

    def _peek_now(self) -> ExitStatus | None:
        """The exited child's status, read without reaping it (``WNOWAIT``); None if running."""
        raise NotImplementedError

    def _release(self) -> None:
        """Give up OS resources (the pidfd) once reaped."""

    # ---------------------------------------------------------------- state
    @property
    def status(self) -> ExitStatus | None:
        """The status once reaped (the PID is free from then on), else None."""
        return self._status

    @property
    def exit_status(self) -> ExitStatus | None:
        """The status once known: reaped, or exited while pinned (:meth:`pin`)."""
        status = self._status
        return self._peeked if status is None else status

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _notify_exited(self) -> None:
        """The backend saw the child exit. Runs on the loop thread."""
        if self._exited:
            return
        self._exited = True
        fut = self._exited_fut
        if fut is not None and not fut.done():
            fut.set_result(None)
        if self._reap_holds == 0:
            self._reap()
        elif self._pinned:
            self._publish_peeked()
        self._unwatch()

    def _publish_peeked(self) -> None:
        """Pinned and exited: hand the waiters the status, leave the zombie unreaped."""
        with self._lock:
            if self._status is not None or self._peeked is not None:
                return
            self._peeked = self._peek_now()
            status = self._peeked
        if status is None:  # pragma: no cover - _notify_exited runs once it exited
            return
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(status)

    def _reap(self, block: bool = False) -> ExitStatus | None:
        with self._lock:
            if self._status is None:
                # Marking done and reaping under the signalling lock: a
                # concurrent send_signal() either completed while the PID
                # still named our child, or waits here and then sees done.
                self._status = self._reap_now(block)
            status = self._status
        if status is None:
            return None
        self._exited = True
        self._release()
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(status)
        return status

    def _check_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("this must be awaited from a running event loop") from None
        if running is not self._loop:
            raise RuntimeError(
                f"process {self.pid} belongs to another event loop; "
                "await it from the loop that spawned it"
            )

    async def wait(self) -> ExitStatus:
        """Wait until the child has been reaped (or, pinned, has exited).

        Cancelling the wait loses nothing.
        """
        status = self._status
        if status is None:
            status = self._peeked
        if status is not None:
            return status
        self._check_loop()
        fut: asyncio.Future[ExitStatus] = self._loop.create_future()
        self._waiters.append(fut)
        try:
            return await fut
        finally:
            if not fut.done() or fut.cancelled():
                # Cancelled: forget this waiter; the status stays for the next.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    async def wait_exited(self) -> None:
        """Wait until the child has exited, without reaping it if reaping is held."""
        if self._exited or self._status is not None:
            return
        self._check_loop()
        if self._exited_fut is None:
            self._exited_fut = self._loop.create_future()
        await asyncio.shield(self._exited_fut)

    @contextlib.contextmanager
    def hold_reap(self) -> Iterator[None]:
        """Keep an exited child unreaped (a zombie) inside the block.

        While it is a zombie its PID, and the id of the process group it leads,
        cannot be reused, so :meth:`signal_group` stays safe.
        """
        self._reap_holds += 1
        try:
            yield
        finally:
            self._reap_holds -= 1
            if self._reap_holds == 0 and self._exited and self._status is None:
                self._reap()

    def pin(self) -> None:
        """Keep the child unreaped until :meth:`unpin`, without keeping its waiters waiting.

        For a group leader whose group must be swept after it exits
        (``kill_group=True``): once it exits, :meth:`wait` returns its status
        (read with ``WNOWAIT``) while the zombie keeps its PID, and so the
        group id, from being reused until :meth:`unpin`. Called right after
        the spawn, before the loop could see the exit.
        """
        if not self._pinned:
            self._pinned = True
            self._reap_holds += 1

    def unpin(self) -> None:
        """End :meth:`pin`: the child is reaped now if it exited and nothing else holds it."""
        if self._pinned:
            self._pinned = False
            self._reap_holds -= 1
            if self._reap_holds == 0 and self._exited and self._status is None:
                self._reap()

    @property
    def pinned(self) -> bool:
        return self._pinned

    # ---------------------------------------------------------------- signals
    def send_signal(self, sig: int) -> None:
        with self._lock:
            # A zombie counts as finished: the signal would do nothing, and
            # saying so is more useful than pretending it was delivered.
            if self._status is not None or self._exited or self._poll_exited():
                raise ProcessLookupError(f"process {self.pid} has already exited")
            self._kill_raw(sig)

    def signal_group(self, pgid: int, sig: int) -> None:
        """Signal process group ``pgid``, which this child leads.

        Allowed only while the leader is unreaped: its zombie pins the group
        id, so the group cannot have been replaced by an unrelated one.
        """
        with self._lock:
            if self._status is not None:
                raise ProcessLookupError(
                    f"process group {pgid}: its leader {self.pid} has been reaped, "
                    "so the group id may name another group now"
                )
            os.killpg(pgid, sig)

    # ---------------------------------------------------------------- no loop
    def close_sync(self) -> ExitStatus:
        """Kill and reap the child now, blocking. For finalizers and loop shutdown."""
        with self._lock:
            if self._status is None and not self._exited and not self._poll_exited():
                with contextlib.suppress(ProcessLookupError):
                    self._kill_raw(signal.SIGKILL)
            if self._pinned and self._status is None:
                # The group is ours until the reap below: sweep it now, since
                # afterwards its id may name somebody else's group.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
        self._pinned = False
        if self._loop_usable():
            self._unwatch()
        else:
            self._forget_watch()
        status = self._reap(block=True)
        assert status is not None
        return status

    def _loop_usable(self) -> bool:
        """Whether the loop may be touched from here (its thread, not closed)."""
        if self._loop.is_closed():
            return False
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _forget_watch(self) -> None:
        """Drop the watch without touching the loop (it is closed or elsewhere)."""
        self._unwatch()


def lost_status(pid: int) -> ExitStatus:
    return ExitStatus.lost(pid)


def status_from_waitid(res: _sys.WaitResult) -> ExitStatus:
    raw = res.rusage
    rusage = None if raw is None else functools.partial(_sys.rusage_from_raw, raw)
    if res.code == _sys.CLD_EXITED:
        return ExitStatus._reaped(res.pid, res.status, None, False, rusage)
    try:
        sig: signal.Signals | None = signal.Signals(res.status)
    except ValueError:  # a real-time signal without a name
        sig = None
    return ExitStatus._reaped(res.pid, -res.status, sig, res.code == _sys.CLD_DUMPED, rusage)
