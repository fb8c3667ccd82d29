"""Faults: running out of descriptors or processes, deadly signals, core dumps,
and the parent interpreter going away while its children run.

Streams under stress are in ``tests/test_streams.py`` and not repeated here:
a child closing its stdout early (``test_child_closes_stdout_early``), 10 MiB
to a child that exits without reading (``test_communicate_big_input_to_child_
that_never_reads``, and ``tests/test_run.py``), 100 MiB streamed with bounded
memory (``test_hundred_megabytes_streamed_from_stdout_bounded_memory``). The
case added here is a child that writes 10 MiB while never reading its stdin.

``pidfd_open`` failing after the fork (EMFILE, through a real seccomp filter)
is ``tests/test_process.py::test_pidfd_open_failing_after_fork_kills_and_reaps_
the_child``. Lowering ``RLIMIT_NOFILE`` cannot reach that step on its own: the
error pipe's write end is closed just before it, so the pidfd always gets that
slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import resource
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aioproc
from aioproc import PIPE

from .helpers import DROP_ROOT, children_of, open_fds, process_state, run_python

pytestmark = pytest.mark.usefixtures("no_leaks")

MiB = 1024 * 1024
TIMEOUT = 30


def really_open_fds() -> set[int]:
    """Open descriptors (``open_fds()`` also lists the one that read /proc/self/fd)."""
    out = set()
    for fd in open_fds():
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            continue
        out.add(fd)
    return out


@contextlib.contextmanager
def fd_limit_leaving(free: int) -> Iterator[None]:
    """Lower RLIMIT_NOFILE so that exactly ``free`` more descriptors can be opened.

    Descriptors get the lowest free numbers, so the limit is the number below
    which exactly ``free`` numbers are unused. Restored on the way out.
    """
    used = really_open_fds()
    limit = 0
    left = free
    while True:
        if limit not in used:
            if left == 0:
                break
            left -= 1
        limit += 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def core_limit(limit: int) -> Iterator[None]:
    """Set RLIMIT_CORE (inherited by the children spawned inside); restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard != resource.RLIM_INFINITY and limit > hard:
        pytest.skip(f"RLIMIT_CORE's hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_CORE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


async def spawn_works() -> None:
    proc = await aioproc.spawn(
        ["sh", "-c", "cat; echo err >&2"], stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    assert await proc.communicate(b"hi") == (b"hi", b"err\n")
    assert proc.returncode == 0
    # Let the loop turn once: closing the pidfd of a child whose waiters have
    # been woken is put off until then (PidfdChild._notify_exited).
    await asyncio.sleep(0)


# ------------------------------------------------------ descriptor exhaustion
# With stdin, stdout and stderr all pipes, spawn opens, in order, three pipes
# (two descriptors each), then:
# - with _clone_exec (pidfd mode): the pidfd, which clone makes with the child;
#   seven in all;
# - on the fallback (_posixsubprocess): the error pipe (two), and after the
#   fork, with the error pipe's write end closed again, the pidfd (pidfd mode
#   only); eight at the peak.
STEPS = {
    0: "stdin pipe",
    1: "stdin pipe",
    2: "stdout pipe",
    3: "stdout pipe",
    4: "stderr pipe",
    5: "stderr pipe",
    6: "pidfd or error pipe",
    7: "error pipe",
}


@pytest.fixture(params=["clone_exec", "posixsubprocess"])
def fork_exec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which fork/exec step spawns use: aioproc's C module or the fallback."""
    from aioproc._spawn import _direct

    if request.param == "posixsubprocess":
        monkeypatch.setattr(_direct, "_clone_exec", None)
    elif _direct._clone_exec is None:
        pytest.skip("aioproc._clone_exec is not in use (not built, or AIOPROC_NO_C_SPAWN=1)")
    return str(request.param)


@pytest.mark.parametrize("free", sorted(STEPS), ids=[f"{n}-free-{s}" for n, s in STEPS.items()])
async def test_out_of_descriptors_at_each_step(wait_mode: str, fork_exec: str, free: int) -> None:
    await spawn_works()  # the loop's own descriptors exist before we count
    children = children_of()
    fds = really_open_fds()
    if free == 7 and fork_exec == "clone_exec" and wait_mode == "pidfd":
        with fd_limit_leaving(free):  # exactly enough
            proc = await aioproc.spawn(["sh", "-c", "cat"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
            assert await proc.communicate(b"x") == (b"x", b"")
        return
    with fd_limit_leaving(free), pytest.raises(OSError, match="Too many open files") as info:
        await aioproc.spawn(["true"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
    assert info.value.errno == errno.EMFILE, info.value
    assert children_of() == children, "a child was left behind"
    assert really_open_fds() == fds, "a descriptor was left open"
    await spawn_works()


async def test_exactly_enough_descriptors(wait_mode: str) -> None:
    await spawn_works()
    # Eight free descriptors is the peak a spawn with three pipes needs (on the
    # fallback; _clone_exec needs seven, see STEPS).
    with fd_limit_leaving(8):
        proc = await aioproc.spawn(["sh", "-c", "cat"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert await proc.communicate(b"x") == (b"x", b"")
    await spawn_works()


# ---------------------------------------------------- process-count exhaustion
# RLIMIT_NPROC does not bind root, so a child interpreter drops to an unused
# uid first (after importing everything: /root is not readable to it).
# A uid of its own, so the count RLIMIT_NPROC checks is its alone.
NPROC_PROGRAM = (
    """
    import asyncio, errno, fcntl, json, os, resource, select, sys
    import uvloop, aioproc
"""
    + DROP_ROOT
    + """
    def tasks_of_uid():
        n = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}").st_uid == uid:
                        n += len(os.listdir(f"/proc/{entry}/task"))
                except OSError:
                    pass
        return n

    def fds():
        return len(os.listdir("/proc/self/fd"))

    def children():
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return len(f.read().split())

    def error(exc):
        return {"type": type(exc).__name__, "errno": getattr(exc, "errno", None),
                "message": str(exc)}

    async def sequential():
        out = {}
        now = tasks_of_uid()
        resource.setrlimit(resource.RLIMIT_NPROC, (now + 2, now + 100))
        first = [await aioproc.spawn(["sleep", "30"]) for _ in range(2)]
        before = (fds(), children())
        try:
            await aioproc.spawn(["sleep", "30"], stdout=aioproc.PIPE)
        except Exception as exc:
            out["third"] = error(exc)
        else:
            out["third"] = "spawned"
        out["left_behind"] = [fds() - before[0], children() - before[1]]
        first[0].kill()
        await first[0].wait()
        again = await aioproc.spawn(["sh", "-c", "exit 5"])
        out["after_one_exited"] = (await again.wait()).returncode
        first[1].kill()
        await first[1].wait()
        return out

    async def burst():
        # Spawns from several tasks at once go to the spawn worker pool, whose
        # threads count against RLIMIT_NPROC too. One spawn first: the
        # descriptors a loop keeps for aioproc (its anchor, its pidfd watcher)
        # exist before counting.
        await (await aioproc.spawn(["true"])).wait()
        await asyncio.sleep(0)  # the pidfd's close is put off by one loop turn
        now = tasks_of_uid()
        resource.setrlimit(resource.RLIMIT_NPROC, (now, now + 100))
        before = (fds(), children())
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(aioproc.spawn(["true"]) for _ in range(3)),
                               return_exceptions=True),
                float(sys.argv[3]))
        except asyncio.TimeoutError:
            return {"burst": "hang"}
        return {"burst": [error(r) if isinstance(r, BaseException) else "spawned"
                          for r in results],
                "left_behind": [fds() - before[0], children() - before[1]]}

    case = {"sequential": sequential, "burst": burst}[sys.argv[2]]
    run = uvloop.run if sys.argv[1] == "uvloop" else asyncio.run
    print(json.dumps(run(case())))
"""
)


def nproc(loop: str, case: str) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged uid")
    res = run_python(NPROC_PROGRAM, loop, case, "1")
    assert res.returncode == 0, res.stderr
    result: dict[str, Any] = json.loads(res.stdout)
    return result


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_out_of_processes(loop: str) -> None:
    out = nproc(loop, "sequential")
    assert out["third"]["type"] == "BlockingIOError", out["third"]
    assert out["third"]["errno"] == errno.EAGAIN
    assert out["left_behind"] == [0, 0], "a descriptor or child was left behind"
    assert out["after_one_exited"] == 5


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_out_of_processes_in_a_burst(loop: str) -> None:
    # Spawns from several tasks at once: the first runs inline, the others go
    # to the spawn worker pool, which cannot start its thread either. (Before
    # b3931ba those spawns waited forever.)
    out = nproc(loop, "burst")
    assert out["burst"] != "hang", "a burst of spawns never returned"
    # Each spawn fails clearly: EAGAIN, from the fork or from the worker thread.
    assert [r["errno"] for r in out["burst"]] == [errno.EAGAIN] * 3, out["burst"]
    assert {r["type"] for r in out["burst"]} <= {"BlockingIOError", "OSError"}
    assert out["left_behind"] == [0, 0]


# ----------------------------------------------------------------- signals
IGNORED_BY_DEFAULT = {signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH}
STOP_BY_DEFAULT = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
#: Every signal whose default action ends the process: the catchable ones
#: (SIGTERM, SIGINT, SIGSEGV... and the real-time signals) and SIGKILL.
FATAL = sorted(signal.valid_signals() - IGNORED_BY_DEFAULT - STOP_BY_DEFAULT)


def signal_name(sig: int) -> signal.Signals | None:
    try:
        return signal.Signals(sig)
    except ValueError:
        return None  # a real-time signal without a name


async def test_killed_by_every_fatal_signal(wait_mode: str) -> None:
    assert len(FATAL) > 50
    with core_limit(0):  # SIGQUIT, SIGSEGV... must not leave core files around
        procs = [(sig, await aioproc.spawn(["sleep", "30"])) for sig in FATAL]
    for sig, proc in procs:
        proc.send_signal(sig)
    for sig, proc in procs:
        status = await proc.wait()
        assert status.returncode == -sig, (sig, status)
        assert status.signal == signal_name(sig), (sig, status)
        assert status.exit_code is None
        assert not status.core_dumped
        assert not status.success


async def test_stopping_and_ignored_signals_do_not_end_the_child(wait_mode: str) -> None:
    proc = await aioproc.spawn(["sleep", "30"])
    waiter = asyncio.ensure_future(proc.wait())
    proc.send_signal(signal.SIGSTOP)
    # Blocks until the child has stopped; WNOWAIT leaves that for others to see.
    os.waitid(os.P_PID, proc.pid, os.WSTOPPED | os.WNOWAIT)  # noqa: ASYNC222
    assert process_state(proc.pid) == "T"
    # A round trip through the loop: another child's exit is noticed, so the
    # loop has processed whatever the stop produced (SIGCHLD in pid mode).
    assert (await (await aioproc.spawn(["true"])).wait()).success
    assert not waiter.done(), "wait() returned for a child that only stopped"
    for sig in sorted(IGNORED_BY_DEFAULT | STOP_BY_DEFAULT - {signal.SIGSTOP}):
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
    proc.terminate()
    status = await waiter
    assert status.signal is signal.SIGTERM


STORM_PROGRAM = """
    import asyncio, os, sys, uvloop, aioproc

    async def main(n):
        aioproc.set_wait_mode("pid")
        procs = [await aioproc.spawn(["sleep", "30"]) for _ in range(n)]
        # Without letting the loop run: one child at a time is killed and seen
        # to exit (not reaped), so that each exit is a SIGCHLD of its own.
        for proc in procs:
            proc.kill()
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        statuses = await asyncio.gather(*(p.wait() for p in procs))
        print(sum(1 for s in statuses if s.returncode == -9))

    (uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main(int(sys.argv[2])))
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_sigchld_storm_in_pid_mode_is_quiet(loop: str) -> None:
    # 400 exits seen one by one while the loop is busy: 400 SIGCHLDs, more
    # than the loop's wakeup socket holds. asyncio asks CPython to report every
    # byte that does not fit ("Exception ignored when trying to write to the
    # signal wakeup fd", ~120 times here before the signal hub turned that off).
    res = run_python(STORM_PROGRAM, loop, "400")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["400"]
    assert "Exception ignored" not in res.stderr
    assert res.stderr == ""


async def test_sigchlds_of_one_loop_turn_share_two_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    # pid mode scans every pid-mode child (one waitid each) per SIGCHLD; an
    # exit storm brings hundreds of SIGCHLDs to one loop turn. The first scans
    # at once, the rest share one more scan in the next turn, which starts
    # after all of them arrived.
    from aioproc._waiting import pid as pid_mode

    aioproc.set_wait_mode("pid")
    try:
        proc = await aioproc.spawn(["sleep", "30"])
    finally:
        aioproc.set_wait_mode("auto")
    reaper = pid_mode._reaper_for(asyncio.get_running_loop())
    scans = 0
    real_scan = reaper.scan

    def counting_scan(*args: object) -> None:
        nonlocal scans
        scans += 1
        real_scan(*args)

    monkeypatch.setattr(reaper, "scan", counting_scan)
    for _ in range(3):  # let any turn with a real SIGCHLD pass
        await asyncio.sleep(0)
    scans = 0
    for _ in range(100):
        reaper.on_sigchld()
    assert scans == 1
    for _ in range(3):
        await asyncio.sleep(0)
    assert scans == 2
    # And a SIGCHLD in a later turn scans at once again, and sees the exit.
    os.kill(proc.pid, signal.SIGKILL)  # our unreaped child: the PID is still its own
    status = await asyncio.wait_for(proc.wait(), 10)
    assert status.signal is signal.SIGKILL
    assert scans >= 3


def core_pattern_problem() -> str | None:
    try:
        with open("/proc/sys/kernel/core_pattern") as f:
            pattern = f.read().strip()
    except OSError as exc:
        return f"cannot read core_pattern: {exc}"
    if pattern.startswith("|"):
        return f"core_pattern pipes cores to a program ({pattern.split()[0][1:]})"
    if "/" in pattern:
        return f"core_pattern writes cores to {pattern!r}, outside the test's directory"
    return None


async def test_core_dump_is_reported(wait_mode: str, tmp_path: Path) -> None:
    problem = core_pattern_problem()
    if problem:
        pytest.skip(problem)
    # core_pattern is relative: the core lands in the child's cwd, tmp_path.
    with core_limit(64 * MiB):
        proc = await aioproc.spawn(["sleep", "30"], cwd=tmp_path)
    proc.send_signal(signal.SIGQUIT)
    status = await proc.wait()
    cores = list(tmp_path.iterdir())  # noqa: ASYNC240
    if not cores and not status.core_dumped:
        pytest.skip("the kernel wrote no core here (a container policy?)")
    assert cores, "core_dumped is set but no core file was written"
    assert status.core_dumped
    assert status.signal is signal.SIGQUIT
    assert status.returncode == -signal.SIGQUIT
    assert "core dumped" in str(status)


# ------------------------------------------------------------------- pipes
async def test_communicate_with_a_child_that_writes_but_never_reads(wait_mode: str) -> None:
    # The classic deadlock: we block writing its stdin while it blocks writing
    # its stdout. communicate() does both at once, and drops what the child
    # never read once it has exited.
    data = b"i" * (10 * MiB)
    async with aioproc.spawn(
        ["head", "-c", str(10 * MiB), "/dev/zero"], stdin=PIPE, stdout=PIPE
    ) as proc:
        out, _ = await asyncio.wait_for(proc.communicate(data), TIMEOUT)
    assert out == bytes(10 * MiB)
    assert proc.returncode == 0


# -------------------------------------------------- the parent goes away
# A supervisor interpreter, made a child subreaper, runs the parent program:
# when the parent dies, its surviving children are reparented to the
# supervisor (instead of to init), which reports and then kills them.
SUPERVISOR = """
    import ctypes, json, os, select, signal, subprocess, sys
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    how, code = sys.argv[1], sys.argv[2]
    pdeath = sys.argv[4].startswith("pdeathsig")
    parent = subprocess.Popen([sys.executable, "-c", code, *sys.argv[3:]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = parent.stdout.readline().split()
    pids = [int(p) for p in ready[1:]]
    if how in ("sigterm", "sigkill"):
        parent.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    out, err = parent.communicate(timeout=30)
    with open(f"/proc/self/task/{os.getpid()}/children") as f:
        adopted = sorted(int(p) for p in f.read().split())
    # Children with a parent-death signal were adopted too, but were sent the
    # signal as their parent died: they must end on their own, by it.
    deathsig = {}
    for pid in adopted:
        fd = os.pidfd_open(pid)
        if select.select([fd], [], [], 10 if pdeath else 0)[0]:
            deathsig[pid] = os.waitid(os.P_PIDFD, fd, os.WEXITED).si_status
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    report = {"ready": ready[:1], "returncode": parent.returncode, "stderr": err,
              "children": pids, "adopted": adopted, "deathsig": sorted(deathsig.values())}
    print(json.dumps(report))
"""

PARENT = """
    import asyncio, os, signal, sys, uvloop, aioproc

    LOOP, SCENARIO = sys.argv[1], sys.argv[2]
    SLEEP = ["sleep", "1000"]
    forever = asyncio.Event  # awaited, never set

    QUIET = {"stderr": aioproc.DEVNULL}  # they must not hold the supervisor's pipes

    async def spawn_two():
        # One child in each waiting mode.
        aioproc.set_wait_mode("pidfd")
        a = await aioproc.spawn(SLEEP, stdout=aioproc.PIPE, **QUIET)
        aioproc.set_wait_mode("pid")
        b = await aioproc.spawn(SLEEP, stdout=aioproc.DEVNULL, **QUIET)
        return a, b

    def ready(a, b):
        print("ready", a.pid, b.pid, flush=True)

    async def inside_async_with(then):
        aioproc.set_wait_mode("pidfd")
        async with aioproc.spawn(SLEEP, stdout=aioproc.PIPE, **QUIET) as a:
            aioproc.set_wait_mode("pid")
            async with aioproc.spawn(SLEEP, stdout=aioproc.DEVNULL, **QUIET) as b:
                ready(a, b)
                await then()

    async def boom():
        raise RuntimeError("boom")

    async def exit_3():
        sys.exit(3)

    async def wait_forever():
        await forever().wait()

    async def sigterm_cancels_main():
        # The recommended shape: SIGTERM through aioproc.signals cancels the
        # work, whose async with blocks then stop and reap their children.
        async with aioproc.signals.subscribe(signal.SIGTERM) as sub:
            work = asyncio.ensure_future(inside_async_with(wait_forever))
            got = asyncio.ensure_future(sub.get())
            await asyncio.wait({work, got}, return_when=asyncio.FIRST_COMPLETED)
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            got.cancel()

    kept = []

    async def held_then_return():
        kept.extend(await spawn_two())
        ready(*kept)

    run = uvloop.run if LOOP == "uvloop" else asyncio.run
    new_loop = uvloop.new_event_loop if LOOP == "uvloop" else asyncio.new_event_loop
    if SCENARIO == "with-raise":
        run(inside_async_with(boom))
    elif SCENARIO == "with-exit":
        run(inside_async_with(exit_3))
    elif SCENARIO == "with-sigterm-default":
        run(inside_async_with(wait_forever))
    elif SCENARIO == "with-sigterm-handled":
        run(sigterm_cancels_main())
    elif SCENARIO.startswith("pdeathsig"):
        # Held, not in async with; SIGTERM's default action or SIGKILL ends the
        # parent before any Python cleanup: only the kernel can end them.
        async def pdeathsig_children():
            aioproc.set_wait_mode("pidfd")
            a = await aioproc.spawn(SLEEP, pdeathsig=signal.SIGKILL, **QUIET)
            aioproc.set_wait_mode("pid")
            b = await aioproc.spawn(SLEEP, pdeathsig=signal.SIGKILL, **QUIET)
            ready(a, b)
            await wait_forever()

        run(pdeathsig_children())
    elif SCENARIO == "held-loop-closed":
        run(held_then_return())
    elif SCENARIO == "held-atexit":
        # A loop that is never closed: only the atexit hook is left.
        loop = new_loop()
        kept.extend(loop.run_until_complete(spawn_two()))
        ready(*kept)
        sys.exit(4)
"""

# scenario -> (how the supervisor ends the parent, its returncode, the children survive)
PARENT_SCENARIOS: dict[str, tuple[str, int, bool]] = {
    # The kernel ends children spawned with pdeathsig when the parent dies,
    # even when nothing in the parent gets to run.
    "pdeathsig-sigterm-default": ("sigterm", -signal.SIGTERM, False),
    "pdeathsig-sigkill": ("sigkill", -signal.SIGKILL, False),
    "with-raise": ("wait", 1, False),
    "with-exit": ("wait", 3, False),
    "with-sigterm-handled": ("sigterm", 0, False),
    "held-loop-closed": ("wait", 0, False),
    "held-atexit": ("wait", 4, False),
    # Python's default SIGTERM disposition kills the interpreter on the spot:
    # no finally, no atexit. The children outlive it (docs/reliability.md).
    "with-sigterm-default": ("sigterm", -signal.SIGTERM, True),
}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("scenario", list(PARENT_SCENARIOS))
def test_parent_exit_and_its_children(scenario: str, loop: str) -> None:
    how, returncode, survive = PARENT_SCENARIOS[scenario]
    res = run_python(SUPERVISOR, how, textwrap.dedent(PARENT), loop, scenario)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ready"] == ["ready"], out
    assert out["returncode"] == returncode, out["stderr"]
    assert len(out["children"]) == 2
    if scenario.startswith("pdeathsig"):
        # Adopted as they died, and ended by the parent-death signal itself.
        assert out["deathsig"] == [signal.SIGKILL, signal.SIGKILL], out
    elif survive:
        assert out["adopted"] == sorted(out["children"]), "the children were meant to survive"
        assert out["deathsig"] == [], out
    else:
        assert out["adopted"] == [], f"children outlived their parent: {out}"
    if scenario == "with-raise":
        assert "RuntimeError: boom" in out["stderr"]
    else:
        assert out["stderr"] == ""
