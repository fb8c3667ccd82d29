"""The pidfd watcher (aioproc/_waiting/pidfd.py): one-shot registrations."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

import aioproc
from aioproc._waiting.pidfd import PidfdChild

from .helpers import run_python

pytestmark = pytest.mark.usefixtures("no_leaks", "pidfd_mode")


def _registered(epfd: int) -> set[int]:
    """The descriptor numbers registered in an epoll instance, from its fdinfo."""
    with open(f"/proc/self/fdinfo/{epfd}") as f:
        return {int(line.split()[1]) for line in f if line.startswith("tfd:")}


async def test_an_exit_taken_from_the_epoll_leaves_no_registration_behind() -> None:
    # Two children, so the watcher asks epoll which pidfd is ready and takes
    # that one-shot event; it then closes the pidfd without EPOLL_CTL_DEL,
    # and the kernel must have dropped the registration with the close.
    first = await aioproc.spawn(["sleep", "30"])
    second = await aioproc.spawn(["sleep", "30"])
    watcher = first._child._watcher  # type: ignore[attr-defined]
    first_fd = first._child.fileno()  # type: ignore[attr-defined]
    second_fd = second._child.fileno()  # type: ignore[attr-defined]
    assert _registered(watcher._fd) == {first_fd, second_fd}
    first.kill()
    assert (await asyncio.wait_for(first.wait(), 10)).signal == signal.SIGKILL
    assert first._child._spent  # type: ignore[attr-defined]
    for _ in range(3):  # the put-off unregistering and closing: the next loop turns
        await asyncio.sleep(0)
    assert _registered(watcher._fd) == {second_fd}
    assert list(watcher._children) == [second_fd]
    second.kill()
    assert (await asyncio.wait_for(second.wait(), 10)).signal == signal.SIGKILL


async def test_a_report_that_did_not_end_in_an_exit_arms_the_pidfd_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A one-shot registration reports once. If a report is taken and the
    # child is not marked exited by it (readable before waitable, which no
    # kernel we know of does: simulated here by dropping one notification),
    # the watcher must arm the pidfd again, or the exit is never reported and
    # wait() hangs.
    first = await aioproc.spawn(["sleep", "30"])
    second = await aioproc.spawn(["sleep", "30"])
    child = first._child
    watcher = child._watcher  # type: ignore[attr-defined]
    real = PidfdChild._notify_exited
    dropped: list[PidfdChild] = []

    def drop_once(self: PidfdChild) -> None:
        if self is child and not dropped:
            dropped.append(self)
            return
        real(self)

    monkeypatch.setattr(PidfdChild, "_notify_exited", drop_once)
    first.kill()
    # Exited, not reaped: the pidfd is readable now (this blocks the loop
    # thread, so the loop cannot take the report first).
    os.waitid(os.P_PIDFD, child.fileno(), os.WEXITED | os.WNOWAIT)  # type: ignore[attr-defined]  # noqa: ASYNC222
    watcher._ready()  # takes the one-shot event; the notification is dropped
    assert dropped == [child]
    assert not child._exited
    assert (await asyncio.wait_for(first.wait(), 10)).signal == signal.SIGKILL
    second.kill()
    assert (await asyncio.wait_for(second.wait(), 10)).signal == signal.SIGKILL


# ---------------------------------------------------------------- os.fork()
_FORK_DURING_CLEANUP = """
    import asyncio, os, select, sys, time, uvloop, aioproc
    aioproc.set_wait_mode(sys.argv[2])
    parent = os.getpid()
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()

    async def until_readable(fd):
        deadline = time.monotonic() + 10
        while not select.select([fd], [], [], 0)[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def linger():
        # In the forked child, asyncio.run's cleanup (after sys.exit) cancels
        # this task, which then keeps the inherited loop running until the
        # parent has had its children's exits.
        try:
            await asyncio.sleep(100)
        finally:
            if os.getpid() != parent:
                os.write(ready_w, b"r")
                await until_readable(done_r)

    async def hold(started):
        # Cancelled by the same cleanup in the forked child: leaving `async
        # with` there must neither signal the parent's child nor wait for ever.
        async with aioproc.spawn(["sleep", "30"], stop_timeout=0.1) as proc:
            started.set_result(proc)
            await asyncio.sleep(100)

    async def main():
        loop = asyncio.get_running_loop()
        kids = [await aioproc.spawn(["sh", "-c", "read x"], stdin=aioproc.PIPE) for _ in range(3)]
        started = loop.create_future()
        holder = asyncio.ensure_future(hold(started))
        held = await started
        lingerer = asyncio.ensure_future(linger())
        await asyncio.sleep(0)
        pid = os.fork()
        if pid == 0:
            sys.exit(0)
        # Polled: a thread's wake-up of this loop (its self-pipe, shared with
        # the forked child's loop) could be taken by the child (asyncio's own
        # fork hazard, not aioproc's).
        await until_readable(ready_r)
        for kid in kids:  # they exit while the forked child runs its loop
            kid.stdin.write(b"x\\n")
        codes = [(await asyncio.wait_for(kid.wait(), 10)).returncode for kid in kids]
        os.write(done_w, b"d")
        deadline = time.monotonic() + 10
        while not (res := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not res[0]:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        print(codes, held.returncode, "hung" if not res[0] else res[1], flush=True)
        lingerer.cancel()
        holder.cancel()
        with __import__("contextlib").suppress(asyncio.CancelledError):
            await holder

    (uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main())
"""


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("mode", ["pidfd", "pid"])
def test_a_forked_child_leaving_through_sys_exit_takes_no_exit_of_the_parent(
    loop_name: str, mode: str
) -> None:
    # A child forked inside a running loop that leaves through sys.exit runs
    # asyncio.run's cleanup on the loop it inherited: it must not take the
    # exit reports from the epoll it shares with the parent (the parent's
    # wait() hung for ever), nor take the watcher out of the parent's loop
    # (uvloop's close does that), nor hang itself on the parent's children.
    res = run_python(_FORK_DURING_CLEANUP, loop_name, mode, timeout=30)
    assert res.returncode == 0, res.stderr
    # The parent's children exited normally (0); the held one is still
    # running (None) for the parent to stop; the forked child exited (0).
    assert res.stdout.splitlines() == ["[0, 0, 0] None 0"], res.stderr
