"""The description of one supervised program: :class:`Service`.

A :class:`Service` is immutable configuration, checked when it is made. The
:class:`~aioproc.supervisor.Supervisor` runs it; the same ``Service`` may be given
to several supervisors.
"""

from __future__ import annotations

import inspect
import os
import re
import signal
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal

from .._cgroup import check_cgroup_limits
from .._durations import check_duration
from .._limits import check_rlimits
from ._liveness import Liveness
from ._logfile import LogFile
from ._output import OutputSpec
from ._policies import RESTART_POLICIES, Backoff, RestartPolicy, StartLimit
from ._readiness import ReadyCall, ReadyCheck

__all__ = ["DEPENDENCY_CONDITIONS", "SPAWN_OPTIONS", "DependencyCondition", "Service"]

#: When a dependency lets its dependents start (as docker compose's ``condition``):
#: ``started``: once it has been spawned; ``ready``: once its readiness check passed
#: (or it completed successfully); ``completed_successfully``: once it has exited
#: successfully and will not be restarted (a one-shot job such as a migration).
DependencyCondition = Literal["started", "ready", "completed_successfully"]
DEPENDENCY_CONDITIONS: tuple[DependencyCondition, ...] = (
    "started",
    "ready",
    "completed_successfully",
)

# foreman and honcho accept ``-foo_bar``; ``.`` and ``@`` may not lead.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.@-]*\Z")

#: ``aioproc.spawn`` options a Service passes through (the others are its own
#: parameters, or set by the supervisor: stdout/stderr come from ``output``).
SPAWN_OPTIONS = frozenset(
    {
        "stdin",
        "shell",
        "start_new_session",
        "pass_fds",
        "user",
        "group",
        "umask",
        "limit",
        "rlimits",
        "cgroup",
        "cgroup_limits",
    }
)


def _dependencies(
    name: str, depends_on: Iterable[str] | Mapping[str, DependencyCondition] | str
) -> dict[str, DependencyCondition]:
    if isinstance(depends_on, str):
        depends_on = (depends_on,)
    if isinstance(depends_on, Mapping):
        items = list(depends_on.items())
    else:
        items = [(dep, "ready") for dep in depends_on]
    out: dict[str, DependencyCondition] = {}
    for dep, condition in items:
        if not isinstance(dep, str):
            raise TypeError(f"service {name!r}: depends_on takes service names")
        if condition not in DEPENDENCY_CONDITIONS:
            raise ValueError(
                f"service {name!r}: depends_on {dep!r}: the condition must be one of "
                f"{', '.join(DEPENDENCY_CONDITIONS)}, not {condition!r}"
            )
        out[dep] = condition
    if name in out:
        raise ValueError(f"service {name!r} depends on itself")
    return out


def _exit_codes(codes: Iterable[int | signal.Signals], what: str) -> frozenset[int]:
    out: set[int] = set()
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"{what}: {code!r} is neither an exit code nor a signal.Signals")
        if not isinstance(code, signal.Signals) and not 0 <= code <= 255:
            raise ValueError(f"{what}: {code} is not an exit code (0-255)")
        out.add(code)
    return frozenset(out)


class Service:
    """A program to run, restart and stop under a :class:`Supervisor`.

    ``argv`` is a sequence (a string needs ``shell=True``, and is then run by
    ``/bin/sh -c``). See ``docs/supervisor.md`` for every option; in short:

    ``restart``: ``"no"``, ``"on-failure"``, ``"on-abnormal"`` or ``"always"`` (as
    systemd), adjusted by ``success_exit_codes`` and ``restart_exit_codes`` (ints are
    exit codes, :class:`signal.Signals` members are signals). ``backoff``,
    ``start_limit`` and ``stable_after`` pace restarts. ``depends_on`` names services
    that must be ready first, or maps names to a condition (``"started"``,
    ``"ready"``, ``"completed_successfully"``); ``ready`` says when this one is, and
    ``liveness`` (a :class:`Liveness` probe) whether it still is healthy. ``essential=True``:
    its failure shuts the supervisor down. ``autostart=False``: not started with the
    supervisor, only by :meth:`Supervisor.start` (or as a dependency of a service
    that is started), as supervisord's ``autostart=false``.
    ``stop_signal``/``stop_timeout``: how it
    is stopped (then SIGKILL), its whole process group with ``kill_group=True``.
    ``pdeathsig``: a signal the kernel sends the service's process if the
    supervisor's process dies (``prctl(PR_SET_PDEATHSIG)``; None: none).
    ``env`` is added to the supervisor's environment (a None value removes a
    variable); ``cwd`` is its working directory; ``output`` where its output goes
    (``"prefix"``, ``"inherit"``, a file path, a :class:`LogFile` rotated by size,
    or a callable).
    Other keyword arguments go to :func:`aioproc.spawn` (``user``, ``group``,
    ``umask``, ``rlimits``, ``cgroup``, ``cgroup_limits``, ``pass_fds``, ``stdin``
    (default: /dev/null), ``shell``...).
    """

    name: str
    argv: Sequence[str | bytes | os.PathLike[str]] | str
    restart: RestartPolicy
    backoff: Backoff
    start_limit: StartLimit
    stable_after: float
    depends_on: tuple[str, ...]
    dependency_conditions: Mapping[str, DependencyCondition]
    ready: ReadyCheck | None
    liveness: Liveness | None
    essential: bool
    autostart: bool
    stop_signal: signal.Signals
    stop_timeout: float
    kill_group: bool
    pdeathsig: signal.Signals | None
    env: Mapping[str, str | None] | None
    cwd: str | os.PathLike[str] | None
    output: OutputSpec
    success_exit_codes: frozenset[int]
    restart_exit_codes: frozenset[int]
    spawn_kwargs: Mapping[str, Any]

    def __init__(
        self,
        name: str,
        argv: Sequence[str | bytes | os.PathLike[str]] | str,
        *,
        restart: RestartPolicy = "on-failure",
        backoff: Backoff | None = None,
        start_limit: StartLimit | None = None,
        stable_after: float = 10.0,
        depends_on: Iterable[str] | Mapping[str, DependencyCondition] = (),
        ready: ReadyCheck | Any | None = None,
        liveness: Liveness | ReadyCheck | Any | None = None,
        essential: bool = False,
        autostart: bool = True,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 10.0,
        kill_group: bool = True,
        pdeathsig: int | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        output: OutputSpec = "prefix",
        success_exit_codes: Collection[int | signal.Signals] = (),
        restart_exit_codes: Collection[int | signal.Signals] = (),
        **spawn_kwargs: Any,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"service name {name!r}: use letters, digits and _ . @ - (not starting with . or @)"
            )
        self.name = name
        if isinstance(argv, (str, bytes)):
            if not spawn_kwargs.get("shell"):
                raise TypeError(f"service {name!r}: a string command needs shell=True")
        elif not isinstance(argv, Sequence) or not argv:
            raise ValueError(f"service {name!r}: argv must be a non-empty sequence")
        self.argv = argv
        if restart not in RESTART_POLICIES:
            raise ValueError(
                f"service {name!r}: restart must be one of {', '.join(RESTART_POLICIES)}, "
                f"not {restart!r}"
            )
        self.restart = restart
        self.backoff = Backoff() if backoff is None else backoff
        self.start_limit = StartLimit() if start_limit is None else start_limit
        if not isinstance(self.backoff, Backoff):
            raise TypeError("backoff must be a Backoff")
        if not isinstance(self.start_limit, StartLimit):
            raise TypeError("start_limit must be a StartLimit")
        # Infinite: never counts as stable (it is only compared, never waited for).
        self.stable_after = check_duration(stable_after, "stable_after", finite=False)
        conditions = _dependencies(name, depends_on)
        self.depends_on = tuple(conditions)
        self.dependency_conditions = conditions
        if ready is not None and not isinstance(ready, ReadyCheck):
            if inspect.iscoroutinefunction(ready) or callable(ready):
                ready = ReadyCall(ready)
            else:
                raise TypeError(
                    f"service {name!r}: ready must be None, a ReadyTCP/ReadyHTTP/ReadyLine/"
                    "ReadyNotify or a coroutine function"
                )
        self.ready = ready
        if liveness is not None and not isinstance(liveness, Liveness):
            try:
                liveness = Liveness(liveness)  # a check, with the default knobs
            except TypeError as exc:
                raise TypeError(f"service {name!r}: liveness: {exc}") from None
        self.liveness = liveness
        if ready is not None and ready.needs_output and output == "inherit":
            raise ValueError(
                f"service {name!r}: {type(ready).__name__} reads the output, "
                'which output="inherit" does not pipe'
            )
        self.essential = bool(essential)
        if not isinstance(autostart, bool):
            raise TypeError(f"service {name!r}: autostart must be True or False")
        self.autostart = autostart
        if isinstance(stop_signal, bool) or not isinstance(stop_signal, int):
            raise TypeError(f"service {name!r}: stop_signal must be a signal number")
        try:
            self.stop_signal = signal.Signals(stop_signal)
        except ValueError:
            raise ValueError(f"service {name!r}: {stop_signal} is not a signal") from None
        self.stop_timeout = check_duration(stop_timeout, "stop_timeout")
        self.kill_group = bool(kill_group)
        if pdeathsig is None:
            self.pdeathsig = None
        elif isinstance(pdeathsig, bool) or not isinstance(pdeathsig, int):
            raise TypeError(f"service {name!r}: pdeathsig must be a signal number or None")
        else:
            try:
                self.pdeathsig = signal.Signals(pdeathsig)
            except ValueError:
                raise ValueError(
                    f"service {name!r}: pdeathsig {pdeathsig} is not a signal"
                ) from None
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        if not (
            output in ("inherit", "prefix") or isinstance(output, (str, os.PathLike, LogFile))
        ) and (not callable(output)):
            raise TypeError(
                f'service {name!r}: output must be "inherit", "prefix", a path, a LogFile '
                "or a callable"
            )
        self.output = output
        self.success_exit_codes = _exit_codes(success_exit_codes, "success_exit_codes")
        self.restart_exit_codes = _exit_codes(restart_exit_codes, "restart_exit_codes")
        unknown = set(spawn_kwargs) - SPAWN_OPTIONS
        if unknown:
            raise TypeError(
                f"Service() got an unexpected keyword argument {sorted(unknown)[0]!r}"
                + (" (output= sets stdout and stderr)" if unknown & {"stdout", "stderr"} else "")
            )
        if spawn_kwargs.get("rlimits") is not None:
            try:
                check_rlimits(spawn_kwargs["rlimits"])  # bad values fail here, not at each start
            except (TypeError, ValueError, PermissionError) as exc:
                raise type(exc)(f"service {name!r}: {exc}") from None
        cgroup = spawn_kwargs.get("cgroup")
        if cgroup is not None and not (
            isinstance(cgroup, bool) or cgroup == "auto" or isinstance(cgroup, (str, os.PathLike))
        ):
            raise TypeError(f"service {name!r}: cgroup must be true, 'auto' or a cgroup's path")
        if spawn_kwargs.get("cgroup_limits") is not None:
            if not cgroup:
                raise ValueError(f"service {name!r}: cgroup_limits needs cgroup=True")
            try:
                check_cgroup_limits(spawn_kwargs["cgroup_limits"])
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"service {name!r}: {exc}") from None
        self.spawn_kwargs = dict(spawn_kwargs)

    @property
    def piped(self) -> bool:
        """Whether the output goes through a pipe (every ``output`` but "inherit")."""
        return self.output != "inherit"

    def child_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The environment for a run: ours, then ``env``, then ``extra``."""
        out = dict(os.environ)
        if self.piped and "PYTHONUNBUFFERED" not in out:
            # Python children block-buffer a pipe; lines would show up late.
            out["PYTHONUNBUFFERED"] = "1"
        for key, value in (self.env or {}).items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        out.update(extra)
        return out

    def __repr__(self) -> str:
        return f"Service({self.name!r}, {self.argv!r}, restart={self.restart!r})"
