"""The HTTP server: :class:`HttpServer`, on aiohttp's web server.

Everything runs on the supervisor's loop. Each connection is its own asyncio
protocol, so a slow client only ever waits on its own socket:

* a request's size is bounded (``client_max_size``, header line and field
  limits), and a connection that has not sent a complete request within
  ``header_timeout`` seconds of connecting is closed (aiohttp has no such
  timeout of its own: a client that trickles its headers one byte a second
  would otherwise hold its connection for ever);
* at most ``max_connections`` are open at once; more are closed at once;
* a streamed reply (a log follow, the event stream) that cannot be written
  within ``write_timeout`` seconds (a client that stopped reading, so the
  kernel's buffers are full) ends that stream. Lines waiting for a slow reader
  queue in a bounded :class:`LogStream` that drops the oldest, so the services'
  output, and the supervisor, never wait for any client;
* a client that disconnects cancels its handler (``handler_cancellation``);
  actions (start/stop/restart, reload) are shielded from that, so they are
  never left half done (reopening the log files does not wait at all).

Who may talk to it (``docs/http.md``): with a token, every request but ``GET /``
(the page, which holds no data) must carry ``Authorization: Bearer TOKEN``,
compared in constant time. Without one (loopback only), the ``Host`` header
must name a loopback address or the bound one, so that a web page whose domain
an attacker re-points at 127.0.0.1 (DNS rebinding) is refused. Mutating routes
are POST only and refuse a cross-site request: an ``Origin`` other than the
server's own, or a ``Sec-Fetch-Site`` other than ``same-origin``/``none``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import importlib.resources
import json
import os
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
from aiohttp import web

from .._control._operations import (
    Log,
    OperationError,
    Operations,
    Reload,
    line_dict,
    wanted,
)
from .._durations import check_duration
from .._util import is_number
from ..supervisor import LogLine, LogStream, Supervisor
from ._address import is_loopback, parse_address
from ._metrics import CONTENT_TYPE, SupervisorCollector, scrape
from ._openapi import openapi
from ._usage import Usage, usage

__all__ = [
    "CLIENT_MAX_SIZE",
    "HEADER_TIMEOUT",
    "MAX_CONNECTIONS",
    "WRITE_TIMEOUT",
    "HttpServer",
    "is_loopback",
    "parse_address",
]

#: The largest request body read (bytes); larger: 413.
CLIENT_MAX_SIZE = 64 * 1024
#: Seconds a new connection has to send a complete request head.
HEADER_TIMEOUT = 10.0
#: Seconds a streamed reply may wait on a client that does not read.
WRITE_TIMEOUT = 30.0
#: Connections open at once; more are closed as they come.
MAX_CONNECTIONS = 64
#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE = 15.0
#: Seconds CPU and memory figures may be reused for (the same processes only).
USAGE_MAX_AGE = 1.0
#: Most lines of history one request gets.
MAX_LINES = 10_000

_STATUS = {
    "bad-request": 400,
    "unknown-service": 404,
    "failed": 409,
    "unsupported": 501,
    "shutting-down": 503,
}

_HandlerT = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _page() -> tuple[bytes, str]:
    """The page, and its Content-Security-Policy (its inline script and style by hash)."""
    text = importlib.resources.files(__package__).joinpath("page.html").read_text("utf-8")

    def digest(tag: str) -> str:
        m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S)
        assert m is not None, tag
        return (
            "'sha256-"
            + base64.b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode()
            + "'"
        )

    csp = (
        "default-src 'none'; "
        f"script-src {digest('script')}; style-src {digest('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return text.encode(), csp


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": code, "message": message}, status=status, headers=headers
    )


class HttpServer:
    """Serves a :class:`Supervisor` over HTTP: JSON API, metrics, probes and a page.

    ``async with`` (or :meth:`start` / :meth:`aclose`) binds and serves;
    :attr:`port` and :attr:`url` say where. Raises :class:`ValueError` for a
    non-loopback ``host`` without a ``token``.
    """

    def __init__(
        self,
        supervisor: Supervisor,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        reload: Reload | None = None,
        log: Log | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if token is not None and not token:
            raise ValueError("the token must not be empty")
        if token is None and not is_loopback(host):
            raise ValueError(
                f"serving HTTP on {host}, which is not a loopback address, needs a token"
            )
        self.supervisor = supervisor
        self.host = host
        self.port = port
        self._token = None if token is None else token.encode()
        self._ops = Operations(supervisor, reload=reload, log=log)
        self._header_timeout = check_duration(header_timeout, "header_timeout", positive=True)
        self._write_timeout = check_duration(write_timeout, "write_timeout", positive=True)
        self._max_connections = max_connections
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._collector = SupervisorCollector(self._ops, self._usage)
        self._usage_cache: tuple[float, Any, dict[str, Usage]] | None = None
        self._page, self._csp = _page()
        self._openapi = json.dumps(openapi()).encode()

    # ------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        """Bind and serve (once); raises :class:`OSError` if the address cannot be bound."""
        if self._runner is not None:
            return
        self._ops.start()
        try:
            app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[self._guard])
            self._routes(app)
            runner = web.AppRunner(
                app,
                handle_signals=False,
                access_log=None,
                handler_cancellation=True,
                shutdown_timeout=1.0,
                keepalive_timeout=75.0,
                max_line_size=8190,
                max_field_size=8190,
            )
            self._runner = runner
            await runner.setup()
            server = runner.server
            assert server is not None
            loop = asyncio.get_running_loop()
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._server = await loop.create_server(
                lambda: self._connection(server),
                self.host,
                self.port,
                family=family,
                reuse_address=True,
                backlog=128,
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException:
            await self.aclose()
            raise

    def _connection(self, server: web.Server) -> asyncio.Protocol:
        """A new connection's protocol, with a deadline for its first request."""
        proto = server()
        loop = asyncio.get_running_loop()

        def deadline() -> None:
            # _request_count: requests whose head aiohttp has parsed on this
            # connection (private, but the one way to know none came).
            if proto.transport is not None and getattr(proto, "_request_count", 1) == 0:
                proto.transport.close()

        loop.call_later(self._header_timeout, deadline)
        if len(server.connections) >= self._max_connections:
            loop.call_soon(lambda: proto.transport.close() if proto.transport else None)
        return proto

    async def aclose(self) -> None:
        """Stop serving: close the listening socket and every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._ops.aclose()

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ guard
    def _allowed_hosts(self) -> set[str]:
        names = {"localhost", "127.0.0.1", "[::1]", self.host.lower()}
        if ":" in self.host:
            names.add(f"[{self.host.lower()}]")
        return names | {f"{name}:{self.port}" for name in names}

    @web.middleware
    async def _guard(self, request: web.Request, handler: _HandlerT) -> web.StreamResponse:
        if self._token is None:
            # DNS rebinding: a page from evil.example re-pointed at 127.0.0.1
            # sends Host: evil.example. Only loopback names are ours.
            if (request.host or "").lower() not in self._allowed_hosts():
                return _error(403, "forbidden", "this Host is not served here")
        elif not (request.method in ("GET", "HEAD") and request.path == "/"):
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), self._token
            ):
                return _error(
                    401,
                    "unauthorized",
                    "a valid bearer token is needed",
                    **{"WWW-Authenticate": 'Bearer realm="aioproc"'},
                )
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            site = request.headers.get("Sec-Fetch-Site", "same-origin")
            if (origin is not None and origin != f"http://{request.host}") or site not in (
                "same-origin",
                "none",
            ):
                return _error(403, "forbidden", "cross-site requests are refused")
        try:
            response = await handler(request)
        except OperationError as exc:
            return _error(_STATUS.get(exc.code, 400), exc.code, str(exc))
        except KeyError as exc:  # a service removed by a reload meanwhile
            return _error(404, "unknown-service", str(exc).strip("'\""))
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    # ----------------------------------------------------------------- routes
    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._index)
        r.add_get("/openapi.json", self._openapi_doc)
        r.add_get("/healthz", self._healthz)
        r.add_get("/readyz", self._readyz)
        r.add_get("/metrics", self._metrics)
        r.add_get("/api/v1/services", self._list)
        r.add_get("/api/v1/services/{name}", self._one)
        r.add_post("/api/v1/services/{name}/{action:start|stop|restart}", self._action)
        r.add_post("/api/v1/services/{name}/signal", self._signal)
        r.add_get("/api/v1/services/{name}/logs", self._logs)
        r.add_get("/api/v1/events", self._events)
        r.add_post("/api/v1/reload", self._reload)
        r.add_post("/api/v1/logs/reopen", self._reopen)
        r.add_post("/api/v1/shutdown", self._shutdown)

    def _usage(self) -> dict[str, Usage]:
        groups: dict[int, str] = {}
        pids: dict[int, str] = {}
        services = self.supervisor.services
        for name, st in self.supervisor.status().items():
            if st.pid is None:
                continue
            svc = services.get(name)
            (groups if svc is not None and svc.kill_group else pids)[st.pid] = name
        # One /proc scan a second at most (it reads every process's stat: about
        # 5-10 ms with 200 processes on a loaded machine), and a new one as soon
        # as a service has a new pid: a scrape and a page refresh close together
        # share it, and nothing ever shows a process that is gone.
        now = time.monotonic()
        key = (groups, pids)
        if (
            self._usage_cache is None
            or self._usage_cache[1] != key
            or now - self._usage_cache[0] >= USAGE_MAX_AGE
        ):
            self._usage_cache = (now, key, usage(groups, pids))
        return self._usage_cache[2]

    def _services(self, names: list[str]) -> list[dict[str, Any]]:
        rows = self._ops.status(names)
        used = self._usage()
        for row in rows:
            cpu, rss = used.get(row["name"], (None, None))
            row["cpu_seconds"] = None if cpu is None else round(cpu, 3)
            row["rss_bytes"] = rss
        return rows

    def _name(self, request: web.Request) -> list[str]:
        return self._ops.names([request.match_info["name"]], default_all=False)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._page,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": self._csp,
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def _openapi_doc(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "pid": os.getpid()})

    async def _readyz(self, request: web.Request) -> web.Response:
        statuses = self.supervisor.status()
        services = self.supervisor.services
        waiting = [
            name
            for name, svc in services.items()
            if svc.essential and name in statuses and not wanted(statuses[name], svc)
        ]
        return web.json_response(
            {"ok": not waiting, "not_ready": waiting}, status=503 if waiting else 200
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=scrape(self._collector), headers={"Content-Type": CONTENT_TYPE})

    async def _list(self, request: web.Request) -> web.Response:
        names = list(self.supervisor.services)
        return web.json_response(
            {"ok": True, "pid": os.getpid(), "services": self._services(names)}
        )

    async def _one(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **self._services(self._name(request))[0]})

    async def _action(self, request: web.Request) -> web.Response:
        names = self._name(request)
        # Shielded: a client that goes away must not leave a restart half done.
        await asyncio.shield(self._ops.act(request.match_info["action"], names))
        return web.json_response({"ok": True, **self._services(names)[0]})

    async def _signal(self, request: web.Request) -> web.Response:
        names = self._name(request)
        body = await _json_body(request)
        self._ops.signal(names, body.get("signal"))
        return web.json_response({"ok": True, **self._services(names)[0]})

    async def _reload(self, request: web.Request) -> web.Response:
        return web.json_response(await asyncio.shield(self._ops.reload()))

    async def _reopen(self, request: web.Request) -> web.Response:
        return web.json_response(self._ops.reopen_logs())

    async def _shutdown(self, request: web.Request) -> web.Response:
        # Answered at once: the stop takes up to the shutdown timeout, and it
        # ends this server too (watch /api/v1/events, or the process, for the end).
        self._ops.shutdown(via="http")
        return web.json_response({"ok": True, "pid": os.getpid()}, status=202)

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        names = self._name(request)
        lines = _int_query(request, "lines", 100)
        follow = request.query.get("follow", "") in ("1", "true", "yes")
        history, stream = self._ops.logs(names, lines, follow)
        if stream is None:
            return web.json_response({"ok": True, "lines": [line_dict(x) for x in history]})
        try:
            response = await self._sse_start(request)
            await self._send_lines(response, history)
            await self._pump(response, stream, None)
        finally:
            await stream.aclose()
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Status snapshots when something happens, and every service's new lines."""
        lines = _int_query(request, "lines", 0)
        sup = self.supervisor
        # No await from the history to the stream: no line missed or repeated.
        history: list[LogLine] = []
        if lines:
            for name in sup.services:
                history.extend(sup.logs([name], lines))
            history.sort(key=lambda line: line.seq)
        stream = sup.follow_logs(None)
        try:
            response = await self._sse_start(request)
            await self._send_status(response)
            await self._send_lines(response, history)
            await self._pump(response, stream, self._send_status)
        finally:
            await stream.aclose()
        return response

    # -------------------------------------------------------------- streaming
    async def _sse_start(self, request: web.Request) -> web.StreamResponse:
        response = _EventStream(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                "X-Content-Type-Options": "nosniff",
            }
        )
        response.transport = request.transport
        await response.prepare(request)
        return response

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        """Write, or give up on a client that has not read for ``write_timeout`` s.

        Giving up resets the connection: closing it would wait to flush what
        the client does not read (and so would aiohttp's end of the reply), and
        even an aborted socket lingers in the kernel with its full send buffer
        while the client's window stays shut.
        """
        try:
            await asyncio.wait_for(response.write(data), self._write_timeout)
        except asyncio.TimeoutError:
            transport = getattr(response, "transport", None)
            if transport is not None:
                _reset(transport)
            raise

    async def _send_status(self, response: web.StreamResponse) -> None:
        names = list(self.supervisor.services)
        data = {"pid": os.getpid(), "services": self._ops.status(names)}
        await self._write(response, _event("status", data))

    async def _send_lines(self, response: web.StreamResponse, lines: list[LogLine]) -> None:
        for start in range(0, len(lines), 256):
            chunk = lines[start : start + 256]
            await self._write(response, b"".join(_event("log", line_dict(x)) for x in chunk))

    async def _pump(
        self,
        response: web.StreamResponse,
        stream: LogStream,
        on_change: Callable[[web.StreamResponse], Awaitable[None]] | None,
    ) -> None:
        """Send new lines (and, with ``on_change``, status after each event) until closed."""
        seen = self._ops.generation
        dropped = 0
        line_task: asyncio.Task[LogLine] | None = None
        change_task: asyncio.Task[int] | None = None
        try:
            while True:
                if line_task is None:
                    line_task = asyncio.ensure_future(stream.get())
                waits: list[asyncio.Future[Any]] = [line_task]
                if on_change is not None:
                    if change_task is None:
                        change_task = asyncio.ensure_future(self._ops.changed(seen))
                    waits.append(change_task)
                done, _ = await asyncio.wait(
                    waits, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    await self._write(response, b": keep-alive\n\n")
                    continue
                if change_task is not None and change_task.done():
                    change_task = None
                    await asyncio.sleep(0.02)  # a burst of events: one snapshot
                    seen = self._ops.generation
                    assert on_change is not None
                    await on_change(response)
                if line_task.done():
                    try:
                        batch = [line_task.result()]
                    except anyio.EndOfStream:
                        await self._write(response, _event("end", {}))
                        return
                    line_task = None
                    while len(batch) < 256 and (more := stream.get_nowait()) is not None:
                        batch.append(more)
                    if stream.dropped != dropped:
                        data = {"count": stream.dropped - dropped}
                        await self._write(response, _event("dropped", data))
                        dropped = stream.dropped
                    await self._send_lines(response, batch)
        except (ConnectionError, asyncio.TimeoutError):
            return  # the client left, or stopped reading
        finally:
            for task in (line_task, change_task):
                if task is not None:
                    task.cancel()


def _reset(transport: asyncio.Transport) -> None:
    """Drop a connection at once: SO_LINGER 0 makes the close a reset (RST)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _EventStream(web.StreamResponse):
    """A text/event-stream reply that knows its connection (to abort it)."""

    transport: asyncio.Transport | None = None


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _int_query(request: web.Request, key: str, default: int) -> int:
    value = request.query.get(key)
    if value is None:
        return default
    if not is_number(value) or int(value) > MAX_LINES:
        raise OperationError("bad-request", f"{key} must be a number from 0 to {MAX_LINES}")
    return int(value)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise OperationError("bad-request", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise OperationError("bad-request", "the body must be a JSON object")
    return body
