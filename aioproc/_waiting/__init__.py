"""How aioproc learns that a child exited: the contract and the choice of backend.

Every spawned child gets a :class:`Child` (``_child.py``) that moves through
running -> exited -> reaped and guarantees:

* ``await child.wait()`` returns the :class:`~aioproc.ExitStatus` once the child
  has been reaped; no thread is used, and cancelling a waiter loses nothing.
* ``child.send_signal(sig)`` never reaches a process other than the child: it
  raises :class:`ProcessLookupError` once the child has exited.
* ``child.signal_group(pgid, sig)`` only signals while the group's leader is
  still unreaped, so the group id cannot have been recycled.
* ``child.close_sync()`` kills and reaps the child without an event loop.

Two backends implement it; a process uses one of them for its whole life:

* ``pidfd.py`` (the default on Linux >= 5.3): a pidfd per child, in one epoll
  instance per loop that the loop watches with ``add_reader``; signals and the
  reap go through the pidfd, which is closed once the reaped child's waiters
  have run (:func:`flush_put_off` does it early; the spawn path calls it before
  forking). :func:`close_watcher` closes a loop's epoll instance when the loop
  shuts down.
* ``pid.py`` (the fallback): SIGCHLD through the signal hub, then
  ``waitid(WNOWAIT)``, mark done, reap, all under the signalling lock.

The choice is made per spawn: pidfd mode when ``pidfd_open`` works, pid mode
when it fails with ENOSYS/EPERM/EACCES (an old kernel, a seccomp filter).
:func:`set_wait_mode` (or ``AIOPROC_WAIT_MODE=pid`` in the environment) forces
a mode, which is how the test suite runs the core in both.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Literal

from ._child import Child, is_watched
from ._sys import pidfd_open, pidfd_supported
from .pid import PidChild
from .pidfd import PidfdChild, close_watcher, flush_put_off

__all__ = [
    "Child",
    "WaitMode",
    "close_watcher",
    "flush_put_off",
    "get_wait_mode",
    "is_watched",
    "open_pidfd",
    "set_wait_mode",
    "watch_child",
]

WaitMode = Literal["auto", "pidfd", "pid"]
_MODES = ("auto", "pidfd", "pid")

_requested: WaitMode = "auto"
_pidfd_ok: bool | None = None  # probed lazily, once


def set_wait_mode(mode: WaitMode) -> None:
    """Choose how children spawned from now on are waited for.

    ``"auto"`` (the default) uses pidfds when the kernel allows them and pid
    mode otherwise; ``"pidfd"`` requires pidfds (spawning raises OSError
    without them); ``"pid"`` forces the SIGCHLD-based fallback. Children that
    are already running keep their mode.
    """
    global _requested
    if mode not in _MODES:
        raise ValueError(f"wait mode must be one of {', '.join(_MODES)}; got {mode!r}")
    _requested = mode


def get_wait_mode() -> Literal["pidfd", "pid"]:
    """The mode the next spawned child will use."""
    global _pidfd_ok
    if _requested == "pid":
        return "pid"
    if _pidfd_ok is None:
        _pidfd_ok = pidfd_supported()
    if _requested == "pidfd" and not _pidfd_ok:
        raise OSError(errno.ENOSYS, "pidfd mode was requested but pidfd_open is not available")
    return "pidfd" if _pidfd_ok else "pid"


_env_mode = os.environ.get("AIOPROC_WAIT_MODE", "auto")
if _env_mode in _MODES:
    _requested = _env_mode  # type: ignore[assignment]


def open_pidfd(pid: int, mode: Literal["pidfd", "pid"]) -> int | None:
    """Open the pidfd for a child we just forked, or None in pid mode.

    Called right after the fork, before anything could have reaped the child:
    only we reap our children, so its PID still names it here. A failure other
    than "not supported" propagates; the caller then kills and reaps the child
    by PID (still safe: it is ours and unreaped) and reports the error.
    """
    global _pidfd_ok
    if mode == "pid":
        return None
    try:
        return pidfd_open(pid)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EACCES) and _requested == "auto":
            _pidfd_ok = False
            return None
        raise


def watch_child(pid: int, pidfd: int | None, loop: asyncio.AbstractEventLoop) -> Child:
    """Wrap a freshly spawned child and start watching it on ``loop``."""
    child: Child = PidChild(pid, loop) if pidfd is None else PidfdChild(pid, pidfd, loop)
    child._watch()
    return child
