"""What an operator can do to a running supervisor, whatever the transport.

:class:`Operations` wraps one :class:`Supervisor` and does what a request names:
resolve service names, describe their status (with the reason of the last state
change, followed from the supervisor's events), start/stop/restart them in
order, signal them, read and follow their logs, reopen their log files, reload,
shut down. The control
socket (``_server.py``) and the HTTP server (``aioproc/_http``) are two faces of
it; a bad request raises :class:`OperationError` (a code from
:data:`~._protocol.ERRORS` and a message), which each face turns into its reply.

Every state change's reason comes from the supervisor's events, subscribed to
by :meth:`Operations.start`: start it before the supervisor (``aioproc run``
does) to see every one.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from .. import ExitStatus
from .._durations import check_duration
from .._util import is_number
from ..supervisor import (
    BackingOff,
    Event,
    EventStream,
    Exited,
    Fatal,
    LogLine,
    LogStream,
    Ready,
    Reconfigured,
    Service,
    ServiceState,
    ServiceStatus,
    Starting,
    Stopped,
    Stopping,
    Supervisor,
)
from ._protocol import ControlError

__all__ = [
    "OperationError",
    "Operations",
    "describe_event",
    "line_dict",
    "parse_signal",
    "stop_in_order",
    "wanted",
]

Reload = Callable[[], Awaitable[Reconfigured]]
Log = Callable[[str], None]


class OperationError(Exception):
    """A request that gets an error reply; the connection stays usable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def wanted(status: ServiceStatus, service: Service | None) -> bool:
    """Whether a service is where it should be: running and ready, completed as expected,
    or stopped when it starts only on request (``autostart=False``)."""
    if status.state is ServiceState.RUNNING:
        return True
    if _on_request(status, service):
        return True  # stopped is where it should be
    if status.state is ServiceState.EXITED and status.last_status is not None:
        code = status.last_status.exit_code
        extra = service.success_exit_codes if service is not None else frozenset()
        return status.last_status.success or (code is not None and code in extra)
    return False


def _on_request(status: ServiceStatus, service: Service | None) -> bool:
    """Whether a service is stopped and only starts on request (``autostart=False``)."""
    return status.state is ServiceState.STOPPED and service is not None and not service.autostart


def _exit_text(status: ExitStatus | None) -> str:
    if status is None:
        return "-"
    if status.signal is not None:
        return status.signal.name
    return f"exit {status.exit_code}"


def describe_event(event: Event) -> str | None:
    """The reason a service is in its state, from the event that put it there."""
    if isinstance(event, Starting):
        return f"started (attempt {event.attempt})" if event.attempt else "started"
    if isinstance(event, Ready):
        return "ready"
    if isinstance(event, Exited):
        if event.reason == "stopped":
            return None
        if event.status is None:
            return f"could not start: {event.error}"
        st = event.status
        what = f"killed by {st.signal.name}" if st.signal else f"exited with code {st.exit_code}"
        return f"{what} ({event.error})" if event.error else what
    if isinstance(event, BackingOff):
        return f"restarting in {event.delay:.2f} s"
    if isinstance(event, Fatal):
        return event.reason
    if isinstance(event, Stopping):
        return "stop requested"
    if isinstance(event, Stopped):
        return "stopped"
    return None  # pragma: no cover


class Operations:
    """The operations on one supervisor that its control faces serve.

    :meth:`start` subscribes to the supervisor's events (the reasons, and
    :attr:`state_changes`, a count of state-changing events per service);
    :meth:`aclose` stops following them.
    """

    def __init__(
        self, supervisor: Supervisor, *, reload: Reload | None = None, log: Log | None = None
    ) -> None:
        self.supervisor = supervisor
        self._reload = reload
        self._log = log
        self._reasons: dict[str, str] = {}
        #: Events that changed a service's state, per service (for metrics).
        self.state_changes: dict[str, int] = {}
        self._events_task: asyncio.Task[None] | None = None
        self._shutdown: asyncio.Task[None] | None = None
        #: Counts the supervisor's events; :meth:`changed` waits for it to move.
        self.generation = 0
        self._change: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Subscribe to the supervisor's events; call it before anything awaits."""
        if self._events_task is None:
            events = self.supervisor.events()
            self._events_task = asyncio.ensure_future(self._follow_events(events))

    async def aclose(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
            await asyncio.wait([self._events_task])

    def log(self, text: str) -> None:
        if self._log is not None:
            self._log(text)

    async def _follow_events(self, events: EventStream) -> None:
        async with events:
            async for event in events:
                self.generation += 1
                if self._change is not None and not self._change.done():
                    self._change.set_result(None)
                reason = describe_event(event)
                if reason is not None:
                    self._reasons[event.service] = reason
                    name = event.service
                    self.state_changes[name] = self.state_changes.get(name, 0) + 1

    async def changed(self, seen: int) -> int:
        """Wait until an event has come since :attr:`generation` was ``seen``; the new one."""
        while self.generation == seen:
            if self._change is None or self._change.done():
                self._change = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._change)
        return self.generation

    # ------------------------------------------------------------------ names
    def names(self, names: Any, *, every: bool = False, default_all: bool) -> list[str]:
        """The services a request names (``every``: all of them); checked."""
        known = list(self.supervisor.services)
        if every:
            return known
        if names is None or names == []:
            if default_all:
                return known
            raise OperationError("bad-request", "name at least one service, or all")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise OperationError("bad-request", "names must be a list of strings")
        out: list[str] = []
        for name in names:
            if name in known:
                out.append(name)
                continue
            # A replicated service (web.1, web.2, ...) is named by its type, too.
            instances = [k for k in known if _instance_of(k) == name]
            if not instances:
                raise OperationError("unknown-service", f"no service named {name!r}")
            out.extend(instances)
        return list(dict.fromkeys(out))

    # ----------------------------------------------------------------- status
    def status(self, names: Iterable[str]) -> list[dict[str, Any]]:
        everything = self.supervisor.status()
        services = self.supervisor.services
        out = []
        for name in names:
            st = everything.get(name)
            if st is None:
                continue
            svc = services.get(name)
            last = st.last_status
            ready_check = None if svc is None or svc.ready is None else type(svc.ready).__name__
            out.append(
                {
                    "name": name,
                    "state": st.state.value,
                    "pid": st.pid,
                    "uptime": None if st.uptime is None else round(st.uptime, 3),
                    "restarts": st.restarts,
                    "last_exit": None
                    if last is None
                    else {
                        "code": last.exit_code,
                        "signal": None if last.signal is None else last.signal.name,
                        "text": _exit_text(last),
                    },
                    "ready": st.state is ServiceState.RUNNING,
                    "ready_check": ready_check,
                    "reason": self._reason(st)
                    or ("autostart is false: started on request" if _on_request(st, svc) else None),
                    "wanted": wanted(st, svc),
                    "logs_kept": svc is None or svc.piped,
                }
            )
        return out

    def _reason(self, st: ServiceStatus) -> str | None:
        reason = self._reasons.get(st.name)
        if st.state is ServiceState.FATAL or reason is None:
            return st.message or reason  # why it is FATAL; a STATUS= line
        return reason

    async def wait_wanted(self, names: list[str], within: Any) -> bool:
        """Wait until every one of ``names`` is where it should be (:func:`wanted`).

        True once they are; False when ``within`` seconds (None: no bound) pass
        first, or when one is FATAL (it will not get there by itself).
        """
        if within is not None:
            try:
                within = check_duration(within, "timeout")
            except (TypeError, ValueError) as exc:
                raise OperationError("bad-request", str(exc)) from None
        sup = self.supervisor
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        # Subscribed before the first look: no change between the two is missed.
        async with sup.events() as changes:
            while True:
                status = sup.status()
                services = sup.services
                if all(n in status and wanted(status[n], services.get(n)) for n in names):
                    return True
                if any(n not in status or status[n].state is ServiceState.FATAL for n in names):
                    return False
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return False
                try:
                    await asyncio.wait_for(changes.get(), left)
                except (asyncio.TimeoutError, TimeoutError):
                    return False
                except anyio.EndOfStream:
                    raise OperationError("shutting-down", "the supervisor shut down") from None

    # ---------------------------------------------------------------- actions
    async def act(self, what: str, names: list[str]) -> None:
        """``start``, ``stop`` or ``restart`` ``names`` (stops in dependency order)."""
        sup = self.supervisor
        try:
            if what in ("stop", "restart"):
                await stop_in_order(sup, names)
            if what in ("start", "restart"):
                # With what they need that is stopped (an operator's "start web" means
                # web running), together: each waits for its dependencies.
                await asyncio.gather(*(sup.start(name) for name in self._with_stopped_deps(names)))
        except RuntimeError as exc:
            raise OperationError("shutting-down", str(exc)) from None

    def _with_stopped_deps(self, names: list[str]) -> list[str]:
        services = self.supervisor.services
        status = self.supervisor.status()
        out = list(names)
        todo = list(names)
        while todo:
            for dep in services[todo.pop()].depends_on:
                if dep not in out and status[dep].state is ServiceState.STOPPED:
                    out.append(dep)
                    todo.append(dep)
        return out

    def signal(self, names: list[str], value: Any) -> None:
        sig = parse_signal(value)
        for name in names:
            try:
                self.supervisor.send_signal(name, sig)
            except ProcessLookupError as exc:
                raise OperationError("failed", str(exc).strip("'\"")) from None

    def logs(
        self, names: list[str], count: Any, follow: Any
    ) -> tuple[list[LogLine], LogStream | None]:
        """The last ``count`` lines of ``names``, and a stream of the next ones if ``follow``.

        No await between the two: every line is in the history or the stream.
        """
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise OperationError("bad-request", "lines must be a number of lines, or null for all")
        if not isinstance(follow, bool):
            raise OperationError("bad-request", "follow must be true or false")
        history = self.supervisor.logs(names, count)
        stream = self.supervisor.follow_logs(names) if follow else None
        return history, stream

    async def reload(self) -> dict[str, Any]:
        if self._reload is None:
            raise OperationError(
                "unsupported", "this supervisor has no configuration file to reload"
            )
        try:
            result = await self._reload()
        except RuntimeError as exc:
            raise OperationError("shutting-down", str(exc)) from None
        except (ValueError, TypeError, OSError, ControlError) as exc:
            self.log(f"reload failed, nothing changed: {exc}")
            raise OperationError("failed", str(exc)) from None
        return {
            "ok": True,
            "added": list(result.added),
            "removed": list(result.removed),
            "changed": list(result.changed),
            "unchanged": list(result.unchanged),
        }

    def reopen_logs(self) -> dict[str, Any]:
        """Reopen the supervisor's log files (after logrotate moved them away)."""
        try:
            paths = self.supervisor.reopen_logs()
        except OSError as exc:
            self.log(f"{exc.strerror} (still writing where it was)")
            raise OperationError("failed", str(exc.strerror)) from None
        self.log(f"log files reopened: {', '.join(paths)}" if paths else "no log file is open")
        return {"ok": True, "files": paths}

    def shutdown(self, via: str = "control") -> None:
        """Start shutting the supervisor down (once); returns at once."""
        self.log(f"{via}: shutdown requested")
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self.supervisor.aclose())

    @property
    def pid(self) -> int:
        return os.getpid()


def line_dict(line: LogLine) -> dict[str, Any]:
    return {"service": line.service, "time": round(line.time, 6), "text": line.text}


def parse_signal(value: Any) -> signal.Signals:
    try:
        if isinstance(value, str):
            name = value.upper()
            if is_number(name):
                return signal.Signals(int(name))
            return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        if isinstance(value, int) and not isinstance(value, bool):
            return signal.Signals(value)
    except (KeyError, ValueError):
        pass
    raise OperationError("bad-request", f"unknown signal {value!r}")


async def stop_in_order(sup: Supervisor, names: list[str]) -> None:
    """Stop ``names``, each once those of them that depend on it have stopped."""
    services = sup.services
    tasks: dict[str, asyncio.Task[Any]] = {}

    async def stop(name: str) -> None:
        users = [tasks[n] for n in names if name in services[n].depends_on and n in tasks]
        if users:
            await asyncio.wait(users)
        await sup.stop(name)

    for name in names:
        tasks[name] = asyncio.ensure_future(stop(name))
    await asyncio.gather(*tasks.values())


def _instance_of(name: str) -> str | None:
    """``web`` for an instance name ``web.3`` (``aioproc run``'s replicas), else None."""
    base, dot, number = name.rpartition(".")
    return base if dot and is_number(number) else None
