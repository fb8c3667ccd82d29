"""The fork/exec step in one call: aioproc's C module ``_clone_exec``, else the fallback.

Where it is built (``_clone_exec.c``), one call, with the GIL released
throughout, makes the pipes, clones the child (``CLONE_VM | CLONE_VFORK |
CLONE_PIDFD``), and learns the outcome of the exec from memory the child
shares, so it returns a child that has exec'd, with its pidfd
(:func:`_spawn_direct`). What it does not cover, or where the kernel refuses
it, goes to the fallback (``_fallback``). :func:`spawn_sync` is the whole
step as one blocking call, for any thread: it either returns a child with its
pidfd open and its pipes set up, or raises after closing every descriptor it
made and reaping any child it forked.

``_clone_exec`` is read from this module at each use (tests replace it, and
:func:`_spawn_direct` drops it for good when the kernel lacks support).
"""

from __future__ import annotations

import errno
import os
from typing import Any, Literal

from ._fallback import _child_failure, spawn_finish, spawn_start
from ._spec import Spawned, SpawnSpec

__all__ = [
    "spawn_sync",
]

_clone_exec: Any
try:
    from .. import _clone_exec
except ImportError:  # pragma: no cover - not built (no compiler at install time)
    _clone_exec = None
if os.environ.get("AIOPROC_NO_C_SPAWN") == "1":
    _clone_exec = None


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
