"""``aioproc init``'s final sweep: when the main child has exited, nothing below us is left.

What is left gets SIGTERM (and SIGCONT), ``--grace`` seconds, then SIGKILL. The
hard part is a process that keeps forking: a scan of /proc lists what exists at
that moment, and a child forked between the scan and the SIGKILL escapes it. Two
ways to close that race:

* **A cgroup** (cgroup v2, where we may create one: root, a writable hierarchy).
  :class:`Confinement` puts the command in a fresh cgroup of its own at spawn
  time, so every process it ever forks is born there, whoever its parent becomes.
  The kill is then ``cgroup.kill``, which the kernel makes atomic with forks (a
  fork racing with it fails or is killed too); before Linux 5.14, the cgroup is
  frozen (``cgroup.freeze``: nobody in it runs, so nobody forks) and its members
  are killed one by one. Found, killed and removed as ``spawn(cgroup=True)``'s
  are (:mod:`aioproc._cgroup`; on a hybrid system cgroup2 is mounted at e.g.
  ``/sys/fs/cgroup/unified``).
* **SIGSTOP before SIGKILL**, for what is not in the cgroup (no cgroup2; or a
  process that moved itself out): scan, stop everything found, scan again until a
  scan finds nothing that is not stopped (a stopped process cannot fork), then
  SIGKILL them all, and scan again until nothing is left. The scans walk our
  process tree down through the ``children`` lists (we are the subreaper: every
  orphan below us is re-parented to us), which costs the size of the tree rather
  than a read of every process on the machine: fast enough to catch a process
  that forks and exits every millisecond. Without a cgroup this is a chase that
  is won in practice, not a guarantee: a tree walk can miss a process re-parented
  while it runs (see :func:`_live_tree`).

Both run within a budget; what still stands after it is reported by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import Callable, Iterator

from .._cgroup import Cgroup, cgroup_root
from .._procfs import wait_gone
from ..supervisor._group import kill_pids

__all__ = ["KILL_BUDGET", "Confinement", "cgroup2_root", "sweep", "use_cgroup"]

#: Seconds the killing (after ``--grace``) may take before we give up and report.
KILL_BUDGET = 10.0

#: Switch for the tests: False forces the SIGSTOP fallback.
use_cgroup = True


def cgroup2_root() -> str:
    """Our own cgroup v2 directory, or why there is none we may use (for messages)."""
    root, why = cgroup_root()
    return root if root is not None else why


class Confinement:
    """A fresh cgroup the command is spawned into (see the module docstring).

    ``with conf.spawning(): await spawn(...)``: for that block this process moves
    into the cgroup, so the child is born there; then it moves back. Nothing else
    of ours forks meanwhile (``aioproc init`` spawns only the command). Any failure
    leaves :attr:`path` None: the sweep then relies on SIGSTOP alone.

    The cgroup is found, listed, killed and removed by the core's
    :mod:`aioproc._cgroup` (what ``spawn(cgroup=True)`` uses). ``spawn(cgroup=...)``
    itself is not used here: its stop waits for the cgroup to empty without a
    bound, and this sweep must report what it cannot kill within its budget.
    """

    def __init__(self, confine: bool = True) -> None:
        self._group: Cgroup | None = None
        self._home: str | None = None
        home = cgroup_root()[0] if use_cgroup and confine else None
        if home is None:
            return
        path = os.path.join(home, f"aioproc-init-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.mkdir(path)
        except OSError:
            return
        self._group, self._home = Cgroup(path, created=True), home

    @property
    def path(self) -> str | None:
        """The cgroup's directory; None without one."""
        return None if self._group is None else self._group.path

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        if self._group is None or self._home is None:
            yield
            return
        try:
            _write(os.path.join(self._group.path, "cgroup.procs"), str(os.getpid()))
        except OSError:  # not allowed here (a threaded or a domain-invalid cgroup...)
            self.close()
            yield
            return
        try:
            yield
        finally:
            _write(os.path.join(self._home, "cgroup.procs"), str(os.getpid()))

    def members(self) -> set[int]:
        """What is in the cgroup, or in cgroups the command made below it."""
        return set() if self._group is None else set(self._group.members())

    def kill(self) -> None:
        """SIGKILL every member, atomically with their forks (``Cgroup.kill``)."""
        if self._group is not None:
            self._group.kill()

    def close(self) -> None:
        """Remove the cgroup, and any below it (once empty; left with a warning otherwise)."""
        if self._group is not None:
            self._group.remove()
            self._group = None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _tree(root: int) -> set[int]:
    """The processes below ``root``, by walking its children lists down.

    Much faster than :func:`descendants` (which reads every process's stat in
    /proc): the cost is the size of the tree, not of the machine, and speed is what
    lets the SIGSTOP chase catch a process that forks and exits every millisecond.
    (Includes zombies; they are gone from the next walk once reaped.)
    """
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # gone: nothing to stop
    return state in (b"T", b"t", b"Z", b"X")


def _live_tree(root: int) -> set[int]:
    """Live processes below ``root``: three walks of :func:`_tree` in a row, merged.

    One walk can miss a process that forks and exits while it runs (its child is
    re-parented to us after we read our own children list). Such a chain has a
    live member at every instant; three walks that all miss it are unlikely, and
    an empty result is only ever taken for the end after a wait (``wait_gone``
    scans again) or after everything found was stopped.
    """
    found: set[int] = set()
    for _ in range(3):
        found |= {pid for pid in _tree(root) if not _dead(pid)}
    return found


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in (b"Z", b"X", b"x")


async def _stop_all(scan: Callable[[], set[int]], ours: Callable[[int], bool], left: float) -> None:
    """SIGSTOP what ``scan`` finds until a scan finds nothing still running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + left
    while loop.time() < deadline:
        running = {pid for pid in scan() if not _stopped(pid)}
        if not running:
            return
        kill_pids(running, signal.SIGSTOP, ours)
        await asyncio.sleep(0)  # let the signals land (they are asynchronous)


async def _confirmed_empty(scan: Callable[[], set[int]]) -> bool:
    """Whether ``scan`` finds nothing three times, 2 ms apart (a walk can miss a
    process being re-parented; three in a row that miss a live one are unlikely)."""
    for _ in range(3):
        if scan():
            return False
        await asyncio.sleep(0.002)
    return True


def _below(pid: int, me: int) -> bool:
    """Whether ``pid`` is a descendant of ``me`` now (walking its parents in /proc)."""
    for _ in range(4096):  # a bound, should /proc change under us into a cycle
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == me:
            return True
        if pid <= 1:
            return False
    return False


async def sweep(
    me: int, grace: float, conf: Confinement, log: Callable[[str], None], verbose: bool
) -> set[int]:
    """SIGTERM, ``grace``, then kill everything below ``me``; return what could not be killed."""

    def scan() -> set[int]:
        return _live_tree(me) | conf.members()

    def ours(pid: int) -> bool:
        # Checked after the pidfd is open (kill_pids): the very process it names.
        return _below(pid, me) or pid in conf.members()

    left = scan()
    if not left:
        return set()
    if verbose:
        log(f"{len(left)} processes left: SIGTERM, then SIGKILL after {grace:g} s")
    kill_pids(left, signal.SIGTERM, ours)
    kill_pids(left, signal.SIGCONT, ours)
    if await wait_gone(scan, grace) and await _confirmed_empty(scan):
        return set()
    if verbose:
        log(f"{len(scan())} processes still there: SIGKILL")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_BUDGET
    while True:
        conf.kill()
        # What is not in the cgroup: stop it all (no more forks), then kill it.
        await _stop_all(lambda: _live_tree(me), ours, max(0.0, deadline - loop.time()))
        kill_pids(_live_tree(me), signal.SIGKILL, ours)
        if await wait_gone(
            scan, min(0.5, max(0.0, deadline - loop.time()))
        ) and await _confirmed_empty(scan):
            return set()
        if loop.time() >= deadline:
            return scan()
