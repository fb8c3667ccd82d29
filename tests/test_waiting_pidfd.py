"""The pidfd watcher (aioproc/_waiting/pidfd.py): one-shot registrations."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

import aioproc
from aioproc._waiting.pidfd import PidfdChild

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
