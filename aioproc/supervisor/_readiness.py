"""When a service counts as ready: the readiness checks.

``Service(ready=...)`` takes one of:

* ``None``: ready as soon as it is spawned;
* :class:`ReadyTCP`: a TCP connection to ``host:port`` succeeds;
* :class:`ReadyHTTP`: ``GET url`` answers with a 2xx or 3xx status;
* :class:`ReadyLine`: a line of its output matches a regular expression;
* :class:`ReadyNotify`: it sends ``READY=1`` to ``$NOTIFY_SOCKET`` (systemd's
  ``sd_notify`` protocol), optionally followed by ``WATCHDOG=1`` keep-alives;
* a coroutine function ``async def check(proc) -> None`` (wrapped in :class:`ReadyCall`):
  ready when it returns; a failure when it raises.

Each has a ``timeout`` (seconds). A check that times out or fails makes the run fail:
the service is stopped and its restart policy decides (a timeout counts as abnormal,
as in systemd).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import secrets
import socket
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from .. import Process
from .._durations import check_duration

__all__ = [
    "NotifySocket",
    "ReadyCall",
    "ReadyCheck",
    "ReadyContext",
    "ReadyHTTP",
    "ReadyLine",
    "ReadyNotify",
    "ReadyTCP",
]


class ReadyContext:
    """What a check can look at: the process, its output lines, its notify socket."""

    #: How many early lines are kept for a check that starts watching late.
    HISTORY = 1000

    def __init__(self, proc: Process, notify: NotifySocket | None) -> None:
        self.proc = proc
        self.notify = notify
        self._line_watchers: list[Callable[[str], None]] = []
        self._history: deque[str] | None = deque(maxlen=self.HISTORY)

    def watch_lines(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(line)`` for every output line of the run; returns the undo.

        The lines that came before the call are replayed first. The output pump
        and the check run as separate tasks, and nothing orders their first
        steps: a fast service can print its "ready" line before the check has
        started watching, and without the replay that line would be missed (and
        the service killed at the readiness timeout).
        """
        for line in self._history or ():
            callback(line)
        self._line_watchers.append(callback)
        return lambda: self._line_watchers.remove(callback)

    def feed_line(self, line: str) -> None:
        if self._history is not None:
            self._history.append(line)
        for callback in list(self._line_watchers):
            callback(line)

    def forget_lines(self) -> None:
        """Stop keeping lines for replay (the readiness check is over)."""
        self._history = None


def _check_timeout(timeout: float, name: str = "timeout") -> None:
    check_duration(timeout, name, positive=True)


class ReadyCheck:
    """Base class of the readiness checks; each has a keyword-only ``timeout``."""

    timeout: float

    def __post_init__(self) -> None:
        _check_timeout(self.timeout, f"{type(self).__name__}.timeout")

    #: Whether the check reads the service's output (it must then be piped).
    needs_output = False

    async def wait(self, ctx: ReadyContext) -> None:
        """Return once the service is ready; raise if it cannot become ready."""
        raise NotImplementedError


async def _retry(attempt: Callable[[], Awaitable[bool]], interval: float) -> None:
    """Call ``attempt`` until it returns True, ``interval`` apart (probing is polling)."""
    while not await attempt():  # noqa: ASYNC110 - a probe has no event to wait for
        await asyncio.sleep(interval)


@dataclasses.dataclass(frozen=True)
class ReadyTCP(ReadyCheck):
    """Ready once a TCP connection to ``host:port`` succeeds (tried every ``interval`` s)."""

    host: str
    port: int
    _: dataclasses.KW_ONLY
    timeout: float = 30.0
    interval: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_timeout(self.interval, "ReadyTCP.interval")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError("ReadyTCP.port must be an int")
        if not 0 < self.port < 65536:
            raise ValueError(f"ReadyTCP.port: {self.port} is not a TCP port")

    async def wait(self, ctx: ReadyContext) -> None:
        async def attempt() -> bool:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), max(1.0, self.interval)
                )
            except (OSError, asyncio.TimeoutError):
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True

        await _retry(attempt, self.interval)


@dataclasses.dataclass(frozen=True)
class ReadyHTTP(ReadyCheck):
    """Ready once ``GET url`` answers with a status in ``statuses`` (default 200-399).

    Plain HTTP/1.1 over asyncio streams (``https`` verifies certificates as
    :func:`ssl.create_default_context` does). Tried every ``interval`` seconds.
    """

    url: str
    _: dataclasses.KW_ONLY
    timeout: float = 30.0
    interval: float = 0.1
    statuses: Collection[int] = range(200, 400)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_timeout(self.interval, "ReadyHTTP.interval")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"ReadyHTTP needs an http:// or https:// URL, not {self.url!r}")

    async def wait(self, ctx: ReadyContext) -> None:
        parts = urllib.parse.urlsplit(self.url)
        tls = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "User-Agent: aioproc-ready\r\nConnection: close\r\n\r\n"
        ).encode()

        async def attempt() -> bool:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        host, port, ssl=ssl.create_default_context() if tls else None
                    ),
                    max(1.0, self.interval),
                )
            except (OSError, asyncio.TimeoutError):
                return False
            try:
                writer.write(request)
                line = await asyncio.wait_for(reader.readline(), max(1.0, self.interval))
            except (OSError, asyncio.TimeoutError):
                return False
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            fields = line.split()
            return len(fields) >= 2 and fields[1].isdigit() and int(fields[1]) in self.statuses

        await _retry(attempt, self.interval)


@dataclasses.dataclass(frozen=True)
class ReadyLine(ReadyCheck):
    """Ready once a line of the service's output (stdout or stderr) matches ``pattern``.

    ``pattern`` is searched (:meth:`re.Pattern.search`) in each decoded line, without
    its newline. The service's output must be piped (any ``output`` but "inherit").
    """

    pattern: str | re.Pattern[str]
    _: dataclasses.KW_ONLY
    timeout: float = 30.0
    needs_output = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.pattern, str):
            object.__setattr__(self, "pattern", re.compile(self.pattern))
        elif not isinstance(self.pattern, re.Pattern):
            raise TypeError("ReadyLine.pattern must be a str or a compiled str pattern")

    async def wait(self, ctx: ReadyContext) -> None:
        pattern = self.pattern
        assert isinstance(pattern, re.Pattern)
        matched: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_line(line: str) -> None:
            if not matched.done() and pattern.search(line):
                matched.set_result(None)

        undo = ctx.watch_lines(on_line)
        try:
            await matched
        finally:
            undo()


@dataclasses.dataclass(frozen=True)
class ReadyNotify(ReadyCheck):
    """Ready once the service sends ``READY=1`` to ``$NOTIFY_SOCKET`` (``sd_notify``).

    The supervisor binds a datagram socket per run (in the abstract namespace, named
    ``@aioproc-notify-...``) and passes its address in ``NOTIFY_SOCKET``. ``STATUS=``
    messages show up in :meth:`Supervisor.status`. With ``watchdog`` (seconds) the
    child also gets ``WATCHDOG_USEC`` and, once ready, must send ``WATCHDOG=1`` at
    least that often, or it is stopped and its run counts as failed (``"watchdog"``).
    """

    _: dataclasses.KW_ONLY
    timeout: float = 30.0
    watchdog: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.watchdog is not None:
            _check_timeout(self.watchdog, "ReadyNotify.watchdog")

    async def wait(self, ctx: ReadyContext) -> None:
        assert ctx.notify is not None
        await asyncio.shield(ctx.notify.ready)


@dataclasses.dataclass(frozen=True)
class ReadyCall(ReadyCheck):
    """Ready when ``await check(proc)`` returns; failed when it raises."""

    check: Callable[[Process], Awaitable[Any]]
    _: dataclasses.KW_ONLY
    timeout: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.check):
            raise TypeError("ReadyCall needs a coroutine function: check(proc)")

    async def wait(self, ctx: ReadyContext) -> None:
        await self.check(ctx.proc)


class NotifySocket:
    """The datagram socket a :class:`ReadyNotify` service writes ``KEY=VALUE`` lines to.

    One per run, so a message from a previous run's leftovers cannot count for this
    one. Abstract-namespace address: nothing to clean up in the file system, and the
    random name is only known to the service (which gets it in ``NOTIFY_SOCKET``).
    """

    def __init__(self, on_status: Callable[[str], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        name = f"aioproc-notify-{os.getpid()}-{secrets.token_hex(8)}"
        self.address = "@" + name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.setblocking(False)
            self._sock.bind("\0" + name)
        except BaseException:
            self._sock.close()
            raise
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.last_watchdog: float | None = None
        self._watchdog_waiter: asyncio.Future[None] | None = None
        self._on_status = on_status
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # pragma: no cover - nothing else is expected
                return
            for line in data.decode(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key == "READY" and value == "1" and not self.ready.done():
                    self.ready.set_result(None)
                elif key == "STATUS" and self._on_status is not None:
                    self._on_status(value)
                elif key == "WATCHDOG" and value == "1":
                    self.last_watchdog = time.monotonic()
                    waiter = self._watchdog_waiter
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)

    async def watchdog_expired(self, interval: float) -> None:
        """Return once ``interval`` seconds pass without a ``WATCHDOG=1``."""
        while True:
            self._watchdog_waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(self._watchdog_waiter, interval)
            except asyncio.TimeoutError:
                return
            finally:
                self._watchdog_waiter = None

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        if not self.ready.done():
            self.ready.cancel()
