"""When a service counts as ready: the readiness checks.

``Service(ready=...)`` takes one of:

* ``None``: ready as soon as it is spawned;
* :class:`ReadyTCP`: a TCP connection to ``host:port`` succeeds;
* :class:`ReadyHTTP`: ``GET url`` answers with a 2xx or 3xx status (and, with
  ``body``, a body that matches);
* :class:`ReadyExec`: a command (``pg_isready``, say) exits with status 0;
* :class:`ReadyLine`: a line of its output matches a regular expression;
* :class:`ReadyNotify`: it sends ``READY=1`` to ``$NOTIFY_SOCKET`` (systemd's
  ``sd_notify`` protocol), optionally followed by ``WATCHDOG=1`` keep-alives;
* a coroutine function ``async def check(proc) -> None`` (wrapped in :class:`ReadyCall`):
  ready when it returns; a failure when it raises.

Each has a ``timeout`` (seconds). A check that times out or fails makes the run fail:
the service is stopped and its restart policy decides (a timeout counts as abnormal,
as in systemd).

The checks that poll (TCP, HTTP, exec, a coroutine function) are built on one
single attempt, :meth:`ReadyCheck.probe`: readiness repeats it until it passes, and
a liveness probe (``_liveness.py``) repeats it for as long as the service runs.
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
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Literal

from .. import DEVNULL, PIPE, STDOUT, ExitStatus, Process, spawn
from .._durations import check_duration
from .._util import is_number

__all__ = [
    "NotifyAccess",
    "NotifySocket",
    "ReadyCall",
    "ReadyCheck",
    "ReadyContext",
    "ReadyExec",
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

    @property
    def wants_lines(self) -> bool:
        """Whether lines are still wanted: before the readiness check is over, or watched."""
        return self._history is not None or bool(self._line_watchers)

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
    #: Whether :meth:`probe` is implemented: the check can be a liveness probe.
    probes = False

    async def wait(self, ctx: ReadyContext) -> None:
        """Return once the service is ready; raise if it cannot become ready."""
        raise NotImplementedError

    async def wait_in_time(self, ctx: ReadyContext) -> None:
        """:meth:`wait`, within :attr:`timeout` (:class:`asyncio.TimeoutError` after it)."""
        await asyncio.wait_for(self.wait(ctx), self.timeout)

    async def probe(self, ctx: ReadyContext, timeout: float) -> str | None:
        """One attempt, given ``timeout`` seconds: None if it passed, else why it failed.

        Never raises for a failure of the service (an exception is a bug); whatever
        the attempt started is stopped and gone when it returns, also on a timeout.
        """
        raise TypeError(f"{type(self).__name__} has no single attempt to repeat")


async def _retry(check: ReadyCheck, ctx: ReadyContext, timeout: float, interval: float) -> None:
    """Repeat ``check.probe`` until it passes, ``interval`` apart (probing is polling)."""
    while await check.probe(ctx, timeout) is not None:  # noqa: ASYNC110 - no event to wait for
        await asyncio.sleep(interval)


def _clip(text: str, size: int = 200) -> str:
    """Untrusted text (a service's output) made fit for one line of a message."""
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text if len(text) <= size else text[: size - 3] + "..."


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

    probes = True

    async def wait(self, ctx: ReadyContext) -> None:
        await _retry(self, ctx, max(1.0, self.interval), self.interval)

    async def probe(self, ctx: ReadyContext, timeout: float) -> str | None:
        where = f"TCP {self.host}:{self.port}"
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout
            )
        except asyncio.TimeoutError:
            return f"{where}: no connection within {timeout:g} s"
        except OSError as exc:
            return f"{where}: {exc.strerror or exc}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None


@dataclasses.dataclass(frozen=True)
class ReadyHTTP(ReadyCheck):
    """Ready once ``GET url`` answers with a status in ``statuses`` (default 200-399).

    With ``body`` (a regular expression), the response body (its first 64 KiB,
    decoded as UTF-8) must also match (:meth:`re.Pattern.search`). Plain HTTP/1.1
    over asyncio streams (``https`` verifies certificates as
    :func:`ssl.create_default_context` does). Tried every ``interval`` seconds,
    each attempt given ``max(1, interval)`` seconds.
    """

    url: str
    _: dataclasses.KW_ONLY
    timeout: float = 30.0
    interval: float = 0.1
    statuses: Collection[int] = range(200, 400)
    body: str | re.Pattern[str] | None = None

    probes = True
    #: How much of the body is read for ``body``.
    BODY_LIMIT = 65536

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_timeout(self.interval, "ReadyHTTP.interval")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"ReadyHTTP needs an http:// or https:// URL, not {self.url!r}")
        if isinstance(self.body, str):
            object.__setattr__(self, "body", re.compile(self.body))
        elif self.body is not None and not isinstance(self.body, re.Pattern):
            raise TypeError("ReadyHTTP.body must be a str or a compiled str pattern")

    async def wait(self, ctx: ReadyContext) -> None:
        await _retry(self, ctx, max(1.0, self.interval), self.interval)

    async def probe(self, ctx: ReadyContext, timeout: float) -> str | None:
        try:
            return await asyncio.wait_for(self._attempt(), timeout)
        except asyncio.TimeoutError:
            return f"GET {self.url}: no answer within {timeout:g} s"

    async def _attempt(self) -> str | None:
        parts = urllib.parse.urlsplit(self.url)
        tls = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "User-Agent: aioproc-ready\r\nConnection: close\r\n\r\n"
        ).encode()

        what = f"GET {self.url}"
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if tls else None
            )
        except OSError as exc:
            return f"{what}: {exc.strerror or exc}"
        try:
            writer.write(request)
            line = await reader.readline()
            body = b""
            if self.body is not None:
                # Connection: close, so the body ends at EOF (headers included
                # here; they rarely match a body pattern by accident).
                body = await reader.read(self.BODY_LIMIT)
                while len(body) < self.BODY_LIMIT and (more := await reader.read(4096)):
                    body += more
        except OSError as exc:
            return f"{what}: {exc.strerror or exc}"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit():
            return f"{what}: not an HTTP answer: {_clip(line.decode(errors='replace'))!r}"
        if int(fields[1]) not in self.statuses:
            return f"{what}: status {int(fields[1])}"
        if self.body is not None:
            pattern = self.body
            assert isinstance(pattern, re.Pattern)
            _, _, content = body.partition(b"\r\n\r\n")
            if not pattern.search(content.decode(errors="replace")):
                return f"{what}: the body does not match {pattern.pattern!r}"
        return None


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
    run counts as failed (``"watchdog"``); ``WATCHDOG_USEC=N`` from the service
    changes that interval (and counts as a ``WATCHDOG=1``). ``WATCHDOG=trigger``
    fails the run at once, as a watchdog timeout (with or without ``watchdog``).
    ``EXTEND_TIMEOUT_USEC=N`` before ``READY=1`` moves the readiness deadline to
    at least N microseconds from then.

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
            _check_timeout(self.watchdog, "ReadyNotify.watchdog")
        if self.access not in ("main", "all"):
            raise ValueError(f"ReadyNotify.access must be 'main' or 'all', not {self.access!r}")

    async def wait(self, ctx: ReadyContext) -> None:
        assert ctx.notify is not None
        await asyncio.shield(ctx.notify.ready)

    async def wait_in_time(self, ctx: ReadyContext) -> None:
        # EXTEND_TIMEOUT_USEC moves the deadline (never closer): look again at it
        # each time the wait runs out, rather than wake up for every message.
        notify = ctx.notify
        assert notify is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            left = max(deadline, notify.extended_until) - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError
            try:
                await asyncio.wait_for(asyncio.shield(notify.ready), left)
                return
            except asyncio.TimeoutError:
                continue


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

    probes = True

    async def wait(self, ctx: ReadyContext) -> None:
        await self.check(ctx.proc)

    async def probe(self, ctx: ReadyContext, timeout: float) -> str | None:
        name = getattr(self.check, "__name__", repr(self.check))
        try:
            await asyncio.wait_for(self.check(ctx.proc), timeout)
        except asyncio.TimeoutError:
            return f"{name}() did not return within {timeout:g} s"
        except Exception as exc:
            return f"{name}() raised {exc!r}"
        return None


@dataclasses.dataclass(frozen=True)
class ReadyExec(ReadyCheck):
    """Ready once the command ``argv`` exits with status 0 (``pg_isready``, say).

    Run every ``interval`` seconds, with the supervisor's environment, stdin
    from /dev/null and its output kept for the message (the last 200
    characters). An attempt still running after ``attempt_timeout`` seconds
    is stopped, its whole process group (SIGTERM, then SIGKILL after
    ``stop_timeout``), and counts as a failure.
    """

    argv: Sequence[str | bytes | os.PathLike[str]]
    _: dataclasses.KW_ONLY
    timeout: float = 30.0
    interval: float = 0.5
    attempt_timeout: float = 10.0
    stop_timeout: float = 1.0

    probes = True
    #: How much of an attempt's output is kept (the end of it).
    OUTPUT_LIMIT = 4096

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.argv, (str, bytes)) or not isinstance(self.argv, Sequence):
            raise TypeError("ReadyExec.argv must be a list of strings, like ['pg_isready']")
        if not self.argv:
            raise ValueError("ReadyExec.argv must not be empty")
        object.__setattr__(self, "argv", tuple(self.argv))
        _check_timeout(self.attempt_timeout)
        if isinstance(self.stop_timeout, bool) or not isinstance(self.stop_timeout, (int, float)):
            raise TypeError("stop_timeout must be a number of seconds")
        if self.stop_timeout < 0:
            raise ValueError("stop_timeout must not be negative")

    async def wait(self, ctx: ReadyContext) -> None:
        await _retry(self, ctx, self.attempt_timeout, self.interval)

    async def probe(self, ctx: ReadyContext, timeout: float) -> str | None:
        name = os.fsdecode(os.path.basename(os.fsencode(self.argv[0])))
        try:
            # kill_group: the stop (and the end of the block) reach everything
            # the command started, even after the command itself exited.
            async with spawn(
                self.argv,
                stdin=DEVNULL,
                stdout=PIPE,
                stderr=STDOUT,
                kill_group=True,
                stop_timeout=self.stop_timeout,
            ) as proc:
                tail = bytearray()
                try:
                    status = await asyncio.wait_for(self._collect(proc, tail), timeout)
                except asyncio.TimeoutError:
                    await proc.stop()
                    return f"exec {name}: still running after {timeout:g} s (stopped)"
        except OSError as exc:
            return f"exec {name}: {exc.strerror or exc}"
        if status.success:
            return None
        output = _clip(tail.decode(errors="replace"))
        return f"exec {name}: {_describe(status)}" + (f": {output}" if output else "")

    async def _collect(self, proc: Process, tail: bytearray) -> ExitStatus:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            tail += chunk
            del tail[: -self.OUTPUT_LIMIT]
        return await proc.wait()


def _describe(status: ExitStatus) -> str:
    if status.exit_code is not None:
        return f"exited with code {status.exit_code}"
    return str(status).split(" ", 2)[2]  # "killed by SIGKILL"


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
        #: Set by ``WATCHDOG=trigger``: the service asks to be handled as hung.
        self.triggered: asyncio.Future[None] = self._loop.create_future()
        #: ``EXTEND_TIMEOUT_USEC``: the readiness deadline is at least this (loop time).
        self.extended_until = 0.0
        #: ``WATCHDOG_USEC``: the watchdog interval the service asked for, in seconds.
        self.watchdog_interval: float | None = None
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
                    self._kept_alive()
                elif key == "WATCHDOG" and value == "trigger":
                    if not self.triggered.done():
                        self.triggered.set_result(None)
                elif key == "WATCHDOG_USEC" and (usec := _microseconds(value)):
                    self.watchdog_interval = usec / 1e6
                    self._kept_alive()  # as systemd: the new interval runs from now
                elif key == "EXTEND_TIMEOUT_USEC" and (usec := _microseconds(value)):
                    self.extended_until = max(self.extended_until, self._loop.time() + usec / 1e6)

    def _kept_alive(self) -> None:
        self.last_watchdog = time.monotonic()
        waiter = self._watchdog_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def watchdog_expired(self, interval: float) -> None:
        """Return once ``interval`` seconds (or the service's ``WATCHDOG_USEC``) pass
        without a ``WATCHDOG=1``."""
        while True:
            self._watchdog_waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(self._watchdog_waiter, self.watchdog_interval or interval)
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


#: The longest time a service may ask for in a message: a year, in microseconds.
_MAX_USEC = 365 * 86400 * 10**6


def _microseconds(value: str) -> int | None:
    """A positive number of microseconds from a notify message, or None (ignored)."""
    if not is_number(value):
        return None
    usec = int(value)
    return usec if 0 < usec <= _MAX_USEC else None
