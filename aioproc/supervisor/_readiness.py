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
import shutil
import socket
import ssl
import struct
import tempfile
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Literal

from .. import Process

__all__ = [
    "NotifyAccess",
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


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("timeout must be a number of seconds")
    if timeout <= 0:
        raise ValueError("timeout must be positive")


class ReadyCheck:
    """Base class of the readiness checks; each has a keyword-only ``timeout``."""

    timeout: float

    def __post_init__(self) -> None:
        _check_timeout(self.timeout)

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

    The supervisor binds a datagram socket per run (a file-system socket in a
    private directory, see :class:`NotifySocket`) and passes its path in
    ``NOTIFY_SOCKET``. ``STATUS=`` messages show up in :meth:`Supervisor.status`.
    With ``watchdog`` (seconds) the child also gets ``WATCHDOG_USEC`` and, once
    ready, must send ``WATCHDOG=1`` at least that often, or it is stopped and its
    run counts as failed (``"watchdog"``).

    ``access`` says who may notify, as systemd's ``NotifyAccess=``: ``"all"`` (the
    default) any process of the service (its main process, its process group, its
    descendants), ``"main"`` its main process only; in both cases only from the
    service's user. Datagrams from anybody else are dropped.
    """

    _: dataclasses.KW_ONLY
    timeout: float = 30.0
    watchdog: float | None = None
    access: NotifyAccess = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.watchdog is not None:
            _check_timeout(self.watchdog)
        if self.access not in ("main", "all"):
            raise ValueError(f"ReadyNotify.access must be 'main' or 'all', not {self.access!r}")

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


#: Who may notify (``ReadyNotify(access=...)``), as systemd's ``NotifyAccess=``.
NotifyAccess = Literal["main", "all"]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state, ppid, pgrp, ...), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


class NotifySocket:
    """The datagram socket a :class:`ReadyNotify` service writes ``KEY=VALUE`` lines to.

    One per run, so a message from a previous run's leftovers cannot count for this
    one. Who may talk to it is decided twice:

    * **Reaching it.** A file-system socket in a fresh directory of mode 0700 (owned
      by the service's user when it runs as another one): no other user can connect
      or send to it, and its name is no secret anybody relies on. (The abstract
      namespace used before had no permissions at all: any local user could find
      the name in /proc/net/unix and send ``READY=1``.)
    * **Each datagram.** ``SO_PASSCRED`` makes the kernel attach the sender's pid,
      uid and gid (``SCM_CREDENTIALS``) to every datagram; it is accepted only from
      the service's uid and, with ``access="main"``, from the main process; with
      ``access="all"`` (the default), from a process of the service: the main one,
      a member of its process group, or a descendant. The rest is dropped.

    A sender is checked when its datagram is read, through /proc: one that has
    already exited cannot be checked and is dropped (as in systemd; its
    ``systemd-notify`` waits for the manager with ``BARRIER=1``, which keeps it
    alive long enough). Until :meth:`watch` names the service's process nothing is
    read: datagrams wait in the socket's buffer.
    """

    def __init__(
        self,
        on_status: Callable[[str], None] | None = None,
        *,
        uid: int | None = None,
        access: NotifyAccess = "all",
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._uid = os.geteuid() if uid is None else uid
        self._access = access
        self._pid: int | None = None
        self._pgid: int | None = None
        #: Datagrams dropped because of who sent them (for the tests and the logs).
        self.refused = 0
        self._dir = tempfile.mkdtemp(prefix="aioproc-notify-")  # mode 0700
        path = os.path.join(self._dir, "notify")
        if len(os.fsencode(path)) > 100:  # sun_path holds 108 bytes: a long $TMPDIR
            os.rmdir(self._dir)
            self._dir = tempfile.mkdtemp(prefix="aioproc-notify-", dir="/tmp")
            path = os.path.join(self._dir, "notify")
        self.address = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.setblocking(False)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.bind(path)
            if self._uid != os.geteuid():
                # The service runs as another user: the directory is its (and root's).
                os.chown(path, self._uid, -1)
                os.chown(self._dir, self._uid, -1)
        except BaseException:
            self._sock.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.last_watchdog: float | None = None
        self._watchdog_waiter: asyncio.Future[None] | None = None
        self._on_status = on_status

    def watch(self, pid: int, pgid: int | None) -> None:
        """Start reading: ``pid`` is the service's main process, ``pgid`` its group (if own)."""
        self._pid = pid
        self._pgid = pgid
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _allowed(self, pid: int, uid: int) -> bool:
        if uid != self._uid or pid <= 0 or self._pid is None:
            return False
        if pid == self._pid:
            return True
        if self._access == "main":
            return False
        fields = _stat_fields(pid)
        if fields is None:
            return False  # gone already: cannot tell whose it was
        if self._pgid is not None and int(fields[2]) == self._pgid:
            return True  # the group id is pinned by the unreaped leader: it is ours
        # A descendant of the main process (it may have left the group).
        for _ in range(4096):  # a bound, should /proc change under us into a cycle
            ppid = int(fields[1])
            if ppid == self._pid:
                return True
            if ppid <= 1:
                return False
            fields = _stat_fields(ppid)
            if fields is None:
                return False
        return False

    def _on_readable(self) -> None:
        space = socket.CMSG_SPACE(_UCRED.size)
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(4096, space)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # pragma: no cover - nothing else is expected
                return
            creds = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    creds = _UCRED.unpack(payload[: _UCRED.size])
            # Descriptors sent along (sd_notify_barrier's BARRIER=1) do not fit in
            # the buffer: the kernel closes them, which is the barrier's answer.
            if creds is None or not self._allowed(creds[0], creds[1]):
                self.refused += 1
                continue
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
            if self._pid is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            shutil.rmtree(self._dir, ignore_errors=True)
        if not self.ready.done():
            self.ready.cancel()
