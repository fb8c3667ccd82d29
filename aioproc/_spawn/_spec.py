"""A spawn's arguments, checked and encoded: :func:`make_spec` and :class:`SpawnSpec`.

Everything that can be checked before forking is checked here, on the caller's
thread, and raises a clear ``TypeError``/``ValueError`` with nothing created.
Also the other end of the fork/exec step, :class:`Spawned` (what it returns),
and the stdio constants (``PIPE``, ``STDOUT``, ``DEVNULL``). Creates nothing,
forks nothing, and imports nothing else of the package.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any, NamedTuple, Protocol, Union

from .._limits import check_rlimits

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "HasFileno",
    "Redirect",
    "SpawnSpec",
    "Spawned",
    "StrOrBytesPath",
    "make_spec",
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


# Every valid signal as plain ints, for c_sigmask: with the public
# signal.pthread_sigmask and signal.valid_signals, the enum conversions (twice
# per pooled spawn) were most of a spawn worker's CPU time.
_ALL_SIGNALS = frozenset(int(sig) for sig in signal.valid_signals())
