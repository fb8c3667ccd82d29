"""``aioproc run``: supervise the services of a Procfile or an aioproc.toml.

The first SIGINT/SIGTERM (or another shutdown signal: see ``_dispositions.py``,
which also lists the signals that are ignored) starts a graceful shutdown (reverse
dependency order, ``stop_signal``, ``stop_timeout``, SIGKILL, within
``shutdown_timeout``); a second one SIGKILLs every service's process group at once.
SIGHUP reloads the configuration file (``_serve.py``), as ``aioproc ctl reload``
does through the control socket; SIGUSR1 reopens the services' log files (for
logrotate), as ``aioproc ctl reopen`` does. It is a subreaper: it reaps what it adopts and,
once the services are stopped, stops what they left behind (``_subreaper.py``). At
the end, one summary line per service; the exit code is 0 when every service ended
well, else that of the one that failed (see ``_summary.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from .. import signals
from ..control import ControlServer, SocketInUse, serve
from ..supervisor import (
    BackingOff,
    Console,
    Event,
    EventStream,
    Exited,
    Fatal,
    Outcome,
    Ready,
    Starting,
    Stopped,
    Stopping,
    Supervisor,
)
from ._config import Config
from ._dispositions import IGNORED, SHUTDOWN, ignore_realtime
from ._serve import make_reload
from ._subreaper import adopting
from ._summary import exit_code, summary_line

__all__ = ["HttpSettings", "HttpUnavailable", "run_services"]

SYSTEM = "aioproc"
SHUTDOWN_SIGNALS = SHUTDOWN
RELOAD_SIGNAL = signal.SIGHUP
REOPEN_SIGNAL = signal.SIGUSR1


class HttpSettings(typing.NamedTuple):
    """``--http`` checked: where, and the token (None: loopback only)."""

    host: str
    port: int
    token: str | None


class HttpUnavailable(Exception):
    """The HTTP address could not be bound (before any service started)."""


#: Writes one of the command's own lines (``Console.say``).
Say = Callable[[str], None]


def describe(event: Event, with_ready: set[str]) -> str | None:
    """One line about an event, or None for those not worth a line."""
    name = event.service
    if isinstance(event, Starting):
        again = f" (restart {event.attempt})" if event.attempt else ""
        return f"{name} started, pid {event.pid}{again}"
    if isinstance(event, Ready):
        return f"{name} is ready" if name in with_ready else None
    if isinstance(event, Exited):
        if event.reason == "stopped":
            return None
        if event.status is None:
            what = f"{name} could not start: {event.error}"
        elif event.status.signal is not None:
            what = f"{name} was killed by {event.status.signal.name}"
        else:
            what = f"{name} exited with code {event.status.exit_code}"
        if event.reason not in ("exited", "spawn-failed") and event.error:
            what += f" ({event.error})"
        return what
    if isinstance(event, BackingOff):
        return f"{name} restarts in {event.delay:.2f} s"
    if isinstance(event, Fatal):
        return f"{name} FATAL: {event.reason}"
    if isinstance(event, Stopping):
        return f"stopping {name}"
    if isinstance(event, Stopped):
        return f"{name} stopped"
    return None


async def run_services(
    config: Config,
    color: bool | None,
    stream: TextIO | None = None,
    *,
    control: Path | None = None,
    raw_output: bool = False,
    control_required: bool = True,
    http: HttpSettings | None = None,
    timestamps: str | None = None,
    log_format: str | None = None,
    mark_stderr: bool | None = None,
) -> int:
    """Run the services of ``config`` until they end or a signal stops them; the exit code.

    ``timestamps``, ``log_format`` and ``mark_stderr`` are the command line's: None
    leaves them to the file's ``[supervisor]`` table.
    """
    out = sys.stdout if stream is None else stream
    width = max([len(SYSTEM), *(len(s.name) for s in config.services)])
    sup = config.supervisor(
        color=color,
        output_stream=out,
        prefix_width=width,
        raw_output=raw_output,
        timestamps=timestamps,
        log_format=log_format,
        mark_stderr=mark_stderr,
    )
    say: Say = sup.console.say
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(_one_line_reports(say))
    try:
        return await _run(config, sup, say, control, control_required, http)
    finally:
        loop.set_exception_handler(previous_handler)


async def _run(
    config: Config,
    sup: Supervisor,
    say: Say,
    control: Path | None,
    control_required: bool,
    http: HttpSettings | None,
) -> int:
    with_ready = {s.name for s in config.services if s.ready is not None}
    reload = make_reload(config, sup, say, with_ready)
    endpoint: ControlServer | contextlib.nullcontext[None] = contextlib.nullcontext()
    if control is not None:
        server = serve(sup, control, reload=reload, log=say)
        try:
            server.bind()  # before anything starts: a live socket there ends us here
            endpoint = server
        except SocketInUse:
            raise
        except OSError as exc:
            if control_required:
                raise
            # The default path, beside a file in a read-only place (a mounted
            # ConfigMap, say): run without the endpoint rather than not at all.
            say(f"no control socket at {control}: {exc.strerror or exc} (see --control)")
    web: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
    if http is not None:
        from ..http import serve as serve_http

        web_server = serve_http(sup, http.host, http.port, token=http.token, reload=reload, log=say)
        try:
            await web_server.start()  # before anything starts, as the control socket
        except OSError as exc:
            if isinstance(endpoint, ControlServer):
                await endpoint.aclose()
            raise HttpUnavailable(f"cannot serve on {http.host}:{http.port}: {exc}") from None
        say(f"serving HTTP at {web_server.url}")
        web = web_server
    # Subscribe before any child exists: a Ctrl-C from then on is ours to handle,
    # and no stray signal can kill us and orphan the services.
    with ignore_realtime():
        async with (
            endpoint,
            web,
            signals.subscribe(*SHUTDOWN_SIGNALS) as sigs,
            signals.subscribe(*IGNORED) as ignored,
            signals.subscribe(RELOAD_SIGNAL) as hups,
            signals.subscribe(REOPEN_SIGNAL) as usr1s,
        ):
            dropper = asyncio.ensure_future(_drop(ignored, say))
            reopener = asyncio.ensure_future(_reopen_on_signal(usr1s, sup, say))
            try:
                async with adopting(say):
                    outcome = await _supervise(sup, sigs, say, with_ready, (hups, reload))
            finally:
                dropper.cancel()
                reopener.cancel()
    statuses = sup.status()
    if not outcome.ok:
        say(f"{outcome.service} failed: exit code {outcome.exit_code}")
    for status in statuses.values():
        say(summary_line(status))
    return exit_code(outcome, statuses)


def _one_line_reports(say: Say) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """The loop's exception handler: the library's own reports (a log file that
    cannot be written, say) as one line of the command's, not a traceback."""

    def report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if not message.startswith("aioproc: "):
            loop.default_exception_handler(context)
            return
        text = message.removeprefix("aioproc: ")
        exc = context.get("exception")
        if exc is not None and str(exc) not in text:
            text += f": {type(exc).__name__}: {exc}"
        say(text)

    return report


async def _drop(ignored: signals.Subscription, say: Say) -> None:
    async for sig in ignored:
        say(f"{sig.name} received: ignored")


async def _supervise(
    sup: Supervisor,
    sigs: signals.Subscription,
    say: Say,
    with_ready: set[str],
    reloads: tuple[signals.Subscription, Callable[[], Awaitable[object]]],
) -> Outcome:
    """Run the supervisor until it ends or a signal stops it; its outcome."""
    async with sup:
        events = sup.events()
        printer = asyncio.ensure_future(_print_events(events, sup.console, with_ready))
        hups = asyncio.ensure_future(_reload_on_signal(*reloads, say))
        waiter = asyncio.ensure_future(sup.wait())
        first = asyncio.ensure_future(sigs.get())
        try:
            await asyncio.wait([waiter, first], return_when=asyncio.FIRST_COMPLETED)
            if first.done():
                sig = first.result()
                say(f"{sig.name} received: stopping everything (again to kill at once)")
                closing = asyncio.ensure_future(sup.aclose())
                second = asyncio.ensure_future(sigs.get())
                await asyncio.wait([closing, second], return_when=asyncio.FIRST_COMPLETED)
                if second.done():
                    say(f"{second.result().name} received again: killing everything")
                    sup.kill()
                second.cancel()
                await closing
            else:
                first.cancel()
        finally:
            for task in (first, waiter, hups):
                task.cancel()
    outcome = await sup.wait()
    await printer
    return outcome


async def _reload_on_signal(
    hups: signals.Subscription, reload: Callable[[], Awaitable[object]], say: Say
) -> None:
    async for _ in hups:
        say(f"{RELOAD_SIGNAL.name} received: reloading the configuration")
        try:
            await reload()
        except ValueError as exc:
            say(f"reload failed, nothing changed: {exc}")
        except RuntimeError:  # shutting down
            return


async def _reopen_on_signal(usr1s: signals.Subscription, sup: Supervisor, say: Say) -> None:
    async for _ in usr1s:
        say(f"{REOPEN_SIGNAL.name} received: {reopen_logs(sup)}")


def reopen_logs(sup: Supervisor) -> str:
    """Reopen the log files; what to say about it."""
    try:
        paths = sup.reopen_logs()
    except OSError as exc:
        return f"{exc.strerror} (still writing where it was)"
    if not paths:
        return "no log file is open"
    return f"log files reopened: {', '.join(paths)}"


async def _print_events(events: EventStream, console: Console, with_ready: set[str]) -> None:
    async for event in events:
        line = describe(event, with_ready)
        if line is not None:
            console.say(line, event=event)
