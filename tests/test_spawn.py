"""The fork/exec step and the spawn worker pool (aioproc/_spawn.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import threading
import weakref
from collections.abc import Iterator

import pytest

import aioproc
from aioproc import PIPE

from .helpers import children_of

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture(params=[0, 1, 4], ids=lambda n: f"workers{n}")
def workers(request: pytest.FixtureRequest) -> Iterator[int]:
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(request.param)
    try:
        yield request.param
    finally:
        aioproc.set_spawn_workers(before)


async def test_a_burst_of_spawns_all_succeed(workers: int) -> None:
    procs = await asyncio.gather(
        *(aioproc.spawn(["sh", "-c", f"echo {i}"], stdout=PIPE) for i in range(50))
    )
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    assert [out for out, _ in outs] == [f"{i}\n".encode() for i in range(50)]


async def test_bad_arguments_in_a_burst_raise_and_leave_nothing(workers: int) -> None:
    results = await asyncio.gather(
        *(aioproc.spawn(["/nonexistent/x"] if i % 2 else ["echo", "a\0b"]) for i in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(r, (FileNotFoundError, ValueError)) for r in results), results


async def test_cancelled_pooled_spawns_leave_no_child(workers: int) -> None:
    # Cancel a burst of spawns at every point: before the hand-over to the
    # pool, while a worker forks, after it delivered. A child whose
    # requester is gone is killed and reaped; nothing is left.
    for _ in range(5):
        tasks = [asyncio.ensure_future(_spawn_sleep()) for _ in range(20)]
        await asyncio.sleep(0)
        for i, t in enumerate(tasks):
            if i % 2:
                t.cancel()
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        # A cancelled spawn leaves nothing behind by the time it has returned,
        # not eventually: a child forked meanwhile is already killed and reaped.
        assert not children_of()


async def _spawn_sleep() -> None:
    async with aioproc.spawn(["sleep", "30"], stdout=PIPE):
        await asyncio.sleep(30)


def test_pool_size_is_validated() -> None:
    with pytest.raises(ValueError, match="workers"):
        aioproc.set_spawn_workers(-1)
    with pytest.raises(ValueError, match="workers"):
        aioproc.set_spawn_workers(True)


async def test_sequential_spawns_use_no_thread() -> None:
    tasks = len(os.listdir("/proc/self/task"))
    for _ in range(20):
        proc = await aioproc.spawn(["true"])
        await proc.wait()
    assert len(os.listdir("/proc/self/task")) == tasks


def _sigblk(status: str) -> int:
    return int(status.split("SigBlk:")[1].split()[0], 16)


async def test_pooled_children_get_the_normal_signal_mask(workers: int) -> None:
    # Spawn workers block every signal, but a child must start with the
    # mask of the process, or it would ignore SIGTERM forever.
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
        ours = _sigblk(f.read())
    procs = await asyncio.gather(
        *(aioproc.spawn(["cat", "/proc/self/status"], stdout=PIPE) for _ in range(10))
    )
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    assert {_sigblk(out.decode()) for out, _ in outs if out} == {ours}


async def test_spawn_workers_block_signals() -> None:
    aioproc.set_spawn_workers(2)
    await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(10)))
    workers = [t for t in threading.enumerate() if t.name == "aioproc-spawn"]
    assert workers
    for t in workers:
        with open(f"/proc/self/task/{t.native_id}/status") as f:
            blocked = _sigblk(f.read())
        assert blocked & (1 << (signal.SIGTERM - 1))
        assert blocked & (1 << (signal.SIGINT - 1))


# A child that reports, in order, the parent-death signal (SIGUSR1) and pings (SIGUSR2).
_CATCHER = """
import os, signal
signal.signal(signal.SIGUSR1, lambda *a: os.write(1, b"deathsig\\n"))
signal.signal(signal.SIGUSR2, lambda *a: os.write(1, b"pong\\n"))
os.write(1, b"ready\\n")
while True:
    signal.pause()
"""


async def test_pdeathsig_children_survive_retiring_spawn_workers() -> None:
    # The kernel sends the parent-death signal when the *thread* that forked
    # the child exits, not the process. Had these children been forked by
    # spawn workers (as a burst from several tasks otherwise is), retiring
    # the workers would signal them. They are forked on the loop's thread.
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(4)
    procs: list[aioproc.Process] = []
    try:
        await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(8)))
        workers = [t for t in threading.enumerate() if t.name == "aioproc-spawn"]
        assert workers, "the burst was meant to start spawn workers"
        procs = list(
            await asyncio.gather(
                *(
                    aioproc.spawn(
                        [sys.executable, "-c", _CATCHER], stdout=PIPE, pdeathsig=signal.SIGUSR1
                    )
                    for _ in range(8)
                )
            )
        )
        for proc in procs:
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"ready\n"
        aioproc.set_spawn_workers(0)
        for thread in workers:
            thread.join(10)
            assert not thread.is_alive()
        # Standard signals pending together are delivered lowest number first,
        # so a parent-death SIGUSR1 would be reported before the pong.
        for proc in procs:
            proc.send_signal(signal.SIGUSR2)
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"pong\n"
    finally:
        aioproc.set_spawn_workers(before)
        for proc in procs:
            await proc.stop()
            await proc.aclose()


@pytest.mark.parametrize(
    ("value", "error"), [("TERM", TypeError), (True, TypeError), (0, ValueError), (999, ValueError)]
)
async def test_bad_pdeathsig_is_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="pdeathsig"):
        await aioproc.spawn(["true"], pdeathsig=value)  # type: ignore[arg-type]


async def test_outcomes_of_a_burst_are_delivered_across_loop_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pooled outcomes reach the loop through one inbox per loop: one wake-up
    # for many outcomes, delivered for a bounded time per turn. With no time
    # at all, each turn delivers one outcome and hands the rest to the next
    # turn; none may be lost (the spawn would hang) or delivered twice.
    from aioproc import _spawn

    monkeypatch.setattr(_spawn._Inbox, "BUDGET", 0.0)
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(2)
    try:
        procs = await asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(60)))
        statuses = await asyncio.gather(*(p.wait() for p in procs))
    finally:
        aioproc.set_spawn_workers(before)
    assert [s.returncode for s in statuses] == [0] * 60
    assert len({p.pid for p in procs}) == 60


async def test_pooled_processes_are_freed_as_soon_as_they_are_dropped(workers: int) -> None:
    # A Process that nobody references closes its pipes when it is freed. No
    # part of the spawn machinery may keep it alive (an idle spawn worker held
    # on to its last job, and through it to that job's Process): reference
    # counting alone must free it, without waiting for the cyclic collector.
    procs = await asyncio.gather(*(aioproc.spawn(["true"], stdout=PIPE) for _ in range(8)))
    await asyncio.gather(*(p.wait() for p in procs))
    refs = [weakref.ref(p) for p in procs]
    gc.disable()
    try:
        del procs
        alive = [r for r in refs if r() is not None]
    finally:
        gc.enable()
    assert not alive, f"{len(alive)} dropped processes are still referenced"
