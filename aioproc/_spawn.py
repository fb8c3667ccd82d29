"""From arguments to a running child: argument checking and the fork/exec step.

Everything that can be checked before forking is checked here, on the caller's
thread, and raises a clear ``TypeError``/``ValueError`` with nothing created.
The fork/exec step itself (:func:`spawn_sync`) is a plain blocking function so
it can run inline on the loop or on a spawn worker thread; it either returns a
child with its pidfd open and its pipes set up, or raises after closing every
descriptor it made and reaping any child it forked. Spawn workers run
the fallback in its two halves (:func:`spawn_start` forks,
:func:`spawn_finish` learns whether the exec happened), so that a worker can
fork its next child while an earlier one is still on its way through the exec
(see ``_Started``).

The fork/exec primitive is aioproc's C module ``_clone_exec`` where it is
built (``_clone_exec.c``): one call, with the GIL released throughout, makes
the pipes, clones the child (``CLONE_VM | CLONE_VFORK | CLONE_PIDFD``), and
learns the outcome of the exec from memory the child shares, so it returns a
child that has exec'd, with its pidfd. Spawns it does not cover (user and group
changes, PID-mode waiting), and every spawn where it is not built, where the
kernel refuses it, or with ``AIOPROC_NO_C_SPAWN=1`` in the environment, use
CPython's own ``_posixsubprocess.fork_exec`` (what
``subprocess.Popen`` uses): it uses ``vfork`` where that is safe, closes every
descriptor but the ones asked for (``close_range``), and reports a failed
``exec``/``chdir``/``dup2`` back through a close-on-exec error pipe; then
``pidfd_open``. Its signature differs between Python versions;
:func:`_fork_exec` adapts.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import errno
import grp
import os
import pwd
import queue
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Generic, Literal, NamedTuple, NoReturn, Protocol, TypeVar, Union

from . import _waiting
from ._forklock import exec_lock, fork_lock
from ._limits import check_rlimits
from ._signals import c_sigmask
from ._util import PerLoop, anchor_loop, owned_by_loop

_posix_fork_exec: Any
try:
    # The signature changed across Python versions; _fork_exec() adapts.
    from _posixsubprocess import fork_exec as _posix_fork_exec
except ImportError:  # pragma: no cover - not CPython on POSIX
    _posix_fork_exec = None

_clone_exec: Any
try:
    from . import _clone_exec
except ImportError:  # pragma: no cover - not built (no compiler at install time)
    _clone_exec = None
if os.environ.get("AIOPROC_NO_C_SPAWN") == "1":
    _clone_exec = None

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "SpawnSpec",
    "Spawned",
    "cancelled",
    "enqueue",
    "fork_here",
    "fork_here_locked",
    "get_spawn_workers",
    "inline_allowed",
    "make_spec",
    "must_stay_inline",
    "pooled_in_flight",
    "set_spawn_workers",
    "spawn_finish",
    "spawn_start",
    "spawn_sync",
]

#: Make a pipe to the child (``proc.stdin``/``proc.stdout``/``proc.stderr``).
PIPE = -1
#: Send the child's stderr where its stdout goes.
STDOUT = -2
#: Connect the stream to ``/dev/null``.
DEVNULL = -3

StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class HasFileno(Protocol):
    """Anything with a ``fileno()``: a file, a socket, another child's stream."""

    def fileno(self) -> int: ...


Redirect = Union[int, IO[Any], HasFileno, None]  # noqa: UP007

_PY311 = sys.version_info >= (3, 11)
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


class SpawnSpec(NamedTuple):
    """Validated, encoded spawn arguments: what the fork/exec step needs.

    A tuple, since one is made per spawn on the path a sequential spawn waits on.
    """

    args: list[bytes]
    executable_list: tuple[bytes, ...]
    env_list: list[bytes] | None
    cwd: bytes | None
    stdin: int | None  # PIPE, DEVNULL, an fd, or None (inherit)
    stdout: int | None
    stderr: int | None  # PIPE, DEVNULL, STDOUT, an fd, or None
    # None: close_fds=False, the child keeps every descriptor not marked
    # close-on-exec (as subprocess; pass_fds then forces close_fds back on).
    pass_fds: tuple[int, ...] | None
    start_new_session: bool
    process_group: int  # -1: leave alone
    uid: int | None
    gid: int | None
    extra_groups: list[int] | None
    umask: int
    pdeathsig: int  # 0: none
    rlimits: tuple[tuple[int, int, int], ...] = ()  # (resource, soft, hard); see _limits
    cgroup_procs: int = -1  # an open cgroup.procs the child joins before exec; see _cgroup

    @property
    def display(self) -> str:
        """The program as the user named it, for error messages."""
        return os.fsdecode(self.args[0])


class Spawned(NamedTuple):
    """The outcome of the fork/exec step."""

    pid: int
    pidfd: int | None
    stdin: int | None  # our end of each pipe, non-blocking
    stdout: int | None
    stderr: int | None


# ---------------------------------------------------------------------- checks
def _encode_arg(value: object, what: str) -> bytes:
    if isinstance(value, (str, bytes, os.PathLike)):
        try:
            encoded = os.fsencode(value)
        except TypeError:  # a PathLike returning something odd
            raise TypeError(
                f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}"
            ) from None
        if b"\0" in encoded:
            raise ValueError(f"{what} contains a NUL byte: {value!r}")
        return encoded
    raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")


def _check_argv(argv: object, shell: bool) -> list[bytes]:
    if not shell and (type(argv) is list or type(argv) is tuple) and argv:
        # The common case, a list of plain str/bytes, without the ABC checks
        # and messages below (they run only if something here looks wrong).
        args = []
        for arg in argv:
            if type(arg) is str:
                encoded = arg.encode(_FS_ENCODING, _FS_ERRORS)  # os.fsencode, inlined
            elif type(arg) is bytes:
                encoded = arg
            else:
                break
            if b"\0" in encoded:
                break
            args.append(encoded)
        else:
            if args[0]:
                return args
    if shell:
        if isinstance(argv, (str, bytes, os.PathLike)):
            return [b"/bin/sh", b"-c", _encode_arg(argv, "the shell command")]
        if not isinstance(argv, Sequence) or not argv:
            raise TypeError("with shell=True, pass the command line as one string")
        return [b"/bin/sh", b"-c"] + [_encode_arg(a, f"argv[{i}]") for i, a in enumerate(argv)]
    if isinstance(argv, (str, bytes)):
        raise TypeError(
            f"argv must be a sequence of arguments, not a single {type(argv).__name__}: "
            f"use spawn([{argv!r}]) or spawn(shlex.split(...)), or shell=True to run it "
            "through /bin/sh"
        )
    if isinstance(argv, os.PathLike):
        argv = [argv]
    if not isinstance(argv, Sequence):
        raise TypeError(f"argv must be a sequence of str/bytes/PathLike, not {type(argv).__name__}")
    if not argv:
        raise ValueError("argv is empty: name a program to run")
    args = [_encode_arg(a, f"argv[{i}]") for i, a in enumerate(argv)]
    if not args[0]:
        raise ValueError("argv[0] is empty: name a program to run")
    return args


def _check_env(env: Mapping[Any, Any] | None) -> list[bytes] | None:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping, not {type(env).__name__}")
    out = []
    for key, value in env.items():
        if not isinstance(key, (str, bytes)):
            raise TypeError(f"env keys must be str or bytes, not {type(key).__name__} ({key!r})")
        if not isinstance(value, (str, bytes)):
            raise TypeError(
                f"env[{key!r}] must be str or bytes, not {type(value).__name__} ({value!r})"
            )
        k = os.fsencode(key)
        v = os.fsencode(value)
        if not k or b"=" in k:
            raise ValueError(f"illegal environment variable name: {key!r}")
        if b"\0" in k or b"\0" in v:
            raise ValueError(f"environment variable {key!r} contains a NUL byte")
        out.append(k + b"=" + v)
    return out


# The ranges the kernel takes. A descriptor and a process group id are C
# ints; a uid or gid is a 32-bit unsigned, where (uid_t)-1 means "leave it
# unchanged" to setreuid() and friends, so it names no user: a child asked to
# run as uid 4294967295 would keep ours (root's).
_INT_MAX = 2**31 - 1
_ID_MAX = 2**32 - 2


def _check_fd(fd: int, what: str) -> int:
    if fd < 0 or fd > _INT_MAX:  # fcntl() would raise OverflowError
        raise ValueError(f"{what}: {fd} is not a file descriptor")
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError as exc:
        raise OSError(exc.errno, f"{what}: file descriptor {fd} is not open") from None
    return fd


def _check_redirect(value: Redirect, what: str, allow_stdout: bool) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        fileno = getattr(value, "fileno", None)
        if fileno is None:
            raise TypeError(
                f"{what} must be None, PIPE, DEVNULL, a file descriptor or a file object, "
                f"not {type(value).__name__}"
            )
        return _check_fd(fileno(), what)
    if value in (PIPE, DEVNULL):
        return value
    if value == STDOUT:
        if not allow_stdout:
            raise ValueError(f"STDOUT is only valid for stderr, not {what}")
        return value
    return _check_fd(value, what)


def _resolve_user(user: str | int | None) -> tuple[int | None, pwd.struct_passwd | None]:
    if user is None:
        return None, None
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        raise TypeError(f"user must be a name or a uid, not {type(user).__name__}")
    if isinstance(user, int) and not 0 <= user <= _ID_MAX:
        raise ValueError(f"user id out of range: {user} (a uid is 0 to {_ID_MAX})")
    try:
        entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    except KeyError:
        if isinstance(user, int) and user >= 0:
            return user, None
        raise ValueError(f"unknown user {user!r}: not in the password database") from None
    return entry.pw_uid, entry


def _resolve_group(group: str | int | None) -> int | None:
    if group is None:
        return None
    if isinstance(group, bool) or not isinstance(group, (str, int)):
        raise TypeError(f"group must be a name or a gid, not {type(group).__name__}")
    if isinstance(group, int):
        if not 0 <= group <= _ID_MAX:
            raise ValueError(f"group id out of range: {group} (a gid is 0 to {_ID_MAX})")
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"unknown group {group!r}: not in the group database") from None


def make_spec(
    argv: object,
    *,
    stdin: Redirect,
    stdout: Redirect,
    stderr: Redirect,
    cwd: StrOrBytesPath | None,
    env: Mapping[Any, Any] | None,
    shell: bool,
    start_new_session: bool,
    process_group: int | None,
    pass_fds: Sequence[int],
    user: str | int | None,
    group: str | int | None,
    umask: int,
    pdeathsig: int | None = None,
    close_fds: bool = True,
    rlimits: object = None,
) -> SpawnSpec:
    """Check and encode spawn's arguments. Creates nothing, forks nothing.

    Every optional argument is looked at only when it is not its default: this
    runs once per spawn, before the fork, where a sequential spawn waits on it.
    """
    args = _check_argv(argv, shell)
    env_list = None if env is None else _check_env(env)
    program = args[0]
    if b"/" in program:
        executable_list: tuple[bytes, ...] = (program,)
    else:
        path_env = None
        if env is not None:
            path_env = {os.fsdecode(k): os.fsdecode(v) for k, v in env.items()}
        executable_list = tuple(
            os.path.join(os.fsencode(d), program) for d in os.get_exec_path(path_env)
        )
        if not executable_list:
            raise FileNotFoundError(
                errno.ENOENT, "No such file or directory (PATH is empty)", os.fsdecode(program)
            )
    cwd_b = None if cwd is None else _encode_arg(cwd, "cwd")
    if process_group is None:
        pgid = -1
    elif (
        isinstance(process_group, bool)
        or not isinstance(process_group, int)
        or not 0 <= process_group <= _INT_MAX
    ):
        raise ValueError(
            f"process_group must be a process group id (0 to {_INT_MAX}), not {process_group!r}"
        )
    else:
        pgid = process_group
    fds: tuple[int, ...] | None = () if close_fds else None
    if pass_fds:  # forces close_fds, as with subprocess (spawn() warns)
        checked = []
        for fd in pass_fds:
            if isinstance(fd, bool) or not isinstance(fd, int):
                raise TypeError(f"pass_fds must hold ints, not {type(fd).__name__}")
            checked.append(_check_fd(fd, "pass_fds"))
        fds = tuple(sorted(set(checked)))
    if type(umask) is not int and (isinstance(umask, bool) or not isinstance(umask, int)):
        raise TypeError(f"umask must be an int, not {type(umask).__name__}")
    if umask != -1 and not 0 <= umask <= 0o777:
        # umask() keeps only the permission bits: 0o1022 would silently be 0o022.
        raise ValueError(f"umask must be -1 (leave it) or 0 to 0o777, not {umask!r}")
    deathsig = 0 if pdeathsig is None else _check_pdeathsig(pdeathsig)
    limits = () if rlimits is None else check_rlimits(rlimits)
    uid = gid = extra_groups = None
    if user is not None or group is not None:
        uid, pw_entry = _resolve_user(user)
        gid = _resolve_group(group)
        if uid is not None and os.geteuid() == 0:
            # As root, running as another user means that user's groups, not
            # root's: a child keeping ours (group 0 among them) would keep
            # root's access to everything group-readable. A user in the
            # password database gets its primary group (unless ``group`` names
            # another) and its supplementary groups, as runuser does; a bare
            # uid gets no supplementary groups, and keeps our primary group
            # unless ``group`` is given.
            if pw_entry is not None:
                if gid is None:
                    gid = pw_entry.pw_gid
                extra_groups = os.getgrouplist(pw_entry.pw_name, gid)
            else:
                extra_groups = []
    return SpawnSpec(
        args,
        executable_list,
        env_list,
        cwd_b,
        None if stdin is None else _check_redirect(stdin, "stdin", False),
        None if stdout is None else _check_redirect(stdout, "stdout", False),
        None if stderr is None else _check_redirect(stderr, "stderr", True),
        fds,
        bool(start_new_session),
        pgid,
        uid,
        gid,
        extra_groups,
        umask,
        deathsig,
        limits,
    )


def _check_pdeathsig(pdeathsig: object) -> int:
    if pdeathsig is None:
        return 0
    if isinstance(pdeathsig, bool) or not isinstance(pdeathsig, int):
        raise TypeError(f"pdeathsig must be a signal number, not {type(pdeathsig).__name__}")
    if pdeathsig not in _ALL_SIGNALS:
        raise ValueError(f"pdeathsig: {pdeathsig} is not a valid signal number")
    if not sys.platform.startswith("linux"):
        raise NotImplementedError("pdeathsig needs Linux (prctl PR_SET_PDEATHSIG)")
    return int(pdeathsig)


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
# Spawn workers keep every signal blocked (see SpawnPool._work), except
# around the fork itself: the child starts with the mask of the thread that
# forked it, and must get the process's normal mask, not "everything blocked".
class _WorkerState(threading.local):
    normal_mask: set[int] | None = None  # set on spawn workers only


_worker = _WorkerState()

# Every valid signal as plain ints, for c_sigmask: with the public
# signal.pthread_sigmask and signal.valid_signals, the enum conversions (twice
# per pooled spawn) were most of a spawn worker's CPU time.
_ALL_SIGNALS = frozenset(int(sig) for sig in signal.valid_signals())


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


def spawn_sync(spec: SpawnSpec, mode: Literal["pidfd", "pid"]) -> Spawned:
    """Fork and exec the child; open its pidfd. Blocking; any thread.

    On failure, every descriptor made here is closed and a forked child is
    killed (if it got that far) and reaped before the exception propagates.
    """
    result = _spawn_direct(spec, mode)
    if result is not None:
        return result
    result = spawn_finish(spawn_start(spec, nonblocking=False), spec, mode, wait=True)
    assert result is not None  # wait=True
    return result


# Errors that mean "this kernel (or a seccomp filter) refuses clone with these
# flags, or close_range with CLOSE_RANGE_UNSHARE": the fallback is used from
# then on.
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.EPERM)


def _spawn_direct(spec: SpawnSpec, mode: Literal["pidfd", "pid"]) -> Spawned | None:
    """The fork/exec step in one GIL-free call of ``_clone_exec``; see that module.

    Returns a child that has exec'd, with its pidfd, or None, having created
    nothing, when the fallback must do it: ``_clone_exec`` is not in use, does
    not cover ``spec`` (pid mode; user and group changes, since glibc applies
    setuid/setgid/setgroups to every thread with a signal broadcast, which
    must not run in a child that shares our memory, and any credential change
    there would make our memory non-dumpable; see _clone_exec.c), or the
    kernel refused the call for lack of support (then every later spawn uses
    the fallback too).
    """
    global _clone_exec
    if (
        _clone_exec is None
        or mode != "pidfd"
        or spec.uid is not None
        or spec.gid is not None
        or spec.extra_groups is not None
    ):
        return None
    try:
        out = _clone_exec.spawn(
            spec.args,
            spec.executable_list,
            spec.env_list,
            spec.cwd,
            spec.stdin,
            spec.stdout,
            spec.stderr,
            spec.pass_fds,
            spec.start_new_session,
            spec.process_group,
            spec.umask,
            spec.pdeathsig,
            *((spec.rlimits, spec.cgroup_procs) if spec.rlimits or spec.cgroup_procs >= 0 else ()),
        )
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        _clone_exec = None  # no CLONE_PIDFD (before Linux 5.2), or a seccomp filter
        return None
    if len(out) == 5:
        return Spawned(*out)
    stage, err = out
    if stage == "close_range" and err in _UNSUPPORTED:
        # No close_range (before Linux 5.9), or no CLOSE_RANGE_UNSHARE (a
        # sandbox's own kernel); the child was reaped.
        _clone_exec = None
        return None
    raise _child_failure(stage, err, spec)


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


# --------------------------------------------------------------- the worker pool
SpecBuilder = Callable[[], SpawnSpec]
T = TypeVar("T")
# Turns a step's outcome into the requester's result, on the loop thread.
Finisher = Callable[[SpawnSpec, Spawned, asyncio.AbstractEventLoop], T]


# One lock for every job's queued -> running / withdrawn transition: held for
# a compare-and-set only, so sharing it costs nothing, and a burst does not pay
# for a lock object per spawn.
_job_state_lock = threading.Lock()


class _Job(Generic[T]):
    """One fork/exec step for the pool: queued -> running -> delivered, or withdrawn.

    ``finish`` turns the step's outcome into what the requester awaits (a
    ``Process``); it runs on the loop thread when the outcome is delivered,
    and is given the loop (asking asyncio for it costs a system call, getpid).
    """

    __slots__ = ("abandoned", "build", "finish", "future", "loop", "mode", "state")

    def __init__(
        self,
        build: SpecBuilder,
        mode: Literal["pidfd", "pid"],
        loop: asyncio.AbstractEventLoop,
        finish: Finisher[T],
    ) -> None:
        # build, finish and future are dropped once the outcome is delivered
        # (see _deliver): the worker thread that ran the job may still hold
        # it for a moment, and must not keep the finished Process alive.
        self.build: SpecBuilder | None = build
        self.mode = mode
        self.loop = loop
        self.finish: Finisher[T] | None = finish
        self.future: asyncio.Future[Any] | None = loop.create_future()
        self.state = "queued"
        # Set when the requester was cancelled while a worker ran the step:
        # the outcome is then discarded on delivery, never finished.
        self.abandoned = False

    def claim(self) -> bool:
        """Worker side: start the job unless its requester withdrew it."""
        with _job_state_lock:
            if self.state != "queued":
                return False
            self.state = "running"
            return True

    def withdraw(self) -> bool:
        """Requester side: take the job back if no worker has started it."""
        with _job_state_lock:
            if self.state != "queued":
                return False
            self.state = "withdrawn"
            return True


class _Started(NamedTuple):
    """A pooled spawn whose child is forked but whose exec is not confirmed.

    Only on the fallback: ``_clone_exec`` returns once the exec is done.

    Confirming takes the child past its exec: with vfork the worker resumes
    when the exec has gone past its point of no return, but the error pipe's
    close-on-exec write end closes a little later, and on a busy machine the
    child can be preempted in between (the worker then waited ~0.15 ms per
    spawn on average in a 1,000-child storm on 2 cores, with a long tail). A
    worker forks its next job meanwhile and confirms both afterwards. The
    spawning side of the fork lock stays held until the confirmation.
    """

    job: _Job[Any]
    spec: SpawnSpec
    forked: Forked
    release: Callable[[], None]  # ends this spawn's hold on the fork lock


class SpawnPool:
    """A small, bounded pool of threads that run the fork/exec step.

    Forking and exec'ing block the calling thread for a few hundred
    microseconds each (longer for big parents, or without vfork); a thousand
    concurrent spawns done on the loop thread stall it for most of a second.
    The workers take that off the loop, and, since ``_clone_exec`` releases
    the GIL for the whole step (and the fallback's ``fork_exec`` while a vfork
    parent waits for the exec: Python 3.12, and 3.11 since late 2023; not
    3.10, see docs/processes.md), several spawns proceed at once. Only this
    step runs in the pool: waiting for children stays thread-free.

    Threads start lazily, one per queued job up to ``size``, and retire after
    ``IDLE_TIMEOUT`` seconds without work, so a process that spawned a burst
    once does not keep them. They are started under :data:`exec_lock` (seed
    003) and are daemons, so they never hold up exit.
    """

    IDLE_TIMEOUT = 10.0

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._init_state()

    def _init_state(self) -> None:
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._threads: set[threading.Thread] = set()
        self._idle = 0  # workers blocked on the queue
        self._queued = 0  # items in the queue: jobs, and None for each worker told to exit
        self._exiting = 0  # the None items among them

    @property
    def size(self) -> int:
        return self._size

    def has_queued(self) -> bool:
        """Whether items wait in the queue (read without the lock: a hint)."""
        return self._queued > 0

    def resize(self, size: int) -> None:
        with self._lock:
            self._size = size
            extra = len(self._threads) - self._exiting - size
            for _ in range(max(0, extra)):
                # Each None makes one worker exit once it reaches it; until then
                # that worker no longer counts towards the size.
                self._queued += 1
                self._exiting += 1
                self._queue.put(None)

    def submit(self, jobs: Sequence[_Job[Any]]) -> None:
        """Queue ``jobs``, starting workers as needed (up to the size).

        A burst queues all of its jobs at once: one pass under the lock, so
        the loop thread, which runs this, is not held up for long, nor
        interrupted by a worker, while it does. Raises BlockingIOError (and
        queues nothing) when no worker runs and none can be started, and
        RuntimeError when the pool's size is 0.
        """
        with self._lock:
            self._queued += len(jobs)
            # Items ahead of these jobs (exit markers included) take idle
            # workers first; start a worker for each item none would be left
            # for, up to the size.
            wanted = min(
                self._queued - self._idle, self._size - (len(self._threads) - self._exiting)
            )
            failed: RuntimeError | None = None
            for _ in range(wanted):
                thread = threading.Thread(target=self._work, name="aioproc-spawn", daemon=True)
                self._threads.add(thread)
                try:
                    with exec_lock:  # seed 003: no thread creation during exec_replace
                        thread.start()
                except RuntimeError as exc:
                    # Out of processes/threads (RLIMIT_NPROC, a pids cgroup). A
                    # worker that already runs will take the jobs.
                    self._threads.discard(thread)
                    failed = exc
                    break
            if len(self._threads) - self._exiting <= 0:
                # No worker will ever take these jobs: fail them, queue nothing.
                self._queued -= len(jobs)
                if failed is not None:  # the way fork would have failed
                    raise BlockingIOError(
                        errno.EAGAIN,
                        f"cannot start a spawn worker thread ({failed}): the limit on "
                        "processes (RLIMIT_NPROC or a pids cgroup) is reached",
                    ) from failed
                # Resized to 0 after these spawns chose the pool, in the same
                # loop iteration.
                raise RuntimeError(
                    "the spawn pool has no workers: set_spawn_workers(0) was called "
                    "while these spawns waited to be handed to it"
                )
            put = self._queue.put
            for job in jobs:
                put(job)

    def _work(self) -> None:
        # Block every signal in this thread, so that process-directed signals
        # go to threads that expect them. The signal hub hands a signal back
        # to its previous disposition with the loop's remove_signal_handler,
        # which leaves SIG_DFL in place for a moment; a signal taken by a
        # worker in that moment would get the default action (death, for
        # most). The children get the normal mask: _clone_exec gives it to
        # them (set_child_mask); on the fallback, the fork itself runs with it
        # (_fork_exec).
        _worker.normal_mask = c_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
        if _clone_exec is not None:
            _clone_exec.set_child_mask(_worker.normal_mask)
        me = threading.current_thread()
        # Children forked by this worker whose exec is not confirmed yet (see
        # _Started): the worker forks the next one meanwhile.
        started: list[_Started] = []
        while True:
            if started:
                self._settle(started, wait=False)
            if started:
                # Busy: take a job only if one is there, else wait for the exec.
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    self._settle(started, wait=True)
                    continue
                if job is None:
                    self._settle(started, wait=True)
                was_idle = 0
            else:
                with self._lock:
                    self._idle += 1
                try:
                    job = self._queue.get(timeout=self.IDLE_TIMEOUT)
                except queue.Empty:
                    with self._lock:
                        self._idle -= 1
                        # Retire unless that would strand an item: submit()
                        # counts a job in _queued (under this lock) before
                        # putting it, and starts no thread for it while it
                        # counts enough idle workers, this one included. So
                        # stay while the other idle workers cannot take every
                        # item counted.
                        if self._queued <= self._idle:
                            self._threads.discard(me)
                            return
                    continue
                was_idle = 1
            with self._lock:
                self._idle -= was_idle
                self._queued -= 1
                if job is None:
                    # Nothing of this worker's is left unconfirmed (above).
                    self._exiting -= 1
                    self._threads.discard(me)
                    return
            self._run(job, started)
            # Drop the job before idling: its future holds the finished
            # Process, which must be freed as soon as its owner drops it (its
            # pipes are closed then), not when this worker's next job comes.
            del job

    # At most this many children per worker wait for their exec to be
    # confirmed; with more, the worker waits for the oldest first.
    MAX_STARTED = 4

    def _run(self, job: _Job[Any], started: list[_Started]) -> None:
        if not job.claim():
            return  # withdrawn: its requester was cancelled before we got to it
        try:
            assert job.build is not None  # dropped only after delivery
            spec = job.build()
            if len(started) >= self.MAX_STARTED:
                self._settle(started, wait=True)
            if fork_lock.try_acquire_spawning():
                release: Callable[[], None] = fork_lock.release_spawning
            else:
                # An exclusive holder or waiter is in the way. The spawns this
                # worker started still hold the spawning side, and an
                # exclusive waiter waits for them: confirm them first, or
                # this wait and that one would wait on each other for ever.
                self._settle(started, wait=True)
                hold = fork_lock.spawning_sync()
                hold.__enter__()

                def release() -> None:
                    hold.__exit__(None, None, None)

            try:
                done = _spawn_direct(spec, job.mode)  # exec'd already: nothing to confirm
                if done is None:
                    forked = spawn_start(spec, nonblocking=True)
            except BaseException:
                release()
                raise
        except BaseException as exc:
            _hand_over(job, None, exc)
            return
        if done is not None:
            release()
            _hand_over(job, (spec, done), None)
            return
        started.append(_Started(job, spec, forked, release))

    @staticmethod
    def _settle(started: list[_Started], wait: bool) -> None:
        """Hand over the outcome of every started spawn whose exec is confirmed.

        With ``wait``, wait for each one, leaving ``started`` empty.
        """
        left = []
        for item in started:
            job, spec, forked, release = item
            try:
                result = spawn_finish(forked, spec, job.mode, wait=wait)
            except BaseException as exc:
                release()
                _hand_over(job, None, exc)
                continue
            if result is None:
                left.append(item)
                continue
            # The child exec'd and its pidfd is open: the spawning hold ends.
            release()
            _hand_over(job, (spec, result), None)
        started[:] = left

    def _after_fork_in_child(self) -> None:
        # The workers did not survive the fork; start afresh.
        self._lock = threading.Lock()
        self._init_state()


class _Inbox:
    """Outcomes of pooled spawns on their way to one loop.

    A worker that finishes a step appends the outcome here and wakes the loop
    only if no wake-up is pending already: in a burst, one wake-up (one write
    to the loop's self-pipe, one GIL hand-over) carries many outcomes. The
    loop delivers them for at most ``BUDGET`` seconds per turn and leaves the
    rest for the next one, so a pile of outcomes never stalls it.

    While more jobs wait in the pool's queue, a worker does not wake the loop
    for each outcome: more will follow within microseconds, and it lets up to
    ``GATHER`` of them collect first. A wake-up costs the loop a turn (an
    epoll_wait, the self-pipe read, the loop's own bookkeeping): in a storm of
    1,000 spawns the loop ran 2.7 turns per child, and 0.6 with 16 gathered;
    its CPU per child fell by 20-30 % and the storm ran ~10 % faster. No
    outcome can be left waiting for a wake-up that never comes (its worker may
    then block for long in its next job: a slow exec, a user lookup, the fork
    lock): while this loop has pooled jobs in flight, it looks for gathered
    outcomes itself every ``POLL`` seconds (backing off to ``POLL_MAX`` while
    it finds none), so a gathered outcome waits about a millisecond at most.
    """

    BUDGET = 0.001
    GATHER = 16
    POLL = 0.001
    POLL_MAX = 0.016

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the loop owns its inbox (see _inboxes), and the inbox must
        # not keep a dropped loop alive. (A worker holds its job's loop while
        # it puts.)
        self._loop_ref = weakref.ref(loop)
        self._items: collections.deque[
            tuple[_Job[Any], tuple[SpawnSpec, Spawned] | None, BaseException | None]
        ] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False  # a drain is queued on the loop, or running
        # Whether a poll is queued on the loop. (Not its handle, which would
        # hold the loop.)
        self._polling = False
        self._poll_delay = self.POLL
        self._pid = os.getpid()  # the process whose children the outcomes hold

    def put(
        self, job: _Job[Any], result: tuple[SpawnSpec, Spawned] | None, exc: BaseException | None
    ) -> None:
        """Worker side."""
        with self._lock:
            self._items.append((job, result, exc))
            if self._scheduled:
                return
            if (
                len(self._items) < self.GATHER
                and _pool.has_queued()
                and _inflight.get(job.loop, 0) > len(self._items)
            ):
                # A burst: jobs wait in the queue, and this loop has some not
                # done yet, whose outcomes will follow (or the poll finds these).
                return
            self._scheduled = True
        try:
            job.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop was closed meanwhile: nobody will ever want them
            self.discard_all()

    def discard_all(self) -> None:
        """Kill and reap the children of outcomes nobody will take; close their pipes.

        For a closed loop: a worker found it closed, the inbox is being freed
        with its loop (a loop closed with pooled spawns in flight and no
        shutdown, so a queued drain never ran), or the process is exiting.
        Never in a forked child: those children are its parent's.
        """
        if os.getpid() != self._pid:
            return
        with self._lock:
            items = list(self._items)
            self._items.clear()
            # No drain will run: a later outcome tries (and fails) to queue one
            # again, and is discarded too.
            self._scheduled = False
        for job, res, _ in items:
            _abandon(job, res)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # late in interpreter shutdown
            self.discard_all()

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Loop side: pooled jobs of ``loop`` are in flight; poll for outcomes."""
        self._poll_delay = self.POLL
        if not self._polling:
            self._polling = True
            loop.call_later(self.POLL, self._poll)

    def _poll(self) -> None:
        loop = self._loop_ref()
        if loop is None:  # pragma: no cover - this runs on the loop
            return
        with self._lock:
            gathered = bool(self._items) and not self._scheduled
            if gathered:
                self._scheduled = True
        if gathered:
            self._poll_delay = self.POLL
            self._drain()
        else:
            self._poll_delay = min(self._poll_delay * 2, self.POLL_MAX)
        if loop in _inflight:
            loop.call_later(self._poll_delay, self._poll)
        else:
            self._polling = False

    def _drain(self) -> None:
        deadline = time.perf_counter() + self.BUDGET
        while True:
            with self._lock:
                if not self._items:
                    self._scheduled = False
                    return
                job, result, exc = self._items.popleft()
            _deliver(job, result, exc)
            if time.perf_counter() > deadline:
                # Still scheduled as far as workers can tell: continue next turn.
                # (We run on the loop, so it is alive.)
                loop = self._loop_ref()
                assert loop is not None
                loop.call_soon(self._drain)
                return


# The inboxes, by the loop they serve (a worker looks one up for every
# outcome). The loop owns its inbox (_util.owned_by_loop), the registry holds
# it weakly: a loop closed with outcomes on their way (a drain queued that
# never runs, or gathered ones) frees the inbox, which kills and reaps those
# children and closes their pipes (_Inbox.discard_all); a worker that finds no
# inbox for its outcome's loop does the same with that one.
_inboxes: PerLoop[_Inbox] = PerLoop()
_inbox_of = _inboxes.get


def _inbox_for(loop: asyncio.AbstractEventLoop) -> _Inbox:
    """``loop``'s inbox, made if needed. On the loop's thread, before any of
    its jobs reaches the pool (_submit_batch), so that every outcome finds
    it."""
    inbox = _inbox_of(loop)
    if inbox is None:
        anchor_loop(loop)  # OSError with no descriptor free, before the inbox exists
        inbox = _Inbox(loop)
        owned_by_loop(loop, inbox)
        _inboxes.add(loop, inbox)
    return inbox


def _hand_over(
    job: _Job[Any], result: tuple[SpawnSpec, Spawned] | None, exc: BaseException | None
) -> None:
    """Deliver a worker's outcome to the waiting coroutine, from the worker thread."""
    inbox = _inbox_of(job.loop)
    if inbox is not None:
        inbox.put(job, result, exc)
    else:  # the loop was closed: nobody will ever want it
        _abandon(job, result)


def _abandon(job: _Job[Any], result: tuple[SpawnSpec, Spawned] | None) -> None:
    """An outcome for a closed loop: discard the child, stop counting the job.

    Off the loop's thread, but that loop runs no more, so nothing else
    touches its count in _inflight (which would otherwise keep it alive).
    """
    if result is not None:
        discard(result[1])
    if job.loop in _inflight:
        _job_ended(job.loop)


def _deliver(
    job: _Job[Any], result: tuple[SpawnSpec, Spawned] | None, exc: BaseException | None
) -> None:
    """On the loop thread: the step's outcome reaches its requester."""
    job.state = "done"
    _job_ended(job.loop)
    future, finish = job.future, job.finish
    job.build = job.finish = job.future = None
    assert future is not None
    assert finish is not None
    if job.abandoned or future.cancelled():
        # The requester is gone (see cancelled()): nobody will use the child.
        if result is not None:
            discard(result[1])
        if job.abandoned and not future.done():
            future.set_result(None)
        return
    if exc is not None:
        future.set_exception(exc)
        return
    assert result is not None
    try:
        value = finish(result[0], result[1], job.loop)
    except BaseException as err:  # finish() has discarded the child
        future.set_exception(err)
    else:
        future.set_result(value)


def discard(result: Spawned) -> None:
    """Kill and reap a child nobody wants any more, and close its descriptors."""
    for fd in (result.stdin, result.stdout, result.stderr):
        if fd is not None:
            _close_all([fd])
    if result.pidfd is not None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(result.pidfd, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, result.pidfd, os.WEXITED)
        os.close(result.pidfd)
    else:
        # pid mode: unreaped and ours, so the PID still names the child.
        with contextlib.suppress(ProcessLookupError):
            os.kill(result.pid, signal.SIGKILL)
        _reap_failed(result.pid)


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


_pool = SpawnPool(_default_workers())
_inflight: dict[asyncio.AbstractEventLoop, int] = {}  # pooled spawns per loop


# The task that last spawned inline on this thread's loop, and when. The same
# task spawning again (sequential code) stays inline; another task within
# _BURST_WINDOW seconds is taken for a burst and goes to the pool, which from
# then on stays in use until the burst's jobs are done (_inflight). (A loop
# callback to mark the end of each iteration would be exact, but costs a loop
# turn per sequential spawn, spent right beside the newly forked child.) The
# loop and the task are kept by id: a reference would keep the loop alive, or
# the task's result, a Process; a new task that reuses the id of a finished
# one just counts as the same. One record per thread, since a loop runs on one.
class _InlineRecord(threading.local):
    last: tuple[int, int, float] | None = None  # (id(loop), id(task), time)


_inlined = _InlineRecord()
_BURST_WINDOW = 0.001
_batches: dict[
    asyncio.AbstractEventLoop, list[_Job[Any]]
] = {}  # jobs waiting for the iteration end


def set_spawn_workers(workers: int) -> None:
    """Set how many threads may run fork/exec steps at once (default ``min(4, CPUs)``).

    ``0`` runs every spawn inline on the event loop thread. Waiting for
    children never uses these threads.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative int, not {workers!r}")
    _pool.resize(workers)


def pooled_in_flight() -> bool:
    """Whether a spawn handed to the pool has not reached its loop yet (any loop).

    Its child may exist already, unknown to ``_waiting`` until the outcome is
    delivered on the loop thread (``_deliver``: the count drops there, in the same
    step as the child is registered). See ``aioproc.reap_orphans``.
    """
    return bool(_inflight)


def get_spawn_workers() -> int:
    """The current size of the spawn worker pool."""
    return _pool.size


def inline_allowed(
    loop: asyncio.AbstractEventLoop, inline: bool = False, heavy: bool = False
) -> int | None:
    """Whether this spawn should run its fork/exec step here, on the loop thread.

    Yes when no pooled spawn of this loop is in flight and no *other* task
    spawned inline in the last millisecond: one spawn blocks the loop for a
    fraction of a millisecond, and skipping the thread hand-off keeps
    sequential spawning as fast as a bare ``posix_spawn`` with no extra
    thread. Always with ``inline=True`` (a child with a parent-death signal
    must be forked by a thread that outlives it) or with no pool. Never for a
    ``heavy`` spawn (one with a user or group) while there is a pool: its
    name lookups may ask a directory server (NSS), and it needs a real fork.

    Returns None for "no, use the pool", else the id of the current task, for
    :func:`fork_here` to record.
    """
    if not inline and _pool.size and (heavy or loop in _inflight):
        return None  # the common answer in a burst, found cheaply
    task = id(asyncio.current_task(loop))
    if inline or not _pool.size:
        return task
    last = _inlined.last
    if (
        last is None
        or last[0] != id(loop)
        or last[1] == task
        or time.monotonic() - last[2] >= _BURST_WINDOW
    ):
        return task
    return None


def fork_here(
    spec: SpawnSpec, mode: Literal["pidfd", "pid"], loop: asyncio.AbstractEventLoop, task: int
) -> Spawned | None:
    """The fork/exec step on the loop thread; None if the fork lock is busy.

    ``task`` is what :func:`inline_allowed` returned.
    """
    if not fork_lock.try_acquire_spawning():
        return None
    # Work that would otherwise run right after the fork, beside the new
    # child, runs before it instead.
    _waiting.flush_put_off(loop)
    try:
        return spawn_sync(spec, mode)
    finally:
        fork_lock.release_spawning()
        # From the end of the spawn: the next task of a burst asks right after
        # it, however long this fork took.
        _inlined.last = (id(loop), task, time.monotonic())


def must_stay_inline(inline: bool) -> bool:
    """Whether a spawn that found the fork lock busy must still not use the pool."""
    return inline or _pool.size == 0


async def fork_here_locked(spec: SpawnSpec, mode: Literal["pidfd", "pid"]) -> Spawned:
    """The fork/exec step on the loop thread, waiting for the fork lock first."""
    async with fork_lock.spawning():
        return spawn_sync(spec, mode)


def enqueue(
    build: SpecBuilder,
    mode: Literal["pidfd", "pid"],
    finish: Finisher[T],
    loop: asyncio.AbstractEventLoop,
) -> _Job[T]:
    """Queue the step for the pool; ``job.future`` resolves to ``finish(spec, spawned, loop)``.

    This is all a spawn costs the loop in a burst, and a burst runs it once
    per task within a single loop iteration, so it does as little as it can:
    argument checking runs on the worker, and the jobs of one iteration are
    handed to the pool together once it is over (waking a worker mid-burst
    would have it compete with the loop thread for the GIL). ``loop`` is the
    running loop, which the caller has at hand already.
    """
    job = _Job(build, mode, loop, finish)
    _inflight[loop] = _inflight.get(loop, 0) + 1
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = []
        loop.call_soon(_submit_batch, loop)
    batch.append(job)
    return job


async def cancelled(
    job: _Job[T], future: asyncio.Future[Any], close: Callable[[T], object]
) -> None:
    """Clean up after a requester cancelled while awaiting ``future`` (its ``job.future``).

    ``close`` disposes of a finished result that arrived just before the
    cancellation (for a ``Process``: kill and reap the child, close its pipes).

    If no worker has started the step, withdraw it: nothing was created. If
    one has, the child may exist any moment now: wait for the outcome (as
    long as the child's exec takes, usually under a millisecond, longer on a
    busy machine; see ``_Started``), kill and reap the child, close its
    pipes, and only then let the cancellation through, so that a cancelled
    spawn() never leaves anything behind, not even for a moment. (Outcomes
    are delivered on the loop thread, so the state checked here cannot
    change under us.)
    """
    if job.withdraw():
        _job_ended(job.loop)
        return
    if job.state == "withdrawn":
        return  # the pool refused it (see _submit_batch): nothing was created
    if job.state == "done":
        # Delivered already, to the future the requester was awaiting; its
        # cancellation came after. deliver() discarded the outcome if that
        # future was cancelled by then; otherwise it holds a finished result.
        if not future.cancelled() and future.exception() is None:
            close(future.result())
        return
    job.abandoned = True
    outcome = job.future = job.loop.create_future()
    while not outcome.done():
        try:
            await asyncio.wait([outcome])
        except asyncio.CancelledError:
            continue  # cancelled again: the outcome still has to be cleaned up


def _job_ended(loop: asyncio.AbstractEventLoop) -> None:
    left = _inflight[loop] - 1
    if left:
        _inflight[loop] = left
    else:
        del _inflight[loop]


def _submit_batch(loop: asyncio.AbstractEventLoop) -> None:
    # Jobs withdrawn before the hand-over have nothing left to do.
    jobs = [job for job in _batches.pop(loop, ()) if job.state == "queued"]
    if not jobs:
        return
    try:
        # The inbox first: making it can fail too (owned_by_loop needs a
        # descriptor the first time), and no outcome may come without one.
        inbox = _inbox_for(loop)
        _pool.submit(jobs)
    except Exception as exc:
        # Nothing was created; every requester of the batch gets the error.
        for job in jobs:
            if job.withdraw():
                _job_ended(loop)
            if job.future is not None and not job.future.done():
                job.future.set_exception(exc)
        return
    inbox.watch(loop)


def _discard_unclaimed_at_exit() -> None:
    for inbox in _inboxes.objects():
        inbox.discard_all()


atexit.register(_discard_unclaimed_at_exit)


def _after_fork_in_child() -> None:
    _inboxes.clear()  # (the inboxes know they are the parent's: see discard_all)
    _batches.clear()
    _pool._after_fork_in_child()
    _inflight.clear()
    _inlined.last = None


os.register_at_fork(after_in_child=_after_fork_in_child)
