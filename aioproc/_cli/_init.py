"""``aioproc init -- CMD ARGS...``: a PID 1 for containers.

What it does, and what tini does not:

* **Subreaper.** As PID 1 of a PID namespace it inherits every orphan anyway; anywhere
  else it asks to (``prctl(PR_SET_CHILD_SUBREAPER)``), so double-forked daemons of its
  child are re-parented to it rather than to the host's init.
* **Forwarding.** Every signal that can be forwarded goes to the child (to the child's
  process group with ``--group``). Not forwarded: SIGKILL and SIGSTOP (impossible),
  SIGCHLD (ours), the synchronous faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP,
  SIGSYS, SIGABRT), SIGTTIN/SIGTTOU and SIGPIPE.
* **Reaping without stealing.** Orphans are reaped as they exit. The main child is
  reaped by aioproc only, so its status is never lost (see :func:`reap_orphans`).
* **Nothing left behind.** When the main child exits, every remaining descendant gets
  SIGTERM, then SIGKILL after ``--grace`` seconds, and is reaped; then ``aioproc init``
  exits with the child's exit code (128 + the signal number if a signal killed it).
  A process that keeps forking cannot escape the SIGKILL: the command runs in a
  cgroup of its own where cgroup v2 allows, else what is left is stopped
  (SIGSTOP) until nothing runs, then killed (``_sweep.py``). Anything that still
  stands after that is named in a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from .. import ExitStatus, Process, signals, spawn
from .. import reap_orphans as _reap_orphans
from ..supervisor._group import LeaderWatch, hold_reap, signal_group
from ._sweep import Confinement, sweep
from ._terminal import foreground_terminal, give_terminal, take_terminal_back

__all__ = ["FORWARDED", "become_subreaper", "reap_orphans", "run_init"]

PR_SET_CHILD_SUBREAPER = 36

_NOT_FORWARDED = {
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGCHLD,
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGILL,
    signal.SIGFPE,
    signal.SIGTRAP,
    signal.SIGSYS,
    signal.SIGABRT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGPIPE,
}
FORWARDED = tuple(sorted(s for s in signal.Signals if s not in _NOT_FORWARDED))

Log = Callable[[str], None]


def become_subreaper(on: bool = True) -> None:
    """``prctl(PR_SET_CHILD_SUBREAPER, 1)``: orphaned descendants come to us (``on=False``
    undoes it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def reap_orphans(main: int | None) -> list[ExitStatus]:
    """Reap every exited child but ``main`` and aioproc's own; their statuses.

    ``aioproc.reap_orphans`` does it (``waitid(P_ALL, WNOHANG | WNOWAIT)`` names an
    exited child without reaping it; only those aioproc did not spawn are reaped,
    by PID), so the main child's status is never stolen.
    """
    return _reap_orphans(() if main is None else (main,))


def _exit_code(status: ExitStatus) -> int:
    if status.exit_code is not None:
        return status.exit_code
    if status.signal is not None or status.returncode < 0:
        return 128 - status.returncode
    return 1


async def run_init(argv: list[str], group: bool, grace: float, log: Log, verbose: bool) -> int:
    me = os.getpid()
    if me != 1:
        try:
            become_subreaper()
        except OSError as exc:
            log(f"warning: {exc}; orphans will go to the system's init")
    # Subscribe before spawning: no signal sent after the child exists is missed.
    async with (
        signals.subscribe(*FORWARDED) as forward,
        signals.subscribe(signal.SIGCHLD) as sigchld,
    ):
        # In the foreground of a terminal, the child gets its own process group and
        # the terminal: a Ctrl-C then reaches it once, not also through us.
        tty = foreground_terminal()
        conf = Confinement()
        try:
            with conf.spawning():  # the command is born in its own cgroup, if we have one
                proc = await spawn(
                    argv, kill_group=group, process_group=None if tty is None or group else 0
                )
        except OSError as exc:
            conf.close()
            log(f"cannot run {argv[0]}: {exc.strerror or exc}")
            return 127 if isinstance(exc, FileNotFoundError) else 126
        if tty is not None:
            handed = give_terminal(tty, proc.pid)
            if verbose:
                log(f"terminal {'given' if handed else 'not given'} to process group {proc.pid}")

        def reap() -> None:
            for status in reap_orphans(proc.pid):
                if verbose:
                    log(f"reaped orphan {status}")

        with hold_reap(proc) if group else contextlib.nullcontext():
            leader = LeaderWatch(proc, held=group)
            try:
                await _serve(proc, leader, group, forward, sigchld, reap, log, verbose)
            finally:
                leader.close()
        status = await proc.wait()
        if tty is not None:
            take_terminal_back(tty)
        if verbose:
            log(f"main child: {status}")
        try:
            await _sweep(me, grace, conf, sigchld, reap, log, verbose)
        finally:
            conf.close()
        # With a group the main child stays unreaped until its group has been
        # swept (kill_group=True): the sweep above has, so reap it now.
        await proc.aclose()
    return _exit_code(status)


async def _serve(
    proc: Process,
    leader: LeaderWatch,
    group: bool,
    forward: signals.Subscription,
    sigchld: signals.Subscription,
    reap: Callable[[], None],
    log: Log,
    verbose: bool,
) -> None:
    """Forward signals and reap orphans until the main child exits."""
    reap()  # anything that exited before we subscribed
    fwd = asyncio.ensure_future(forward.get())
    chld = asyncio.ensure_future(sigchld.get())
    try:
        while not leader.done:
            waits: list[asyncio.Future[Any]] = [fwd, chld, leader.exited]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if chld.done():
                chld.result()
                reap()
                chld = asyncio.ensure_future(sigchld.get())
            if fwd.done():
                sig = fwd.result()
                fwd = asyncio.ensure_future(forward.get())
                if leader.exited.done():  # not forwarded to an exited child
                    break
                if verbose:
                    log(f"forwarding {sig.name} to {'group ' if group else ''}{proc.pid}")
                with contextlib.suppress(ProcessLookupError):
                    if group:
                        signal_group(proc, sig)  # the reap is held: the group id is ours
                    else:
                        proc.send_signal(sig)
    finally:
        fwd.cancel()
        chld.cancel()


async def _sweep(
    me: int,
    grace: float,
    conf: Confinement,
    sigchld: signals.Subscription,
    reap: Callable[[], None],
    log: Log,
    verbose: bool,
) -> None:
    """Kill what is left below us (``_sweep.sweep``) while reaping it; report survivors."""

    async def reaping() -> None:
        # Orphans die into zombies of ours: keep reaping while we wait for them.
        while True:
            await sigchld.get()
            reap()

    reaper = asyncio.ensure_future(reaping())
    try:
        survivors = await sweep(me, grace, conf, log, verbose)
    finally:
        reaper.cancel()
    # Everything below us has exited, and the dead were re-parented to us as they
    # died: one more pass reaps the last zombies.
    reap()
    if survivors:
        log(
            f"warning: {len(survivors)} processes could not be killed: "
            + " ".join(map(str, sorted(survivors)))
        )


def main_init(argv: list[str], group: bool, grace: float, verbose: bool) -> int:
    def log(text: str) -> None:
        print(f"aioproc init: {text}", file=sys.stderr, flush=True)

    return asyncio.run(run_init(argv, group, grace, log, verbose))
