"""The ``aioproc`` command's entry point, kept outside the ``aioproc`` package on purpose.

Importing anything of ``aioproc`` runs ``aioproc/__init__.py`` first, which imports
the whole library (about 0.1 s). A Ctrl-C in that window used to end the command
with a ``KeyboardInterrupt`` traceback. This module imports only modules built into
the interpreter (``_signal``, ``posix``: not even ``signal``, whose enums take a
few milliseconds), so :func:`main` takes SIGINT, SIGTERM and SIGHUP before any
other import: until the command subscribes to them itself (``aioproc run`` and
``aioproc init`` do before they start anything), such a signal ends the process
quietly, by that very signal (the shell sees 128+N), as it would a program that
had not started anything yet. Signals that were ignored when we started (``nohup``,
a shell's background job) stay ignored.

For ``aioproc run``, SIGUSR1 and SIGUSR2 are dropped in that window instead: SIGUSR1
asks a running supervisor to reopen its log files (logrotate sends it), and one that
comes while the command is still starting must not kill it; there is nothing to
reopen yet, as no log file is open. (A handler, not ``SIG_IGN``: it is not inherited
across ``execve``.)

What no code of ours can cover: the interpreter's own start-up before this module
runs (``site`` and its ``.pth`` files), and the import of this module itself up to
the lines below (tens of microseconds from its compiled ``.pyc``): a SIGINT there
is Python's to report.

A library user never imports this module: the handlers are the command's alone.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # built in: no import time
import posix
import sys

TYPE_CHECKING = False  # as typing.TYPE_CHECKING (mypy knows the name), without typing
if TYPE_CHECKING:
    from types import FrameType

__all__ = ["main"]

_EARLY = (2, 15, 1)  # SIGINT, SIGTERM, SIGHUP (their numbers on Linux)
_DROPPED = (10, 12)  # SIGUSR1, SIGUSR2, for ``aioproc run``
_signals = _signal


def _drop(signum: int, frame: FrameType | None) -> None:
    pass


def _die_quietly(signum: int, frame: FrameType | None) -> None:
    # Nothing has been started: leave as the signal's default action would.
    _signals.signal(signum, _signals.SIG_DFL)
    posix.kill(posix.getpid(), signum)


# At import, not in main(): the console script imports this module, then calls main(),
# and a signal between the two would be a KeyboardInterrupt in the script itself.
for _sig in _EARLY:
    if _signals.getsignal(_sig) != _signals.SIG_IGN:
        _signals.signal(_sig, _die_quietly)
if sys.argv[1:2] == ["run"]:
    for _sig in _DROPPED:
        if _signals.getsignal(_sig) != _signals.SIG_IGN:
            _signals.signal(_sig, _drop)


def main() -> int:
    """``aioproc ...``: the real command line (``aioproc._cli``), imported only now."""
    from aioproc._cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
