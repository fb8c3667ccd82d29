"""pid mode: for kernels or sandboxes without pidfds. Thread-free too.

The loop learns about exits from SIGCHLD. SIGCHLD carries no reliable PID
(signals coalesce), so on each one every pid-mode child of the loop is checked
with ``waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)``, which *observes* the
exit without reaping. The child is then marked done and reaped under the lock
that every signal sender takes (seed 000, in :mod:`._child`): a PID is only
ever freed once nobody can be about to send it a signal.

SIGCHLD comes through the signal hub (``aioproc/_signals.py``) as one
subscriber among others. Where the loop does not run in the main thread (no
signal handlers there), the loop polls instead, backing off from 1 ms to
100 ms while children run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import weakref
from collections.abc import Callable

from .. import _signals
from .._status import ExitStatus
from . import _sys
from ._child import Child, lost_status, status_from_waitid

__all__ = ["PidChild"]


class PidChild(Child):
    __slots__ = ()

    mode = "pid"

    def _watch(self) -> None:
        _reaper_for(self._loop).add(self)

    def _unwatch(self) -> None:
        reaper = _reapers.get(id(self._loop))
        if reaper is not None and reaper.loop is self._loop:
            reaper.discard(self)

    def _poll_exited(self) -> bool:
        if self._status is not None:
            return True
        try:
            res = _sys.waitid(_sys.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # reaped by somebody else
        return res is not None

    def _reap_now(self, block: bool) -> ExitStatus | None:
        try:
            pid, wstatus, rusage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return lost_status(self.pid)
        if pid == 0:
            return None
        return ExitStatus.from_wait_status(pid, wstatus, rusage)

    def _kill_raw(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def _peek_now(self) -> ExitStatus | None:
        try:
            res = _sys.waitid(_sys.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return lost_status(self.pid)
        return None if res is None else status_from_waitid(res)


class _Reaper:
    """Per-loop set of pid-mode children, checked on every SIGCHLD.

    The SIGCHLD subscription is taken with the first pid-mode child and kept
    until the loop shuts down (the signal hub gives SIGCHLD back then):
    subscribing and unsubscribing around every child would cost more than the
    spawn itself in a sequential loop.

    SIGCHLD can be taken away from us by code we do not control (uvloop's own
    subprocess API makes libuv install its C handler; someone may set
    SIG_IGN), and then no exit would ever be noticed. So while children run,
    a slow backstop poll looks anyway; without SIGCHLD at all (a loop outside
    the main thread) the poll is the mechanism, backing off from 1 ms to 100 ms.
    """

    BACKSTOP = 1.0  # seconds between polls while SIGCHLD is subscribed

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the registry below must not keep loops alive (the children,
        # which hold their loop, are here only while they run).
        self._loop_ref = weakref.ref(loop, self._loop_gone)
        self._key = id(loop)
        self._children: set[PidChild] = set()
        self._subscribed = False
        self._poll_handle: asyncio.TimerHandle | None = None
        self._poll_delay = 0.001
        self._scanned_this_turn = False
        self._scan_pending = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop_ref()

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_ref()
        if loop is None:  # pragma: no cover - a child in the set holds its loop
            raise RuntimeError("the event loop is gone")
        return loop

    def _loop_gone(self, _: object) -> None:
        if _reapers.get(self._key) is self:
            del _reapers[self._key]

    def add(self, child: PidChild) -> None:
        self._children.add(child)
        if not self._subscribed and threading.current_thread() is threading.main_thread():
            self._subscribed = sigchld_subscribe(self._loop, self.on_sigchld) is not None
        # The child may have exited before we subscribed, and its SIGCHLD
        # been consumed already: look at it (only it: a full scan per spawn
        # would make spawning O(live children)) once now.
        self._loop.call_soon(self._check, child)
        self._poll_delay = 0.001
        if self._poll_handle is None or not self._subscribed:
            self._schedule_poll()

    def discard(self, child: PidChild) -> None:
        self._children.discard(child)
        if not self._children and self._poll_handle is not None:
            self._poll_handle.cancel()
            self._poll_handle = None

    def _check(self, child: PidChild) -> None:
        if child in self._children and child._poll_exited():
            child._notify_exited()

    def on_sigchld(self) -> None:
        """A SIGCHLD arrived: scan the children, at most twice per loop turn.

        A scan costs one waitid per pid-mode child, and an exit storm brings
        one SIGCHLD per exit, often hundreds handled in the same loop turn:
        scanning for each would cost O(exits x children). The first SIGCHLD of
        a turn scans at once (no added latency for a lone exit); later ones in
        the same turn schedule a single extra scan for the next turn, which
        runs after every one of them arrived, so no exit goes unseen.
        """
        if self._scan_pending:
            return  # a scan that runs after this signal is already scheduled
        if self._scanned_this_turn:
            self._scan_pending = True
            self._loop.call_soon(self._deferred_scan)
            return
        self._scanned_this_turn = True
        self._loop.call_soon(self._next_turn)
        self.scan()

    def _next_turn(self) -> None:
        self._scanned_this_turn = False

    def _deferred_scan(self) -> None:
        self._scan_pending = False
        self.scan()

    def scan(self, *_: object) -> None:
        for child in list(self._children):
            if child._poll_exited():
                child._notify_exited()

    def _schedule_poll(self) -> None:
        if self._poll_handle is not None:
            self._poll_handle.cancel()
        delay = self.BACKSTOP if self._subscribed else self._poll_delay
        self._poll_handle = self._loop.call_later(delay, self._poll)

    def _poll(self) -> None:
        self._poll_handle = None
        self.scan()
        if self._children:
            self._poll_delay = min(self._poll_delay * 2, 0.1)
            self._schedule_poll()


# By id(loop), checked against the reaper's weak reference (ids are reused).
_reapers: dict[int, _Reaper] = {}


def _reaper_for(loop: asyncio.AbstractEventLoop) -> _Reaper:
    reaper = _reapers.get(id(loop))
    if reaper is None or reaper.loop is not loop:
        reaper = _reapers[id(loop)] = _Reaper(loop)
    return reaper


def sigchld_subscribe(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> Callable[[], None] | None:
    """Call ``callback`` on the loop for every SIGCHLD; return the unsubscribe.

    The one place pid mode touches signal handling. It goes through the
    signal hub, so a user's own subscription to SIGCHLD keeps working beside
    it, and the handler that was there before comes back when the loop shuts
    down. None when the hub cannot be used here (no signal handling outside
    the main thread); the reaper polls then.
    """
    try:
        watch = _signals.watch(signal.SIGCHLD, lambda _sig: callback())
    except RuntimeError:
        return None
    return watch.close


def _after_fork_in_child() -> None:
    _reapers.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
