"""What ``aioproc run`` does with each signal whose default action would kill it.

A supervisor killed by a stray signal orphans its services, so no such signal keeps
its default action, except the synchronous faults:

* **Shutdown** (:data:`SHUTDOWN`): SIGINT, SIGTERM, SIGQUIT (as supervisord),
  SIGPWR (power is failing: stop cleanly while there is time), SIGXCPU (the soft CPU
  limit; SIGKILL follows at the hard one). SIGHUP (reload the configuration) and
  SIGUSR1 (reopen the log files) are handled by ``_run.py`` itself.
* **Ignored** (:data:`IGNORED`, logged): SIGUSR2 (reserved for a later command),
  SIGALRM, SIGVTALRM and SIGPROF (timers nobody set), SIGIO/SIGPOLL,
  SIGSTKFLT (unused on Linux), SIGRTMIN..SIGRTMAX (see :func:`ignore_realtime`).
* **Already ignored** by Python itself: SIGPIPE and SIGXFSZ (write() fails with EPIPE
  or EFBIG instead); children get them back at their default (``restore_signals``).
* **Default kept**: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS and SIGABRT.
  Raised by the kernel for a fault, they cannot be handled in Python (the handler
  would only run after the faulting instruction, which would fault again). If one
  kills ``aioproc run``, the services get their parent-death signal.

Ignoring is done with a handler, never ``SIG_IGN``: an ignored disposition is
inherited across ``execve`` and the services would silently ignore the signal too,
while a handled one is reset to the default in the new program.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

__all__ = ["IGNORED", "SHUTDOWN", "ignore_realtime"]

SHUTDOWN = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGQUIT,
    signal.SIGPWR,
    signal.SIGXCPU,
)

IGNORED = (
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    *(
        # Python 3.10's signal module has no SIGSTKFLT: ignore_realtime() drops it there.
        [signal.Signals["SIGSTKFLT"]]  # (not in typeshed)
        if "SIGSTKFLT" in signal.Signals.__members__
        else []
    ),
    signal.SIGRTMIN,
    signal.SIGRTMAX,
)

#: SIGSTKFLT's number on Linux, for Pythons whose ``signal.Signals`` lacks it.
_STKFLT = 16


def _nothing(signum: int, frame: FrameType | None) -> None:
    pass


@contextlib.contextmanager
def ignore_realtime() -> Iterator[None]:
    """Catch and drop SIGRTMIN+1..SIGRTMAX-1 inside the block (main thread only),
    and SIGSTKFLT where ``signal.Signals`` has no member for it (Python 3.10).

    The signal hub takes the members of :class:`signal.Signals`, which leaves out
    the real-time signals between SIGRTMIN and SIGRTMAX. A Python handler that does
    nothing is enough for them: the loop reads and drops their wakeup byte, as it
    does for every signal it has no handler for.
    """
    unnamed = list(range(signal.SIGRTMIN + 1, signal.SIGRTMAX))
    if "SIGSTKFLT" not in signal.Signals.__members__:  # pragma: no cover - 3.10
        unnamed.append(_STKFLT)
    saved: dict[int, object] = {}
    try:
        for signum in unnamed:
            saved[signum] = signal.signal(signum, _nothing)
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
