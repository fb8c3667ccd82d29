"""From arguments to a running child: argument checking and the fork/exec step.

The package, one module per mechanism, each importing only those above it in
this list:

* ``_spec``: every check that can run before forking, on the caller's thread
  (a clear ``TypeError``/``ValueError`` with nothing created), giving a
  :class:`SpawnSpec`; :class:`Spawned`, what the fork/exec step returns.
* ``_fallback``: the fork/exec step on CPython's own
  ``_posixsubprocess.fork_exec`` (what ``subprocess.Popen`` uses), then
  ``pidfd_open``, in two halves (``spawn_start`` forks, ``spawn_finish``
  learns whether the exec happened) so that a spawn worker can fork its next
  child while an earlier one is still on its way through the exec.
* ``_direct``: the step in one GIL-free call of aioproc's C module
  ``_clone_exec`` where it is built (``_clone_exec.c``), which returns a child
  that has exec'd, with its pidfd; and ``spawn_sync``, the whole step as one
  blocking call that falls back to ``_fallback`` for what the C step does not
  cover (user and group changes, PID-mode waiting), where it is not built,
  where the kernel refuses it, or with ``AIOPROC_NO_C_SPAWN=1`` in the
  environment. Either way it returns a child with its pidfd open and its
  pipes set up, or raises after closing every descriptor it made and reaping
  any child it forked.
* ``_workers``: the spawn worker pool, threads that run the step off the loop.
* ``_inbox``: the loop's side: whether a spawn's step runs inline or in the
  pool, the hand-over of pooled jobs, and the inbox per loop that brings their
  outcomes back; the one pool instance and the process-wide hooks (at exit,
  after a fork).

This module re-exports what the rest of aioproc uses.
"""

from __future__ import annotations

from ._inbox import (
    cancelled,
    discard,
    enqueue,
    fork_here,
    fork_here_locked,
    get_spawn_workers,
    inline_allowed,
    must_stay_inline,
    pooled_in_flight,
    set_spawn_workers,
)
from ._spec import (
    DEVNULL,
    PIPE,
    STDOUT,
    Redirect,
    Spawned,
    SpawnSpec,
    StrOrBytesPath,
    make_spec,
)

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "Redirect",
    "SpawnSpec",
    "Spawned",
    "StrOrBytesPath",
    "cancelled",
    "discard",
    "enqueue",
    "fork_here",
    "fork_here_locked",
    "get_spawn_workers",
    "inline_allowed",
    "make_spec",
    "must_stay_inline",
    "pooled_in_flight",
    "set_spawn_workers",
]
