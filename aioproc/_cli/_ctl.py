"""``aioproc ctl``: talk to a running ``aioproc run`` through its control socket.

Exit codes a script can use: 0 done (``status``: every service in its wanted
state); 3 ``status``/``start``/``restart`` found a service that is not (as
supervisorctl); 1 an unknown service or a failed operation; 2 a usage error, or
nothing answering at the socket.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from ..control import Client, ControlError
from ..supervisor._console import iso_time
from ..supervisor._terminal import neutralise

__all__ = ["CONTROL_ENV", "SOCKET_NAME", "add_ctl_parser", "control_path", "main_ctl", "sanitize"]

CONTROL_ENV = "AIOPROC_CONTROL"
SOCKET_NAME = ".aioproc.sock"

OK, FAILED, USAGE, NOT_WANTED = 0, 1, 2, 3


def sanitize(text: str) -> str:
    """``text`` with its control characters shown as escapes (``\\x1b``): service
    output is untrusted and must not drive the terminal (as on ``aioproc run``'s)."""
    return neutralise(text)


def control_path(explicit: str | None, config: Path | None) -> Path:
    """``--control``, else ``$AIOPROC_CONTROL``, else ``.aioproc.sock`` beside the config."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONTROL_ENV)
    if env:
        return Path(env)
    directory = config.parent if config is not None else Path.cwd()
    return directory / SOCKET_NAME


def add_ctl_parser(sub: Any) -> None:
    ctl = sub.add_parser(
        "ctl",
        help="control a running 'aioproc run': status, start, stop, logs, reload, reopen...",
        description="Talk to a running 'aioproc run' through its control socket (default: "
        f"{SOCKET_NAME} beside ./aioproc.toml or ./Procfile, or ${CONTROL_ENV}). Exit code: "
        "0 done; 3 a service is not in its wanted state (status, start, restart); 1 unknown "
        "service or failed operation; 2 usage error or nothing answering.",
    )
    ctl.add_argument("--control", metavar="PATH", help="the control socket")
    cmds = ctl.add_subparsers(dest="ctl_command", metavar="COMMAND")
    status = cmds.add_parser("status", help="the state of the services (exit 3: not all well)")
    status.add_argument("--json", action="store_true", help="the reply as JSON")
    status.add_argument("names", nargs="*", metavar="NAME")
    for verb, what in (
        ("start", "start services (and wait until ready)"),
        ("stop", "stop services (dependents first)"),
        ("restart", "stop, then start services"),
    ):
        p = cmds.add_parser(verb, help=what)
        p.add_argument("names", nargs="+", metavar="NAME", help="service names, or all")
    sig = cmds.add_parser("signal", help="send a signal to a service's process")
    sig.add_argument("names", nargs=1, metavar="NAME")
    sig.add_argument("signal", metavar="SIG", help="a name (HUP, SIGUSR1) or a number")
    logs = cmds.add_parser("logs", help="the last lines of output; -f to follow")
    logs.add_argument("names", nargs="*", metavar="NAME")
    logs.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="default: 10")
    logs.add_argument("-f", "--follow", action="store_true", help="then follow, until Ctrl-C")
    logs.add_argument(
        "-t",
        "--timestamps",
        action="store_true",
        help="start each line with the time it was read (ISO 8601, milliseconds)",
    )
    wait = cmds.add_parser(
        "wait", help="wait until the services are where they should be (exit 3: not in time)"
    )
    wait.add_argument("names", nargs="*", metavar="NAME", help="default: all services")
    wait.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS", help="default: no bound"
    )
    cmds.add_parser("reload", help="re-read the configuration file and apply the changes")
    cmds.add_parser("reopen", help="reopen the services' log files (after logrotate moved them)")
    cmds.add_parser("shutdown", help="stop every service and end 'aioproc run'")


def _error(message: str, code: int) -> int:
    print(f"aioproc ctl: error: {sanitize(message)}", file=sys.stderr)
    return code


def main_ctl(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = sys.stdout if out is None else out
    if args.ctl_command is None:
        return _error("no command given (status, start, stop, restart, signal, logs, ...)", USAGE)
    config = None
    if not args.control and not os.environ.get(CONTROL_ENV):
        from ._config import ConfigError, find_config

        try:
            config = find_config(Path.cwd())
        except ConfigError:
            config = None
    path = control_path(args.control, config)
    try:
        return _command(args, path, stream)
    except ControlError as exc:
        if exc.code in ("unreachable", "forbidden", "untrusted"):
            return _error(exc.message, USAGE)
        if exc.code in ("bad-request", "unsupported-version", "unknown-request"):
            return _error(exc.message, USAGE)
        return _error(exc.message, FAILED)
    except KeyboardInterrupt:
        return OK  # the end of logs --follow
    except BrokenPipeError:  # | head
        return OK


def _names(names: list[str]) -> dict[str, Any]:
    return {"all": True} if "all" in names else {"names": names}


def _command(args: argparse.Namespace, path: Path, out: TextIO) -> int:
    cmd = args.ctl_command
    slow = ("logs", "shutdown", "start", "restart", "stop", "reload", "wait")
    timeout = None if cmd in slow else 30.0
    with Client(path, timeout=timeout) as client:
        if cmd == "status":
            reply = client.request("status", **({"names": args.names} if args.names else {}))
            services = reply["services"]
            if args.json:
                out.write(json.dumps(reply, indent=2) + "\n")
            else:
                out.write(format_table(services))
            return OK if all(s["wanted"] for s in services) else NOT_WANTED
        if cmd in ("start", "stop", "restart"):
            services = client.request(cmd, **_names(args.names))["services"]
            for s in services:
                pid = f" (pid {s['pid']})" if s["pid"] else ""
                out.write(f"{s['name']}: {s['state']}{pid}\n")
            if cmd == "stop":
                return OK
            return OK if all(s["wanted"] for s in services) else NOT_WANTED
        if cmd == "signal":
            client.request("signal", names=args.names, signal=args.signal)
            return OK
        if cmd == "logs":
            if args.lines < 0:
                return _error("-n must not be negative", USAGE)
            client.send("logs", lines=args.lines, follow=args.follow, **_names(args.names))
            for reply in client.replies():
                for name in reply.get("not_kept", ()):
                    why = 'output = "inherit": its lines are not kept'
                    print(f"aioproc ctl: {sanitize(name)}: {why}", file=sys.stderr)
                line = reply.get("line")
                if line is not None:
                    stamp = f"{iso_time(line['time'])} " if args.timestamps else ""
                    text = f"{sanitize(line['service'])} | {sanitize(line['text'])}"
                    out.write(f"{stamp}{text}\n")
                    out.flush()
                elif "dropped" in reply:
                    out.write(f"aioproc ctl: {reply['dropped']} lines dropped (too slow)\n")
            return OK
        if cmd == "wait":
            reply = client.request("wait", timeout=args.timeout, **_names(args.names))
            if not reply["wanted"]:
                late = [s for s in reply["services"] if not s["wanted"]]
                out.write(format_table(late))
                return NOT_WANTED
            return OK
        if cmd == "reload":
            reply = client.request("reload")
            for key in ("added", "removed", "changed", "unchanged"):
                out.write(f"{key}: {', '.join(reply[key]) or '-'}\n")
            return OK
        if cmd == "reopen":
            files = client.request("reopen")["files"]
            lines = [f"reopened {sanitize(path)}\n" for path in files]
            out.write("".join(lines) or "no log file is open\n")
            return OK
        if cmd == "shutdown":
            client.request("shutdown")
            out.write("shutting down\n")
            out.flush()
            for _ in client.replies():  # until the endpoint closes: everything stopped
                pass
            out.write("stopped\n")
            return OK
    raise AssertionError(cmd)  # pragma: no cover


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_table(services: list[dict[str, Any]]) -> str:
    """The ``status`` table: one row per service, columns aligned."""
    header = ("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST-EXIT", "READY", "REASON")
    rows = [header]
    for s in services:
        last = s["last_exit"]
        if s["ready"]:
            ready = "yes"
        elif s["state"] == "starting" and s["ready_check"]:
            ready = "no"
        else:
            ready = "-"
        rows.append(
            (
                sanitize(s["name"]),
                s["state"],
                str(s["pid"]) if s["pid"] else "-",
                _duration(s["uptime"]),
                str(s["restarts"]),
                "-" if last is None else last["text"],
                ready,
                sanitize(s["reason"] or "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"
