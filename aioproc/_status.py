"""How a process ended: :class:`ExitStatus` and :class:`CompletedProcess`, and the
errors that carry one (:class:`ProcessError`, :class:`TimeoutExpired`; the tree of
aioproc's exceptions is in ``_exceptions.py``)."""

from __future__ import annotations

import dataclasses
import resource
import signal as _signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ._exceptions import Error

__all__ = ["CompletedProcess", "ExitStatus", "ProcessError", "TimeoutExpired"]

# The returncode reported when the status was taken by someone else (another
# library calling waitpid(-1), or SIGCHLD set to SIG_IGN). asyncio reports 255 too.
UNKNOWN_RETURNCODE = 255


class ExitStatus(int):
    """How a child process ended. Immutable.

    An ``ExitStatus`` *is* an ``int``, the ``returncode``, so code written for
    :mod:`subprocess` or :class:`anyio.abc.Process` (``if await proc.wait() != 0``)
    keeps working; the attributes carry the rest.

    ``returncode`` follows :mod:`subprocess`: the exit code, or minus the signal
    number when a signal killed the process. When the status could not be
    collected because another piece of code reaped the child first, ``unknown``
    is true, ``returncode`` is 255 and ``exit_code``/``signal`` are None.

    Two statuses are equal when they describe the same ending of the same
    process (``rusage`` is not compared); a status and a plain ``int`` are equal
    when the ``int`` is the returncode.
    """

    __match_args__ = ("pid", "returncode")

    pid: int
    returncode: int
    exit_code: int | None
    signal: _signal.Signals | None
    core_dumped: bool
    unknown: bool
    # A struct_rusage, None, or a zero-argument function that decodes one on
    # first use (see _with_lazy_rusage()); read it through the rusage property.
    _rusage: resource.struct_rusage | Callable[[], resource.struct_rusage] | None

    def __new__(
        cls,
        pid: int,
        returncode: int,
        exit_code: int | None = None,
        signal: _signal.Signals | None = None,
        core_dumped: bool = False,
        rusage: resource.struct_rusage | None = None,
        unknown: bool = False,
    ) -> ExitStatus:
        self = super().__new__(cls, returncode)
        # Built from a returncode alone (``ExitStatus(pid, 3)``), fill in what
        # the named constructors would, so that ``success``, ``str()`` and
        # ``check()`` agree with ``returncode``.
        if not unknown and exit_code is None and signal is None:
            if returncode >= 0:
                exit_code = returncode
            else:
                try:
                    signal = _signal.Signals(-returncode)
                except ValueError:  # a real-time signal without a name, as killed()
                    pass
        init = object.__setattr__
        init(self, "pid", pid)
        init(self, "returncode", int(returncode))
        init(self, "exit_code", exit_code)
        init(self, "signal", signal)
        init(self, "core_dumped", bool(core_dumped))
        init(self, "_rusage", rusage)
        init(self, "unknown", bool(unknown))
        return self

    @property
    def rusage(self) -> resource.struct_rusage | None:
        """The child's resource usage (CPU times, max RSS), or None if unknown."""
        value = self._rusage
        if callable(value):
            value = value()
            object.__setattr__(self, "_rusage", value)
        return value

    @classmethod
    def _reaped(
        cls,
        pid: int,
        returncode: int,
        signal: _signal.Signals | None,
        core_dumped: bool,
        rusage: Callable[[], resource.struct_rusage] | None,
    ) -> ExitStatus:
        """The constructor on the path from a child's exit to its waiters.

        Skips the checks of ``__new__`` (the caller passes consistent values)
        and takes ``rusage`` as a function that decodes it on first use: this
        runs between the reap and the wake-up, where every microsecond is
        latency.
        """
        self = int.__new__(cls, returncode)
        self.__dict__.update(
            pid=pid,
            returncode=returncode,
            exit_code=returncode if signal is None and returncode >= 0 else None,
            signal=signal,
            core_dumped=core_dumped,
            _rusage=rusage,
            unknown=False,
        )
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def _key(self) -> tuple[object, ...]:
        return (self.pid, self.returncode, self.exit_code, self.signal, self.core_dumped,
                self.unknown)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExitStatus):
            return self._key() == other._key()
        return int.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    # Equal statuses have equal returncodes, so int's hash stays consistent.
    __hash__ = int.__hash__

    def __repr__(self) -> str:
        return (
            f"ExitStatus(pid={self.pid}, returncode={self.returncode}, "
            f"exit_code={self.exit_code}, signal={self.signal!s}, "
            f"core_dumped={self.core_dumped}, unknown={self.unknown})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.pid, self.returncode, self.exit_code, self.signal, self.core_dumped,
             self.rusage, self.unknown),
        )  # fmt: skip

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


class ProcessError(subprocess.CalledProcessError, Error):
    """Raised by :meth:`ExitStatus.check` and ``run(check=True)`` when a process failed.

    A :class:`subprocess.CalledProcessError`, so existing ``except`` clauses keep
    working. ``returncode`` follows subprocess (minus the signal number when the
    process was killed); ``status`` is the full :class:`ExitStatus`.
    """

    status: ExitStatus

    def __init__(
        self,
        status: ExitStatus,
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
        status: ExitStatus | None = None,
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
