"""/proc scans and pidfd waits for processes that are not our children.

Group members and descendants are found by scanning ``/proc`` (``group_members``,
``descendants``) and waited for with :func:`wait_gone`: a pidfd for each one
found, opened by PID, readable once it exits. Nothing here signals anybody, so
the PID races a scan has (a process exits and its PID is reused between the
scan and ``pidfd_open``) only cost time: the wait then covers an unrelated
process until the next scan no longer finds it.

Used by :meth:`aioproc.Process.stop` (the rest of a group after its leader
exited), by the supervisor's whole-tree stops and by ``aioproc init``. A leaf
module: it imports nothing of aioproc's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator

__all__ = [
    "GONE",
    "UNSUPPORTED",
    "descendants",
    "group_members",
    "groups",
    "pidfd_open_ex",
    "pipe_holders",
    "use_pidfd",
    "wait_gone",
    "wait_gone_async",
]

#: Switch for the tests: False forces the polling fallback used where pidfd_open is
#: refused (old kernels, seccomp filters).
use_pidfd = True

#: At most this many pidfds are held by one :func:`wait_gone` at a time.
MAX_PIDFDS = 64


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state is [0]), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return data.rsplit(b")", 1)[1].decode().split()


def _live(fields: list[str]) -> bool:
    return fields[0] not in ("Z", "X", "x")


def group_members(pgid: int) -> set[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if fields is not None and int(fields[2]) == pgid and _live(fields):
                out.add(int(entry))
    return out


def groups() -> dict[int, set[int]]:
    """Every live (not zombie) process, by process group id: one scan for all groups."""
    out: dict[int, set[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if fields is not None and _live(fields):
                out.setdefault(int(fields[2]), set()).add(int(entry))
    return out


def descendants(root: int) -> set[int]:
    """Live processes below ``root`` in the process tree (not ``root`` itself)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if fields is not None and _live(fields):
                parent[int(entry)] = int(fields[1])
    out: set[int] = set()
    for pid in parent:
        chain = []
        p = pid
        while p in parent and p not in out and p != root:
            chain.append(p)
            p = parent[p]
        if p == root or p in out:
            out.update(chain)
    return out


def pipe_holders(fds: Iterable[int]) -> list[tuple[int, str]]:
    """Other processes holding the other end of our pipes ``fds``: ``(pid, comm)``, by PID.

    For messages only: a pipe is found by its inode (``pipe:[INODE]`` in
    ``/proc/PID/fd``), and the answer is a snapshot.
    """
    targets = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            targets.add(f"pipe:[{os.fstat(fd).st_ino}]")
    me = os.getpid()
    found: list[tuple[int, str]] = []
    if not targets:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            links = os.listdir(f"/proc/{entry}/fd")
            held = any(os.readlink(f"/proc/{entry}/fd/{n}") in targets for n in links)
        except OSError:
            continue
        if held:
            try:
                with open(f"/proc/{entry}/comm", "rb") as f:
                    comm = f.read().decode(errors="replace").strip()
            except OSError:
                continue
            found.append((int(entry), comm))
    return sorted(found)


# ------------------------------------------------------------------ waiting


GONE = -1
UNSUPPORTED = -2


def pidfd_open_ex(pid: int) -> int:
    """A pidfd for ``pid``, or GONE (no such process) or UNSUPPORTED."""
    if not use_pidfd:
        return UNSUPPORTED
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return GONE
    except OSError:  # ENOSYS, or refused by a seccomp filter
        return UNSUPPORTED


def _pidfd_or_none(pid: int) -> int | None:
    """A pidfd for ``pid``, or None (gone, or pidfds unavailable)."""
    fd = pidfd_open_ex(pid)
    return fd if fd >= 0 else None


@contextlib.contextmanager
def _pidfds(pids: Iterable[int]) -> Iterator[list[int]]:
    """Open pidfds for those of ``pids`` that can be watched; closed on exit."""
    fds = []
    try:
        for pid in pids:
            fd = _pidfd_or_none(pid)
            if fd is not None:
                fds.append(fd)
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


async def _all_readable(fds: list[int], timeout: float | None) -> bool:
    """Wait until every pidfd is readable (its process exited); False on timeout."""
    if not fds:
        return True
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    pending = set(fds)

    def ready(fd: int) -> None:
        loop.remove_reader(fd)
        pending.discard(fd)
        if not pending and not done.done():
            done.set_result(None)

    for fd in fds:
        loop.add_reader(fd, ready, fd)
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        for fd in pending:
            loop.remove_reader(fd)


async def wait_gone(scan: Callable[[], set[int]], timeout: float | None) -> bool:
    """Wait until ``scan()`` finds no process; False if ``timeout`` runs out first.

    Event-driven where pidfds can be opened: open one for each process found, wait
    until all of them have exited, scan again (a member may have forked meanwhile),
    and so on. A PID may be reused between the scan and ``pidfd_open``; then we wait
    for an unrelated process, which costs time but never signals anybody, and the
    rescan does not find it any more. Without pidfds it polls, backing off to 50 ms.

    At most :data:`MAX_PIDFDS` descriptors at once, whatever the size of what is
    waited for: the first ones found, then a rescan for the rest (a scan of
    /proc costs less than a descriptor the rest of the process may need: one
    pidfd per member of a 1,500-member group took every descriptor under
    RLIMIT_NOFILE=1024, and an unrelated service's spawns failed until FATAL).
    """

    async def ascan() -> set[int]:
        return scan()

    return await wait_gone_async(ascan, timeout)


async def wait_gone_async(scan: Callable[[], Awaitable[set[int]]], timeout: float | None) -> bool:
    """:func:`wait_gone` with a scan that is awaited (one shared by many waiters)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = 0.002
    while True:
        found = await scan()
        if not found:
            return True
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            return False
        with _pidfds(itertools.islice(found, MAX_PIDFDS)) as fds:
            if fds:
                if not await _all_readable(fds, left):
                    return False
                continue
        await asyncio.sleep(delay if left is None else min(delay, left))
        delay = min(delay * 2, 0.05)
