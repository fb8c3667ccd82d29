"""Helpers the tests share: looking at processes and descriptors through /proc."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "DROP_ROOT",
    "TIMER_SLACK",
    "cancel_as_it_finishes",
    "children_of",
    "group_members",
    "open_fds",
    "open_pidfds",
    "process_state",
    "run_denied",
    "run_python",
    "wait_gone",
]

#: How early, by ``time.monotonic()``, a loop timer may fire: libuv (uvloop)
#: counts whole milliseconds from a clock it caches per loop turn, so a delay
#: can end up to ~1 ms early. Lower bounds on waited-for delays allow for it
#: (seen once in CI: a 36.22 ms backoff measured as a 36.18 ms gap).
TIMER_SLACK = 0.002

#: Source lines for a child interpreter run as root (after its imports, with
#: ``os`` among them): become a uid of its own (no other process has it,
#: unlike "nobody") with no groups, and leave /root, which that uid cannot read.
DROP_ROOT = """
    uid = 3_000_000 + os.getpid()
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    os.chdir("/")
"""


def children_of(pid: int | None = None) -> set[int]:
    """PIDs of the live or zombie children of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    out: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.update(int(x) for x in f.read().split())
        except FileNotFoundError:
            continue
    return out


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` ("Z" for a zombie), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def group_members(pgid: int) -> set[int]:
    """Live (non-zombie) processes in process group ``pgid``, found by scanning /proc."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.add(int(entry))
    return out


def open_pidfds(pids: set[int]) -> list[int]:
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            pass
    return fds


def wait_gone(pidfds: list[int], timeout: float = 10.0) -> bool:
    """Wait until every process behind ``pidfds`` has exited; close the pidfds.

    A signalled process dies asynchronously: kill() returns once the signal
    is queued. A pidfd turns readable when its process has exited, which is
    the event to wait for.
    """
    import select

    try:
        poller = select.poll()
        for fd in pidfds:
            poller.register(fd, select.POLLIN)
        pending = set(pidfds)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for fd, _ in poller.poll(left * 1000):
                pending.discard(fd)
                poller.unregister(fd)
        return True
    finally:
        for fd in pidfds:
            os.close(fd)


def run_denied(
    nr: int, err: int, code: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter where system call ``nr`` fails with ``err``.

    A real seccomp filter (``programs/seccomp_deny.py``), not a mock.
    """
    return subprocess.run(
        [sys.executable, str(Path(__file__).parent / "programs" / "seccomp_deny.py"), str(nr),
         str(err), textwrap.dedent(code)],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter, with ``args`` as its ``sys.argv[1:]``."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def cancel_as_it_finishes(target: asyncio.Task[object], qualname: str) -> None:
    """Cancel ``target`` in the loop turn in which the task running ``qualname`` finishes.

    For shielded cleanup (``_util.shielded``): the work runs in a task of its
    own, ``target`` waits for it. Waits (loop turn by loop turn) until that
    task exists, then makes its completion cancel ``target``: the request then
    reaches ``target`` together with the news that the work is done, the
    race a task group aborting on a sibling's error runs into.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # every loop turn: the task may live for one
        for task in asyncio.all_tasks():
            coro = task.get_coro()
            if getattr(coro, "__qualname__", None) == qualname and not task.done():
                task.add_done_callback(lambda _: target.cancel())
                return
        await asyncio.sleep(0)
    raise AssertionError(f"no task runs {qualname}")
