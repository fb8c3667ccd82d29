"""aioproc.reap_orphans: reaps the children aioproc did not spawn, never its own."""

from __future__ import annotations

import asyncio
import os
import select
import signal

import aioproc
from aioproc import _spawn

from .helpers import process_state


def _exited_stranger(code: int) -> int:
    """A child started behind aioproc's back (like an adopted orphan), once it exited."""
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", f"exit {code}"], dict(os.environ))
    fd = os.pidfd_open(pid)
    try:
        select.select([fd], [], [], 10)
    finally:
        os.close(fd)
    return pid


async def test_reaps_strangers_and_never_aioprocs_own_children(wait_mode: str) -> None:
    # Our children have exited and stay zombies (their reap held), so that
    # waitid(P_ALL) names them too: taking one would lose its status.
    ours = [await aioproc.spawn(["sh", "-c", f"exit {code}"]) for code in (5, 6)]
    holds = [proc.hold_reap() for proc in ours]
    for hold in holds:
        hold.__enter__()
    try:
        for proc in ours:
            await proc.wait_exited()
        strangers = {_exited_stranger(3), _exited_stranger(4)}
        # (Any other stray child of the test process would be reaped too.)
        reaped = {s.pid: s for s in aioproc.reap_orphans()}
        assert strangers <= set(reaped)
        assert sorted(reaped[pid].exit_code for pid in strangers) == [3, 4]  # type: ignore[type-var]
        for proc in ours:
            assert proc.pid not in reaped
            assert process_state(proc.pid) == "Z"  # still ours to reap
        assert not strangers & {s.pid for s in aioproc.reap_orphans()}
    finally:
        for hold in holds:
            hold.__exit__(None, None, None)
    assert [(await proc.wait()).exit_code for proc in ours] == [5, 6]
    for proc in ours:
        await proc.aclose()


def test_keep_spares_other_children_and_live_ones_are_left_alone() -> None:
    kept = _exited_stranger(7)
    live = os.posix_spawn("/bin/sleep", ["sleep", "30"], dict(os.environ))
    try:
        assert kept not in {s.pid for s in aioproc.reap_orphans(keep={kept})}
        assert process_state(kept) == "Z"
        assert process_state(live) not in (None, "Z")  # left alone (S, R, or D in exec)
    finally:
        os.kill(live, signal.SIGKILL)
        os.waitpid(live, 0)
        os.waitpid(kept, 0)


async def test_nothing_is_reaped_while_a_pooled_spawn_is_in_flight() -> None:
    # A child a spawn worker has just forked is unknown to aioproc until its
    # outcome reaches the loop: while one is in flight the reaper keeps off.
    # The fork lock, held exclusively, keeps the pooled spawns in flight.
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(2)
    stranger = _exited_stranger(9)
    tasks: list[asyncio.Future[aioproc.Process]] = []
    try:
        async with aioproc.fork_lock.exclusive():
            tasks = [asyncio.ensure_future(aioproc.spawn(["true"])) for _ in range(3)]
            await asyncio.sleep(0)  # each task's first step: the fork lock is busy, so
            assert _spawn.pooled_in_flight()  # every spawn went to the pool
            assert aioproc.reap_orphans() == []
            assert process_state(stranger) == "Z"
        procs = await asyncio.gather(*tasks)
        assert not _spawn.pooled_in_flight()
        assert stranger in {s.pid for s in aioproc.reap_orphans()}
        for proc in procs:
            await proc.wait()
            await proc.aclose()
    finally:
        aioproc.set_spawn_workers(before)
