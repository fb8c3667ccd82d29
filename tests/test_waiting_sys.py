"""The system-call layer under child waiting (``aioproc/_waiting/_sys.py``).

``waitid`` has two implementations: the optional C module (``_waitid.c``) and
ctypes. Both are held to the same results here, on real children.
"""

from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aioproc._waiting import _sys

from .helpers import soft_nofile

try:
    from aioproc._waiting import _waitid as c_module
except ImportError:  # pragma: no cover - built wherever a compiler is at hand
    c_module = None

pytestmark = pytest.mark.usefixtures("no_leaks")

WaitidFn = Callable[[int, int, int], "_sys.WaitResult | None"]


def c_waitid(idtype: int, ident: int, options: int) -> _sys.WaitResult | None:
    assert c_module is not None
    res = c_module.waitid(idtype, ident, options)
    return None if res is None else _sys.WaitResult(*res)


IMPLEMENTATIONS = [
    pytest.param(_sys.waitid_ctypes, id="ctypes"),
    pytest.param(
        c_waitid,
        id="c",
        marks=pytest.mark.skipif(c_module is None, reason="the C module was not built"),
    ),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def waitid(request: pytest.FixtureRequest) -> WaitidFn:
    fn: WaitidFn = request.param
    return fn


class Child:
    """A real child with an open pidfd, reaped (by pidfd) when the test is over."""

    def __init__(self, code: str) -> None:
        self.pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ)
        self.fd = os.pidfd_open(self.pid)

    def wait_exited(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        assert poller.poll(30_000), "the child did not exit within 30 s"

    def close(self) -> None:
        try:
            signal.pidfd_send_signal(self.fd, signal.SIGKILL)
            self.wait_exited()  # the pidfd may be non-blocking: waitid would not wait
            os.waitid(os.P_PIDFD, self.fd, os.WEXITED)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def spawn_child() -> Iterator[Callable[[str], Child]]:
    made: list[Child] = []

    def make(code: str) -> Child:
        child = Child(code)
        made.append(child)
        return child

    yield make
    for child in made:
        child.close()


REAP = os.WEXITED | os.WNOHANG


def test_the_c_module_is_built_where_a_compiler_is_at_hand() -> None:
    # CI installs gcc, so a silently failed build (optional=True) shows here.
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine: the ctypes fallback is in use")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        pytest.skip(f"no Python headers ({headers}): the ctypes fallback is in use")
    assert c_module is not None, "aioproc._waiting._waitid was not built by the install"
    if os.environ.get("AIOPROC_NO_C_WAITID") != "1":
        assert _sys.C_WAITID


def test_exit_code_and_rusage(waitid: WaitidFn, spawn_child: Callable[[str], Child]) -> None:
    # Burn ~50 ms of CPU and touch ~20 MiB so both times and max RSS show up.
    child = spawn_child(
        "import time\n"
        "buf = bytearray(20 << 20)\n"
        "end = time.process_time() + 0.05\n"
        "while time.process_time() < end: pass\n"
        "raise SystemExit(7)"
    )
    child.wait_exited()
    res = waitid(os.P_PIDFD, child.fd, REAP)
    assert res is not None
    assert (res.pid, res.code, res.status) == (child.pid, _sys.CLD_EXITED, 7)
    assert res.rusage is not None
    usage = _sys.rusage_from_raw(res.rusage)
    assert isinstance(usage, resource.struct_rusage)
    assert usage.ru_utime + usage.ru_stime >= 0.04
    assert usage.ru_maxrss >= 20 << 10  # KiB
    # Reaped: the pidfd now names no child of ours.
    with pytest.raises(ChildProcessError):
        waitid(os.P_PIDFD, child.fd, REAP)


def test_killed_by_a_signal(waitid: WaitidFn, spawn_child: Callable[[str], Child]) -> None:
    child = spawn_child("import time; time.sleep(60)")
    signal.pidfd_send_signal(child.fd, signal.SIGTERM)
    child.wait_exited()
    res = waitid(os.P_PIDFD, child.fd, REAP)
    assert res is not None
    assert (res.pid, res.code, res.status) == (child.pid, _sys.CLD_KILLED, signal.SIGTERM)


def test_nothing_exited_yet_is_none(waitid: WaitidFn, spawn_child: Callable[[str], Child]) -> None:
    child = spawn_child("import time; time.sleep(60)")
    assert waitid(os.P_PIDFD, child.fd, REAP) is None
    os.set_blocking(child.fd, False)  # as uvloop leaves it: EAGAIN, not 0
    assert waitid(os.P_PIDFD, child.fd, REAP) is None


def test_wnowait_leaves_the_child_waitable_and_reports_no_rusage(
    waitid: WaitidFn, spawn_child: Callable[[str], Child]
) -> None:
    child = spawn_child("raise SystemExit(3)")
    child.wait_exited()
    peek = waitid(os.P_PIDFD, child.fd, REAP | os.WNOWAIT)
    assert peek is not None
    assert (peek.pid, peek.status, peek.rusage) == (child.pid, 3, None)
    reaped = waitid(os.P_PIDFD, child.fd, REAP)
    assert reaped is not None
    assert (reaped.pid, reaped.status) == (child.pid, 3)
    assert reaped.rusage is not None


def test_blocking_calls_are_refused(waitid: WaitidFn, spawn_child: Callable[[str], Child]) -> None:
    # Both keep the GIL across the call, so a blocking waitid would hang every thread.
    child = spawn_child("import time; time.sleep(60)")
    with pytest.raises(ValueError, match="WNOHANG"):
        waitid(os.P_PIDFD, child.fd, os.WEXITED)


def test_a_stranger_is_a_child_process_error(waitid: WaitidFn) -> None:
    fd = os.pidfd_open(os.getppid())  # not our child
    try:
        with pytest.raises(ChildProcessError):
            waitid(os.P_PIDFD, fd, REAP)
    finally:
        os.close(fd)


def test_the_public_waitid_returns_wait_results(spawn_child: Callable[[str], Child]) -> None:
    child = spawn_child("raise SystemExit(0)")
    child.wait_exited()
    res = _sys.waitid(os.P_PIDFD, child.fd, REAP)
    assert isinstance(res, _sys.WaitResult)
    assert (res.pid, res.code, res.status) == (child.pid, _sys.CLD_EXITED, 0)


def test_the_environment_switch_forces_the_ctypes_path() -> None:
    code = "from aioproc._waiting import _sys; print(_sys.C_WAITID)"
    env = {**os.environ, "AIOPROC_NO_C_WAITID": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_pidfd_open_puts_the_pidfd_above_the_floor_where_the_limit_allows() -> None:
    # Live children's pidfds stay out of the low numbers a spawn's pipes take
    # (see PIDFD_FLOOR). The fallback spawn path opens its pidfds here.
    pid = os.posix_spawn("/bin/sleep", ["sleep", "600"], os.environ)
    low = os.pidfd_open(pid)  # the number pidfd_open gives: the lowest free
    os.close(low)
    with soft_nofile(4096):
        fd = _sys.pidfd_open(pid)
    try:
        assert fd >= _sys.PIDFD_FLOOR > low
        assert os.get_inheritable(fd) is False
        with open(f"/proc/self/fdinfo/{fd}") as f:
            assert f"Pid:\t{pid}\n" in f.read()
        # The low number was closed again: the next descriptor gets it.
        probe = os.dup(0)
        os.close(probe)
        assert probe == low
    finally:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        os.waitid(os.P_PIDFD, fd, os.WEXITED)
        os.close(fd)


def test_a_descriptor_that_cannot_be_moved_stays_where_it_is() -> None:
    r, w = os.pipe()
    try:
        with soft_nofile(_sys.PIDFD_FLOOR):  # no number at or above the floor
            assert _sys.out_of_the_way(r) == r
        os.fstat(r)  # still open
        with soft_nofile(4096):
            high = _sys.out_of_the_way(r)
        assert high >= _sys.PIDFD_FLOOR
        assert _sys.out_of_the_way(high) == high  # already out of the way
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(r)  # moved, not copied
        r = high
    finally:
        os.close(r)
        os.close(w)
