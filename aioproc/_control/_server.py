"""Serving a supervisor's control socket: :class:`ControlServer` and :func:`serve`.

One asyncio task per connection, all on the supervisor's loop. A connection is
first checked with ``SO_PEERCRED`` (root or our own uid only); then it sends
request lines and gets replies, until it closes. Every wait on a client is
bounded: :data:`~._protocol.REQUEST_TIMEOUT` for each request line, and
:data:`~._protocol.MAX_LINE` bytes for its length; a client that does not read
what it asked for (``logs -f``) only blocks its own task, and its queue drops
the oldest lines rather than grow.

The operations themselves are :class:`~._operations.Operations`'s, shared with
the HTTP server. Every state change's reason (``status``'s ``reason``) comes
from the supervisor's events, subscribed to when the server is entered: enter it
before the supervisor (``aioproc run`` does) to see every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from types import TracebackType
from typing import Any

from .._durations import check_duration
from ..supervisor import LogStream, Supervisor
from ._operations import (
    Log,
    OperationError,
    Operations,
    Reload,
    describe_event,
    line_dict,
    wanted,
)
from ._protocol import (
    MAX_CLIENTS,
    MAX_LINE,
    REQUEST_TIMEOUT,
    encode,
    error_reply,
)
from ._socket import ControlSocket, bind_control_socket, peer_credentials

__all__ = ["ControlServer", "describe_event", "serve", "wanted"]

# How long a refused connection is kept open to take in what its peer still sends.
LINGER = 1.0


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bytes) -> None:
    """Send a last error line and end the connection so that its peer reads it whole.

    Closing a unix socket whose receive queue still holds bytes (the request we
    refuse, sent before our reply) makes the kernel fail the peer's next read with
    ECONNRESET, which a client may see before it has looked at our line. So:
    reply, shut our side (the peer reads the line, then EOF), and read and drop
    what the peer still sends until it closes too, for at most :data:`LINGER`
    seconds and :data:`MAX_LINE` bytes, before closing (a "lingering close", as
    HTTP servers do).
    """
    writer.write(reply)
    await writer.drain()
    if not writer.can_write_eof():
        return
    writer.write_eof()
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError, ConnectionError):
        await asyncio.wait_for(_discard(reader), LINGER)


async def _discard(reader: asyncio.StreamReader) -> None:
    budget = MAX_LINE  # a request's worth: a peer that floods us is simply cut off
    while budget > 0 and (data := await reader.read(budget)):
        budget -= len(data)


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
        self._ops = Operations(supervisor, reload=reload, log=log)
        self._log = log
        self._timeout = check_duration(request_timeout, "request_timeout", positive=True)
        self._socket: ControlSocket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()

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
        self._ops.start()
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
        await self._ops.aclose()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

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
            await _refuse(
                reader,
                writer,
                error_reply("forbidden", f"uid {uid} may not control this supervisor"),
            )
            return
        if len(self._handlers) > MAX_CLIENTS:
            await _refuse(
                reader, writer, error_reply("busy", f"{MAX_CLIENTS} connections are served already")
            )
            return
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self._timeout)
            except (asyncio.TimeoutError, TimeoutError):
                await _refuse(
                    reader, writer, error_reply("timeout", f"no request within {self._timeout:g} s")
                )
                return
            except (ValueError, asyncio.LimitOverrunError):
                # readline() gives up at the limit: the line is longer than we read.
                await _refuse(
                    reader, writer, error_reply("too-long", f"request longer than {MAX_LINE} bytes")
                )
                return
            if not line:
                return
            if not line.strip():
                continue
            keep = True
            try:
                keep = await self._dispatch(_parse(line), reader, writer)
            except OperationError as exc:
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
        ops = self._ops
        if what == "status":
            names = self._names(request, default_all=True)
            writer.write(encode({"ok": True, "pid": os.getpid(), "services": ops.status(names)}))
            return True
        if what in ("start", "stop", "restart"):
            names = self._names(request, default_all=False)
            await ops.act(what, names)
            writer.write(encode({"ok": True, "services": ops.status(names)}))
            return True
        if what == "signal":
            names = self._names(request, default_all=False)
            ops.signal(names, request.get("signal"))
            writer.write(encode({"ok": True, "services": ops.status(names)}))
            return True
        if what == "logs":
            await self._logs(request, reader, writer)
            return False
        if what == "wait":
            names = self._names(request, default_all=True)
            done = await ops.wait_wanted(names, request.get("timeout"))
            writer.write(encode({"ok": True, "wanted": done, "services": ops.status(names)}))
            return True
        if what == "reload":
            writer.write(encode(await ops.reload()))
            return True
        if what == "reopen":
            writer.write(encode(ops.reopen_logs()))
            return True
        if what == "shutdown":
            ops.shutdown()
            writer.write(encode({"ok": True}))
            await writer.drain()
            # The connection stays open until the endpoint closes: a client
            # that waits for EOF knows when everything has stopped.
            await self._closed.wait()
            return False
        raise OperationError("unknown-request", f"unknown request {what!r}")

    def _names(self, request: dict[str, Any], default_all: bool) -> list[str]:
        every = request.get("all") is True
        return self._ops.names(request.get("names"), every=every, default_all=default_all)

    async def _logs(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        names = self._names(request, default_all=True)
        history, stream = self._ops.logs(
            names, request.get("lines", 10), request.get("follow", False)
        )
        services = self._ops.supervisor.services
        unkept = [name for name in names if not services[name].piped]
        try:
            writer.write(encode({"ok": True, "not_kept": unkept} if unkept else {"ok": True}))
            for line in history:
                writer.write(encode({"line": line_dict(line)}))
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
                writer.write(encode({"line": line_dict(line)}))
                await writer.drain()
            gone.cancel()
            writer.write(encode({"end": True}))
        finally:
            if stream is not None:
                await stream.aclose()


def _parse(line: bytes) -> dict[str, Any]:
    """A request line as an object with the right version; :class:`OperationError` otherwise."""
    try:
        request = json.loads(line)
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for non-UTF-8
        raise OperationError("bad-request", f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise OperationError("bad-request", "a request is a JSON object")
    if request.get("version") != 1:
        version = request.get("version")
        raise OperationError(
            "unsupported-version", f"protocol version {version!r} (this server speaks 1)"
        )
    return request


async def _until_eof(reader: asyncio.StreamReader, stream: LogStream) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(4096):
            pass  # a following client has nothing more to say
    await stream.aclose()


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
