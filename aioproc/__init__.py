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
from ._exceptions import Error, ProcessError, TimeoutExpired
from ._forklock import ForkLock, exec_replace, fork_lock
from ._process import Process, spawn
from ._run import run
from ._spawn import DEVNULL, PIPE, STDOUT, get_spawn_workers, set_spawn_workers
from ._status import CompletedProcess, ExitStatus
from ._streams import ProcessReader, ProcessWriter
from ._waiting import get_wait_mode, set_wait_mode

__version__ = "0.1.0.dev0"

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
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
    "run",
    "set_spawn_workers",
    "set_wait_mode",
    "signals",
    "spawn",
]


def _fixup_module_metadata() -> None:
    # Show users aioproc.Process, not aioproc._process.Process.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("aioproc._"):
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):  # pragma: no cover
                pass


_fixup_module_metadata()
del _fixup_module_metadata
