"""How a process ended: :class:`ExitStatus` and :class:`CompletedProcess`."""

from __future__ import annotations

import dataclasses
import resource
import signal as _signal
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from ._exceptions import ProcessError

__all__ = ["CompletedProcess", "ExitStatus"]

# The returncode reported when the status was taken by someone else (another
# library calling waitpid(-1), or SIGCHLD set to SIG_IGN). asyncio reports 255 too.
UNKNOWN_RETURNCODE = 255


@dataclasses.dataclass(frozen=True)
class ExitStatus:
    """How a child process ended. Immutable.

    ``returncode`` follows :mod:`subprocess`: the exit code, or minus the signal
    number when a signal killed the process. When the status could not be
    collected because another piece of code reaped the child first, ``unknown``
    is true, ``returncode`` is 255 and ``exit_code``/``signal`` are None.
    """

    pid: int
    returncode: int
    exit_code: int | None = None
    signal: _signal.Signals | None = None
    core_dumped: bool = False
    rusage: resource.struct_rusage | None = dataclasses.field(default=None, compare=False)
    unknown: bool = False

    def __post_init__(self) -> None:
        # Built from a returncode alone (``ExitStatus(pid, 3)``), fill in what
        # the named constructors would, so that ``success``, ``str()`` and
        # ``check()`` agree with ``returncode`` (else ``ExitStatus(pid, 0)``
        # would not be a success).
        if self.unknown or self.exit_code is not None or self.signal is not None:
            return
        if self.returncode >= 0:
            object.__setattr__(self, "exit_code", self.returncode)
        else:
            try:
                object.__setattr__(self, "signal", _signal.Signals(-self.returncode))
            except ValueError:  # a real-time signal without a name, as killed()
                pass

    @classmethod
    def exited(
        cls, pid: int, code: int, rusage: resource.struct_rusage | None = None
    ) -> ExitStatus:
        return cls(pid, code, exit_code=code, rusage=rusage)

    @classmethod
    def killed(
        cls,
        pid: int,
        signum: int,
        core_dumped: bool = False,
        rusage: resource.struct_rusage | None = None,
    ) -> ExitStatus:
        try:
            sig: _signal.Signals | None = _signal.Signals(signum)
        except ValueError:  # a real-time signal without a name
            sig = None
        return cls(pid, -signum, signal=sig, core_dumped=core_dumped, rusage=rusage)

    @classmethod
    def lost(cls, pid: int) -> ExitStatus:
        """The status of a child that somebody else reaped."""
        return cls(pid, UNKNOWN_RETURNCODE, unknown=True)

    @classmethod
    def from_wait_status(
        cls, pid: int, wstatus: int, rusage: resource.struct_rusage | None = None
    ) -> ExitStatus:
        """Decode a ``waitpid``-style status word."""
        import os

        if os.WIFSIGNALED(wstatus):
            return cls.killed(pid, os.WTERMSIG(wstatus), os.WCOREDUMP(wstatus), rusage)
        return cls.exited(pid, os.WEXITSTATUS(wstatus), rusage)

    @property
    def success(self) -> bool:
        """True when the process exited with code 0."""
        return self.exit_code == 0

    def check(self, cmd: Sequence[Any] | str | bytes | None = None) -> ExitStatus:
        """Return self if the process succeeded, else raise :class:`ProcessError`."""
        if not self.success:
            raise ProcessError(self, cmd)
        return self

    def __str__(self) -> str:
        if self.unknown:
            return f"process {self.pid}: status unknown (reaped by someone else)"
        if self.signal is not None or self.exit_code is None:
            name = self.signal.name if self.signal is not None else str(-self.returncode)
            core = " (core dumped)" if self.core_dumped else ""
            return f"process {self.pid} killed by {name}{core}"
        return f"process {self.pid} exited with code {self.exit_code}"


T = TypeVar("T", bytes, str)


@dataclasses.dataclass
class CompletedProcess(Generic[T]):
    """What :func:`aioproc.run` returns.

    :class:`subprocess.CompletedProcess`'s fields, plus ``status``.
    """

    args: Any
    returncode: int
    stdout: T | None
    stderr: T | None
    status: ExitStatus

    def check_returncode(self) -> None:
        """Raise :class:`ProcessError` if the process failed."""
        if not self.status.success:
            raise ProcessError(self.status, self.args, self.stdout, self.stderr)
