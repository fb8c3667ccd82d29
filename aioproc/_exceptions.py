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
"""

from __future__ import annotations

import resource
import signal
import subprocess
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["Error", "ProcessError", "TimeoutExpired"]


class ExitStatusLike(Protocol):
    """An :class:`~aioproc.ExitStatus`, as the exceptions that carry one see it.

    ``ExitStatus`` lives in ``_status``, which imports this module (its
    ``check()`` raises :class:`ProcessError`); naming here what an
    ``ExitStatus`` offers, rather than importing it, keeps that import one-way.
    mypy checks that ``ExitStatus`` matches wherever one is passed in.
    """

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def signal(self) -> signal.Signals | None: ...
    @property
    def core_dumped(self) -> bool: ...
    @property
    def unknown(self) -> bool: ...
    @property
    def rusage(self) -> resource.struct_rusage | None: ...
    @property
    def success(self) -> bool: ...
    def __int__(self) -> int: ...


class Error(Exception):
    """Base class of the exceptions that only aioproc raises."""


class ProcessError(subprocess.CalledProcessError, Error):
    """Raised by :meth:`ExitStatus.check` and ``run(check=True)`` when a process failed.

    A :class:`subprocess.CalledProcessError`, so existing ``except`` clauses keep
    working. ``returncode`` follows subprocess (minus the signal number when the
    process was killed); ``status`` is the full :class:`ExitStatus`.
    """

    status: ExitStatusLike

    def __init__(
        self,
        status: ExitStatusLike,
        cmd: Sequence[Any] | str | bytes | None = None,
        output: bytes | str | None = None,
        stderr: bytes | str | None = None,
    ) -> None:
        super().__init__(status.returncode, cmd if cmd is not None else [], output, stderr)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.cmd, self.output, self.stderr))


class TimeoutExpired(subprocess.TimeoutExpired, TimeoutError, Error):
    """Raised by :func:`aioproc.run` when its ``timeout`` ran out.

    By the time it is raised the child has been stopped (``stop_signal``, then
    SIGKILL) and reaped. ``output`` and ``stderr`` hold what was captured so far.
    It is both a :class:`subprocess.TimeoutExpired` and a built-in :class:`TimeoutError`.
    """

    def __init__(
        self,
        cmd: Sequence[Any] | str | bytes,
        timeout: float,
        output: bytes | str | None = None,
        stderr: bytes | str | None = None,
        status: ExitStatusLike | None = None,
        detail: str | None = None,
    ) -> None:
        subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)
        self.args = (cmd, timeout)
        #: How the stopped child ended.
        self.status = status
        #: Why the time ran out when the child itself had already exited
        #: (its output pipes stayed open, held by the processes named), else None.
        self.detail = detail

    def __str__(self) -> str:
        text = subprocess.TimeoutExpired.__str__(self)
        return text if self.detail is None else f"{text}: {self.detail}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.cmd, self.timeout, self.output, self.stderr, self.status, self.detail),
        )
