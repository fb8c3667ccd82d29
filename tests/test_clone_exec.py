"""aioproc._clone_exec, the C fork/exec step, and the fallback to _posixsubprocess.

The rest of the suite spawns through this module wherever it is built (run
it with AIOPROC_NO_C_SPAWN=1 for the fallback; .ci/run does on one Python).
These tests call it directly, for what the suite cannot see from spawn(): what
it returns, what it leaves open, how it reports a child that failed before its
exec, and when spawn() gives up on it.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import aioproc

from . import helpers

ce: Any
try:
    from aioproc import _clone_exec as ce
except ImportError:  # pragma: no cover - no C compiler at install time
    ce = None
pytestmark = pytest.mark.skipif(ce is None, reason="aioproc._clone_exec is not built")

SYS_CLONE = {"x86_64": 56}.get(os.uname().machine)
SYS_CLOSE_RANGE = 436  # the unified syscall table: the same everywhere


def spawn(
    argv: list[bytes],
    executables: tuple[bytes, ...] | None = None,
    *,
    env: list[bytes] | None = None,
    cwd: bytes | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    pass_fds: tuple[int, ...] = (),
    start_new_session: bool = False,
    process_group: int = -1,
    umask: int = -1,
    pdeathsig: int = 0,
) -> tuple[int, int, int | None, int | None, int | None] | tuple[str, int]:
    return ce.spawn(
        argv,
        executables or (argv[0],),
        env,
        cwd,
        stdin,
        stdout,
        stderr,
        pass_fds,
        start_new_session,
        process_group,
        umask,
        pdeathsig,
    )


Started = tuple[int, int, "int | None", "int | None", "int | None"]


def ok(out: Started | tuple[str, int]) -> Started:
    """The outcome of a spawn that must have worked: (pid, pidfd, our three ends)."""
    assert len(out) == 5, out
    return out  # type: ignore[return-value]


def reap(pidfd: int) -> int:
    """Wait for the child through its pidfd and close it; its exit status."""
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        assert info is not None
        return info.si_status
    finally:
        os.close(pidfd)


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, True)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def test_returns_an_execd_child_with_its_pidfd_and_our_pipe_ends(no_leaks: None) -> None:
    pid, pidfd, stdin, stdout, stderr = ok(
        spawn([b"/bin/sh", b"-c", b"read x; echo out $x; echo err >&2"], stdin=-1, stdout=-1,
              stderr=-1)
    )  # fmt: skip
    assert stdin is not None
    assert stdout is not None
    assert stderr is not None
    for fd in (pidfd, stdin, stdout, stderr):
        assert os.get_inheritable(fd) is False
    # Our ends are non-blocking; the pidfd is not (as pidfd_open(pid, 0) gives).
    assert [os.get_blocking(fd) for fd in (pidfd, stdin, stdout, stderr)] == [
        True, False, False, False,
    ]  # fmt: skip
    # The pidfd names this child: the kernel says so in its fdinfo.
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        assert f"Pid:\t{pid}\n" in f.read()
    os.set_blocking(stdin, True)
    os.write(stdin, b"hi\n")
    os.close(stdin)
    assert read_all(stdout) == b"out hi\n"
    assert read_all(stderr) == b"err\n"
    assert reap(pidfd) == 0


def test_the_child_gets_only_stdio_and_pass_fds(no_leaks: None) -> None:
    kept_r, kept_w = os.pipe()  # close-on-exec, like every descriptor Python makes
    other_r, other_w = os.pipe()
    os.set_inheritable(other_r, True)  # inheritable, but not passed: closed all the same
    # Descriptors above the highest one the child keeps (the child's private
    # table is copied only up to that one) and below it.
    high = os.dup2(other_r, 900, inheritable=True)
    try:
        _, pidfd, _, stdout, _ = ok(
            spawn([b"/bin/sh", b"-c", b"ls /proc/self/fd"], stdout=-1, pass_fds=(kept_r,))
        )
        assert stdout is not None
        listed = {int(fd) for fd in read_all(stdout).split()}
        reap(pidfd)
    finally:
        for fd in (kept_r, kept_w, other_r, other_w, high):
            os.close(fd)
    # ls's own directory descriptor is the one extra.
    assert {0, 1, 2, kept_r} <= listed
    assert len(listed - {0, 1, 2, kept_r}) == 1
    assert not listed & {kept_w, other_r, other_w, high}


def test_the_childs_descriptor_changes_never_reach_our_table(no_leaks: None) -> None:
    # The child starts on our descriptor table (CLONE_FILES) and must take a
    # private copy before its first dup2: otherwise it would put its pipes in
    # our stdin, stdout and stderr.
    def ours() -> list[tuple[int, int, int]]:
        return [(st.st_dev, st.st_ino, os.get_inheritable(fd)) for fd, st in
                ((fd, os.fstat(fd)) for fd in (0, 1, 2))]  # fmt: skip

    before = ours()
    pass_r, pass_w = os.pipe()  # close-on-exec here; the child makes its copy inheritable
    try:
        for _ in range(20):
            _, pidfd, stdin, stdout, stderr = ok(
                spawn([b"/bin/true"], stdin=-1, stdout=-1, stderr=-1, pass_fds=(pass_r,))
            )
            for fd in (stdin, stdout, stderr):
                assert fd is not None
                os.close(fd)
            reap(pidfd)
            assert ours() == before
            assert os.get_inheritable(pass_r) is False
    finally:
        os.close(pass_r)
        os.close(pass_w)


PIDFD_FLOOR = 1024  # _clone_exec.c's PIDFD_FLOOR


def kill_and_reap(pidfd: int) -> None:
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    reap(pidfd)


def test_the_pidfd_is_moved_above_the_floor_where_the_limit_allows(no_leaks: None) -> None:
    def spawned() -> tuple[int, int]:
        pid, pidfd, *_ = ok(spawn([b"/bin/true"]))
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            pid_line = f"Pid:\t{pid}\n" in f.read()  # it names this child
        flags = (os.get_inheritable(pidfd), os.get_blocking(pidfd))
        assert reap(pidfd) == 0
        assert pid_line
        assert flags == (False, True)  # close-on-exec and blocking, as before
        return pid, pidfd

    with helpers.soft_nofile(4096):
        _, pidfd = spawned()
        assert pidfd >= PIDFD_FLOOR
        # The low number the kernel gave it was closed again.
        probe = os.dup(0)
        os.close(probe)
        assert probe < PIDFD_FLOOR
    # No number at or above the floor can be had: the pidfd stays where the
    # kernel put it, and works.
    with helpers.soft_nofile(PIDFD_FLOOR):
        _, pidfd = spawned()
        assert pidfd < PIDFD_FLOOR


def test_live_childrens_pidfds_stay_out_of_a_new_childs_descriptor_table(
    no_leaks: None,
) -> None:
    # The child's table is a copy of our descriptors up to the highest one it
    # keeps; its size shows in its /proc status (FDSize, kept across the
    # exec). With the pidfds of 300 live children where the kernel put them,
    # the next child's stdout pipe lands above them all and the copy holds
    # 300+ descriptors (FDSize 512 here); moved above the floor, they leave
    # the pipe a low number.
    live: list[int] = []
    with helpers.soft_nofile(4096):
        try:
            for _ in range(300):
                live.append(ok(spawn([b"/bin/sleep", b"600"]))[1])
            _, pidfd, _, stdout, _ = ok(spawn([b"/bin/cat", b"/proc/self/status"], stdout=-1))
            assert stdout is not None
            status = read_all(stdout).decode()
            assert reap(pidfd) == 0
        finally:
            for fd in live:
                kill_and_reap(fd)
    fdsize = int(status.split("FDSize:")[1].split()[0])
    assert fdsize < len(live), f"the child's descriptor table has {fdsize} slots"


def test_environment_umask_session_and_group(no_leaks: None) -> None:
    script = b'echo "$FOO"; grep Umask /proc/self/status; cut -d" " -f5,6 /proc/self/stat'
    for session, group in [(True, -1), (False, 0)]:
        pid, pidfd, _, stdout, _ = ok(
            spawn([b"/bin/sh", b"-c", script], env=[b"FOO=bar"], umask=0o27, stdout=-1,
                  start_new_session=session, process_group=group)
        )  # fmt: skip
        assert stdout is not None
        foo, umask, ids = read_all(stdout).decode().splitlines()
        reap(pidfd)
        assert foo == "bar"
        assert umask.split() == ["Umask:", "0027"]
        # cut runs in the shell's process group and session: the child's own
        pgid, sid = map(int, ids.split())
        assert pgid == pid
        assert (sid == pid) is session


@pytest.mark.parametrize(
    ("kwargs", "stage", "err"),
    [
        ({"executables": (b"/nonexistent/x", b"/nonexistent/y")}, "exec", errno.ENOENT),
        # The first error that is not "not there" wins the PATH search.
        ({"executables": (b"/nonexistent/x", b"/etc/passwd", b"/nonexistent/z")}, "exec",
         errno.EACCES),
        ({"cwd": b"/nonexistent"}, "chdir", errno.ENOENT),
        # A process group that does not exist: setpgid fails in the child.
        ({"process_group": 2**22 + 1}, "noexec", errno.EPERM),
    ],
    ids=["exec", "path-search", "chdir", "setpgid"],
)  # fmt: skip
def test_a_child_that_fails_before_its_exec_is_reported_and_reaped(
    no_leaks: None, kwargs: dict[str, object], stage: str, err: int
) -> None:
    argv = [b"true"]
    executables = kwargs.pop("executables", (b"/bin/true",))
    out = spawn(argv, executables, stdin=-1, stdout=-1, stderr=-1, **kwargs)  # type: ignore[arg-type]
    assert out == (stage, err)
    # no_leaks: the child was reaped and every pipe closed.


async def test_spawn_raises_what_the_failed_stage_means(
    no_leaks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aioproc._spawn import _direct

    monkeypatch.setattr(_direct, "_clone_exec", ce)  # even with AIOPROC_NO_C_SPAWN=1
    with pytest.raises(FileNotFoundError, match="working directory") as info:
        await aioproc.spawn(["true"], cwd="/nonexistent")
    assert info.value.filename == "/nonexistent"
    with pytest.raises(PermissionError, match="in the child, before exec"):
        await aioproc.spawn(["true"], process_group=2**22 + 1)
    with pytest.raises(FileNotFoundError) as info:
        await aioproc.spawn(["/nonexistent/program"])
    assert info.value.filename == "/nonexistent/program"


def test_children_start_with_the_mask_set_for_the_thread(no_leaks: None) -> None:
    # A spawn worker blocks every signal and records the process's normal mask
    # for its children (set_child_mask); other threads' children get the mask
    # the thread has when it spawns.

    def sigblk(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            return int(f.read().split("SigBlk:")[1].split()[0], 16)

    seen: dict[str, int] = {}

    def run(name: str, thread_mask: set[int], child_mask: set[int] | None) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, thread_mask)
        if child_mask is not None:
            ce.set_child_mask(child_mask)
        pid, pidfd, stdin, _, _ = ok(spawn([b"/bin/cat"], stdin=-1))
        assert stdin is not None
        seen[name] = sigblk(pid)
        os.close(stdin)
        reap(pidfd)

    cases = {
        "inherits": ({signal.SIGUSR1}, None),
        "recorded": (set(signal.valid_signals()), {signal.SIGUSR2}),
    }
    for name, (thread_mask, child_mask) in cases.items():
        t = threading.Thread(target=run, args=(name, thread_mask, child_mask))
        t.start()
        t.join()
    assert seen == {"inherits": 1 << (signal.SIGUSR1 - 1), "recorded": 1 << (signal.SIGUSR2 - 1)}


def test_a_threads_child_stack_is_kept_and_unmapped_when_the_thread_exits(
    no_leaks: None,
) -> None:
    # Each thread keeps the stack its children run on until their exec (an
    # mmap/munmap per spawn cost ~30 % of the parent's CPU); spawn workers
    # come and go, so a thread's exit must unmap it.
    # The count is the process's: first let the spawn pool's idle workers (left by
    # earlier tests) exit, or one of them ending mid-test would change it.
    saved = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(0)
    try:
        for worker in [t for t in threading.enumerate() if t.name == "aioproc-spawn"]:
            worker.join(10)
            assert worker.native_id is not None
            thread_gone(worker.native_id)
        _stacks_follow_threads()
    finally:
        aioproc.set_spawn_workers(saved)


def _stacks_follow_threads() -> None:
    before = ce.stacks_kept()
    inside: list[int] = []
    for _ in range(20):

        def spawn_twice() -> None:
            for _ in range(2):
                _, pidfd, _, _, _ = ok(spawn([b"/bin/true"]))
                reap(pidfd)
            inside.append(ce.stacks_kept())

        t = threading.Thread(target=spawn_twice)
        t.start()
        t.join()
        # join() returns when Python is done with the thread; the thread-exit
        # destructors (ours among them) run after that, before the kernel
        # task ends.
        assert t.native_id is not None
        thread_gone(t.native_id)
    assert inside == [before + 1] * 20  # one stack per thread, for both spawns
    assert ce.stacks_kept() == before


def thread_gone(tid: int) -> None:
    """Wait until thread ``tid`` of this process has ended in the kernel."""
    try:
        # PIDFD_THREAD (Linux 6.9): a thread's pidfd turns readable when it ends.
        fd = os.pidfd_open(tid, os.O_EXCL)
    except ProcessLookupError:
        return
    except OSError as exc:  # an older kernel: look at /proc until it is gone
        if exc.errno != errno.EINVAL:
            raise
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/self/task/{tid}"):
            assert time.monotonic() < deadline, f"thread {tid} did not end"
            time.sleep(0.001)
        return
    assert helpers.wait_gone([fd]), f"thread {tid} did not end"


def test_signals_ignored_by_python_are_restored_for_the_child(no_leaks: None) -> None:
    # Python ignores SIGPIPE at startup; the child must get the default back
    # (subprocess's restore_signals), or `yes | head` would never end.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    _, pidfd, _, stdout, _ = ok(
        spawn([b"/bin/sh", b"-c", b"grep SigIgn /proc/self/status"], stdout=-1)
    )
    assert stdout is not None
    ignored = int(read_all(stdout).split()[1], 16)
    reap(pidfd)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


def test_bad_arguments_raise_before_anything_is_made(no_leaks: None) -> None:
    with pytest.raises(TypeError, match="args must hold bytes"):
        spawn(["true"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="args must not be empty"):
        spawn([], (b"/bin/true",))
    with pytest.raises(ValueError, match="invalid redirect -2 for descriptor 1"):
        spawn([b"/bin/true"], stdout=-2)  # STDOUT is for stderr only
    with pytest.raises(ValueError, match="invalid redirect -7 for descriptor 0"):
        spawn([b"/bin/true"], stdin=-7)
    with pytest.raises(ValueError, match="pass_fds must be sorted"):
        spawn([b"/bin/true"], pass_fds=(5, 4))
    with pytest.raises(TypeError, match="takes 12 to 14 arguments"):
        ce.spawn([b"/bin/true"])  # type: ignore[call-arg]


# ------------------------------------------------------ falling back, for real
def run_denied(nr: int, err: int, code: str) -> subprocess.CompletedProcess[str]:
    """helpers.run_denied, with spawns free to use _clone_exec."""
    env = {k: v for k, v in os.environ.items() if k != "AIOPROC_NO_C_SPAWN"}
    return helpers.run_denied(nr, err, code, env)


# After a single spawn on an idle loop (inline: no thread is started), print
# whether _clone_exec is still in use, what the child saw as its descriptors,
# and whether a child or a descriptor was left behind.
FALLBACK_PROGRAM = """
    import asyncio, os, sys, uvloop, aioproc
    from aioproc._spawn import _direct
    async def main():
        before = set(os.listdir("/proc/self/fd"))
        try:
            proc = await aioproc.spawn(["sh", "-c", "ls /proc/self/fd"], stdout=aioproc.PIPE)
            out, _ = await proc.communicate()
            print(sorted(int(fd) for fd in out.split()), (await proc.wait()).returncode)
            await asyncio.sleep(0)  # the pidfd's close is put off by one loop turn
        except OSError as exc:
            print(type(exc).__name__, exc.errno)
        print(_direct._clone_exec is not None)
        with open("/proc/self/task/%d/children" % os.getpid()) as f:
            print(repr(f.read().strip()))
        left = []
        for fd in set(os.listdir("/proc/self/fd")) - before:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:
                continue  # listdir's own
            # The loop's pidfd watcher and its anchor (_util.owned_by_loop) stay.
            if target not in ("anon_inode:[eventpoll]", "anon_inode:[eventfd]"):
                left.append(target)
        print(sorted(left))
    (uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main())
"""


@pytest.mark.skipif(SYS_CLONE is None, reason="the fallback's vfork is a clone elsewhere")
@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EINVAL, errno.EPERM])
def test_a_kernel_that_refuses_the_clone_gets_the_fallback(loop_name: str, err: int) -> None:
    # Kernels before 5.2 answer EINVAL to CLONE_PIDFD; sandboxes ENOSYS or EPERM.
    # glibc starts threads with clone3 and _posixsubprocess uses vfork, so
    # denying clone itself leaves both working.
    assert SYS_CLONE is not None
    code = FALLBACK_PROGRAM.replace("sys.argv[1]", repr(loop_name))
    res = run_denied(SYS_CLONE, err, code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["[0, 1, 2, 3] 0", "False", "''", "[]"]


@pytest.mark.skipif(SYS_CLONE is None, reason="the syscall number of clone is not known here")
@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_clone_that_fails_for_want_of_processes_raises_and_leaves_nothing(
    loop_name: str,
) -> None:
    assert SYS_CLONE is not None
    code = FALLBACK_PROGRAM.replace("sys.argv[1]", repr(loop_name))
    res = run_denied(SYS_CLONE, errno.EAGAIN, code)
    assert res.returncode == 0, res.stderr
    # The error is the caller's to see; _clone_exec stays in use.
    assert res.stdout.splitlines() == [f"BlockingIOError {errno.EAGAIN}", "True", "''", "[]"]


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EINVAL, errno.EPERM])
def test_a_kernel_without_close_range_gets_the_fallback(loop_name: str, err: int) -> None:
    # Before Linux 5.9 the child's close_range fails with ENOSYS (EINVAL where
    # CLOSE_RANGE_UNSHARE is unknown, EPERM in a sandbox): it is reaped, and
    # the spawn runs again on the fallback, which closes descriptors by
    # listing /proc/self/fd. The child still gets only its stdio.
    code = FALLBACK_PROGRAM.replace("sys.argv[1]", repr(loop_name))
    res = run_denied(SYS_CLOSE_RANGE, err, code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["[0, 1, 2, 3] 0", "False", "''", "[]"]


@pytest.mark.parametrize(("value", "in_use"), [("1", False), ("0", True), ("", True)])
def test_aioproc_no_c_spawn_forces_the_fallback(value: str, in_use: bool) -> None:
    code = "from aioproc._spawn import _direct; print(_direct._clone_exec is not None)"
    env = {**os.environ, "AIOPROC_NO_C_SPAWN": value}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(in_use)]
