"""What a supervisor reports: service states, status snapshots, typed events, the outcome.

Events, in the order a service goes through them::

    Starting -> Ready -> Exited -> BackingOff -> Starting -> ...
                                -> Fatal                      (start limit, or essential)
    Stopping -> Exited(reason="stopped") -> Stopped           (a requested stop)

Every event has ``service`` (the name) and ``time`` (``time.monotonic()``).
"""

from __future__ import annotations

import dataclasses
import enum
import time

from .. import ExitStatus
from ._policies import ExitReason
from ._queue import DroppingQueue

__all__ = [
    "BackingOff",
    "Event",
    "EventStream",
    "Exited",
    "Fatal",
    "Outcome",
    "Ready",
    "ServiceState",
    "ServiceStatus",
    "Starting",
    "Stopped",
    "Stopping",
]


class ServiceState(str, enum.Enum):
    """Where a service is in its life (the value is the lower-case name)."""

    STOPPED = "stopped"  #: not started yet, or stopped on request
    WAITING = "waiting"  #: waiting for the services it depends on to be ready
    STARTING = "starting"  #: spawned, its readiness check not passed yet
    RUNNING = "running"  #: ready
    BACKOFF = "backoff"  #: exited; waiting before the next start
    STOPPING = "stopping"  #: being stopped (stop_signal, then SIGKILL)
    EXITED = "exited"  #: ended, and its restart policy says not to restart
    FATAL = "fatal"  #: gave up: start limit hit, or it cannot be spawned

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    """A snapshot of one service, from :meth:`Supervisor.status`."""

    name: str
    state: ServiceState
    pid: int | None
    restarts: int
    last_status: ExitStatus | None
    uptime: float | None  #: seconds since the current process was spawned, or None
    #: the last ``STATUS=`` (ReadyNotify), why it is FATAL, or why a liveness probe
    #: ended its last run (``"liveness: ..."``)
    message: str | None = None
    #: whether the last run ended well (a clean exit, a success exit code, or death by
    #: the stop signal the supervisor sent); None before the first run ended
    last_clean: bool | None = None
    #: with ``cgroup=``: every process in the service's cgroup, by PID (else empty)
    members: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """Base class of the supervisor's events."""

    service: str
    time: float = dataclasses.field(default_factory=time.monotonic, compare=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Starting(Event):
    """The service's process was spawned; ``attempt`` is 0 for the first start."""

    pid: int
    attempt: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ready(Event):
    """The readiness check passed (at once when the service has none)."""

    pid: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Exited(Event):
    """A run ended. ``status`` is None when the spawn failed (``error`` says why)."""

    pid: int | None
    status: ExitStatus | None
    reason: ExitReason
    will_restart: bool
    error: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackingOff(Event):
    """The service will be started again in ``delay`` seconds."""

    delay: float
    attempt: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fatal(Event):
    """The supervisor gave up on the service."""

    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stopping(Event):
    """A stop was requested; ``pid`` is the process being stopped, if any."""

    pid: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    """The service is stopped: its leader reaped and its process group empty."""

    status: ExitStatus | None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a supervisor ended, from :meth:`Supervisor.wait`.

    ``ok`` is False when an essential service failed (became FATAL, or ended with a
    failing status and no restart; a status in its ``success_exit_codes`` is no
    failure); ``service``, ``status`` and ``reason`` then describe it. ``exit_code``
    is what a command should exit with: 0 when ``ok``, else the service's exit code,
    128 + the signal number for a signal, 127 when it could not be found, 126 when it
    could not be executed, 1 otherwise.
    """

    ok: bool
    service: str | None = None
    status: ExitStatus | None = None
    reason: str | None = None
    error_code: int | None = None

    @property
    def exit_code(self) -> int:
        if self.ok:
            return 0
        if self.status is not None and not self.status.unknown:
            if self.status.exit_code is not None:
                return self.status.exit_code
            return 128 - self.status.returncode
        return self.error_code if self.error_code is not None else 1


class EventStream(DroppingQueue[Event]):
    """The events of one :meth:`Supervisor.events` call, from that call on.

    An async iterator (it ends once the supervisor has shut down and every queued
    event was read) and an async context manager (closing on exit). The queue holds
    ``maxsize`` events; when it is full the oldest is dropped and :attr:`dropped` grows.
    """
