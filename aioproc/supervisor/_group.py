"""Process groups and trees: holding a leader's reap, signalling its group, waiting it out.

A service runs as the leader of its own process group (``kill_group=True``). To stop
it we signal the *group*, and a stop only counts as done when the leader has been
reaped and no member of the group is left. Signalling a group by its id is only safe
while that id cannot name another group, and the id is pinned by the leader's PID for
as long as the leader is unreaped (alive or a zombie). So:

* :func:`hold_reap` keeps the leader unreaped from the moment it is spawned until its
  group is empty (``Process.hold_reap()``).
* :class:`LeaderWatch` tells when the held leader has exited. ``Process.wait()``
  cannot, since it returns once the child is reaped; ``Process.wait_exited()`` does.
* :func:`signal_group` signals the group, only while the hold is in force.
* :func:`wait_group_empty` waits, without polling when pidfds are available, until
  the leader has exited and no live process is left in the group.

The /proc scans and the pidfd waits themselves (:func:`group_members`,
:func:`descendants`, :func:`wait_gone`) live in ``aioproc/_procfs.py``, shared with
``Process.stop()`` and ``aioproc init``: a leaf module of utilities, the one private
module the supervisor imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager

from .. import Process
from .._procfs import (
    GONE,
    UNSUPPORTED,
    descendants,
    group_members,
    pidfd_open_ex,
    wait_gone,
    wait_gone_async,
)
from ._groupscan import GroupScanner

__all__ = [
    "LeaderWatch",
    "descendants",
    "group_members",
    "hold_reap",
    "signal_group",
    "wait_gone",
    "wait_group_empty",
]


def hold_reap(proc: Process) -> ContextManager[None]:
    """Keep ``proc`` unreaped (a zombie once it exits) inside the ``with`` block.

    While the leader is unreaped its PID, and with it the id of the group it leads,
    cannot be reused, so :func:`signal_group` cannot reach an unrelated group.
    """
    return proc.hold_reap()


def signal_group(proc: Process, sig: int) -> bool:
    """Send ``sig`` to the process group ``proc`` leads; False if the group is empty.

    The caller must hold the reap (:func:`hold_reap`): then ``proc.reaped`` is False
    and the leader's PID still pins the group id. (If the leader moved itself to
    another group, group ``proc.pid`` holds only our former members, or nobody:
    no other process can create a group with that id while the PID is taken.)
    """
    if proc.reaped:
        raise RuntimeError(f"process {proc.pid} has been reaped: its group id may be reused")
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------ waiting


class LeaderWatch:
    """Completes :attr:`exited` when ``proc`` exits, even while its reap is held.

    ``held=True``: ``Process.wait_exited()``, which returns while the leader is
    still an unreaped zombie. ``held=False`` (no hold, no group): ``proc.wait()``.
    """

    def __init__(self, proc: Process, held: bool) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self._task: asyncio.Task[None] | None = loop.create_task(self._watch(proc, held))

    async def _watch(self, proc: Process, held: bool) -> None:
        if held:
            await proc.wait_exited()
        else:
            await proc.wait()
        if not self.exited.done():
            self.exited.set_result(None)

    @property
    def done(self) -> bool:
        return self.exited.done()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


async def wait_group_empty(
    pgid: int, leader: LeaderWatch, timeout: float | None, scanner: GroupScanner | None = None
) -> bool:
    """Wait until the leader has exited and no live process is left in group ``pgid``.

    With a ``scanner`` the /proc scans are shared with the other services' waits
    (see ``_groupscan.py``): what keeps a shutdown of many services linear.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    if not leader.done:
        try:
            await asyncio.wait_for(asyncio.shield(leader.exited), timeout)
        except asyncio.TimeoutError:
            return False
    left = None if deadline is None else max(0.0, deadline - loop.time())
    if scanner is not None:
        return await wait_gone_async(lambda: scanner.members(pgid), left)
    return await wait_gone(lambda: group_members(pgid), left)


def kill_pids(pids: Iterable[int], sig: int, still_ours: Callable[[int], bool]) -> int:
    """Signal each process in ``pids`` that ``still_ours(pid)`` confirms; return how many.

    Through a pidfd: it is opened first, and only then is the process checked, so the
    check is about the very process the pidfd names (a PID reused before the open
    fails the check; one reused after it is not the pidfd's process).
    """
    sent = 0
    for pid in pids:
        fd = pidfd_open_ex(pid)
        if fd == GONE:
            continue
        if fd == UNSUPPORTED:
            if still_ours(pid):  # no pidfds: best effort by PID
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                    sent += 1
            continue
        try:
            if still_ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, sig)
                    sent += 1
        finally:
            os.close(fd)
    return sent
