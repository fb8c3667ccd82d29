"""The process handle: thread-free waiting, PID-safe signalling, cleanup.

Each test names the semantic of the foundation issue it shows. Tests taking
``wait_mode`` run in pidfd mode and in pid mode; every async test also runs on
asyncio's default loop and on uvloop (see conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import aioproc
from aioproc import PIPE, ExitStatus

from .helpers import (
    cancel_as_it_finishes,
    children_of,
    group_members,
    open_pidfds,
    process_state,
    run_denied,
    run_python,
    wait_gone,
)

pytestmark = pytest.mark.usefixtures("no_leaks")

PIDFD_OPEN_NR = 434  # the same on every architecture (the unified syscall table)


# ------------------------------------------------------------------ spawning
async def test_spawn_is_awaitable_and_reports_status(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sh", "-c", "exit 7"])
    assert proc.mode == wait_mode
    assert proc.returncode is None or proc.returncode == 7
    status = await proc.wait()
    assert status == proc.status
    assert status.exit_code == 7
    assert status.returncode == 7
    assert status.signal is None
    assert not status.success
    assert proc.returncode == 7
    assert status.rusage is not None


async def test_spawn_as_context_manager_waits_for_normal_exit(wait_mode: str) -> None:
    async with aioproc.spawn(["true"]) as proc:
        status = await proc.wait()
    assert status.success
    assert proc.status is status


async def test_process_cannot_be_constructed_directly() -> None:
    with pytest.raises(TypeError, match="spawn"):
        aioproc.Process()


async def test_killed_child_has_negative_returncode(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sleep", "30"])
    proc.kill()
    status = await proc.wait()
    assert status.returncode == -signal.SIGKILL
    assert status.signal is signal.SIGKILL
    assert status.exit_code is None


# ---------------------------------------------------- 1. no thread waits
async def test_500_live_children_cost_no_thread(wait_mode: str) -> None:
    task_count = len(os.listdir("/proc/self/task"))
    # Spawned one after another: inline on the loop, so not even the bounded
    # spawn pool is involved.
    procs = [await aioproc.spawn(["sleep", "30"]) for _ in range(250)]
    # Spawned from many tasks at once: the bounded pool forks them.
    procs += await asyncio.gather(*(aioproc.spawn(["sleep", "30"]) for _ in range(250)))
    waiters = [asyncio.ensure_future(p.wait()) for p in procs]
    await asyncio.sleep(0)
    threads = len(os.listdir("/proc/self/task"))
    assert threads <= task_count + aioproc.get_spawn_workers()
    for p in procs:
        p.kill()
    statuses = await asyncio.gather(*waiters)
    assert all(s.signal is signal.SIGKILL for s in statuses)
    assert len(os.listdir("/proc/self/task")) == threads


# ------------------------------------- 2. wait() means the process exited
async def test_wait_is_not_delayed_by_a_grandchild_holding_stdout(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sh", "-c", "sleep 30 & echo $!"], stdout=PIPE)
    assert proc.stdout is not None
    grandchild = int(await proc.stdout.readline())
    status = await asyncio.wait_for(proc.wait(), 10)
    assert status.success
    # The pipe is still open at the far end: EOF has not come.
    assert not proc.stdout.at_eof()
    os.kill(grandchild, signal.SIGKILL)
    assert await proc.stdout.read() == b""
    await proc.aclose()


# ------------------------------------------------------- 3. two modes
def test_wait_mode_switch_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError, match="wait mode"):
        aioproc.set_wait_mode("threads")  # type: ignore[arg-type]


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="seccomp helper")
@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM, errno.EACCES])
def test_pid_mode_is_chosen_when_pidfd_open_is_blocked(err: int) -> None:
    # A real seccomp filter makes pidfd_open fail, as an old kernel or a
    # container sandbox would.
    code = """
        import asyncio, aioproc
        async def main():
            p = await aioproc.spawn(["sh", "-c", "exit 3"])
            s = await p.wait()
            print(p.mode, aioproc.get_wait_mode(), s.returncode)
        asyncio.run(main())
    """
    res = run_denied(PIDFD_OPEN_NR, err, code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["pid", "pid", "3"]
    assert res.stderr == ""


# ------------------------------------------- 5./6. PID-safe signalling
async def test_signalling_a_finished_process_raises_process_lookup_error(wait_mode: str) -> None:
    proc = await aioproc.spawn(["true"])
    await proc.wait()
    for send in (proc.terminate, proc.kill, lambda: proc.send_signal(signal.SIGUSR1)):
        with pytest.raises(ProcessLookupError):
            send()


async def test_signalling_an_exited_unreaped_child_raises(wait_mode: str) -> None:
    # The child has exited but the loop has not run since, so nobody reaped
    # it: it is a zombie, and a signal now would silently do nothing.
    proc = await aioproc.spawn(["sh", "-c", "read x; exit 0"], stdin=PIPE)
    assert proc.stdin is not None
    watch = os.pidfd_open(proc.pid)
    proc.stdin.close()  # the shell exits; from here on, no yielding to the loop
    select.select([watch], [], [], 10)
    os.close(watch)
    assert process_state(proc.pid) == "Z"
    with pytest.raises(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    assert (await proc.wait()).success


async def test_signal_after_exit_with_grandchild_holding_pipes(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sh", "-c", "sleep 30 & echo $!"], stdout=PIPE, stderr=PIPE)
    assert proc.stdout is not None
    grandchild = int(await proc.stdout.readline())
    await proc.wait()
    with pytest.raises(ProcessLookupError):
        proc.kill()
    assert process_state(grandchild) not in (None, "Z")
    os.kill(grandchild, signal.SIGKILL)
    await proc.aclose()


async def test_a_reused_pidfd_number_is_never_signalled() -> None:
    # Seed 002: once A is reaped its pidfd is closed; the number can be
    # reopened as B's pidfd. A late A.kill() must not reach B through it.
    aioproc.set_wait_mode("pidfd")
    try:
        a = await aioproc.spawn(["true"])
        await a.wait()
        b = await aioproc.spawn(["sleep", "30"])
        with pytest.raises(ProcessLookupError):
            a.kill()
        assert b.returncode is None
        assert process_state(b.pid) not in (None, "Z")
        b.kill()
        assert (await b.wait()).signal is signal.SIGKILL
    finally:
        aioproc.set_wait_mode("auto")


def test_concurrent_signals_from_threads_during_exit(wait_mode: str) -> None:
    # send_signal from several threads while the loop reaps: each call either
    # reaches the live child or raises ProcessLookupError; nothing else.
    async def main() -> list[BaseException]:
        errors: list[BaseException] = []
        for _ in range(20):
            proc = await aioproc.spawn(["sh", "-c", "read x"], stdin=PIPE)
            stop = threading.Event()

            def hammer(p: aioproc.Process = proc, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    try:
                        p.send_signal(0)
                    except ProcessLookupError:
                        return
                    except BaseException as exc:  # pragma: no cover - the failure
                        errors.append(exc)
                        return

            threads = [threading.Thread(target=hammer) for _ in range(3)]
            for t in threads:
                t.start()
            assert proc.stdin is not None
            proc.stdin.close()
            await proc.wait()
            stop.set()
            for t in threads:
                t.join()
        return errors

    assert asyncio.run(main()) == []


# ------------------------------------------------ 7. group kill is PID-safe
async def test_stop_with_kill_group_leaves_no_group_member(wait_mode: str) -> None:
    script = "trap '' TERM; sleep 30 & sleep 30 & echo ready; wait"
    proc = await aioproc.spawn(["sh", "-c", script], stdout=PIPE, kill_group=True, stop_timeout=0.2)
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"
    members = group_members(proc.pid)
    assert len(members) == 3
    pidfds = open_pidfds(members - {proc.pid})
    status = await proc.stop()
    assert status.signal is signal.SIGKILL  # the leader ignored SIGTERM
    assert wait_gone(pidfds)
    assert group_members(proc.pid) == set()
    await proc.aclose()


async def test_stop_with_kill_group_sweeps_members_after_leader_exits(wait_mode: str) -> None:
    # The leader obeys SIGTERM at once, a member ignores it: the member must
    # still be gone, killed (once the rest of the timeout ran out) while the
    # leader was an unreaped zombie.
    script = "(trap '' TERM; echo ready; exec sleep 30) & wait"
    proc = await aioproc.spawn(["sh", "-c", script], stdout=PIPE, kill_group=True, stop_timeout=0.3)
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"
    pidfds = open_pidfds(group_members(proc.pid) - {proc.pid})
    assert len(pidfds) == 1
    status = await proc.stop()
    assert status.signal is signal.SIGTERM
    assert wait_gone(pidfds)
    assert group_members(proc.pid) == set()
    await proc.aclose()


async def test_stop_with_kill_group_lets_members_finish_within_the_timeout(
    wait_mode: str, tmp_path: Path
) -> None:
    # The leader dies of SIGTERM at once; a member takes 0.3 s to shut down
    # cleanly after its SIGTERM. The timeout (5 s) covers the whole group, so
    # the member finishes: it is not cut short by the SIGKILL sweep that
    # follows the leader's exit. (Before, the sweep came right after the
    # leader's exit, and the member never wrote its file.)
    done = tmp_path / "member-done"
    member = (
        f"trap 'sleep 0.3; echo clean > {done}; exit 0' TERM; "
        "echo ready; while :; do sleep 0.05; done"
    )
    script = '(sh -c "$0") & wait'
    proc = await aioproc.spawn(
        ["sh", "-c", script, member], stdout=PIPE, kill_group=True, stop_timeout=5
    )
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"
    status = await proc.stop()
    assert status.signal is signal.SIGTERM
    assert done.read_text() == "clean\n", "the member was killed before it finished"
    assert group_members(proc.pid) == set()
    await proc.aclose()


async def test_hold_reap_keeps_an_exited_child_a_zombie(wait_mode: str) -> None:
    # The public hold: wait_exited() returns while the child is a zombie whose
    # PID (and group id) stay pinned; leaving the block reaps it.
    # (process_group=0, not kill_group=True: that pins the leader by itself.)
    script = "sleep 30 & echo ready; exit 3"
    proc = await aioproc.spawn(["sh", "-c", script], stdout=PIPE, process_group=0)
    assert proc.stdout is not None
    with proc.hold_reap():
        assert await proc.stdout.readline() == b"ready\n"
        await asyncio.wait_for(proc.wait_exited(), 10)
        assert proc.status is None
        assert process_state(proc.pid) == "Z"
        members = group_members(proc.pid)
        assert len(members) == 1, members  # the sleep, left behind by the leader
        proc.signal_group(signal.SIGKILL)  # still allowed: the group id is ours
        pidfds = open_pidfds(members)
        assert wait_gone(pidfds)
        assert proc.status is None
    status = await asyncio.wait_for(proc.wait(), 10)
    assert status.exit_code == 3
    assert process_state(proc.pid) is None
    with pytest.raises(ProcessLookupError):
        proc.signal_group(signal.SIGKILL)
    await proc.aclose()


async def test_wait_exited_without_a_hold_is_the_exit(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sh", "-c", "exit 4"])
    await asyncio.wait_for(proc.wait_exited(), 10)
    assert (await proc.wait()).exit_code == 4
    await proc.wait_exited()  # at once, once reaped


async def test_group_kill_after_reap_raises_instead_of_guessing(wait_mode: str) -> None:
    proc = await aioproc.spawn(["true"], kill_group=True)
    await proc.wait()
    assert not proc.reaped  # kill_group: pinned until the group is swept
    proc.kill()  # still our group
    await proc.aclose()
    assert proc.reaped
    with pytest.raises(ProcessLookupError, match="group"):
        proc.kill()


async def test_async_with_kill_group_sweeps_members_the_exited_leader_left(
    wait_mode: str,
) -> None:
    # The leader exits on its own and leaves a job in its group; wait()
    # returns its status, yet the leader stays unreaped so that leaving the
    # block still reaches the job through the pinned group id.
    async with aioproc.spawn(
        ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"], stdout=PIPE, kill_group=True
    ) as proc:
        assert proc.stdout is not None
        job = int(await proc.stdout.readline())
        status = await asyncio.wait_for(proc.wait(), 10)
        assert status.exit_code == 0
        assert proc.returncode == 0
        assert not proc.reaped
        assert process_state(proc.pid) == "Z"
        assert group_members(proc.pid) == {job}
    assert proc.reaped
    assert process_state(job) in (None, "Z")
    assert group_members(proc.pid) == set()


async def test_stop_after_the_leader_exited_reaches_the_group(wait_mode: str) -> None:
    proc = await aioproc.spawn(
        ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"], stdout=PIPE, kill_group=True
    )
    assert proc.stdout is not None
    job = int(await proc.stdout.readline())
    await asyncio.wait_for(proc.wait(), 10)
    pidfds = open_pidfds({job})
    status = await proc.stop()
    assert status.exit_code == 0
    assert wait_gone(pidfds)
    assert proc.reaped
    assert process_state(proc.pid) is None
    await proc.aclose()


async def test_kill_group_rejects_joining_another_group() -> None:
    with pytest.raises(ValueError, match="kill_group"):
        await aioproc.spawn(["true"], kill_group=True, process_group=os.getpgid(0))


# -------------------------------------------------------- stop()
@pytest.mark.parametrize("odd", [float("nan"), float("inf"), -1.0])
async def test_stop_and_spawn_refuse_a_timeout_that_is_not_a_time(
    wait_mode: str, odd: float
) -> None:
    before = children_of()
    with pytest.raises(ValueError, match="stop_timeout must"):
        await aioproc.spawn(["sleep", "30"], stop_timeout=odd)
    assert children_of() == before  # refused before anything was made
    async with aioproc.spawn(["sleep", "30"], stop_timeout=0.5) as proc:
        with pytest.raises(ValueError, match="timeout must"):
            await proc.stop(odd)
        assert proc.returncode is None  # refused before any signal
        assert process_state(proc.pid) not in (None, "Z")


async def test_stop_escalates_to_sigkill(wait_mode: str) -> None:
    proc = await aioproc.spawn(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
        stdout=PIPE,
        stop_timeout=0.1,
    )
    assert proc.stdout is not None
    await proc.stdout.readline()
    status = await proc.stop()
    assert status.signal is signal.SIGKILL
    await proc.aclose()


async def test_stop_uses_the_stop_signal_and_returns_status_of_finished(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sleep", "30"], stop_signal=signal.SIGINT)
    status = await proc.stop()
    assert status.signal is signal.SIGINT
    assert await proc.stop() is status


# ------------------------------------------------------ 8. cancellation
async def test_cancelled_wait_loses_nothing(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sh", "-c", "read x; exit 4"], stdin=PIPE)
    waiter = asyncio.ensure_future(proc.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    others = [asyncio.ensure_future(proc.wait()) for _ in range(5)]
    assert proc.stdin is not None
    proc.stdin.close()
    statuses = await asyncio.gather(*others)
    assert all(s is statuses[0] for s in statuses)
    assert (await proc.wait()) is statuses[0]
    assert statuses[0].exit_code == 4


async def test_cancelled_waiters_are_forgotten(wait_mode: str) -> None:
    # Each wait() has its own future (no shared, shielded one); a cancelled
    # waiter must take its future with it, or a service polling
    # wait_for(proc.wait(), 1) for hours would grow a list without bound.
    proc = await aioproc.spawn(["cat"], stdin=PIPE)
    for _ in range(200):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.0001)
    assert proc._child._waiters == []
    assert proc.stdin is not None
    proc.stdin.close()
    assert (await proc.wait()).success


@pytest.mark.parametrize("how", ["exception", "cancel"])
async def test_leaving_async_with_stops_and_reaps(wait_mode: str, how: str) -> None:
    pid = 0

    async def body() -> None:
        nonlocal pid
        async with aioproc.spawn(["sleep", "30"], stdout=PIPE) as proc:
            pid = proc.pid
            if how == "exception":
                raise KeyError("boom")
            await asyncio.sleep(30)

    task = asyncio.ensure_future(body())
    await asyncio.sleep(0.05)
    if how == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(KeyError):
            await task
    assert pid
    assert process_state(pid) is None
    assert pid not in children_of()


async def test_cancellation_during_aexit_still_reaps(wait_mode: str) -> None:
    # The child ignores SIGTERM, so __aexit__ waits stop_timeout; cancelling
    # the task meanwhile must not abandon the child.
    pid = 0
    leaving = asyncio.Event()

    async def body() -> None:
        nonlocal pid
        async with aioproc.spawn(
            ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
            stdout=PIPE,
            stop_timeout=0.3,
        ) as proc:
            pid = proc.pid
            assert proc.stdout is not None
            await proc.stdout.readline()
            leaving.set()
        # From here __aexit__ runs without yielding until it awaits the stop.

    task = asyncio.ensure_future(body())
    await leaving.wait()
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert process_state(pid) is None


class _Boom(Exception):
    pass


@pytest.mark.parametrize("group", ["TaskGroup", "done-callback"])
async def test_leaving_async_with_keeps_a_task_group_s_cancellation(
    wait_mode: str, group: str
) -> None:
    # Task A leaves `async with spawn(...)` while sibling B, woken by the same
    # exit, raises: the group cancels A in the very turn A's shielded cleanup
    # ends. The cancellation must reach A, or A goes on to its next await and
    # the group waits for it for ever.
    if group == "TaskGroup" and sys.version_info < (3, 11):
        pytest.skip("asyncio.TaskGroup is new in 3.11 (the done-callback group is its core)")
    loop = asyncio.get_running_loop()
    box: asyncio.Future[aioproc.Process] = loop.create_future()
    never = asyncio.Event()
    went_on = []

    async def a() -> None:
        async with aioproc.spawn(["sleep", "30"]) as proc:
            box.set_result(proc)
            await proc.wait()  # woken first: it waited first
        went_on.append(True)
        await never.wait()

    async def b() -> None:
        proc = await box
        await proc.wait()
        raise _Boom

    async def kill_when_both_wait() -> None:
        proc = await box
        while len(proc._child._waiters) < 2:  # noqa: ASYNC110 - no event to wait for
            await asyncio.sleep(0)
        proc.kill()

    async def task_group() -> None:
        async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined,unused-ignore]
            tg.create_task(a())
            tg.create_task(b())

    killer = asyncio.ensure_future(kill_when_both_wait())
    guard = loop.call_later(10, never.set)  # a swallowed cancellation ends here
    try:
        if group == "TaskGroup":
            with pytest.raises(BaseExceptionGroup) as info:  # noqa: F821
                await task_group()
            assert info.group_contains(_Boom)  # type: ignore[attr-defined,unused-ignore]
        else:
            # What TaskGroup does (3.10 has none): a failing task cancels its
            # siblings from its done callback.
            ta, tb = asyncio.ensure_future(a()), asyncio.ensure_future(b())
            tb.add_done_callback(lambda _: ta.cancel())
            with pytest.raises(asyncio.CancelledError):
                await ta
            with pytest.raises(_Boom):
                await tb
    finally:
        guard.cancel()
        await killer
    assert went_on == []
    assert process_state((await box).pid) is None


async def test_aclose_reraises_a_cancellation_that_arrives_as_the_cleanup_ends(
    wait_mode: str,
) -> None:
    proc = await aioproc.spawn(["sleep", "30"])
    returned = []

    async def close() -> None:
        await proc.aclose()
        returned.append(True)

    task = asyncio.ensure_future(close())
    await cancel_as_it_finishes(task, "Process._aclose")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert returned == []
    assert proc.status is not None
    assert process_state(proc.pid) is None


# ------------------------------------------- 9. no loop needed to clean up
def _pidfd_of(fd: int) -> int | None:
    """The PID that descriptor ``fd`` is a pidfd for (-1 once reaped), or None."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


@pytest.mark.usefixtures("pidfd_mode")
async def test_the_pidfd_is_closed_right_after_the_waiters_ran() -> None:
    # Unregistering and closing the pidfd of a reaped child is put off until
    # its waiters have run (it would delay their wake-up), but no longer.
    proc = await aioproc.spawn(["true"])
    fd = proc._child.fileno()
    assert _pidfd_of(fd) == proc.pid
    assert (await proc.wait()).success
    assert _pidfd_of(fd) == -1, "expected to be put off past the wake-up"
    await asyncio.sleep(0)
    assert _pidfd_of(fd) is None


@pytest.mark.usefixtures("pidfd_mode")
@pytest.mark.parametrize("awaiting", ["wait_exited", "hold_reap"])
async def test_a_stale_watcher_report_does_not_mark_a_live_child_exited(awaiting: str) -> None:
    # With one pidfd registered, the watcher hands a report straight to that
    # child without asking epoll which pidfd is ready. A report can be stale:
    # the ready pidfd was unregistered, and this child's added, after the
    # loop's epoll said "readable". The general exit path (taken while an
    # exit is awaited without a reap, or a reap is held) marks the child
    # exited before reaping, so it must first ask the kernel. Without that
    # check the live child here was marked exited and unwatched, and its
    # real exit later reached nobody: wait() hung.
    proc = await aioproc.spawn(["sleep", "30"])
    child = proc._child
    watcher = child._watcher  # type: ignore[attr-defined]
    assert list(watcher._children.values()) == [child]
    with contextlib.ExitStack() as stack:
        if awaiting == "wait_exited":
            exited = asyncio.ensure_future(child.wait_exited())
            await asyncio.sleep(0)
            assert child._exited_fut is not None
        else:
            stack.enter_context(child.hold_reap())
        watcher._ready()  # the stale report
        assert not child._exited
        assert list(watcher._children.values()) == [child], "unwatched while alive"
        proc.kill()
        if awaiting == "wait_exited":
            await asyncio.wait_for(exited, 10)
        else:
            await asyncio.wait_for(child.wait_exited(), 10)
    status = await asyncio.wait_for(proc.wait(), 10)
    assert status.signal == signal.SIGKILL


@pytest.mark.usefixtures("pidfd_mode")
async def test_the_watcher_delivers_the_exit_of_its_only_child() -> None:
    # The single-pidfd shortcut: a report for the one registered child reaps
    # it, and one that comes while it still runs (a stale one) does nothing.
    proc = await aioproc.spawn(["sleep", "30"])
    watcher = proc._child._watcher  # type: ignore[attr-defined]
    assert len(watcher._children) == 1
    watcher._ready()
    assert proc.status is None
    proc.terminate()
    status = await asyncio.wait_for(proc.wait(), 10)
    assert status.signal == signal.SIGTERM


@pytest.mark.usefixtures("pidfd_mode")
async def test_an_inline_spawn_first_does_the_put_off_closing() -> None:
    # A spawn in the turn after a reap closes the reaped child's pidfd before
    # it forks, not right after (where it would compete with the new child).
    first = await aioproc.spawn(["true"])
    fd = first._child.fileno()
    await first.wait()
    assert _pidfd_of(fd) == -1  # open still, for a reaped process
    second = await aioproc.spawn(["true"])
    # Closed before the fork: the number is free, or the new child's now.
    assert _pidfd_of(fd) == (second.pid if second._child.fileno() == fd else None)
    assert (await second.wait()).success


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_loop_closed_between_reap_and_put_off_closing_closes_pidfd(
    loop_name: str, no_leaks: None
) -> None:
    # A loop that stops in the very iteration that reaped a child, and is
    # closed, never runs the put-off step; the pidfd (and the watcher's epoll)
    # must still be closed once the loop is dropped, not leaked.
    import uvloop

    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
    try:
        aioproc.set_wait_mode("pidfd")
        proc = loop.run_until_complete(aioproc.spawn(["sleep", "30"]))
        fd = proc._child.fileno()
        os.kill(proc.pid, signal.SIGKILL)  # still our unreaped child
        # It has exited; the pidfd is readable. (poll: the pidfd sits above
        # 1024, out of select()'s range.)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll()
        # Ready queue for the next iteration: stop, then (after the selector
        # reports the watcher) the reap, which schedules the put-off step.
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert proc.status is not None
        assert proc.status.signal is signal.SIGKILL
        if loop_name == "asyncio":
            # asyncio stops after the iteration's batch, before the handles
            # that batch scheduled: the put-off step really did not run.
            # (uvloop runs it before stopping; the checks below still hold.)
            assert _pidfd_of(fd) == -1
    finally:
        aioproc.set_wait_mode("auto")
        loop.close()
    del proc, loop
    gc.collect()
    assert _pidfd_of(fd) is None


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_loop_closed_under_a_running_child_kills_it_and_leaves_no_descriptor(
    loop_name: str, no_leaks: None
) -> None:
    # A loop closed without shutting down (no shutdown_asyncgens) while a
    # child still runs: closing the loop kills and reaps the child, although
    # its Process is still referenced (nothing could wait for it any more),
    # and closes its pidfd; dropping the loop closes the loop's epoll watcher.
    import uvloop

    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
    aioproc.set_wait_mode("pidfd")
    try:
        proc = loop.run_until_complete(aioproc.spawn(["sleep", "30"]))
        pid, fd = proc.pid, proc._child.fileno()
    finally:
        aioproc.set_wait_mode("auto")
        loop.close()
    assert process_state(pid) is None
    assert proc.status is not None
    assert proc.status.signal is signal.SIGKILL
    assert _pidfd_of(fd) is None
    del proc, loop
    gc.collect()  # the descriptors are checked by no_leaks


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("mode", ["pidfd", "pid"])
def test_closing_a_loop_kills_and_reaps_its_children_and_no_others(
    loop_name: str, mode: str, no_leaks: None
) -> None:
    # loop.close() without a shutdown, the Process objects still referenced:
    # that loop's children are killed and reaped at the close (as the README
    # says), another loop's child keeps running.
    import uvloop

    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    closed, other = factory(), factory()
    aioproc.set_wait_mode(mode)  # type: ignore[arg-type]
    try:
        procs = [closed.run_until_complete(aioproc.spawn(["sleep", "30"])) for _ in range(2)]
        survivor = other.run_until_complete(aioproc.spawn(["sleep", "30"]))
        closed.close()
        for proc in procs:
            assert process_state(proc.pid) is None
            assert proc.status is not None
            assert proc.status.signal is signal.SIGKILL
        assert process_state(survivor.pid) not in (None, "Z")  # still running
        survivor.kill()
        assert other.run_until_complete(survivor.wait()).signal is signal.SIGKILL
    finally:
        aioproc.set_wait_mode("auto")
        other.run_until_complete(other.shutdown_asyncgens())
        other.close()
    del procs, survivor, closed, other
    gc.collect()  # the descriptors are checked by no_leaks


def test_loop_shutdown_closes_the_watcher(no_leaks: None) -> None:
    # asyncio.run() shuts the loop down (shutdown_asyncgens), which closes the
    # loop's epoll watcher at once, before the loop itself is collected.
    async def main() -> asyncio.AbstractEventLoop:
        await (await aioproc.spawn(["true"])).wait()
        return asyncio.get_running_loop()

    aioproc.set_wait_mode("pidfd")
    try:
        loop = asyncio.run(main())
    finally:
        aioproc.set_wait_mode("auto")
    assert aioproc._waiting.pidfd._watchers.get(loop) is None


async def test_dropped_process_is_killed_and_reaped(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sleep", "30"], stdout=PIPE, stdin=PIPE)
    pid = proc.pid
    del proc
    gc.collect()
    assert process_state(pid) is None


async def test_dropped_process_with_kill_group_kills_the_whole_group(wait_mode: str) -> None:
    # As leaving `async with` does: the finalizer sweeps the group while the
    # leader is still unreaped (its zombie pins the group id), then reaps it.
    script = "sleep 30 & sleep 30 & echo ready; wait"
    proc = await aioproc.spawn(["sh", "-c", script], stdout=PIPE, kill_group=True)
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"
    pid = proc.pid
    members = group_members(pid)
    assert len(members) == 3
    pidfds = open_pidfds(members - {pid})
    del proc
    gc.collect()
    assert process_state(pid) is None
    assert wait_gone(pidfds)
    assert group_members(pid) == set()


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("mode", ["pidfd", "pid"])
def test_children_do_not_outlive_a_closed_loop(loop_name: str, mode: str) -> None:
    code = f"""
        import asyncio, sys, uvloop, aioproc
        aioproc.set_wait_mode({mode!r})
        kept = []
        async def main():
            kept.append(await aioproc.spawn(["sleep", "30"], stdout=aioproc.PIPE))
            dropped = await aioproc.spawn(["sleep", "30"])
            print(kept[0].pid, dropped.pid, flush=True)
        (uvloop.run if {loop_name!r} == "uvloop" else asyncio.run)(main())
        import os
        print(os.path.exists(f"/proc/{{kept[0].pid}}"), kept[0].returncode, flush=True)
    """
    res = run_python(code)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    kept_pid, dropped_pid = map(int, lines[0].split())
    assert lines[1] == f"False {-signal.SIGKILL}"
    assert res.stderr == ""  # no "Event loop is closed", no "Exception ignored"
    assert process_state(kept_pid) is None
    assert process_state(dropped_pid) is None


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="seccomp helper")
def test_pidfd_open_failing_after_fork_kills_and_reaps_the_child() -> None:
    # The fallback path (_posixsubprocess, then pidfd_open); _clone_exec gets
    # the pidfd from clone itself (tests/test_clone_exec.py).
    code = """
        import asyncio, errno, os, aioproc
        aioproc._spawn._direct._clone_exec = None
        aioproc.set_wait_mode("pidfd")
        async def main():
            before = set(os.listdir("/proc/self/fd"))
            try:
                await aioproc.spawn(["sleep", "30"], stdout=aioproc.PIPE)
            except OSError as exc:
                print(exc.errno == errno.EMFILE, "killed and reaped" in str(exc))
            with open("/proc/self/task/%d/children" % os.getpid()) as f:
                print(repr(f.read().strip()))
            print(set(os.listdir("/proc/self/fd")) == before)
        asyncio.run(main())
    """
    res = run_denied(PIDFD_OPEN_NR, errno.EMFILE, code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["True True", "''", "True"]


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("mode", ["pidfd", "pid"])
def test_first_spawn_with_no_descriptor_free_fails_cleanly(loop_name: str, mode: str) -> None:
    # The first spawn on a fresh loop with 0..5 descriptors free: it fails
    # with EMFILE at whichever step runs out (the pipes, the pidfd, the loop's
    # epoll watcher...) or succeeds; either way nothing is printed (a half-built
    # object's __del__ used to say "Exception ignored ... no attribute"), no
    # unraisable exception, no child left, no descriptor leaked.
    code = f"""
        import asyncio, errno, os, resource, sys, uvloop, aioproc
        aioproc.set_wait_mode({mode!r})
        unraisable = []
        sys.unraisablehook = unraisable.append
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        new_loop = uvloop.new_event_loop if {loop_name!r} == "uvloop" else asyncio.new_event_loop
        new_loop().close()  # process-wide descriptors a first loop leaves (conftest.py)
        outcomes = set()
        for free, stdout in [(n, s) for n in range(6) for s in (None, aioproc.PIPE)]:
            start = set(os.listdir("/proc/self/fd"))
            loop = new_loop()
            async def main():
                # Inside the running loop: uvloop needs descriptors to start.
                fds = []
                try:
                    while True:
                        fds.append(os.open("/dev/null", os.O_RDONLY))
                except OSError:
                    pass
                for _ in range(free):
                    os.close(fds.pop())
                try:
                    proc = await aioproc.spawn(["true"], stdout=stdout)
                except OSError as exc:
                    assert exc.errno == errno.EMFILE, exc
                    return "EMFILE"
                finally:
                    for fd in fds:
                        os.close(fd)
                await proc.communicate()
                return "ok"
            outcomes.add(loop.run_until_complete(main()))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            del loop
            with open(f"/proc/self/task/{{os.getpid()}}/children") as f:
                assert f.read().strip() == "", "a child was left"
            assert set(os.listdir("/proc/self/fd")) == start, "a descriptor was leaked"
        print(sorted(outcomes), unraisable)
    """
    res = run_python(code)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert res.stdout.split("\n")[0] == "['EMFILE', 'ok'] []"


# ------------------------------------------------------ 10. nothing leaks
async def test_a_thousand_cycles_leak_nothing(wait_mode: str) -> None:
    threads = threading.active_count()
    for i in range(1000):
        kind = i % 4
        if kind == 0:
            proc = await aioproc.spawn(["true"], stdout=PIPE, stderr=PIPE, stdin=PIPE)
            await proc.communicate()
        elif kind == 1:
            with pytest.raises(FileNotFoundError):
                await aioproc.spawn(["/nonexistent/program"], stdout=PIPE)
        elif kind == 2:
            proc = await aioproc.spawn(["sleep", "5"], stdout=PIPE)
            waiter = asyncio.ensure_future(proc.wait())
            await asyncio.sleep(0)
            waiter.cancel()
            await proc.aclose()
        else:
            async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.write(b"x\n")
                assert await proc.stdout.readline() == b"x\n"
    # No more threads than before (spawn workers started by earlier tests may
    # have retired meanwhile: they do after 10 s without work).
    assert threading.active_count() <= threads


# --------------------------------------------------------- 11. bad input
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"argv": ["/nonexistent/prog"]}, FileNotFoundError, "/nonexistent/prog"),
        ({"argv": ["no-such-program-xyz"]}, FileNotFoundError, "no-such-program-xyz"),
        ({"argv": ["true"], "cwd": "/nonexistent-dir"}, FileNotFoundError, "nonexistent-dir"),
        ({"argv": ["true"], "cwd": "/etc/hostname"}, NotADirectoryError, "/etc/hostname"),
        ({"argv": ["echo", "a\0b"]}, ValueError, "NUL"),
        ({"argv": ["true"], "env": {"A": "x\0y"}}, ValueError, "NUL"),
        ({"argv": ["true"], "env": {"A": 1}}, TypeError, "env"),
        ({"argv": ["true"], "env": {"A=B": "x"}}, ValueError, "variable name"),
        ({"argv": ["true"], "user": "no-such-user-xyz"}, ValueError, "unknown user"),
        ({"argv": ["true"], "group": "no-such-group-xyz"}, ValueError, "unknown group"),
        ({"argv": "echo hi"}, TypeError, "shell=True"),
        ({"argv": []}, ValueError, "empty"),
        ({"argv": ["true", 3]}, TypeError, r"argv\[1\]"),
        ({"argv": ["true"], "stdout": aioproc.STDOUT}, ValueError, "STDOUT"),
        ({"argv": ["true"], "stdin": 999}, OSError, "999"),
        ({"argv": ["true"], "stop_signal": 99999}, ValueError, "signal"),
    ],
)
async def test_bad_input_gets_a_clear_error_and_leaves_nothing(
    wait_mode: str, kwargs: dict[str, object], exc: type[BaseException], match: str
) -> None:
    kwargs = dict(kwargs)  # the parameter dicts are shared between runs
    argv = kwargs.pop("argv")
    with pytest.raises(exc, match=match):
        await aioproc.spawn(argv, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pass_fds": [2**64]}, "pass_fds: 18446744073709551616 is not a file descriptor"),
        ({"pass_fds": [2**31]}, "pass_fds: 2147483648 is not a file descriptor"),
        ({"stdin": 2**64}, "stdin: 18446744073709551616 is not a file descriptor"),
        ({"stdout": 2**31}, "stdout: 2147483648 is not a file descriptor"),
        ({"stderr": 2**40}, "stderr: 1099511627776 is not a file descriptor"),
        ({"user": 2**64}, "user id out of range: 18446744073709551616"),
        ({"user": 2**32}, "user id out of range: 4294967296"),
        # (uid_t)-1 means "no change" to setreuid(): the child would stay root.
        ({"user": 2**32 - 1}, "user id out of range: 4294967295"),
        ({"user": -5}, "user id out of range: -5"),
        ({"group": 2**64}, "group id out of range: 18446744073709551616"),
        ({"group": 2**32 - 1}, "group id out of range: 4294967295"),
        ({"umask": 2**64}, "umask must be -1 .leave it. or 0 to 0o777"),
        ({"umask": 2**31}, "umask must be"),
        ({"umask": 0o1022}, "umask must be"),
        ({"umask": -2}, "umask must be"),
        ({"process_group": 2**64}, "process_group must be a process group id"),
        ({"process_group": 2**31}, "process_group must be a process group id"),
    ],
)
async def test_out_of_range_integers_are_value_errors(
    wait_mode: str, kwargs: dict[str, object], match: str
) -> None:
    # They used to raise OverflowError (from C conversions), "uid is less than
    # minimum" for a uid over 32 bits, or, for uid 4294967295, run the child
    # as root. Both spawn steps: pid mode takes the fallback, pidfd mode the C step.
    before = children_of()
    with pytest.raises(ValueError, match=match):
        await aioproc.spawn(["true"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        await aioproc.run(["true"], **kwargs)
    assert children_of() == before


# ------------------------------------------------ one process piped into another
async def test_pipe_one_process_into_another(wait_mode: str) -> None:
    # stdin=p1.stdout, as a shell's `printf ... | sort`. Our end of the pipe is
    # non-blocking; sort used to get it so and fail with "Resource temporarily
    # unavailable". p1 writes only once sort is reading.
    script = "sleep 0.2; printf 'cherry\\napple\\nbanana\\n'"
    async with aioproc.spawn(["sh", "-c", script], stdout=PIPE) as p1:
        assert p1.stdout is not None
        async with aioproc.spawn(["sort"], stdin=p1.stdout, stdout=PIPE, stderr=PIPE) as p2:
            assert p1.stdout.closed  # handed to sort
            assert await p2.communicate() == (b"apple\nbanana\ncherry\n", b"")
            assert (await p2.wait()).success
        assert (await p1.wait()).success


async def test_piped_producer_gets_sigpipe_when_the_consumer_exits(wait_mode: str) -> None:
    # `yes | head -n 1`: once head exits, yes must get SIGPIPE, which needs
    # every read end closed, ours included (it used to stay open: yes blocked
    # on the full pipe for ever).
    async with aioproc.spawn(["yes"], stdout=PIPE) as p1:
        async with aioproc.spawn(["head", "-n", "1"], stdin=p1.stdout, stdout=PIPE) as p2:
            assert await p2.communicate() == (b"y\n", None)
        status = await asyncio.wait_for(p1.wait(), 10)
        assert status.signal == signal.SIGPIPE


async def test_pipe_into_another_process_stdin(wait_mode: str) -> None:
    # The other direction: the new child writes into p1's stdin.
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as p1:
        assert p1.stdin is not None
        async with aioproc.spawn(["printf", "through"], stdout=p1.stdin) as p2:
            assert p1.stdin.closed
            assert (await p2.wait()).success
        assert await p1.communicate() == (b"through", None)


async def test_a_stream_that_cannot_be_handed_over_is_refused(wait_mode: str) -> None:
    async with aioproc.spawn(["printf", "abc"], stdout=PIPE) as p1:
        out = p1.stdout
        assert out is not None
        assert await out.readexactly(1) == b"a"
        with pytest.raises(
            ValueError, match=r"stdin: .* 2 bytes already read from it would be lost"
        ):
            await aioproc.spawn(["cat"], stdin=out)
        assert await out.read() == b"bc"  # untouched
        # A failed spawn leaves the stream as it was: ours, and non-blocking.
        with pytest.raises(FileNotFoundError):
            await aioproc.spawn(["/nonexistent/program"], stdin=out)
        assert not out.closed
        assert not os.get_blocking(out.fileno())
        await out.aclose()
        with pytest.raises(ValueError, match="it is closed"):
            await aioproc.spawn(["cat"], stdin=out)
    async with aioproc.spawn(["sleep", "30"], stdin=PIPE) as p1:
        assert p1.stdin is not None
        p1.stdin.write(b"x" * 2**20)  # far more than the pipe holds
        with pytest.raises(ValueError, match=r"stdout: .* not in the pipe yet"):
            await aioproc.spawn(["true"], stdout=p1.stdin)


async def test_not_executable_is_a_permission_error(wait_mode: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(PermissionError, match=str(script)):
        await aioproc.spawn([script])


async def test_shell_mode_and_env(wait_mode: str) -> None:
    proc = await aioproc.spawn("echo $FOO", shell=True, stdout=PIPE, env={"FOO": "bar"})
    out, err = await proc.communicate()
    assert (out, err) == (b"bar\n", None)


async def test_wait_from_another_loop_is_a_clear_error(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sleep", "30"])

    def other_loop() -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(proc.wait())

    await asyncio.get_running_loop().run_in_executor(None, other_loop)
    await proc.stop()


async def test_repr_and_exit_status_str(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sh", "-c", "kill -TERM $$"])
    assert f"pid={proc.pid}" in repr(proc)
    status = await proc.wait()
    assert "SIGTERM" in str(status)
    assert isinstance(status, ExitStatus)
    assert "returncode=-15" in repr(proc)


# ------------------------------------------------------ anyio's Process ABC
async def _anyio_style_run(process: anyio.abc.Process, data: bytes) -> tuple[int, bytes]:
    """A helper written against anyio's interface only, as a library would be."""
    assert process.stdin is not None
    assert process.stdout is not None
    await process.stdin.send(data)
    await process.stdin.aclose()
    chunks = [chunk async for chunk in process.stdout]
    return await process.wait(), b"".join(chunks)


async def test_process_works_where_anyio_expects_its_process_abc(wait_mode: str) -> None:
    async with aioproc.spawn(["tr", "a-z", "A-Z"], stdin=PIPE, stdout=PIPE) as proc:
        assert isinstance(proc, anyio.abc.Process)
        code, out = await _anyio_style_run(proc, b"hello\n")
    assert (code, out) == (0, b"HELLO\n")
    assert isinstance(code, int)
    assert isinstance(code, ExitStatus)


async def test_anyio_style_signals_and_returncode(wait_mode: str) -> None:
    proc: anyio.abc.Process = await aioproc.spawn(["sleep", "30"])
    assert proc.returncode is None
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == -signal.SIGTERM
    assert proc.returncode == -signal.SIGTERM
    await proc.aclose()


# ------------------------------------------------ pid mode and the signal hub
async def test_pid_mode_shares_sigchld_with_a_user_subscription() -> None:
    # pid mode learns about exits from SIGCHLD through the signal hub, as one
    # subscriber among others: a user's own subscription keeps its deliveries.
    aioproc.set_wait_mode("pid")
    try:
        async with aioproc.signals.subscribe(signal.SIGCHLD) as sub:
            proc = await aioproc.spawn(["sh", "-c", "exit 5"])
            assert proc.mode == "pid"
            status = await asyncio.wait_for(proc.wait(), 10)
            assert status.exit_code == 5
            assert await asyncio.wait_for(sub.get(), 10) is signal.SIGCHLD
    finally:
        aioproc.set_wait_mode("auto")


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_pid_mode_gives_sigchld_back_when_the_loop_ends(loop_name: str) -> None:
    code = f"""
        import asyncio, signal, uvloop, aioproc
        aioproc.set_wait_mode("pid")
        before = signal.getsignal(signal.SIGCHLD)
        async def main():
            p = await aioproc.spawn(["true"])
            await p.wait()
            return signal.getsignal(signal.SIGCHLD) is not before
        taken = (uvloop.run if {loop_name!r} == "uvloop" else asyncio.run)(main())
        print(taken, signal.getsignal(signal.SIGCHLD) == before)
    """
    res = run_python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "True"]


def test_pid_mode_survives_losing_sigchld_to_uvloop() -> None:
    # uvloop's own subprocess API makes libuv install its C-level SIGCHLD
    # handler; the hub's handler then never runs again. The backstop poll
    # still notices the exit.
    code = """
        import asyncio, time, uvloop, aioproc
        aioproc.set_wait_mode("pid")
        async def main():
            first = await aioproc.spawn(["true"])  # the hub takes SIGCHLD
            await first.wait()
            theirs = await asyncio.create_subprocess_exec("true")  # libuv takes it back
            await theirs.wait()
            p = await aioproc.spawn(["sleep", "0.1"])
            t0 = time.monotonic()
            s = await asyncio.wait_for(p.wait(), 10)
            print(s.returncode, time.monotonic() - t0 < 5)
        uvloop.run(main())
    """
    res = run_python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0", "True"]


async def test_signal_group_reaches_every_member(wait_mode: str) -> None:
    script = (
        "trap 'echo leader got USR1' USR1; (trap 'echo member got USR1; exit' USR1; "
        "echo ready; while :; do sleep 0.01; done) & wait; wait"
    )
    async with aioproc.spawn(["sh", "-c", script], stdout=PIPE, kill_group=True) as proc:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
        proc.signal_group(signal.SIGUSR1)
        got = {await proc.stdout.readline(), await proc.stdout.readline()}
        assert got == {b"leader got USR1\n", b"member got USR1\n"}


async def test_signal_group_needs_a_group_and_an_unreaped_leader(wait_mode: str) -> None:
    proc = await aioproc.spawn(["true"])
    with pytest.raises(RuntimeError, match="process group"):
        proc.signal_group(signal.SIGTERM)
    await proc.wait()
    leader = await aioproc.spawn(["true"], start_new_session=True)
    await leader.wait()
    with pytest.raises(ProcessLookupError):
        leader.signal_group(signal.SIGTERM)


# ------------------------------------------ anyio's tests/test_subprocesses.py, ported
# anyio's own checks of open_process()/run_process(), on spawn()/run(); the
# stream rules (ClosedResourceError after the block...) are in test_streams.py.
@pytest.mark.parametrize("shell", [True, False])
async def test_anyio_ported_run_process(shell: bool) -> None:
    script = "import sys; print(sys.stdin.read()[::-1])"
    argv: Any = f'{sys.executable} -c "{script}"' if shell else [sys.executable, "-c", script]
    result = await aioproc.run(argv, input=b"abc", capture_output=True, shell=shell)
    assert result.returncode == 0
    assert result.stdout.rstrip() == b"cba"


async def test_anyio_ported_run_process_checked() -> None:
    script = 'import sys; print("stderr-text", file=sys.stderr); print("stdout-text"); sys.exit(1)'
    with pytest.raises(subprocess.CalledProcessError) as info:
        await aioproc.run([sys.executable, "-c", script], check=True, capture_output=True)
    assert info.value.returncode == 1
    assert info.value.stdout.rstrip() == b"stdout-text"
    assert info.value.stderr.rstrip() == b"stderr-text"


async def test_anyio_ported_terminate(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))\n"
        "print('ready', flush=True)\n"
        "time.sleep(5)\n"
    )
    async with aioproc.spawn([sys.executable, str(script)], stdout=PIPE) as process:
        assert process.stdout is not None
        line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 100)
        assert line.rstrip() == b"ready"
        process.terminate()
        assert await process.wait() == 2


async def test_anyio_ported_cwd_env_and_new_session(tmp_path: Path) -> None:
    script = "import os; print(os.getcwd()); print(os.environ['foo']); print(os.getsid(0))"
    result = await aioproc.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "foo": "bar"},
        capture_output=True,
    )  # fmt: skip
    cwd, foo, sid = result.stdout.decode().split()
    assert (cwd, foo, int(sid)) == (str(tmp_path), "bar", os.getsid(0))
    result = await aioproc.run(
        [sys.executable, "-c", "import os; print(os.getsid(0))"],
        start_new_session=True, capture_output=True,
    )  # fmt: skip
    assert int(result.stdout) != os.getsid(0)


async def test_anyio_ported_connect_to_files(tmp_path: Path) -> None:
    (tmp_path / "stdin").write_text("Hello, process!\n")
    script = (
        "import sys; txt = sys.stdin.read().strip(); "
        "print('stdin says', repr(txt), 'but stderr says NO!', file=sys.stderr); "
        "print('stdin says', repr(txt), 'and stdout says YES!')"
    )
    with (
        (tmp_path / "stdin").open("rb") as fin,
        (tmp_path / "stdout").open("wb") as fout,
        (tmp_path / "stderr").open("wb") as ferr,
    ):
        async with aioproc.spawn(
            [sys.executable, "-c", script], stdin=fin, stdout=fout, stderr=ferr
        ) as p:
            assert await p.wait() == 0
    assert (tmp_path / "stdout").read_text() == (
        "stdin says 'Hello, process!' and stdout says YES!\n"
    )
    assert (tmp_path / "stderr").read_text() == (
        "stdin says 'Hello, process!' but stderr says NO!\n"
    )


async def test_anyio_ported_inherit_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    script = 'import sys; print("stderr-text", file=sys.stderr); print("stdout-text")'
    await aioproc.run([sys.executable, "-c", script], check=True)
    out, err = capfd.readouterr()
    assert out == "stdout-text\n"
    assert err == "stderr-text\n"


async def test_anyio_ported_aexit_cancellation_does_not_orphan_the_process() -> None:
    with anyio.CancelScope() as scope:
        async with aioproc.spawn([sys.executable, "-c", "import time; time.sleep(1)"]) as process:
            scope.cancel()
    assert process.returncode is not None
    assert process.returncode != 0
