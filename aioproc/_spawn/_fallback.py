"""The fallback fork/exec step: CPython's ``_posixsubprocess.fork_exec``, then ``pidfd_open``.

Used for the spawns the C step (``_direct``) does not cover (user and group
changes, PID-mode waiting), and for every spawn where it is not built, where
the kernel refuses it, or with ``AIOPROC_NO_C_SPAWN=1`` in the environment.
``fork_exec`` is what ``subprocess.Popen`` uses: it uses ``vfork`` where that
is safe, closes every descriptor but the ones asked for (``close_range``), and
reports a failed ``exec``/``chdir``/``dup2`` back through a close-on-exec
error pipe. Its signature differs between Python versions; :func:`_fork_exec`
adapts. The step comes in two halves (:func:`spawn_start` forks,
:func:`spawn_finish` learns whether the exec happened), so that a spawn worker
can fork its next child while an earlier one is still on its way through the
exec (see ``_workers._Started``). Here too: the ``preexec_fn`` steps (parent-death
signal, cgroup, rlimits), turning a child's failure report into the exception
to raise (shared with the C step), and the helpers that close and reap what a
failed spawn made.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, NoReturn

from .. import _waiting
from .._signals import c_sigmask
from ._spec import _ALL_SIGNALS, DEVNULL, PIPE, STDOUT, Spawned, SpawnSpec

__all__ = [
    "Forked",
    "spawn_finish",
    "spawn_start",
]

_posix_fork_exec: Any
try:
    # The signature changed across Python versions; _fork_exec() adapts.
    from _posixsubprocess import fork_exec as _posix_fork_exec
except ImportError:  # pragma: no cover - not CPython on POSIX
    _posix_fork_exec = None

_PY311 = sys.version_info >= (3, 11)


# ------------------------------------------------------------ parent-death signal
_PR_SET_PDEATHSIG = 1
_prctl: Any = None


def _deathsig_preexec(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` that asks the kernel to send ``sig`` when our thread dies.

    Runs in the child between fork and exec. Two races are closed here:

    * The parent may die between the fork and the ``prctl``; the kernel would
      then never send the signal, since the death already happened. So after
      the ``prctl`` the child checks that its parent is still the process
      that forked it; if not, it sends itself the signal (with its default
      action, as the kernel would have delivered it to the new program).
    * The kernel sends the signal when the *thread* that forked exits, not the
      process. Spawn workers may retire (``set_spawn_workers``), so a child
      with ``pdeathsig`` is always forked on the event loop's thread (see
      ``inline_allowed(inline=True)``), which lives as long as the loop.
    """
    global _prctl
    if _prctl is None:
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl = _prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError("prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)

    return preexec


# ------------------------------------------------------------------ fork/exec
# Spawn workers keep every signal blocked (see _workers.SpawnPool._work), except
# around the fork itself: the child starts with the mask of the thread that
# forked it, and must get the process's normal mask, not "everything blocked".
class _WorkerState(threading.local):
    normal_mask: set[int] | None = None  # set on spawn workers only


_worker = _WorkerState()


def _fork_exec(
    spec: SpawnSpec, p2cread: int, c2pwrite: int, errwrite: int, err_read: int, err_write: int
) -> int:
    """Call ``_posixsubprocess.fork_exec`` with this Python's signature.

    On a spawn worker, the fork runs with the thread's normal signal mask (the
    child starts with the mask of the thread that forked it).
    """
    if _posix_fork_exec is None:  # pragma: no cover
        raise OSError(errno.ENOSYS, "this Python has no _posixsubprocess.fork_exec")
    if spec.pass_fds:
        keep: tuple[int, ...] = tuple(sorted({*spec.pass_fds, err_write}))
    else:
        keep = (err_write,)
    common: tuple[Any, ...] = (
        spec.args,
        spec.executable_list,
        spec.pass_fds is not None,  # close_fds
        keep,
        spec.cwd,
        spec.env_list,
        p2cread,
        -1,
        -1,
        c2pwrite,
        -1,
        errwrite,
        err_read,
        err_write,
        True,  # restore_signals
        spec.start_new_session,
    )
    if _PY311 and not spec.pdeathsig and not spec.rlimits and spec.cgroup_procs < 0:
        # The common case, without the preexec_fn (which costs the vfork).
        call = (
            *common,
            spec.process_group,
            spec.gid,
            spec.extra_groups,
            spec.uid,
            spec.umask,
            None,  # preexec_fn
            True,  # allow vfork
        )
    else:
        call = _fork_exec_args(spec, common, err_write)
    normal_mask: set[int] | None = _worker.normal_mask
    if normal_mask is None:
        return int(_posix_fork_exec(*call))
    c_sigmask(signal.SIG_SETMASK, normal_mask)
    try:
        return int(_posix_fork_exec(*call))
    finally:
        c_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)


def _fork_exec_args(spec: SpawnSpec, common: tuple[Any, ...], err_write: int) -> tuple[Any, ...]:
    """fork_exec's arguments with a preexec_fn, or in Python 3.10's signature."""
    # A preexec_fn costs the vfork (Python then forks, copying page tables):
    # only the parent-death signal, resource limits, cgroups, and process
    # groups on 3.10, need one.
    steps: list[Callable[[], None]] = []
    gid, extra_groups, uid = spec.gid, spec.extra_groups, spec.uid
    if not _PY311 and spec.process_group >= 0:  # Python 3.10's fork_exec cannot setpgid
        pgid = spec.process_group
        steps.append(lambda: os.setpgid(0, pgid))
    if spec.rlimits or spec.cgroup_procs >= 0:
        # The cgroup and the limits are set with our privileges, so the user
        # change (which fork_exec would make before the preexec_fn) moves in
        # here, after them.
        steps.append(_confine_preexec(spec, err_write))
        gid = extra_groups = uid = None
    if spec.pdeathsig:
        # After any user change: the kernel clears the parent-death signal
        # when the credentials change.
        steps.append(_deathsig_preexec(spec.pdeathsig))
    preexec: Callable[[], None] | None = None
    if len(steps) == 1:
        preexec = steps[0]
    elif steps:

        def preexec() -> None:
            for step in steps:
                step()

    if _PY311:
        return (
            *common,
            spec.process_group,
            gid,
            extra_groups,
            uid,
            spec.umask,
            preexec,
            True,  # allow vfork
        )
    return (*common, gid, extra_groups, uid, spec.umask, preexec)


def _confine_preexec(spec: SpawnSpec, err_write: int) -> Callable[[], None]:
    """A ``preexec_fn`` (the fallback's): join the cgroup, set the rlimits, change user.

    Runs in the forked child, before exec. A failure is reported on the
    error pipe as the C step reports it (``noexec:cgroup``,
    ``noexec:setrlimit``), and the child exits: fork_exec itself would only
    say "Exception occurred in preexec_fn". Race-free: the program is not
    running yet, so nothing it forks can escape the cgroup or the limits
    (unlike writing its PID to cgroup.procs, or a ``prlimit()`` on it, from
    the parent once it runs).
    """
    import resource

    setrlimit = resource.setrlimit
    limits = spec.rlimits
    cgroup_procs = spec.cgroup_procs
    gid, extra_groups, uid = spec.gid, spec.extra_groups, spec.uid

    def fail(err: int, step: bytes) -> NoReturn:
        os.write(err_write, b"OSError:%x:noexec:%s" % (err, step))
        os._exit(255)

    def preexec() -> None:
        if cgroup_procs >= 0:
            try:
                os.write(cgroup_procs, b"0")
            except OSError as exc:
                fail(exc.errno or errno.EINVAL, b"cgroup")
        for res, soft, hard in limits:
            try:
                setrlimit(res, (soft, hard))
            except ValueError as exc:  # CPython turns EPERM and EINVAL into ValueError
                fail(errno.EPERM if "not allowed" in str(exc) else errno.EINVAL, b"setrlimit")
            except OSError as exc:
                fail(exc.errno or errno.EINVAL, b"setrlimit")
        try:
            if extra_groups is not None:
                os.setgroups(extra_groups)
            if gid is not None:
                os.setregid(gid, gid)
            if uid is not None:
                os.setreuid(uid, uid)
        except OSError as exc:
            fail(exc.errno or errno.EPERM, b"")

    return preexec


_CHDIR_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ELOOP, errno.ENAMETOOLONG)


def _child_error(data: bytes, spec: SpawnSpec) -> BaseException:
    """Turn the child's report on the error pipe into the exception to raise."""
    try:
        name, hex_errno, msg_b = data.split(b":", 2)
        msg = msg_b.decode(errors="replace")
        err = int(hex_errno, 16)
    except ValueError:
        return OSError(f"the child failed before exec and sent a garbled report: {data!r}")
    if name != b"OSError" or err == 0:
        return OSError(f"the child failed before exec: {msg}")
    if msg in ("noexec:setrlimit", "noexec:cgroup"):
        return _child_failure(msg[len("noexec:") :], err, spec)
    if msg.startswith("noexec"):
        # The child failed before exec: chdir, dup2, setsid, setgid/setuid...
        # CPython reports which only for chdir (":chdir"), and only on some
        # versions; with a cwd, the errors chdir can give point at it.
        if spec.cwd is not None and (msg == "noexec:chdir" or err in _CHDIR_ERRNOS):
            return _child_failure("chdir", err, spec)
        return _child_failure("noexec", err, spec)
    return _child_failure("exec", err, spec)


def _child_failure(stage: str, err: int, spec: SpawnSpec) -> OSError:
    """The exception for a child that failed at ``stage``: "chdir", "exec", or
    another step before the exec ("noexec", "close_range")."""
    if stage == "chdir" and spec.cwd is not None:
        cwd = os.fsdecode(spec.cwd)
        return OSError(err, f"{os.strerror(err)}: cannot use it as the working directory", cwd)
    if stage == "setrlimit":
        return OSError(err, f"{os.strerror(err)}: cannot set the resource limits (rlimits=)")
    if stage == "cgroup":
        return OSError(err, f"{os.strerror(err)}: cannot move the child into its cgroup (cgroup=)")
    if stage != "exec":
        return OSError(err, f"{os.strerror(err)} (in the child, before exec)")
    return OSError(err, os.strerror(err), spec.display)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _reap_failed(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except InterruptedError:  # pragma: no cover - PEP 475 retries already
            continue


def _make_stdio(
    spec: SpawnSpec, ours: list[int], theirs: list[int]
) -> tuple[int, int, int, int | None, int | None, int | None]:
    """Make the pipes and /dev/null the child's stdio needs.

    Returns (the child's stdin, stdout, stderr descriptors, our end of each
    pipe or None). What is made goes into ``ours`` (kept on success) and
    ``theirs`` (closed after the fork, whatever happens).
    """
    devnull = -1
    if DEVNULL in (spec.stdin, spec.stdout, spec.stderr):
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        theirs.append(devnull)

    def make(redirect: int | None, child_reads: bool) -> tuple[int, int | None]:
        """(fd the child gets, our end)"""
        if redirect is None:
            return -1, None
        if redirect == DEVNULL:
            return devnull, None
        if redirect == PIPE:
            r, w = os.pipe2(os.O_CLOEXEC)
            if child_reads:
                theirs.append(r)
                ours.append(w)
                return r, w
            theirs.append(w)
            ours.append(r)
            return w, r
        return redirect, None

    p2cread, stdin_end = make(spec.stdin, True)
    c2pwrite, stdout_end = make(spec.stdout, False)
    if spec.stderr == STDOUT:
        errwrite, stderr_end = (c2pwrite if c2pwrite != -1 else 1), None
    else:
        errwrite, stderr_end = make(spec.stderr, False)
    return p2cread, c2pwrite, errwrite, stdin_end, stdout_end, stderr_end


class Forked(NamedTuple):
    """A child :func:`spawn_start` forked; whether it exec'd is not known yet."""

    pid: int
    err_read: int  # the error pipe: a report of a failed exec, or EOF once exec'd
    stdin: int | None  # our ends of its pipes, as in Spawned
    stdout: int | None
    stderr: int | None


def spawn_start(spec: SpawnSpec, *, nonblocking: bool) -> Forked:
    """Make the child's pipes and fork it; :func:`spawn_finish` does the rest.

    With ``nonblocking``, the error pipe's read end is non-blocking, so that
    :func:`spawn_finish` can look without waiting. On failure, every
    descriptor made here is closed before the exception propagates (a fork
    that failed left no child).
    """
    ours: list[int] = []  # parent ends, kept on success
    theirs: list[int] = []  # child ends and helpers, always closed here
    err_read = -1
    try:
        if spec.stdin is None and spec.stdout is None and spec.stderr is None:
            p2cread = c2pwrite = errwrite = -1
            stdin_end = stdout_end = stderr_end = None
        else:
            p2cread, c2pwrite, errwrite, stdin_end, stdout_end, stderr_end = _make_stdio(
                spec, ours, theirs
            )
        # O_NONBLOCK applies to both ends; the child writes at most one short
        # report into the empty pipe, which never blocks either way.
        err_read, err_write = os.pipe2(os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0))
        try:
            pid = _fork_exec(spec, p2cread, c2pwrite, errwrite, err_read, err_write)
        finally:
            os.close(err_write)
        return Forked(pid, err_read, stdin_end, stdout_end, stderr_end)
    except BaseException:
        _close_all(ours)
        if err_read != -1:
            os.close(err_read)
        raise
    finally:
        for fd in theirs:
            try:
                os.close(fd)
            except OSError:
                pass


def spawn_finish(
    forked: Forked, spec: SpawnSpec, mode: Literal["pidfd", "pid"], *, wait: bool
) -> Spawned | None:
    """Learn whether ``forked`` exec'd; if so, open its pidfd and return it.

    Returns None, changing nothing, when the child has neither exec'd nor
    failed yet and ``wait`` is false (only for a non-blocking error pipe).
    Otherwise the error pipe is closed, and on failure our pipe ends are
    closed and the child reaped (killed first if it got past the exec) before
    the exception propagates.
    """
    pid, err_read = forked.pid, forked.err_read
    ours = [fd for fd in (forked.stdin, forked.stdout, forked.stderr) if fd is not None]
    try:
        # With vfork we resume only after the child exec'd or gave up, but the
        # exec closes the close-on-exec write end a little later (the kernel
        # lets the parent go on at the point of no return, before it closes
        # descriptors). With fork, EOF waits for the exec itself.
        try:
            part = os.read(err_read, 50000)
        except BlockingIOError:
            if not wait:
                return None
            os.set_blocking(err_read, True)
            part = os.read(err_read, 50000)
        if part:
            chunks = [part]
            os.set_blocking(err_read, True)  # the child is writing or gone: no long wait
            while part := os.read(err_read, 50000):
                chunks.append(part)
            _reap_failed(pid)
            pid = -1
            raise _child_error(b"".join(chunks), spec)
        try:
            pidfd = _waiting.open_pidfd(pid, mode)
        except OSError as exc:
            # Still our unreaped child, so its PID cannot have been reused:
            # killing and reaping it by PID is safe here, and nothing is left.
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover
                pass
            _reap_failed(pid)
            pid = -1
            raise OSError(
                exc.errno,
                f"pidfd_open failed after the fork ({exc.strerror}); "
                "the child was killed and reaped",
            ) from exc
        for fd in ours:
            os.set_blocking(fd, False)
        os.close(err_read)
        return Spawned(forked.pid, pidfd, forked.stdin, forked.stdout, forked.stderr)
    except BaseException:
        _close_all(ours)
        os.close(err_read)
        if pid > 0:  # pragma: no cover - every path above reaps first
            _reap_failed(pid)
        raise
