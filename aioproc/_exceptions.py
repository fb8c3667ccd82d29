"""The exceptions aioproc raises.

The tree, with the standard exceptions aioproc reuses where users already
catch them::

    Exception
    ├── aioproc.Error                      base of every aioproc-specific error
    │   ├── aioproc.ProcessError           ExitStatus.check() / run(check=True) on failure
    │   │                                  (also a subprocess.CalledProcessError)
    │   └── aioproc.TimeoutExpired         run(timeout=...) ran out of time
    │                                      (also a subprocess.TimeoutExpired and a TimeoutError)
    ├── ProcessLookupError                 signalling a process that has finished
    ├── FileNotFoundError                  spawn: the program (or the cwd) does not exist
    ├── PermissionError                    spawn: the program is not executable
    ├── NotADirectoryError                 spawn: the cwd is not a directory
    ├── OSError                            spawn: any other failure of the fork/exec step
    ├── TypeError / ValueError             spawn: bad arguments, caught before any fork
    └── RuntimeError                       misuse (e.g. a Process used from another loop)

Every spawn failure leaves nothing behind: no child, no zombie, no descriptor.

:class:`ProcessError` and :class:`TimeoutExpired` carry an :class:`ExitStatus`, so
they live beside it in ``_status.py``, which imports :class:`Error` from here: the
import goes one way.
"""

from __future__ import annotations

__all__ = ["Error"]


class Error(Exception):
    """Base class of the exceptions that only aioproc raises."""
