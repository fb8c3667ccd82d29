"""Serving a supervisor's control socket: :class:`ControlServer` and :func:`serve`.

One asyncio task per connection, all on the supervisor's loop. A connection is
first checked with ``SO_PEERCRED`` (root or our own uid only); then it sends
request lines and gets replies, until it closes. Every wait on a client is
bounded: :data:`~._protocol.REQUEST_TIMEOUT` for each request line, and
:data:`~._protocol.MAX_LINE` bytes for its length; a client that does not read
what it asked for (``logs -f``) only blocks its own task, and its queue drops
the oldest lines rather than grow.

Every state change's reason (``status``'s ``reason``) comes from the
supervisor's events, subscribed to when the server is entered: enter it before
the supervisor (``aioproc run`` does) to see every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

from .. import ExitStatus
from ..supervisor import (
    BackingOff,
    Event,
    Exited,
    Fatal,
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
from ._protocol import (
    MAX_CLIENTS,
    MAX_LINE,
    REQUEST_TIMEOUT,
    ControlError,
    encode,
    error_reply,
)
from ._socket import ControlSocket, bind_control_socket, peer_credentials

__all__ = ["ControlServer", "describe_event", "serve", "wanted"]

Reload = Callable[[], Awaitable[Reconfigured]]
Log = Callable[[str], None]


def wanted(status: ServiceStatus, service: Service | None) -> bool:
    """Whether a service is where it should be: running and ready, or completed as expected."""
    if status.state is ServiceState.RUNNING:
        return True
    if status.state is ServiceState.EXITED and status.last_status is not None:
        code = status.last_status.exit_code
        extra = service.success_exit_codes if service is not None else frozenset()
        return status.last_status.success or (code is not None and code in extra)
    return False


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


class _Bad(Exception):
    """A request that gets an error reply; the connection stays usable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ControlServer:
    """Serves a :class:`Supervisor`'s control endpoint on a unix socket.

    Made by :func:`serve`; ``async with`` binds the socket (mode 0600; a stale one
    is replaced, a live one raises :class:`SocketInUse`) and starts serving;
    leaving closes every connection and removes the socket file.
    """

    def __init__(
        self,
        supervisor: Supervisor,
        path: str | os.PathLike[str],
        *,
        reload: Reload | None = None,
        log: Log | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.supervisor = supervisor
        self.path = os.path.abspath(os.fspath(path))
        self._reload = reload
        self._log = log
        self._timeout = request_timeout
        self._socket: ControlSocket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._reasons: dict[str, str] = {}
        self._events_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None

    def bind(self) -> None:
        """Create the socket now (``async with`` does it otherwise).

        Raises :class:`SocketInUse` (a live endpoint, or not a socket, at the
        path) or :class:`OSError`. ``aioproc run`` binds before it starts any
        service, so that a second run at the same path starts nothing.
        """
        if self._socket is None:
            self._socket = bind_control_socket(self.path)

    async def __aenter__(self) -> ControlServer:
        # Events first, before anything awaits: the reason of every state change.
        events = self.supervisor.events()
        self._events_task = asyncio.ensure_future(self._follow_events(events))
        try:
            self.bind()
            assert self._socket is not None
            self._server = await asyncio.start_unix_server(
                self._connected, sock=self._socket.sock, limit=MAX_LINE
            )
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop serving: close every connection, remove the socket file."""
        self._closed.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers))
        if self._events_task is not None:
            self._events_task.cancel()
            await asyncio.wait([self._events_task])
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _follow_events(self, events: Any) -> None:
        async with events:
            async for event in events:
                reason = describe_event(event)
                if reason is not None:
                    self._reasons[event.service] = reason

    # ------------------------------------------------------------ connections
    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The work runs in a task of our own, so that closing the endpoint cancels
        # it and not the task asyncio's server made for this callback (whose
        # done-callback calls exception() on it, which a cancelled task raises).
        task = asyncio.ensure_future(self._serve_client(reader, writer))
        self._handlers.add(task)
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._handlers.discard(task)
            writer.close()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, (ConnectionError, BrokenPipeError)):  # a client that left
                raise exc  # type: ignore[misc]

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid, _ = peer_credentials(sock)
        if uid not in (0, os.geteuid()):
            if self._log is not None:
                self._log(f"control: refused a connection from uid {uid} (pid {pid})")
            writer.write(error_reply("forbidden", f"uid {uid} may not control this supervisor"))
            await writer.drain()
            return
        if len(self._handlers) > MAX_CLIENTS:
            writer.write(error_reply("busy", f"{MAX_CLIENTS} connections are served already"))
            await writer.drain()
            return
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self._timeout)
            except (asyncio.TimeoutError, TimeoutError):
                writer.write(error_reply("timeout", f"no request within {self._timeout:g} s"))
                await writer.drain()
                return
            except (ValueError, asyncio.LimitOverrunError):
                # readline() gives up at the limit: the line is longer than we read.
                writer.write(error_reply("too-long", f"request longer than {MAX_LINE} bytes"))
                await writer.drain()
                return
            if not line:
                return
            if not line.strip():
                continue
            keep = True
            try:
                keep = await self._dispatch(_parse(line), reader, writer)
            except _Bad as exc:
                writer.write(error_reply(exc.code, str(exc)))
            except KeyError as exc:  # a service removed by a reload meanwhile
                writer.write(error_reply("unknown-service", str(exc).strip('"')))
            except Exception as exc:
                # A bug of ours, or of the supervisor's: tell the client and the
                # loop's exception handler, and keep serving.
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "aioproc: a control request failed", "exception": exc}
                )
                writer.write(error_reply("failed", f"internal error: {exc!r}"))
            await writer.drain()
            if not keep:
                return

    # ---------------------------------------------------------------- requests
    async def _dispatch(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is done with."""
        what = request.get("request")
        sup = self.supervisor
        if what == "status":
            names = self._names(request, default_all=True)
            writer.write(encode({"ok": True, "pid": os.getpid(), "services": self._status(names)}))
            return True
        if what in ("start", "stop", "restart"):
            names = self._names(request, default_all=False)
            try:
                await self._act(what, names)
            except RuntimeError as exc:
                raise _Bad("shutting-down", str(exc)) from None
            writer.write(encode({"ok": True, "services": self._status(names)}))
            return True
        if what == "signal":
            names = self._names(request, default_all=False)
            sig = _signal(request.get("signal"))
            for name in names:
                try:
                    sup.send_signal(name, sig)
                except ProcessLookupError as exc:
                    raise _Bad("failed", str(exc).strip("'\"")) from None
            writer.write(encode({"ok": True, "services": self._status(names)}))
            return True
        if what == "logs":
            await self._logs(request, reader, writer)
            return False
        if what == "reload":
            writer.write(encode(await self._do_reload()))
            return True
        if what == "shutdown":
            if self._log is not None:
                self._log("control: shutdown requested")
            if self._shutdown is None:
                self._shutdown = asyncio.ensure_future(sup.aclose())
            writer.write(encode({"ok": True}))
            await writer.drain()
            # The connection stays open until the endpoint closes: a client
            # that waits for EOF knows when everything has stopped.
            await self._closed.wait()
            return False
        raise _Bad("unknown-request", f"unknown request {what!r}")

    def _names(self, request: dict[str, Any], default_all: bool) -> list[str]:
        known = list(self.supervisor.services)
        if request.get("all") is True:
            return known
        names = request.get("names")
        if names is None or names == []:
            if default_all:
                return known
            raise _Bad("bad-request", "name at least one service, or all")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _Bad("bad-request", "names must be a list of strings")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise _Bad("unknown-service", f"no service named {unknown[0]!r}")
        return list(dict.fromkeys(names))

    def _status(self, names: Iterable[str]) -> list[dict[str, Any]]:
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
                    "reason": self._reason(st),
                    "wanted": wanted(st, svc),
                }
            )
        return out

    def _reason(self, st: ServiceStatus) -> str | None:
        reason = self._reasons.get(st.name)
        if st.state is ServiceState.FATAL or reason is None:
            return st.message or reason  # why it is FATAL; a STATUS= line
        return reason

    async def _act(self, what: str, names: list[str]) -> None:
        sup = self.supervisor
        if what in ("stop", "restart"):
            await _stop_in_order(sup, names)
        if what in ("start", "restart"):
            # With what they need that is stopped (an operator's "start web" means
            # web running), together: each waits for its dependencies.
            await asyncio.gather(*(sup.start(name) for name in self._with_stopped_deps(names)))

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

    async def _logs(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sup = self.supervisor
        names = self._names(request, default_all=True)
        count = request.get("lines", 10)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise _Bad("bad-request", "lines must be a number of lines, or null for all")
        follow = request.get("follow", False)
        if not isinstance(follow, bool):
            raise _Bad("bad-request", "follow must be true or false")
        # No await between the two: every line is in the history or the stream.
        history = sup.logs(names, count)
        stream = sup.follow_logs(names) if follow else None
        try:
            writer.write(encode({"ok": True}))
            for line in history:
                writer.write(encode({"line": _line(line)}))
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
            if stream is None:
                writer.write(encode({"end": True}))
                return
            await writer.drain()
            # A follower of a silent service writes nothing for a long time: notice
            # the client leaving by its EOF, or its task would wait forever.
            gone = asyncio.ensure_future(_until_eof(reader, stream))
            dropped = 0
            async for line in stream:
                if stream.dropped != dropped:
                    writer.write(encode({"dropped": stream.dropped - dropped}))
                    dropped = stream.dropped
                writer.write(encode({"line": _line(line)}))
                await writer.drain()
            gone.cancel()
            writer.write(encode({"end": True}))
        finally:
            if stream is not None:
                await stream.aclose()

    async def _do_reload(self) -> dict[str, Any]:
        if self._reload is None:
            raise _Bad("unsupported", "this supervisor has no configuration file to reload")
        try:
            result = await self._reload()
        except RuntimeError as exc:
            raise _Bad("shutting-down", str(exc)) from None
        except (ValueError, TypeError, OSError, ControlError) as exc:
            if self._log is not None:
                self._log(f"reload failed, nothing changed: {exc}")
            raise _Bad("failed", str(exc)) from None
        return {
            "ok": True,
            "added": list(result.added),
            "removed": list(result.removed),
            "changed": list(result.changed),
            "unchanged": list(result.unchanged),
        }


def _parse(line: bytes) -> dict[str, Any]:
    """A request line as an object with the right version; :class:`_Bad` otherwise."""
    try:
        request = json.loads(line)
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for non-UTF-8
        raise _Bad("bad-request", f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise _Bad("bad-request", "a request is a JSON object")
    if request.get("version") != 1:
        version = request.get("version")
        raise _Bad("unsupported-version", f"protocol version {version!r} (this server speaks 1)")
    return request


async def _until_eof(reader: asyncio.StreamReader, stream: LogStream) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(4096):
            pass  # a following client has nothing more to say
    await stream.aclose()


def _line(line: Any) -> dict[str, Any]:
    return {"service": line.service, "time": round(line.time, 6), "text": line.text}


def _signal(value: Any) -> signal.Signals:
    try:
        if isinstance(value, str):
            name = value.upper()
            if name.isdigit():
                return signal.Signals(int(name))
            return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        if isinstance(value, int) and not isinstance(value, bool):
            return signal.Signals(value)
    except (KeyError, ValueError):
        pass
    raise _Bad("bad-request", f"unknown signal {value!r}")


async def _stop_in_order(sup: Supervisor, names: list[str]) -> None:
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


def serve(
    supervisor: Supervisor,
    path: str | os.PathLike[str],
    *,
    reload: Reload | None = None,
    log: Log | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
) -> ControlServer:
    """Serve ``supervisor``'s control endpoint at ``path``: ``async with serve(sup, path):``.

    ``reload``, if given, is the coroutine function a ``reload`` request calls (it
    returns :class:`~aioproc.supervisor.Reconfigured`, typically from
    :meth:`Supervisor.reconfigure`; a :class:`ValueError` is reported to the
    client). ``log`` is called with a line for each notable thing (a refused peer,
    a failed reload). See ``docs/control.md``.
    """
    return ControlServer(supervisor, path, reload=reload, log=log, request_timeout=request_timeout)
