"""Handing the controlling terminal to ``aioproc init``'s child, as tini does.

A terminal sends the signals of its special keys (Ctrl-C: SIGINT, Ctrl-\\: SIGQUIT,
Ctrl-Z: SIGTSTP) to its whole *foreground process group*. If ``aioproc init`` and its
child were both in it, one Ctrl-C would reach the child twice: once from the terminal
and once forwarded by init (``aioproc init -- aioproc run`` took the second for "kill
everything now"). So when init runs in the foreground of its terminal, the child
gets a process group of its own and that group is made the terminal's foreground:
keys reach the child alone, and init still forwards what is sent to init itself
(``docker stop``'s SIGTERM, ``kill``).

Init is then a background process of its terminal. The terminal stops a background
process that changes the terminal's settings (``tcsetpgrp`` included) with SIGTTOU,
and with ``TOSTOP`` one that writes to it; a *blocked* SIGTTOU lets both proceed, so
init blocks SIGTTOU and SIGTTIN once the child is spawned (the child, already forked,
keeps its own mask).
"""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["foreground_terminal", "give_terminal", "take_terminal_back"]

_TTY_SIGNALS = {signal.SIGTTOU, signal.SIGTTIN}


def foreground_terminal() -> int | None:
    """stdin, if it is our controlling terminal and our process group its foreground."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:  # ENOTTY: not our controlling terminal
        pass
    return None


def give_terminal(fd: int, pgid: int) -> bool:
    """Make ``pgid`` the foreground process group of terminal ``fd``; False if refused.

    Blocks SIGTTOU and SIGTTIN in the calling thread first, for good (see the module
    docstring): call it after the child has been spawned. The child may already have
    exited (its group is gone): then the terminal stays where it is.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _TTY_SIGNALS)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        return False
    return True


def take_terminal_back(fd: int) -> None:
    """Make our own process group the foreground of terminal ``fd`` again, if we can."""
    with contextlib.suppress(OSError):
        os.tcsetpgrp(fd, os.getpgrp())
