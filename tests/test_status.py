"""Tests for aioproc._status: ExitStatus and CompletedProcess.

The value-object tests are plain; the ones with real children run on both
loops (see conftest.py) and in both wait modes (``wait_mode`` fixture), since
each mode collects the status and the rusage its own way.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import resource
import signal
import subprocess
import sys

import pytest

import aioproc
from aioproc import PIPE, CompletedProcess, ExitStatus

# no_leaks (conftest.py): after each test, no child or zombie, descriptor or thread is left.
pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(30)]

PY = sys.executable


def wait_status_of(argv: list[str]) -> tuple[int, int]:
    """Run ``argv`` to its end with plain os calls; return (pid, raw wait status)."""
    pid = os.posix_spawn(argv[0], argv, os.environ)
    _, wstatus = os.waitpid(pid, 0)
    return pid, wstatus


# ================================================================= the value object
def test_exited_success() -> None:
    status = ExitStatus.exited(1234, 0)
    assert status.pid == 1234
    assert status.returncode == 0
    assert status.exit_code == 0
    assert status.signal is None
    assert not status.core_dumped
    assert status.rusage is None
    assert not status.unknown
    assert status.success
    assert status.check() is status
    assert status.check(["true"]) is status
    assert str(status) == "process 1234 exited with code 0"


def test_exited_failure() -> None:
    status = ExitStatus.exited(1234, 3)
    assert status.returncode == 3
    assert status.exit_code == 3
    assert status.signal is None
    assert not status.success
    assert str(status) == "process 1234 exited with code 3"
    with pytest.raises(subprocess.CalledProcessError) as excinfo:
        status.check(["prog", "arg"])
    err = excinfo.value
    assert isinstance(err, aioproc.ProcessError)
    assert err.status is status
    assert err.returncode == 3
    assert err.cmd == ["prog", "arg"]
    with pytest.raises(aioproc.ProcessError) as excinfo2:
        status.check()
    assert excinfo2.value.cmd == []


def test_killed() -> None:
    status = ExitStatus.killed(99, signal.SIGKILL)
    assert status.returncode == -9
    assert status.exit_code is None
    assert status.signal is signal.SIGKILL
    assert isinstance(status.signal, signal.Signals)
    assert not status.core_dumped
    assert not status.success
    assert str(status) == "process 99 killed by SIGKILL"
    with pytest.raises(aioproc.ProcessError) as excinfo:
        status.check(["x"])
    assert excinfo.value.returncode == -9
    assert "SIGKILL" in str(excinfo.value)


def test_killed_core_dumped() -> None:
    status = ExitStatus.killed(7, signal.SIGSEGV, core_dumped=True)
    assert status.core_dumped
    assert status.signal is signal.SIGSEGV
    assert str(status) == "process 7 killed by SIGSEGV (core dumped)"


def test_killed_by_unnamed_realtime_signal() -> None:
    signum = signal.SIGRTMIN + 3
    with pytest.raises(ValueError, match="not a valid Signals"):
        signal.Signals(signum)  # no name: the case under test
    status = ExitStatus.killed(7, signum)
    assert status.returncode == -signum
    assert status.signal is None
    assert status.exit_code is None
    assert not status.success
    assert str(status) == f"process 7 killed by {signum}"


def test_lost() -> None:
    status = ExitStatus.lost(55)
    assert status.unknown
    assert status.returncode == 255
    assert status.exit_code is None
    assert status.signal is None
    assert not status.success
    assert "unknown" in str(status)
    with pytest.raises(aioproc.ProcessError):
        status.check()


def test_frozen() -> None:
    status = ExitStatus.exited(1, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.returncode = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.rusage = None  # type: ignore[misc]


def test_equality_and_hash_ignore_rusage() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    a = ExitStatus.exited(1, 2, rusage=usage)
    b = ExitStatus.exited(1, 2)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != ExitStatus.exited(1, 3)
    assert a != ExitStatus.killed(1, 2)


def test_built_from_returncode_alone() -> None:
    # Direct construction must agree with the named constructors.
    assert ExitStatus(5, 0) == ExitStatus.exited(5, 0)
    assert ExitStatus(5, 0).success
    assert str(ExitStatus(5, 2)) == "process 5 exited with code 2"
    assert ExitStatus(5, -15) == ExitStatus.killed(5, signal.SIGTERM)
    assert ExitStatus(5, -15).signal is signal.SIGTERM
    assert ExitStatus(5, -(signal.SIGRTMIN + 3)) == ExitStatus.killed(5, signal.SIGRTMIN + 3)


def test_pickle_round_trip() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    status = ExitStatus.killed(3, signal.SIGTERM, rusage=usage)
    copy = pickle.loads(pickle.dumps(status))
    assert copy == status
    assert copy.rusage == usage
    err = pickle.loads(pickle.dumps(aioproc.ProcessError(status, ["c"], b"out", b"err")))
    assert isinstance(err, aioproc.ProcessError)
    assert (err.status, err.cmd, err.output, err.stderr) == (status, ["c"], b"out", b"err")


def test_from_wait_status_exit_code() -> None:
    pid, wstatus = wait_status_of(["/bin/sh", "-c", "exit 42"])
    status = ExitStatus.from_wait_status(pid, wstatus)
    assert status == ExitStatus.exited(pid, 42)
    assert status.returncode == os.waitstatus_to_exitcode(wstatus)


def test_from_wait_status_signal() -> None:
    pid, wstatus = wait_status_of(["/bin/sh", "-c", "kill -USR1 $$"])
    status = ExitStatus.from_wait_status(pid, wstatus)
    assert status == ExitStatus.killed(pid, signal.SIGUSR1)
    assert status.returncode == os.waitstatus_to_exitcode(wstatus) == -signal.SIGUSR1


def test_from_wait_status_core_dump_bit() -> None:
    # No real core dump here (it would write a file); the kernel's encoding:
    # the signal in the low 7 bits, 0x80 when a core was dumped.
    status = ExitStatus.from_wait_status(8, signal.SIGSEGV | 0x80)
    assert status.signal is signal.SIGSEGV
    assert status.core_dumped
    assert not ExitStatus.from_wait_status(8, signal.SIGSEGV).core_dumped


def test_completed_process() -> None:
    ok = CompletedProcess(["a"], 0, b"o", b"e", ExitStatus.exited(1, 0))
    ok.check_returncode()
    failed = CompletedProcess(["a"], 2, "o", "e", ExitStatus.exited(1, 2))
    with pytest.raises(aioproc.ProcessError) as excinfo:
        failed.check_returncode()
    err = excinfo.value
    assert (err.returncode, err.cmd, err.output, err.stderr) == (2, ["a"], "o", "e")


# ================================================================= real children
BURN = "x = 0\nfor i in range(2_000_000): x += i\nraise SystemExit(5)"


async def test_real_exit_has_sane_rusage(wait_mode: str) -> None:
    async with aioproc.spawn([PY, "-S", "-c", BURN]) as proc:
        assert proc.mode == wait_mode
        status = await proc.wait()
    assert status.pid == proc.pid
    assert status.returncode == 5
    assert status.exit_code == 5
    assert status.signal is None
    assert not status.success
    assert proc.status is status
    usage = status.rusage
    assert usage is not None
    # The child burnt ~50 ms of CPU; the kernel's accounting is precise.
    assert usage.ru_utime > 0
    assert usage.ru_utime < 30
    assert usage.ru_stime >= 0
    assert usage.ru_maxrss > 1024  # KiB: a Python interpreter needs more than 1 MiB
    assert usage.ru_minflt > 0
    assert str(status) == f"process {proc.pid} exited with code 5"


async def test_real_kill_has_signal_and_rusage(wait_mode: str) -> None:
    async with aioproc.spawn(["sh", "-c", "echo ready; exec sleep 30"], stdout=PIPE) as proc:
        assert proc.mode == wait_mode
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
        proc.kill()
        status = await proc.wait()
    assert status.returncode == -signal.SIGKILL
    assert status.signal is signal.SIGKILL
    assert status.exit_code is None
    assert not status.core_dumped
    assert status.rusage is not None
    assert status.rusage.ru_utime >= 0
    assert status.rusage.ru_maxrss > 0
    assert str(status) == f"process {proc.pid} killed by SIGKILL"
    with pytest.raises(aioproc.ProcessError) as excinfo:
        status.check(proc.args)
    assert excinfo.value.status is status


async def test_real_status_matches_from_wait_status(wait_mode: str) -> None:
    # Both modes must report exactly what waitpid() reports for the same exit.
    for script in ("exit 0", "exit 77", "kill -TERM $$", "kill -USR2 $$"):
        pid, wstatus = wait_status_of(["/bin/sh", "-c", script])
        expected = ExitStatus.from_wait_status(pid, wstatus)
        async with aioproc.spawn(["sh", "-c", script]) as proc:
            status = await proc.wait()
        assert (status.returncode, status.exit_code, status.signal, status.core_dumped) == (
            expected.returncode,
            expected.exit_code,
            expected.signal,
            expected.core_dumped,
        )
        assert status.rusage is not None


async def test_rusage_is_decoded_once_on_first_read() -> None:
    # The reap stores the kernel's raw struct rusage and decodes it on first
    # read, off the path from the child's exit to wait() returning.
    status = await (await aioproc.spawn([sys.executable, "-c", "pass"])).wait()
    first = status.rusage
    assert first is not None
    assert first.ru_maxrss > 0
    assert status.rusage is first
