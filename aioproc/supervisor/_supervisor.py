"""The supervisor: runs services, restarts them, stops them in order.

Each service gets a :class:`_Runner`, and each started runner one task that goes
through the service's life::

    WAITING (dependencies) -> [start limit?] -> STARTING -> RUNNING -> (exit)
        -> BACKOFF -> WAITING ... | EXITED | FATAL | STOPPED

One run (:meth:`_Runner._run_once`) spawns the service as the leader of its own
process group and *holds its reap* until the group is empty (see ``_group.py``):
while the leader is unreaped its PID pins the group id, so every group signal
reaches our group and nobody else's, and a run only ends once nothing of it is
left. That holds however the run ends: on its own (members left behind get
``stop_signal``, then SIGKILL), on a stop request, on a failed readiness check, on
a watchdog timeout, or when its task is cancelled (SIGKILL at once).

Everything runs on the event loop the supervisor was entered in; there is no
thread and no global state, and signals are only touched by the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pwd
import signal
import sys
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager as ContextManager
from types import TracebackType
from typing import Any, TextIO

from .. import DEVNULL, STDOUT, Cgroup, ExitStatus, Process, spawn
from .._durations import check_duration
from .._util import shielded
from ._console import Console, LogFormat, Timestamps
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
from ._group import LeaderWatch, hold_reap, signal_group, wait_group_empty
from ._groupscan import GroupScanner
from ._history import LogHistory, LogLine, LogStream
from ._liveness import watch_liveness
from ._logfile import LogFiles, log_file_of
from ._output import Pipes, Sink, make_sink, split_lines
from ._policies import ExitReason, StartHistory, ended_cleanly, is_clean, should_restart
from ._readiness import NotifySocket, ReadyContext, ReadyNotify
from ._reconfigure import Reconfigured, diff
from ._service import DependencyCondition, Service

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

__all__ = ["Supervisor"]

_S = ServiceState
_ENDED = (_S.STOPPED, _S.EXITED, _S.FATAL)


@dataclasses.dataclass
class _Run:
    """How one run of a service ended."""

    status: ExitStatus | None
    reason: ExitReason
    error: str | None = None
    ran_for: float = 0.0
    pid: int | None = None
    fatal: bool = False  # a spawn error that a retry cannot fix (bad arguments)


def _service_uid(user: object) -> int | None:
    """The uid a service runs as (None: ours), for its notify socket's checks."""
    if isinstance(user, int) and not isinstance(user, bool):
        return user
    if isinstance(user, str):
        try:
            return pwd.getpwnam(user).pw_uid
        except KeyError:
            return None  # spawn() refuses it with a clear error
    return None


def _error_code(exc: BaseException) -> int:
    """The shell's convention: 127 not found, 126 not executable, else 1."""
    if isinstance(exc, FileNotFoundError):
        return 127
    if isinstance(exc, PermissionError):
        return 126
    return 1


class _Runner:
    """One service inside one supervisor: its state and the task that runs it."""

    def __init__(self, sup: Supervisor, service: Service) -> None:
        self.sup = sup
        self.service = service
        self.state = _S.STOPPED
        self.proc: Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.last_status: ExitStatus | None = None
        self.last_clean: bool | None = None
        self.started_at: float | None = None
        self.message: str | None = None
        self.error_code: int | None = None
        self.ready = asyncio.Event()  # set while a run is ready
        self.parked = False  # stopped by Supervisor.stop(): waits for a start()
        self.spawned = False  # a run was spawned since the last launch()
        self._stop: asyncio.Future[None] | None = None

    # -------------------------------------------------------------- control
    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def stop_requested(self) -> bool:
        return self._stop is not None and self._stop.done()

    def launch(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        self.parked = False
        self.message = None
        self.error_code = None
        self.spawned = False
        self.task = loop.create_task(self._lifecycle(), name=f"aioproc service {self.service.name}")
        self.task.add_done_callback(self._task_done)

    def request_stop(self) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)
            if self.active:
                pid = self.proc.pid if self.proc is not None else None
                self.sup._emit(Stopping(service=self.service.name, pid=pid))

    async def stop(self) -> None:
        self.request_stop()
        if self.task is not None:
            await asyncio.wait([self.task])

    def kill_now(self) -> None:
        """SIGKILL the running process (its group) at once; no restart after it."""
        self.request_stop()
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, RuntimeError):
            # self.proc is only set while its reap is held (see _run_once).
            if self.service.kill_group:
                signal_group(proc, signal.SIGKILL)
            else:
                proc.kill()
        if proc.cgroup is not None:
            proc.cgroup.kill()

    def snapshot(self) -> ServiceStatus:
        uptime = None
        if self.proc is not None and self.started_at is not None:
            uptime = time.monotonic() - self.started_at
        return ServiceStatus(
            name=self.service.name,
            state=self.state,
            pid=None if self.proc is None else self.proc.pid,
            restarts=self.restarts,
            last_status=self.last_status,
            uptime=uptime,
            message=self.message,
            last_clean=self.last_clean,
            members=_members(self.proc),
        )

    def _set_state(self, state: ServiceState) -> None:
        if state is not self.state:
            self.state = state
            self.sup._changed()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.ready.clear()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            asyncio.get_running_loop().call_exception_handler(
                {
                    "message": f"aioproc: service {self.service.name!r} failed unexpectedly",
                    "exception": exc,
                    "task": task,
                }
            )
            self.message = f"internal error: {exc!r}"
            self.state = _S.FATAL
        elif self.state not in _ENDED:
            self.state = _S.STOPPED
        self.sup._runner_ended(self)

    # ------------------------------------------------------------ lifecycle
    async def _lifecycle(self) -> None:
        svc = self.service
        history = StartHistory(svc.start_limit)
        attempt = 0  # backoff attempt; back to 0 after a stable run
        starts = 0
        self.restarts = 0
        while not self.stop_requested and not self.sup._closing:
            if svc.depends_on and not await self._wait_deps():
                if self.state is _S.FATAL:
                    return
                break
            if not history.allow(time.monotonic()):
                limit = svc.start_limit
                self._fatal(f"start limit hit: {limit.burst} starts within {limit.interval:g} s")
                return
            if starts:
                self.restarts += 1
            run = await self._run_once(starts)
            starts += 1
            self.last_status = run.status
            self.last_clean = ended_cleanly(
                run.status, run.reason, svc.success_exit_codes, svc.stop_signal
            )
            if run.reason == "stopped" or self.stop_requested:
                self._emit_exited(run, False)
                break
            restart = not run.fatal and should_restart(
                svc.restart,
                run.status,
                run.reason,
                svc.success_exit_codes,
                svc.restart_exit_codes,
            )
            restart = restart and not self.sup._closing
            self._emit_exited(run, restart)
            if run.fatal:
                self._fatal(run.error or "cannot be spawned")
                return
            if not restart:
                self._set_state(_S.EXITED)
                return
            if run.ran_for >= svc.stable_after:
                attempt = 0
            delay = svc.backoff.delay(attempt)
            self._set_state(_S.BACKOFF)
            self.sup._emit(BackingOff(service=svc.name, delay=delay, attempt=attempt))
            attempt += 1
            if await self._stopped_within(delay):
                break
        self._set_state(_S.STOPPED)
        self.sup._emit(Stopped(service=svc.name, status=self.last_status))

    def _emit_exited(self, run: _Run, will_restart: bool) -> None:
        self.sup._emit(
            Exited(
                service=self.service.name,
                pid=run.pid,
                status=run.status,
                reason=run.reason,
                will_restart=will_restart,
                error=run.error,
            )
        )

    def _fatal(self, reason: str) -> None:
        self.message = reason
        self._set_state(_S.FATAL)
        self.sup._emit(Fatal(service=self.service.name, reason=reason))

    async def _stopped_within(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; True (at once) if a stop is requested meanwhile."""
        assert self._stop is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._stop), delay)
        except asyncio.TimeoutError:
            return self.sup._closing
        return True

    async def _wait_deps(self) -> bool:
        """Wait until every dependency meets its condition; False if this one must not start.

        ``started``: the dependency has been spawned (since it was last started).
        ``ready``: it is ready, or it ended successfully and will not restart (a
        one-shot job). ``completed_successfully``: it ended successfully and will not
        restart. A dependency that can no longer meet its condition (FATAL, or ended
        in failure, or ended before it was ever spawned) makes this service FATAL,
        with the reason. A stopped one is waited for: someone may start it.
        """
        assert self._stop is not None
        self._set_state(_S.WAITING)
        conditions = self.service.dependency_conditions
        while True:
            if self.stop_requested or self.sup._closing:
                return False
            waiting = []
            for name, condition in conditions.items():
                dep = self.sup._runners[name]
                verdict = _dependency_met(dep, condition)
                if verdict is True:
                    continue
                if isinstance(verdict, str):
                    self._fatal(f"dependency {name!r} {verdict}")
                    return False
                waiting.append(name)
            if not waiting:
                return True
            await asyncio.wait(
                [self._stop, self.sup._change_future()], return_when=asyncio.FIRST_COMPLETED
            )

    # ------------------------------------------------------------------ one run
    async def _run_once(self, attempt: int) -> _Run:
        svc = self.service
        loop = asyncio.get_running_loop()
        self._set_state(_S.STARTING)
        notify: NotifySocket | None = None
        sink: Sink | None = None
        pipes: Pipes | None = None
        history = self.sup._history

        def on_block(block: bytes, err: bool) -> None:
            # On the loop thread, from the pipes' readers (registered once ``ctx``
            # and ``sink`` are set): the lines go to the sink, the history and,
            # until it has passed, a readiness check reading lines.
            when = time.time()
            assert sink is not None
            try:
                sink.block(block, err, when)
            except Exception as exc:  # a callable output that raised: report it, go on
                loop.call_exception_handler(
                    {"message": "aioproc: a service output callback raised", "exception": exc}
                )
            history.record_block(svc.name, block, when)
            if ctx.wants_lines:
                for line in split_lines(block):
                    ctx.feed_line(line)

        try:
            extra: dict[str, str] = {}
            if isinstance(svc.ready, ReadyNotify):
                notify = NotifySocket(
                    self._on_notify_status,
                    uid=_service_uid(svc.spawn_kwargs.get("user")),
                    access=svc.ready.access,
                )
                extra["NOTIFY_SOCKET"] = notify.address
                if svc.ready.watchdog is not None:
                    extra["WATCHDOG_USEC"] = str(int(svc.ready.watchdog * 1e6))
            if svc.piped:
                console = self.sup.console
                sink = make_sink(svc.output, svc.name, console, self.sup._logs)
                separate = svc.output == "prefix" and console.separate_stderr
                pipes = Pipes(separate, on_block)
            kwargs = dict(svc.spawn_kwargs)
            kwargs.setdefault("stdin", DEVNULL)
            proc = await spawn(
                svc.argv,
                stdout=None if pipes is None else pipes.stdout,
                stderr=None if pipes is None else pipes.stderr or STDOUT,
                env=svc.child_env(extra),
                cwd=svc.cwd,
                kill_group=svc.kill_group,
                stop_signal=svc.stop_signal,
                stop_timeout=svc.stop_timeout,
                pdeathsig=svc.pdeathsig,
                **kwargs,
            )
        except BaseException as exc:
            if notify is not None:
                notify.close()
            if sink is not None:
                sink.close()
            if pipes is not None:
                pipes.close()
            if isinstance(exc, (TypeError, ValueError)):
                self.error_code = 1
                return _Run(None, "spawn-failed", f"{type(exc).__name__}: {exc}", fatal=True)
            if isinstance(exc, OSError):
                self.error_code = _error_code(exc)
                return _Run(None, "spawn-failed", str(exc))
            raise
        # No await since spawn() returned: the child cannot have been reaped yet,
        # so from here on its PID (and group id) stays ours until we let go.
        hold: ContextManager[None] = hold_reap(proc) if svc.kill_group else contextlib.nullcontext()
        hold.__enter__()
        if notify is not None:
            notify.watch(proc.pid, proc.pid if svc.kill_group else None)
        self.proc = proc
        self.spawned = True
        self.started_at = started = time.monotonic()
        self.error_code = None
        leader = LeaderWatch(proc, held=svc.kill_group)
        ctx = ReadyContext(proc, notify)
        if sink is not None:
            sink.pid = proc.pid
        if pipes is not None:
            pipes.spawned()
        reason: ExitReason = "exited"
        error = None
        status: ExitStatus | None = None
        try:
            self.sup._emit(Starting(service=svc.name, pid=proc.pid, attempt=attempt))
            reason, error = await self._supervise(proc, leader, ctx)
            await self._terminate(proc, leader, reason)
        finally:
            # From here the run is over whatever happened: nothing may outlive it.
            self.proc = None
            self.ready.clear()
            if not leader.done:  # cancelled, or a bug: kill rather than leave it behind
                with contextlib.suppress(ProcessLookupError, RuntimeError):
                    if svc.kill_group:
                        signal_group(proc, signal.SIGKILL)
                    else:
                        proc.kill()
                if proc.cgroup is not None:
                    proc.cgroup.kill()
            leader.close()
            hold.__exit__(None, None, None)  # the leader is reaped from here on
            status = await shielded(_finish(proc, pipes, sink, notify))
        return _Run(status, reason, error, time.monotonic() - started, proc.pid)

    async def _supervise(
        self, proc: Process, leader: LeaderWatch, ctx: ReadyContext
    ) -> tuple[ExitReason, str | None]:
        """Wait for readiness, then for the end of the run; say why it ends."""
        svc = self.service
        loop = asyncio.get_running_loop()
        assert self._stop is not None
        ready_task: asyncio.Task[None] | None = None
        watchdog: asyncio.Task[None] | None = None
        liveness: asyncio.Task[str] | None = None
        if svc.ready is None:
            ctx.forget_lines()
            self._became_ready(proc)
            if svc.liveness is not None:
                liveness = loop.create_task(watch_liveness(svc.liveness, ctx))
        else:
            ready_task = loop.create_task(svc.ready.wait_in_time(ctx))
        try:
            while True:
                waits: list[asyncio.Future[Any]] = [leader.exited, self._stop]
                waits += [t for t in (ready_task, watchdog, liveness) if t is not None]
                if ctx.notify is not None:
                    waits.append(ctx.notify.triggered)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                # A requested stop wins: the exit it causes is not a failure.
                if self._stop.done():
                    return "stopped", None
                if leader.done:
                    return "exited", None
                if ready_task is not None and ready_task.done():
                    exc = ready_task.exception()
                    ready_task = None
                    ctx.forget_lines()
                    if exc is None:
                        self._became_ready(proc)
                        if isinstance(svc.ready, ReadyNotify) and svc.ready.watchdog:
                            assert ctx.notify is not None
                            watchdog = loop.create_task(
                                ctx.notify.watchdog_expired(svc.ready.watchdog)
                            )
                        if svc.liveness is not None:
                            liveness = loop.create_task(watch_liveness(svc.liveness, ctx))
                        continue
                    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                        return "ready-timeout", f"not ready within {svc.ready.timeout:g} s"  # type: ignore[union-attr]
                    return "ready-failed", f"readiness check failed: {exc!r}"
                if ctx.notify is not None and ctx.notify.triggered.done():
                    return "watchdog", "the service sent WATCHDOG=trigger"
                if watchdog is not None and watchdog.done():
                    return "watchdog", "no WATCHDOG=1 in time"
                if liveness is not None and liveness.done():
                    self.message = why = f"liveness: {liveness.result()}"
                    return "liveness", why
        finally:
            for task in (ready_task, watchdog, liveness):
                if task is not None:
                    task.cancel()

    def _became_ready(self, proc: Process) -> None:
        self._set_state(_S.RUNNING)
        self.ready.set()
        self.sup._emit(Ready(service=self.service.name, pid=proc.pid))

    def _on_notify_status(self, text: str) -> None:
        self.message = text

    async def _terminate(self, proc: Process, leader: LeaderWatch, reason: ExitReason) -> None:
        """End the run: stop_signal, ``stop_timeout``, SIGKILL; wait for all of it.

        For a leader that exited on its own this stops what it left in its group
        (systemd does the same with what is left in a unit's cgroup).
        """
        svc = self.service
        cg = proc.cgroup
        loop = asyncio.get_running_loop()
        deadline = loop.time() + svc.stop_timeout
        if not svc.kill_group:
            if leader.done and (cg is None or not cg.populated):
                return
            self._set_state(_S.STOPPING)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(svc.stop_signal)
            if cg is not None:
                cg.signal(svc.stop_signal)
            try:
                await asyncio.wait_for(asyncio.shield(leader.exited), svc.stop_timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await leader.exited
            await _empty_cgroup(cg, deadline - loop.time())
            return
        pgid = proc.pid
        scanner = self.sup._scanner
        if leader.done and not await scanner.members(pgid) and (cg is None or not cg.populated):
            return
        self._set_state(_S.STOPPING)
        signal_group(proc, svc.stop_signal)
        if cg is not None:
            # The cgroup holds what left the group too (setsid, double forks).
            cg.signal(svc.stop_signal)
        if svc.stop_signal not in (signal.SIGKILL, signal.SIGCONT):
            # As systemd: a stopped (SIGSTOP) member could not act on the signal.
            signal_group(proc, signal.SIGCONT)
            if cg is not None:
                cg.signal(signal.SIGCONT)
        if not await wait_group_empty(pgid, leader, svc.stop_timeout, scanner):
            signal_group(proc, signal.SIGKILL)
            await wait_group_empty(pgid, leader, None, scanner)
        await _empty_cgroup(cg, deadline - loop.time())


def _dependency_met(dep: _Runner, condition: DependencyCondition) -> bool | str:
    """True if ``dep`` meets ``condition``, False if not yet, or why it never will."""
    svc = dep.service
    status = dep.last_status
    completed = (
        dep.state is _S.EXITED
        and status is not None
        and is_clean(status, "exited", svc.success_exit_codes)
    )
    if condition == "started" and dep.spawned:
        return True
    if condition == "ready" and dep.ready.is_set():
        return True
    if completed:
        return True
    if dep.state is _S.FATAL:
        return f"is fatal ({dep.message})" if dep.message else "is fatal"
    if dep.state is _S.EXITED:
        if condition == "completed_successfully":
            return f"did not complete successfully ({_describe_end(status)})"
        if condition == "ready":
            return f"exited before it was ready ({_describe_end(status)})"
    return False


def _describe_end(status: ExitStatus | None) -> str:
    if status is None:
        return "it could not be spawned"
    if status.signal is not None:
        return f"killed by {status.signal.name}"
    return f"exit code {status.exit_code}"


def _members(proc: Process | None) -> tuple[int, ...]:
    """The processes of a run with a cgroup (cheap: a read of cgroup.procs)."""
    if proc is None or proc.cgroup is None:
        return ()
    try:
        return tuple(proc.cgroup.members())
    except OSError:
        return ()


async def _empty_cgroup(cg: Cgroup | None, left: float) -> None:
    """Wait out the rest of the stop timeout for the cgroup, then kill what is left."""
    if cg is None:
        return
    if left <= 0 or not await cg.wait_empty(left):
        cg.kill()
        await cg.wait_empty(None)


async def _finish(
    proc: Process, pipes: Pipes | None, sink: Sink | None, notify: NotifySocket | None
) -> ExitStatus:
    """Reap the leader, pass on the rest of its output, release everything."""
    try:
        status = await proc.wait()
        if pipes is not None:
            pipes.finish()
        return status
    finally:
        if pipes is not None:
            pipes.close()
        await proc.aclose()
        if sink is not None:
            sink.close()
        if notify is not None:
            notify.close()


def _check_log_files(services: Iterable[Service]) -> None:
    """Services that write to one file must agree on its rotation (they share its writer)."""
    seen: dict[str, tuple[str, tuple[int, ...]]] = {}
    for service in services:
        spec = log_file_of(service.output)
        if spec is None:
            continue
        key = os.path.realpath(spec.path)
        other = seen.setdefault(key, (service.name, spec.rotation))
        if other[1] != spec.rotation:
            raise ValueError(
                f"services {other[0]!r} and {service.name!r} write to the same log file "
                f"{key!r} with different max_bytes or backups"
            )


def _find_cycle(services: dict[str, Service]) -> list[str] | None:
    """A dependency cycle as a list of names (first == last), or None."""
    colour: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        colour[name] = 1
        path.append(name)
        for dep in services[name].depends_on:
            if colour.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep in services and colour.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        colour[name] = 2
        return None

    for name in services:
        if name not in colour:
            found = visit(name)
            if found:
                return found
    return None


class Supervisor:
    """Runs :class:`Service` objects: ``async with Supervisor(services) as sup: ...``.

    Entering starts every service (each once its dependencies are ready); leaving
    stops them all in reverse dependency order within ``shutdown_timeout`` seconds
    (then SIGKILL). ``await sup.wait()`` returns the :class:`Outcome` once every
    service has ended, or once an essential one failed and the rest were stopped.

    The console (:attr:`console`) is where ``output="prefix"`` services write:
    ``output_stream`` (default ``sys.stdout``), as ``name | line`` or, with
    ``log_format="json"``, as JSON lines. ``color`` (None: auto), ``prefix_width`` (a
    minimum), ``timestamps`` (None, ``"clock"`` or ``"iso"``) and ``mark_stderr``
    (stderr lines shown with ``!``) shape the text form; the services' control
    characters and escape sequences are shown escaped (``\x1b``), and
    ``raw_output=True`` keeps their colours (SGR sequences) only.
    ``log_lines``: how many of each service's last output lines are kept for
    :meth:`logs` (0: none).

    Raises :class:`ValueError` for duplicate names, an unknown dependency or a
    dependency cycle.
    """

    def __init__(
        self,
        services: Iterable[Service] = (),
        *,
        shutdown_timeout: float = 30.0,
        color: bool | None = None,
        output_stream: TextIO | None = None,
        prefix_width: int = 0,
        log_lines: int = 1000,
        raw_output: bool = False,
        timestamps: Timestamps | None = None,
        log_format: LogFormat = "text",
        mark_stderr: bool = False,
    ) -> None:
        self.shutdown_timeout = check_duration(shutdown_timeout, "shutdown_timeout")
        #: Where ``output="prefix"`` services write, and :meth:`Console.say` lines.
        self.console = Console(
            output_stream, color, prefix_width, raw_output, timestamps, log_format, mark_stderr
        )
        self._logs = LogFiles()
        self._history = LogHistory(log_lines)
        self._scanner = GroupScanner()  # one /proc scan for all the groups being stopped
        self._services: dict[str, Service] = {}
        self._runners: dict[str, _Runner] = {}
        for service in services:
            self._register(service)
        for service in self._services.values():
            self._check_deps(service)
        _check_log_files(self._services.values())
        cycle = _find_cycle(self._services)
        if cycle:
            raise ValueError(f"dependency cycle: {' -> '.join(cycle)}")
        self._entered = False
        self._closing = False
        self._closed = False
        self._shutdown_task: asyncio.Task[None] | None = None
        self._final: Outcome | None = None
        self._streams: list[EventStream] = []
        self._change: asyncio.Future[None] | None = None
        self._busy = 0  # reconfigure() in progress: wait() holds on
        self._reconfiguring: asyncio.Lock | None = None

    def _register(self, service: Service) -> None:
        if not isinstance(service, Service):
            raise TypeError(f"expected a Service, got {type(service).__name__}")
        if service.name in self._services:
            raise ValueError(f"duplicate service name {service.name!r}")
        self._services[service.name] = service
        self._runners[service.name] = _Runner(self, service)
        self.console.register(service.name)
        self._history.register(service.name)

    def _check_deps(self, service: Service) -> None:
        for dep in service.depends_on:
            if dep not in self._services:
                raise ValueError(f"service {service.name!r} depends on unknown service {dep!r}")

    # ----------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Supervisor can only be entered once")
        self._entered = True
        self._launch([name for name, svc in self._services.items() if svc.autostart])
        self._changed()
        return self

    def _launch(self, names: Iterable[str]) -> None:
        """Launch ``names`` and the services they depend on that are not running.

        Dependencies first pulled in, as systemd pulls in what an enabled unit
        requires: a service left out by ``autostart=False`` still starts when a
        started service needs it. Whatever stays out is parked: stopped, waiting
        for a :meth:`start`, so :meth:`wait` does not take it for ended.
        """
        chosen = list(dict.fromkeys(names))
        todo = list(chosen)
        while todo:
            for dep in self._services[todo.pop(0)].depends_on:
                runner = self._runners[dep]
                # Not one that runs, nor one that ran and ended (a finished job is
                # not run again): only what never started, or was stopped.
                if dep not in chosen and (runner.task is None or runner.parked):
                    chosen.append(dep)
                    todo.append(dep)
        for name, runner in self._runners.items():
            if name in chosen:
                runner.launch()
            elif not runner.active and runner.task is None:
                runner.parked = True  # never started: waits for a start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every service (reverse dependency order, ``shutdown_timeout``) and close.

        Shielded from cancellation: it is re-raised once everything is stopped.
        """
        if not self._entered or self._closed:
            return
        self._begin_shutdown()
        assert self._shutdown_task is not None
        await shielded(_await_task(self._shutdown_task))

    def _begin_shutdown(self) -> None:
        if self._shutdown_task is None:
            self._closing = True
            self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown())
            self._changed()

    async def _shutdown(self) -> None:
        tasks: dict[str, asyncio.Task[None]] = {}
        # Who depends on whom, reversed once (not once per service: that was quadratic).
        users: dict[str, list[str]] = {}
        for other, svc in self._services.items():
            for dep in svc.depends_on:
                users.setdefault(dep, []).append(other)

        async def stop_after_dependents(name: str) -> None:
            # Reverse dependency order: a service stops once all that depend on it did.
            # Services with no dependency between them stop concurrently.
            dependents = [tasks[other] for other in users.get(name, ()) if other in tasks]
            if dependents:
                await asyncio.wait(dependents)
            await self._runners[name].stop()

        loop = asyncio.get_running_loop()
        for name in self._runners:
            tasks[name] = loop.create_task(stop_after_dependents(name))
        try:
            if tasks:
                _, pending = await asyncio.wait(tasks.values(), timeout=self.shutdown_timeout)
                if pending:
                    self.kill()
                    await asyncio.wait(pending)
        finally:
            self._closed = True
            for stream in list(self._streams):
                stream._close()
            self._streams.clear()
            self._history.close()
            self._changed()

    def kill(self) -> None:
        """SIGKILL every service's process group now; nothing is restarted after it."""
        self._closing = True
        for runner in self._runners.values():
            runner.kill_now()
        if self._entered:
            self._changed()

    async def wait(self) -> Outcome:
        """Wait until every service has ended, or a shutdown is complete; the outcome.

        A service stopped by :meth:`stop` has not ended: it waits for a
        :meth:`start` (or the shutdown), and so does ``wait()``.
        """
        while True:
            if self._closed:
                break
            if self._shutdown_task is None and not self._busy and not self._held():
                break
            await asyncio.shield(self._change_future())
        return self._final or Outcome(ok=True)

    def _held(self) -> bool:
        # A service stopped on request (stop()) is parked, not ended: whoever
        # stopped it may start it again, so wait() goes on waiting for it.
        return any(r.active or r.parked for r in self._runners.values())

    # ------------------------------------------------------------- run-time control
    def _runner(self, name: str) -> _Runner:
        try:
            return self._runners[name]
        except KeyError:
            raise KeyError(f"no service named {name!r}") from None

    def _check_open(self) -> None:
        if not self._entered:
            raise RuntimeError("the supervisor is not running: use 'async with Supervisor(...)'")
        if self._closing:
            raise RuntimeError("the supervisor is shutting down")

    async def start(self, name: str) -> ServiceStatus:
        """Start a service that is not running; return its status once ready (or ended)."""
        self._check_open()
        runner = self._runner(name)
        if not runner.active:
            runner.launch()
        assert runner.task is not None
        ready = asyncio.ensure_future(runner.ready.wait())
        try:
            await asyncio.wait([ready, runner.task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        return runner.snapshot()

    async def stop(self, name: str) -> ServiceStatus:
        """Stop a service (``stop_signal``, ``stop_timeout``, SIGKILL; its whole group)."""
        runner = self._runner(name)
        # Parked before it ends, or wait() could see it ended and return first.
        runner.parked = not self._closing
        await shielded(runner.stop())
        return runner.snapshot()

    def send_signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to the service's running process (its leader, not the group).

        Raises :class:`ProcessLookupError` when no process of it is running (it is
        stopped, waiting, backing off, or its process has just exited).
        """
        proc = self._runner(name).proc
        if proc is None:
            raise ProcessLookupError(f"service {name!r} has no running process")
        proc.send_signal(sig)

    async def restart(self, name: str) -> ServiceStatus:
        """Stop the service, then start it again."""
        await self.stop(name)  # parked in between: wait() does not return
        return await self.start(name)

    def add(self, service: Service) -> None:
        """Add a service; it starts at once if the supervisor is running."""
        if self._closing:
            raise RuntimeError("the supervisor is shutting down")
        self._check_deps(service)
        _check_log_files([*self._services.values(), service])
        self._register(service)
        # No cycle is possible: existing services cannot depend on the new one.
        if self._entered:
            self._runners[service.name].launch()
            self._changed()

    async def remove(self, name: str) -> None:
        """Stop a service and forget it. Refused while other services depend on it."""
        self._runner(name)  # KeyError for an unknown name
        users = [n for n, s in self._services.items() if name in s.depends_on]
        if users:
            raise ValueError(f"cannot remove {name!r}: {', '.join(users)} depend on it")
        await self.stop(name)
        del self._runners[name]
        del self._services[name]
        self._history.forget(name)
        self._changed()

    async def reconfigure(self, services: Iterable[Service]) -> Reconfigured:
        """Make ``services`` the supervisor's set of services, touching only what differs.

        Removed and changed services are stopped (dependents before what they
        depend on); then changed and added ones are started (each once its
        dependencies are ready), but for ``autostart=False`` ones, which start
        again only if they were running; stopped dependencies of what starts are
        started too. Unchanged services keep running, same process.
        The new set is checked first as :class:`Supervisor` would check it: a
        :class:`ValueError` or :class:`TypeError` then, and nothing is changed.
        Calls are serialised; ``wait()`` does not return while one is in progress.
        """
        new = list(services)
        self._check_open()
        Supervisor(new)  # the same checks as the constructor; starts nothing
        if self._reconfiguring is None:
            self._reconfiguring = asyncio.Lock()
        self._busy += 1
        try:
            async with self._reconfiguring:
                self._check_open()
                plan = diff(self._services, new)
                # A changed service runs again if it was running (or starting), or
                # if it starts on its own; an added one if it starts on its own.
                was_on = {n for n in plan.changed if self._runners[n].active}
                await shielded(self._stop_in_order([*plan.removed, *plan.changed]))
                by_name = {s.name: s for s in new}
                for name in plan.removed:
                    del self._runners[name]
                    del self._services[name]
                    self._history.forget(name)
                runners = {}
                for service in new:
                    runner = self._runners.get(service.name)
                    if service.name in plan.changed or runner is None:
                        runner = _Runner(self, by_name[service.name])
                        self.console.register(service.name)
                        self._history.register(service.name)
                    runners[service.name] = runner
                self._runners = runners
                self._services = {name: r.service for name, r in runners.items()}
                if not self._closing:
                    self._launch(
                        name
                        for name in (*plan.changed, *plan.added)
                        if name in was_on or by_name[name].autostart
                    )
                return plan
        finally:
            self._busy -= 1
            self._changed()

    async def _stop_in_order(self, names: Iterable[str]) -> None:
        """Stop ``names``, each once those of them that depend on it have stopped."""
        chosen = list(names)
        tasks: dict[str, asyncio.Task[None]] = {}

        async def stop_after_dependents(name: str) -> None:
            dependents = [
                tasks[other]
                for other in chosen
                if name in self._services[other].depends_on and other in tasks
            ]
            if dependents:
                await asyncio.wait(dependents)
            await self._runners[name].stop()

        loop = asyncio.get_running_loop()
        for name in chosen:
            tasks[name] = loop.create_task(stop_after_dependents(name))
        if tasks:
            await asyncio.wait(tasks.values())

    def status(self) -> dict[str, ServiceStatus]:
        """A snapshot of every service, by name."""
        return {name: runner.snapshot() for name, runner in self._runners.items()}

    def logs(self, names: Iterable[str] | None = None, lines: int | None = None) -> list[LogLine]:
        """The last ``lines`` lines of output kept for ``names`` (default: every service).

        Oldest first, services merged in the order their lines were read. At most
        ``log_lines`` lines per service are kept (the constructor's argument).
        Raises :class:`KeyError` for an unknown name.
        """
        chosen = (
            list(self._runners) if names is None else [self._runner(n).service.name for n in names]
        )
        return self._history.last(chosen, lines)

    def follow_logs(self, names: Iterable[str] | None = None, maxsize: int = 1024) -> LogStream:
        """A :class:`LogStream` of the lines of ``names`` (default: every service) from now on.

        Call it right after :meth:`logs`, with no ``await`` between, to get the
        history and then every new line, none twice and none missed.
        """
        chosen = None if names is None else [self._runner(n).service.name for n in names]
        return self._history.follow(chosen, maxsize)

    def reopen_logs(self) -> list[str]:
        """Close every open log file and open it again at its path; their paths.

        For logrotate's ``create`` mode (it renames the file, then asks for a
        reopen), or after moving a file away: a new, empty file is created at the
        path. Lines go to the old file until then, and to the new one from then
        on, none lost. Files of services that are not running are not open:
        they are opened at their next start anyway.

        Raises :class:`OSError` naming the file when one cannot be opened again
        (after trying them all); that one is still written where it was.
        """
        return self._logs.reopen()

    @property
    def services(self) -> dict[str, Service]:
        return dict(self._services)

    def events(self, maxsize: int = 1024) -> EventStream:
        """A stream of the events from now on (see :class:`EventStream`)."""
        stream = EventStream(maxsize, self._streams.remove)
        if self._closed:
            stream._close()
        else:
            self._streams.append(stream)
        return stream

    # ------------------------------------------------------------------ internals
    def _emit(self, event: Event) -> None:
        for stream in self._streams:
            stream._put(event)

    def _change_future(self) -> asyncio.Future[None]:
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
        return self._change

    def _changed(self) -> None:
        """Wake everything that waits for a state change (wait(), dependencies)."""
        fut = self._change
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _runner_ended(self, runner: _Runner) -> None:
        svc = runner.service
        if svc.essential and runner.state in (_S.EXITED, _S.FATAL) and not self._closing:
            status = runner.last_status
            ok = (
                runner.state is _S.EXITED
                and status is not None
                and is_clean(status, "exited", svc.success_exit_codes)
            )
            self._final = Outcome(
                ok=ok,
                service=svc.name,
                status=status,
                reason=runner.message if runner.state is _S.FATAL else "exited",
                error_code=runner.error_code,
            )
            self._begin_shutdown()
        self._changed()


async def _await_task(task: asyncio.Task[None]) -> None:
    await task
