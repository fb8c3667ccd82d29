"""Run one PID-reuse scenario with aioproc and print what happened as one JSON line.

    unshare --pid --fork --mount-proc python pidns.py CASE --loop L --mode M [options]

Meant to run as the first process of a fresh PID namespace, where writing
``N - 1`` to ``/proc/sys/kernel/ns_last_pid`` makes the next process created in
the namespace get PID ``N`` exactly (nothing else forks there). That turns "the
kernel recycled the PID" from a matter of luck into a step of the test.

As PID 1 this program first forks: the parent stays behind as a minimal init
(it reaps orphans, as init must, and exits with the worker's status, which makes
the kernel kill whatever is left in the namespace); the child is the worker and
runs the case. Without a namespace (``steal`` cases that need no PID reuse) the
worker runs directly.

The cases (``tests/races/test_pid_reuse.py`` and ``test_stolen_status.py`` assert
on their output):

``reuse``  A exits and is reaped; canary B is started on A's PID (``--spawners``:
           ``posix_spawn``, ``popen``, ``aioproc``, or ``foreign``: by a process
           that exits at once, so that B is not our child). Then every way of
           signalling A, and ``A.stop()``. ``--grandchild``: A's pipes are held
           open by a grandchild throughout.
``group``  A leads a process group (``kill_group=True``), exits, is swept and reaped; B gets
           A's PID and makes itself a group leader, so B's group id is A's old one.
``race``   ``--iterations`` times: a short-lived child (``true``, or ``sleep``
           killed), two tasks waiting for it, a thread sending SIGTERM and, in
           half the iterations, two tasks killing it, each until refused; the
           moment the child is reaped a canary is started on its PID (from
           inside the reap, see RaceHooks). ``--naive`` adds a raw
           ``os.kill(pid)`` after ``wait()``: the control that proves a stray is seen.
``steal``  Somebody else reaps A (``--how``: a thread in ``os.waitpid(-1, 0)``,
           or SIGCHLD set to SIG_IGN before or after the spawn); optionally
           (``--reuse own|foreign``) a canary takes A's PID before aioproc notices.
"""

# The scenarios block the event loop on purpose (reading a canary's pipe,
# reaping it): nothing else runs on the loop meanwhile, and a blocking call is
# the simplest way to keep the order of events fixed.
# ruff: noqa: ASYNC220, ASYNC221, ASYNC222

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

import aioproc
from aioproc import PIPE
from aioproc._waiting import _sys

HERE = os.path.dirname(os.path.abspath(__file__))
CANARY = os.path.join(HERE, "canary.py")
SH = "/bin/sh"
A_PID = 300  # where the first scenario puts child A (the next ones 20 further each)
RACE_PID = 1000  # the one PID every iteration of the race recycles


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=["reuse", "group", "race", "steal"])
    p.add_argument("--loop", choices=["asyncio", "uvloop"], required=True)
    p.add_argument("--mode", choices=["pidfd", "pid"], required=True)
    p.add_argument(
        "--spawners",
        default="posix_spawn",
        help="comma-separated: posix_spawn, popen, aioproc, foreign (one scenario each)",
    )
    p.add_argument("--grandchild", action="store_true")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--naive", action="store_true")
    p.add_argument("--how", default="thread", choices=["thread", "ign-before", "ign-after"])
    p.add_argument("--reuse", default="none", choices=["none", "own", "foreign"])
    p.add_argument("--hang-timeout", type=float, default=3.0)
    return p.parse_args()


# ----------------------------------------------------------------- the namespace
def set_next_pid(pid: int) -> None:
    """Make the next process (or thread) created in this namespace get ``pid``."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))


def proc_status(pid: int) -> dict[str, str] | None:
    """State and pending-signal masks of ``pid`` from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("State", "SigPnd", "ShdPnd"):
            out[key] = value.strip().split()[0]
    return out


def try_signals(proc: aioproc.Process) -> dict[str, str]:
    """Every way of signalling ``proc``: what each one did."""
    calls: dict[str, Callable[[], None]] = {
        "send_signal(SIGTERM)": lambda: proc.send_signal(signal.SIGTERM),
        "send_signal(SIGUSR1)": lambda: proc.send_signal(signal.SIGUSR1),
        "send_signal(0)": lambda: proc.send_signal(0),
        "terminate()": proc.terminate,
        "kill()": proc.kill,
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
        except ProcessLookupError:
            out[name] = "ProcessLookupError"
        except Exception as exc:
            out[name] = repr(exc)
        else:
            out[name] = "sent"
    return out


# ------------------------------------------------------------------- the canary
class Canary:
    """A canary.py process (see there) and how to read its record."""

    def __init__(
        self, pid: int, finish: Callable[[], Coroutine[Any, Any, tuple[bytes, int | None]]]
    ):
        self.pid = pid
        self._finish = finish

    async def finish(self) -> dict[str, Any]:
        """Close its stdin; return its state before, the signals it got, its exit."""
        before = proc_status(self.pid)
        out, returncode = await self._finish()
        lines = out.decode().splitlines()
        pending = json.loads(lines[-1]) if len(lines) > 1 else None
        return {"pid": self.pid, "before": before, "pending": pending, "returncode": returncode}


def _read_line(fd: int) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def start_canary(spawner: str, pid: int, new_group: bool = False) -> Canary:
    """Start a canary with PID ``pid`` (and, with ``new_group``, leading its own group)."""
    argv = [sys.executable, CANARY]
    if spawner == "aioproc":
        set_next_pid(pid)
        proc = await aioproc.spawn(argv, stdin=PIPE, stdout=PIPE, kill_group=new_group)
        assert proc.stdout is not None
        ready = await proc.stdout.readline()
        assert ready.startswith(b"ready"), ready

        async def finish_aioproc() -> tuple[bytes, int | None]:
            out, _ = await proc.communicate()
            assert out is not None
            return ready + out, proc.returncode

        return Canary(proc.pid, finish_aioproc)
    if spawner == "popen":
        set_next_pid(pid)
        popen = subprocess.Popen(argv, stdin=PIPE, stdout=PIPE, start_new_session=new_group)
        assert popen.stdout is not None
        ready = popen.stdout.readline()

        async def finish_popen() -> tuple[bytes, int | None]:
            out, _ = popen.communicate()
            return ready + out, popen.returncode

        return Canary(popen.pid, finish_popen)
    # posix_spawn, or foreign: the same, through a go-between that exits at once.
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1)]
    if spawner == "foreign":
        go_between = os.posix_spawn(
            sys.executable, [*argv, "--orphan-at", str(pid)], os.environ, file_actions=actions
        )
        os.waitpid(go_between, 0)
        child = None
    else:
        set_next_pid(pid)
        child = os.posix_spawn(
            sys.executable, argv, os.environ, file_actions=actions, setsid=new_group
        )
    os.close(in_r)
    os.close(out_w)
    ready = _read_line(out_r)
    assert ready.startswith(b"ready"), ready
    canary_pid = int(ready.split()[1])

    async def finish_raw() -> tuple[bytes, int | None]:
        os.close(in_w)
        out = _read_all(out_r)
        os.close(out_r)
        if child is None:
            return ready + out, None  # not our child: its init reaps it
        _, wstatus = os.waitpid(child, 0)
        return ready + out, os.waitstatus_to_exitcode(wstatus)

    return Canary(canary_pid, finish_raw)


# -------------------------------------------------------------------- the cases
async def case_reuse(args: argparse.Namespace, spawner: str, a_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    set_next_pid(a_pid)
    grandchild = 0
    if args.grandchild:
        a = await aioproc.spawn(
            [SH, "-c", "sleep 1000 & echo $!; exit 3"], stdout=PIPE, stderr=PIPE
        )
        assert a.stdout is not None
        grandchild = int(await a.stdout.readline())
    else:
        a = await aioproc.spawn([SH, "-c", "exit 3"])
    out["a_pid"] = a.pid
    status = await a.wait()
    b = await start_canary(spawner, a.pid)
    out["b_pid"] = b.pid
    out["signals"] = try_signals(a)
    stopped = await a.stop()
    out["stop_returns_status"] = stopped is status or stopped == status
    out["returncode"] = a.returncode
    out["wait_again"] = (await a.wait()).returncode
    if grandchild:
        out["grandchild"] = proc_status(grandchild)
        assert a.stdout is not None
        out["a_stdout_open"] = not a.stdout.at_eof()
        os.kill(grandchild, signal.SIGKILL)  # ours to kill: we made it, and it is alive
        out["a_stdout_rest"] = (await a.stdout.read()).decode()
        await a.aclose()
    out["b"] = await b.finish()
    return out


async def case_group(args: argparse.Namespace, spawner: str, a_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    set_next_pid(a_pid)
    a = await aioproc.spawn([SH, "-c", "read x; exit 3"], stdin=PIPE, kill_group=True)
    out["a_pid"] = a.pid
    out["a_pgid"] = os.getpgid(a.pid)
    assert a.stdin is not None
    a.stdin.close()
    status = await a.wait()
    # kill_group=True keeps A unreaped (its PID and group id taken) until its
    # group has been swept: aclose() does it, and reaps A. Only then can B get
    # A's PID.
    await a.aclose()
    b = await start_canary(spawner, a.pid, new_group=True)
    out["b_pid"] = b.pid
    out["b_pgid"] = os.getpgid(b.pid)
    out["signals"] = try_signals(a)
    stopped = await a.stop()
    out["stop_returns_status"] = stopped is status or stopped == status
    out["returncode"] = a.returncode
    out["b"] = await b.finish()
    return out


class RaceHooks:
    """Instrument the two kernel boundaries of the race.

    * After the system call that reaps child A returns (``os.wait4`` in pid
      mode, ``waitid`` without WNOWAIT in pidfd mode), start a canary on A's
      PID at once, before aioproc has even returned from its reap: the
      earliest moment another process could get the number.
    * Just before a signal goes to the kernel, give up the CPU and the GIL:
      the widest window between "decided to signal A" and "signalled".

    If aioproc stopped reaping through these calls, ``reaps`` would stay 0 and
    the test says so instead of passing without a race.
    """

    def __init__(self) -> None:
        self.expect = 0  # the PID whose reap starts a canary
        self.reaps = 0
        self.canary: tuple[int, int] | None = None  # (pid, write end of its stdin)
        self.real_kill = os.kill
        self.real_wait4 = os.wait4
        self.real_waitid = _sys.waitid
        self.real_pidfd_send_signal = _sys.pidfd_send_signal
        self._all_signals = signal.valid_signals()
        self.loop_thread = threading.current_thread()
        self.reaped = threading.Event()  # set by the reap of the current child

    def install(self) -> None:
        os.wait4 = self._wait4
        _sys.waitid = self._waitid
        os.kill = self._kill
        _sys.pidfd_send_signal = self._pidfd_send_signal

    def take_canary(self) -> tuple[int, int] | None:
        canary, self.canary = self.canary, None
        return canary

    def _after_reap(self, pid: int) -> None:
        if pid != self.expect or pid <= 0:
            return
        self.reaps += 1
        self.expect = 0
        r, w = os.pipe()
        set_next_pid(pid)
        canary = os.posix_spawn(
            "/bin/cat",
            ["cat"],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, r, 0),
                (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            ],
            setsigmask=self._all_signals,  # a stray signal stays pending, visible
        )
        os.close(r)
        self.canary = (canary, w)
        self.reaped.set()

    def _wait4(self, pid: int, options: int) -> tuple[int, int, Any]:
        res = self.real_wait4(pid, options)
        self._after_reap(res[0])
        return res

    def _waitid(self, idtype: int, ident: int, options: int) -> _sys.WaitResult | None:
        res = self.real_waitid(idtype, ident, options)
        if res is not None and not options & os.WNOWAIT:
            self._after_reap(res.pid)
        return res

    def _pause(self) -> None:
        if threading.current_thread() is self.loop_thread:
            os.sched_yield()  # the loop thread must not block on itself
        else:
            # A sender thread: let the loop thread reap now if it can (it
            # cannot while this thread holds the child's signalling lock).
            self.reaped.wait(0.001)

    def _kill(self, pid: int, sig: int) -> None:
        self._pause()
        self.real_kill(pid, sig)

    def _pidfd_send_signal(self, pidfd: int, sig: int) -> None:
        self._pause()
        self.real_pidfd_send_signal(pidfd, sig)


def _sender(jobs: queue.SimpleQueue[Any], errors: list[str]) -> None:
    """A thread that sends SIGTERM to each child it is handed until it is told no."""
    while (job := jobs.get()) is not None:
        proc, loop, fut = job
        sent = 0
        while True:
            # Keep going until refused; once the child is known to be reaped,
            # one last try (the late signal this is all about) and stop.
            reaped = proc.returncode is not None
            try:
                proc.send_signal(signal.SIGTERM)
                sent += 1
            except ProcessLookupError:
                break
            except BaseException as exc:
                errors.append(repr(exc))
                break
            if reaped:
                break
        loop.call_soon_threadsafe(fut.set_result, sent)


async def _killer(proc: aioproc.Process) -> int:
    sent = 0
    while True:
        reaped = proc.returncode is not None
        try:
            proc.kill()
            sent += 1
        except ProcessLookupError:
            return sent
        if reaped:
            return sent
        await asyncio.sleep(0)


async def case_race(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    hooks = RaceHooks()
    jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
    errors: list[str] = []
    # Started before the first iteration: a thread takes a PID too.
    thread = threading.Thread(target=_sender, args=(jobs, errors), daemon=True)
    thread.start()
    hooks.install()
    strays: list[dict[str, Any]] = []
    not_reused = 0
    signals_sent = 0
    statuses: dict[str, int] = {}
    started = time.monotonic()
    for i in range(args.iterations):
        set_next_pid(RACE_PID)
        # Four kinds of iteration: the child exits by itself (true) or is
        # killed (sleep); tasks on the loop kill it too, or only the thread does
        # (the loop is then free to reap the moment the child exits).
        argv = ["/bin/true"] if i % 2 == 0 else ["/bin/sleep", "1000"]
        killers = i % 4 < 2
        a = await aioproc.spawn(argv)
        if a.pid != RACE_PID:
            not_reused += 1
        hooks.expect = a.pid
        hooks.canary = None
        hooks.reaped.clear()
        sent_by_thread: asyncio.Future[int] = loop.create_future()
        jobs.put((a, loop, sent_by_thread))
        if killers:
            status, killed_1, _, killed_2 = await asyncio.gather(
                a.wait(), _killer(a), a.wait(), _killer(a)
            )
            signals_sent += killed_1 + killed_2
        else:
            status, _ = await asyncio.gather(a.wait(), a.wait())
        signals_sent += await sent_by_thread
        key = str(status.returncode)
        statuses[key] = statuses.get(key, 0) + 1
        if args.naive:
            hooks.real_kill(a.pid, signal.SIGTERM)  # what a PID-only library would do
        taken = hooks.take_canary()
        if taken is None:
            strays.append({"iteration": i, "error": "no canary: the reap hook did not run"})
            continue
        canary, stdin_w = taken
        if canary != a.pid:
            not_reused += 1
        before = proc_status(canary)
        os.close(stdin_w)
        _, wstatus = os.waitpid(canary, 0)
        code = os.waitstatus_to_exitcode(wstatus)
        if before is None or code != 0 or int(before["SigPnd"], 16) or int(before["ShdPnd"], 16):
            strays.append({"iteration": i, "canary": before, "exit": code})
    jobs.put(None)
    thread.join()
    return {
        "iterations": args.iterations,
        "reaps_hooked": hooks.reaps,
        "not_reused": not_reused,
        "strays": len(strays),
        "first_strays": strays[:5],
        "signals_sent": signals_sent,
        "statuses": statuses,
        "errors": errors,
        "seconds": round(time.monotonic() - started, 2),
    }


async def case_steal(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.how == "ign-before":
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    a = await aioproc.spawn([SH, "-c", "read x; exit 3"], stdin=PIPE)
    out["a_pid"] = a.pid
    stolen = threading.Event()
    thief: list[int] = []
    if args.how == "thread":
        # Another library's reaper: takes whatever child exits first.
        def steal() -> None:
            thief.append(os.waitpid(-1, 0)[0])
            stolen.set()

        threading.Thread(target=steal, daemon=True).start()
    elif args.how == "ign-after":
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    assert a.stdin is not None
    a.stdin.close()  # A exits
    b = None
    if args.how == "thread":
        # Block the loop until the thief has reaped A: aioproc cannot get there first.
        assert stolen.wait(30), "the thief thread never reaped"
        out["thief_reaped_a"] = thief == [a.pid]
        if args.reuse != "none":
            # ...and the PID is given to another process before aioproc has looked.
            b = await start_canary("posix_spawn" if args.reuse == "own" else "foreign", a.pid)
            out["b_pid"] = b.pid
            out["signals"] = try_signals(a)
    try:
        status = await asyncio.wait_for(a.wait(), args.hang_timeout)
    except asyncio.TimeoutError:
        out["wait"] = "hang"
        out["signals"] = try_signals(a)
    else:
        out["wait"] = {
            "unknown": status.unknown,
            "returncode": status.returncode,
            "exit_code": status.exit_code,
        }
        out.setdefault("signals", try_signals(a))
    if b is not None:
        out["b"] = await b.finish()
    return out


async def per_spawner(
    args: argparse.Namespace, case: Callable[..., Coroutine[Any, Any, dict[str, Any]]]
) -> dict[str, Any]:
    """Run ``case`` once per spawner of B, each on its own PID for A."""
    out = {}
    for i, spawner in enumerate(args.spawners.split(",")):
        out[spawner] = await case(args, spawner, A_PID + 20 * i)
    return {"by_spawner": out}


CASES: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]] = {
    "reuse": lambda args: per_spawner(args, case_reuse),
    "group": lambda args: per_spawner(args, case_group),
    "race": case_race,
    "steal": case_steal,
}


def run(args: argparse.Namespace) -> None:
    aioproc.set_wait_mode(args.mode)

    async def main() -> dict[str, Any]:
        result = await CASES[args.case](args)
        result["mode_used"] = aioproc.get_wait_mode()
        result["loop"] = type(asyncio.get_running_loop()).__module__
        return result

    result = (uvloop.run if args.loop == "uvloop" else asyncio.run)(main())
    # What SIGCHLD's disposition is once the loop is gone (aioproc's signal
    # hub must have given it back).
    handler = signal.getsignal(signal.SIGCHLD)  # SIG_DFL is 0, SIG_IGN 1
    result["sigchld_after_loop"] = int(handler) if isinstance(handler, int) else repr(handler)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ entry point
def init(worker: int) -> None:
    """PID 1 of the namespace: reap every orphan, as init must, and leave with the
    worker's status (the kernel then kills whatever is left in the namespace)."""
    while True:
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:  # pragma: no cover - the worker is always there
            os._exit(70)
        if pid == worker:
            code = os.waitstatus_to_exitcode(wstatus)
            os._exit(code if code >= 0 else 128 - code)


def main() -> None:
    args = parse_args()
    if os.getpid() == 1:
        worker = os.fork()
        if worker:
            init(worker)
    with contextlib.suppress(BrokenPipeError):
        run(args)


if __name__ == "__main__":
    main()
