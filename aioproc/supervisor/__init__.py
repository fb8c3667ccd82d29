"""Supervise long-running processes: restart policies, readiness, ordered tree stops.

``Service`` describes a program; ``Supervisor`` runs a set of them inside your event
loop::

    from aioproc.supervisor import ReadyTCP, Service, Supervisor

    services = [
        Service("db", ["postgres", "-D", "data"], ready=ReadyTCP("127.0.0.1", 5432)),
        Service("web", ["python", "app.py"], depends_on=["db"], essential=True),
    ]
    async with Supervisor(services) as sup:
        outcome = await sup.wait()

See ``docs/supervisor.md``.
"""

from __future__ import annotations

from ._console import Console
from ._events import (
    BackingOff,
    Event,
    EventStream,
    Exited,
    Fatal,
    Outcome,
    Ready,
    ServiceState,
    ServiceStatus,
    Starting,
    Stopped,
    Stopping,
)
from ._history import LogLine, LogStream
from ._liveness import Liveness
from ._logfile import LogFile
from ._policies import Backoff, StartLimit, should_restart
from ._readiness import (
    ReadyCall,
    ReadyCheck,
    ReadyExec,
    ReadyHTTP,
    ReadyLine,
    ReadyNotify,
    ReadyTCP,
)
from ._reconfigure import Reconfigured
from ._service import DEPENDENCY_CONDITIONS, Service
from ._supervisor import Supervisor

__all__ = [
    "DEPENDENCY_CONDITIONS",
    "BackingOff",
    "Backoff",
    "Console",
    "Event",
    "EventStream",
    "Exited",
    "Fatal",
    "Liveness",
    "LogFile",
    "LogLine",
    "LogStream",
    "Outcome",
    "Ready",
    "ReadyCall",
    "ReadyCheck",
    "ReadyExec",
    "ReadyHTTP",
    "ReadyLine",
    "ReadyNotify",
    "ReadyTCP",
    "Reconfigured",
    "Service",
    "ServiceState",
    "ServiceStatus",
    "StartLimit",
    "Starting",
    "Stopped",
    "Stopping",
    "Supervisor",
    "should_restart",
]


def _fixup_module_metadata() -> None:
    # Users see aioproc.supervisor.Service, not aioproc.supervisor._service.Service.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith(__name__ + "._"):
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):  # pragma: no cover
                pass


_fixup_module_metadata()
del _fixup_module_metadata
