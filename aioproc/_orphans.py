"""Reaping adopted orphans without stealing the status of aioproc's own children.

A process that is PID 1, or a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``),
inherits the orphans of its descendants: they become its children, and their
zombies stay until it reaps them. aioproc reaps each child it spawned itself, by
its pidfd or by PID (``_waiting``); a reaper of "any child" (``waitpid(-1)``)
would steal those statuses, and worse, free their PIDs while aioproc may still
signal them. :func:`reap_orphans` reaps only the others.
"""

from __future__ import annotations

import os
from collections.abc import Container

from . import _spawn, _waiting
from ._status import ExitStatus

__all__ = ["reap_orphans"]


def _children() -> set[int]:
    """Our children, live or zombie (each thread's list: a child belongs to a thread)."""
    out: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except FileNotFoundError:  # pragma: no cover - no /proc
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            continue
    return out


def _reap(pid: int) -> ExitStatus | None:
    try:
        res = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if res is None:
        return None
    if res.si_code == os.CLD_EXITED:
        return ExitStatus.exited(pid, res.si_status)
    return ExitStatus.killed(pid, res.si_status, res.si_code == os.CLD_DUMPED)


def reap_orphans(keep: Container[int] = ()) -> list[ExitStatus]:
    """Reap every exited child that aioproc did not spawn (nor in ``keep``); their statuses.

    For PID 1 and subreapers: call it on each SIGCHLD (``aioproc.signals``), from
    the thread of the event loop that spawns. Never touches a child aioproc spawned
    and has not reaped yet, nor a PID in ``keep`` (children started some other way
    that their owner will reap).

    How: ``waitid(P_ALL, WNOHANG | WNOWAIT)`` names an exited child without reaping
    it. If it is not ours, it is reaped by PID (our child, unreaped: its PID cannot
    have been reused) and we ask again. If it is ours, ``P_ALL`` would keep naming
    it until aioproc reaps it, so we try each of our other children by PID instead.

    A child forked by a spawn worker thread is known to aioproc only once its
    outcome reaches the loop thread. While such a spawn is in flight nothing is
    reaped (an empty list): call again on the next SIGCHLD, or keep the pool at
    ``set_spawn_workers(0)`` as ``aioproc run`` does. Children spawned on the loop
    thread are known from the moment they exist, as are those of any other event
    loop; a spawn running inline on *another* thread's loop at the same moment is
    not: reap from the one loop that spawns.
    """
    if _spawn.pooled_in_flight():
        return []

    def ours(pid: int) -> bool:
        return pid in keep or _waiting.is_watched(pid)

    reaped: list[ExitStatus] = []
    while True:
        try:
            res = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if res is None:
            return reaped
        if not ours(res.si_pid):
            status = _reap(res.si_pid)
            if status is not None:
                reaped.append(status)
            continue
        for pid in _children():
            if not ours(pid):
                status = _reap(pid)
                if status is not None:
                    reaped.append(status)
        return reaped
