"""Another piece of code reaps aioproc's child first.

A library calling ``os.waitpid(-1, 0)`` in a thread, or code setting SIGCHLD to
SIG_IGN (the kernel then reaps every child itself), takes the exit status
before aioproc sees it. ``await proc.wait()`` must still return, with
``status.unknown`` true and returncode 255 (``aioproc/_status.py``), signals
to the child must raise ProcessLookupError, and nothing may hang.

Each scenario runs in a child interpreter (``programs/pidns.py steal``); the
ones where the stolen PID is also recycled run in a fresh PID namespace.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from .conftest import LOOPS_AND_MODES, run_pidns, signalled_nothing
from .test_pid_reuse import REFUSED

pytestmark = [pytest.mark.races, pytest.mark.usefixtures("no_leaks")]

loops_and_modes = pytest.mark.parametrize(("loop", "mode"), LOOPS_AND_MODES)

LOST = {"unknown": True, "returncode": 255, "exit_code": None}


def steal(loop: str, mode: str, how: str, reuse: str = "none") -> dict[str, Any]:
    result = run_pidns(
        "steal", "--loop", loop, "--mode", mode, "--how", how, "--reuse", reuse,
        "--hang-timeout", "5", namespace=reuse != "none",
    )  # fmt: skip
    assert result["mode_used"] == mode
    return result


@loops_and_modes
def test_status_taken_by_a_waitpid_thread(loop: str, mode: str) -> None:
    out = steal(loop, mode, "thread")
    assert out["thief_reaped_a"], "the thief was meant to reap A before aioproc"
    assert out["wait"] == LOST
    assert out["signals"] == REFUSED
    assert out["sigchld_after_loop"] == signal.SIG_DFL  # SIG_DFL: nothing of aioproc's left behind


# pid mode with B our own child is left out on purpose: once A's status was
# stolen, only a number is left, and waitid(P_PID) then describes B. No user-
# space check can tell them apart (docs/reliability.md, "Limits of pid mode").
@pytest.mark.parametrize(
    ("loop", "mode", "reuse"),
    [
        (loop, mode, reuse)
        for loop, mode in LOOPS_AND_MODES
        for reuse in ("own", "foreign")
        if not (mode == "pid" and reuse == "own")
    ],
)
def test_status_taken_and_pid_recycled_before_aioproc_looks(
    loop: str, mode: str, reuse: str
) -> None:
    # The thief reaps A and the PID goes to B before aioproc's loop has run:
    # A.kill() must not reach B. In pidfd mode the pidfd still names A (gone).
    # In pid mode only a PID is left; it is safe when B is not our child
    # (waitid says "not my child"), and cannot be made safe when B is also our
    # child (not run, see above).
    out = steal(loop, mode, "thread", reuse)
    assert out["thief_reaped_a"]
    assert out["b_pid"] == out["a_pid"], "the PID was not recycled: the test proves nothing"
    assert out["signals"] == REFUSED
    assert out["wait"] == LOST
    signalled_nothing(out["b"], our_child=reuse == "own")


@loops_and_modes
def test_sigchld_ignored_before_the_spawn(loop: str, mode: str) -> None:
    out = steal(loop, mode, "ign-before")
    assert out["wait"] != "hang"
    if mode == "pidfd":
        # The kernel reaped the child itself: the status is lost.
        assert out["wait"] == LOST
    else:
        # pid mode takes SIGCHLD through the signal hub for the loop's life,
        # which replaces SIG_IGN for that time: the status is collected.
        assert out["wait"] == {"unknown": False, "returncode": 3, "exit_code": 3}
    assert out["signals"] == REFUSED
    assert out["sigchld_after_loop"] == signal.SIG_IGN  # SIG_IGN given back with the loop


@loops_and_modes
def test_sigchld_ignored_while_the_child_runs(loop: str, mode: str) -> None:
    # The kernel reaps the child itself and sends no SIGCHLD. pid mode notices
    # through its backstop poll (aioproc/_waiting/pid.py, _Reaper.BACKSTOP).
    out = steal(loop, mode, "ign-after")
    assert out["signals"] == REFUSED
    assert out["wait"] != "hang", "await proc.wait() never returned"
    assert out["wait"] == LOST
    assert out["sigchld_after_loop"] == signal.SIG_IGN  # the user's SIG_IGN is left in place
