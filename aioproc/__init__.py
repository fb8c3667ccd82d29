"""aioproc: asyncio-native subprocesses that are correct under races.

* :func:`spawn` starts a child; :class:`Process` waits for it with no thread
  (a pidfd watched by the event loop) and signals it without ever reaching a
  process that reused its PID.
* :func:`run` runs a command to completion with a timeout.
* :mod:`aioproc.signals` is a signal hub with per-subscriber queues whose stop
  never drops a signal in flight.
* :data:`fork_lock` coordinates spawning with code that creates inheritable
  descriptors.
"""

from __future__ import annotations

from . import signals
from ._cgroup import Cgroup
from ._exceptions import Error
from ._forklock import ForkLock, exec_replace, fork_lock
from ._orphans import reap_orphans
from ._process import Process, spawn
from ._run import run
from ._spawn import DEVNULL, PIPE, STDOUT, get_spawn_workers, set_spawn_workers
from ._status import CompletedProcess, ExitStatus, ProcessError, TimeoutExpired
from ._streams import ProcessReader, ProcessWriter
from ._util import fixup_module_metadata as _fixup_module_metadata
from ._waiting import get_wait_mode, set_wait_mode

__version__ = "0.1.0.dev0"

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "Cgroup",
    "CompletedProcess",
    "Error",
    "ExitStatus",
    "ForkLock",
    "Process",
    "ProcessError",
    "ProcessReader",
    "ProcessWriter",
    "TimeoutExpired",
    "__version__",
    "exec_replace",
    "fork_lock",
    "get_spawn_workers",
    "get_wait_mode",
    "reap_orphans",
    "run",
    "set_spawn_workers",
    "set_wait_mode",
    "signals",
    "spawn",
]


_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata
