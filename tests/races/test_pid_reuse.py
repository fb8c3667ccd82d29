"""PID reuse, made to happen on purpose.

Go's fix for the wait/kill race (seed 000) shipped without a test "because any
plausible test would require starting enough processes to recycle all the
process IDs". In a fresh PID namespace we do not need to: writing ``N - 1`` to
``/proc/sys/kernel/ns_last_pid`` hands PID ``N`` to the very next process. Each
test runs ``programs/pidns.py`` alone in such a namespace, on asyncio and on
uvloop, in pidfd mode and in pid mode, and asserts on what it reports:

* that the PID really was recycled (B's PID is A's), so the test is not vacuous;
* that every way of signalling A raised ProcessLookupError and ``A.stop()``
  returned A's status;
* that B, a canary that blocks every signal and reports what is pending on it
  (``programs/canary.py``), got nothing and is alive.

``test_the_harness_sees_a_stray_signal`` is the control: a PID-only signal
after ``wait()`` (what code without aioproc's protections does) does land on
the canary, every time.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import LOOPS_AND_MODES, run_pidns, signalled_nothing

pytestmark = [pytest.mark.races, pytest.mark.usefixtures("no_leaks")]

SPAWNERS = ("posix_spawn", "popen", "aioproc", "foreign")
GROUP_SPAWNERS = ("posix_spawn", "popen", "aioproc")
REFUSED = {
    name: "ProcessLookupError"
    for name in (
        "send_signal(SIGTERM)",
        "send_signal(SIGUSR1)",
        "send_signal(0)",
        "terminate()",
        "kill()",
    )
}

loops_and_modes = pytest.mark.parametrize(("loop", "mode"), LOOPS_AND_MODES)


def by_spawner(case: str, loop: str, mode: str, spawners: tuple[str, ...], *extra: str) -> Any:
    result = run_pidns(case, "--loop", loop, "--mode", mode, "--spawners", ",".join(spawners),
                       *extra)  # fmt: skip
    assert result["mode_used"] == mode
    return result["by_spawner"]


def check_a_refused_and_b_unharmed(out: dict[str, Any], spawner: str) -> None:
    assert out["b_pid"] == out["a_pid"], "the PID was not recycled: the test proves nothing"
    assert out["signals"] == REFUSED
    assert out["stop_returns_status"]
    assert out["returncode"] == 3
    signalled_nothing(out["b"], our_child=spawner != "foreign")


@loops_and_modes
@pytest.mark.parametrize("spawner", SPAWNERS)
def test_recycled_pid_after_exit_is_never_signalled(loop: str, mode: str, spawner: str) -> None:
    # A exits and is reaped; B gets A's PID, started by posix_spawn, Popen,
    # aioproc, or by another process entirely (B is then not our child).
    out = by_spawner("reuse", loop, mode, SPAWNERS)[spawner]
    check_a_refused_and_b_unharmed(out, spawner)
    assert out["wait_again"] == 3


@loops_and_modes
@pytest.mark.parametrize("spawner", SPAWNERS)
def test_recycled_pid_while_a_grandchild_holds_the_pipes(
    loop: str, mode: str, spawner: str
) -> None:
    # A's stdout and stderr stay open in a grandchild: A is still reaped on
    # exit, its PID recycled, and neither B nor the grandchild gets a signal.
    out = by_spawner("reuse", loop, mode, SPAWNERS, "--grandchild")[spawner]
    check_a_refused_and_b_unharmed(out, spawner)
    grandchild = out["grandchild"]
    assert grandchild is not None
    assert grandchild["State"] not in ("Z", "X", "T", "t")
    assert int(grandchild["SigPnd"], 16) == int(grandchild["ShdPnd"], 16) == 0
    assert out["a_stdout_open"], "the grandchild was meant to hold A's stdout open"
    assert out["a_stdout_rest"] == ""


@loops_and_modes
@pytest.mark.parametrize("spawner", GROUP_SPAWNERS)
def test_recycled_group_id_is_never_signalled(loop: str, mode: str, spawner: str) -> None:
    # kill_group=True: A leads group A.pid. A exits; wait() returns but A stays
    # unreaped (its PID pins the group id) until stop() has swept the group and
    # reaped it. Then B gets A's PID and makes itself a group leader, so group
    # A.pid now means B's group.
    out = by_spawner("group", loop, mode, GROUP_SPAWNERS)[spawner]
    assert out["a_pgid"] == out["a_pid"]
    assert out["pinned_after_wait"], "A was reaped before its group was swept"
    assert out["b_pgid"] == out["a_pid"], "B does not lead a group with A's old id"
    check_a_refused_and_b_unharmed(out, spawner)


@loops_and_modes
def test_kill_and_wait_race_with_pids_recycled_at_once(loop: str, mode: str) -> None:
    # 1,000 short-lived children, each killed from two tasks and a thread and
    # waited for from two tasks; inside the very system call that reaps each
    # one, a canary is started on the PID just freed (so the same PID serves
    # all 2,000 processes). No canary may ever get a signal.
    out = run_pidns("race", "--loop", loop, "--mode", mode, "--iterations", "1000")
    assert out["mode_used"] == mode
    assert out["reaps_hooked"] == 1000, (
        "the reap hook did not see every reap: aioproc no longer reaps through "
        "os.wait4 (pid mode) / _sys.waitid (pidfd mode); update RaceHooks in pidns.py"
    )
    assert out["not_reused"] == 0
    assert out["errors"] == []
    assert out["strays"] == 0, out["first_strays"]
    # The children really were signalled (some exit by themselves first).
    assert out["signals_sent"] > 0
    assert set(out["statuses"]) <= {"0", "-9", "-15"}


@pytest.mark.parametrize("mode", ["pidfd", "pid"])
def test_the_harness_sees_a_stray_signal(mode: str) -> None:
    # The control: after wait(), send SIGTERM to the raw PID, as a library
    # without aioproc's protections would. Every canary must show it.
    out = run_pidns("race", "--loop", "asyncio", "--mode", mode, "--iterations", "20", "--naive")
    assert out["not_reused"] == 0
    assert out["strays"] == 20
