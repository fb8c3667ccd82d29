"""The ``aioproc`` command: ``aioproc run`` (a Procfile/aioproc.toml supervisor),
``aioproc ctl`` (its remote control), ``aioproc check`` (the same configuration,
checked and printed) and ``aioproc init`` (a PID 1 for containers). See ``docs/cli.md``.

``main(argv=None) -> int`` is the entry point (``[project.scripts]`` and
``python -m aioproc``); it returns the exit code: 2 for a usage or configuration
error (one line on stderr, nothing started).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from .._durations import check_duration
from .._util import is_number
from ._ctl import add_ctl_parser

if TYPE_CHECKING:
    from ._config import Config
    from ._run import HttpSettings

__all__ = ["main"]

_COLOR = {"auto": None, "always": True, "never": False}
_LOOPS = ("asyncio", "uvloop")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioproc",
        description="Run and supervise processes (aioproc run), control a running one "
        "(aioproc ctl), or be a container's PID 1 (aioproc init).",
    )
    parser.add_argument("--version", action="version", version=f"aioproc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="supervise the services of a Procfile or an aioproc.toml",
        description="Start the services of FILE (default: ./aioproc.toml, else ./Procfile), "
        "restart them by their policies, and stop them all in reverse dependency order on "
        "SIGINT/SIGTERM (a second signal kills at once); SIGHUP reloads FILE; SIGUSR1 "
        "reopens the log files. Exit code: "
        "0 when every service ended well, else that of the essential service that failed, "
        "or of the first service that failed (128+N for signal N); 2 for a bad "
        "configuration.",
    )
    _config_arguments(run)
    run.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAMES",
        help="run only these services (comma-separated; repeatable) and what they depend on",
    )
    run.add_argument(
        "--color",
        choices=sorted(_COLOR),
        default="auto",
        help="colour the name prefixes (auto: on a terminal, unless NO_COLOR is set)",
    )
    run.add_argument(
        "--loop",
        choices=_LOOPS,
        default=None,
        help="the event loop to run on (default: $AIOPROC_LOOP, else asyncio's own)",
    )
    run.add_argument(
        "--raw-output",
        action="store_true",
        help="keep the colours (SGR sequences) in the services' output; other control "
        "characters are always shown escaped, as \\x1b",
    )
    run.add_argument(
        "-t",
        "--timestamps",
        action="store_true",
        default=None,
        help="start each line with the time it was read (HH:MM:SS; [supervisor] timestamps)",
    )
    run.add_argument(
        "--time-format",
        choices=("clock", "iso"),
        default=None,
        help="the timestamps' form (implies --timestamps): clock is HH:MM:SS, iso is ISO 8601 "
        "with milliseconds and the UTC offset",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="text: name | line (the default); json: one JSON object per line, the "
        "supervisor's own events included ([supervisor] log_format)",
    )
    run.add_argument(
        "--mark-stderr",
        action="store_true",
        default=None,
        help="show the services' stderr lines with ! instead of | (their stdout and "
        "stderr are then read from two pipes; [supervisor] mark_stderr)",
    )
    run.add_argument(
        "--control",
        metavar="PATH",
        help="serve the control socket ('aioproc ctl') at PATH (default: $AIOPROC_CONTROL, "
        "else .aioproc.sock beside FILE)",
    )
    run.add_argument("--no-control", action="store_true", help="serve no control socket")
    run.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the HTTP API, /metrics, /healthz, /readyz and the status page there "
        "(off by default; [supervisor] http in aioproc.toml); a non-loopback HOST needs a token",
    )
    run.add_argument(
        "--http-token",
        metavar="TOKEN",
        help="the bearer token every HTTP request must carry (default: $AIOPROC_HTTP_TOKEN, "
        "else [supervisor] http_token; prefer the variable: arguments are visible in ps)",
    )
    add_ctl_parser(sub)

    check = sub.add_parser(
        "check",
        help="check a Procfile or an aioproc.toml and print its services, starting nothing",
        description="Read FILE as `aioproc run` would (with the same options), print the "
        "services it would run, and exit 0; or print the configuration error on one line "
        "and exit 2. Nothing is started.",
    )
    _config_arguments(check)

    init = sub.add_parser(
        "init",
        help="run CMD as a container's init: forward signals, reap orphans",
        description="Run CMD as its init would: become a child subreaper (unless already "
        "PID 1), forward signals to CMD, reap orphaned processes, and when CMD exits, "
        "SIGTERM then SIGKILL whatever is left before exiting with CMD's exit code "
        "(128+N if signal N killed it).",
        usage="aioproc init [-h] [--group] [--grace SECONDS] [--verbose] -- CMD [ARGS...]",
    )
    init.add_argument(
        "-g",
        "--group",
        action="store_true",
        help="run CMD in its own process group and forward signals to the whole group",
    )
    init.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="after CMD exits, how long what is left gets between SIGTERM and SIGKILL (default: 5)",
    )
    init.add_argument("-v", "--verbose", action="store_true", help="log what init does")
    init.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="the command to run")
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say which configuration to read, shared by run and check."""
    parser.add_argument("file", nargs="?", metavar="FILE", help="a Procfile or an aioproc.toml")
    parser.add_argument(
        "-f", "--procfile", metavar="FILE", help="the Procfile or aioproc.toml (as FILE)"
    )
    parser.add_argument(
        "-d",
        "--root",
        metavar="DIR",
        help="the directory commands run in and .env is found in (default: the file's)",
    )
    parser.add_argument(
        "-e",
        "--env-file",
        action="append",
        default=None,
        metavar="FILES",
        help="environment files for every service (comma-separated; repeatable); for a "
        "Procfile they replace the default .env",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        action="append",
        default=[],
        metavar="SPEC",
        help="instances per process type, like web=2,worker=3 (all=N for the rest)",
    )
    parser.add_argument(
        "-p",
        "--port",
        type=int,
        metavar="N",
        help="the first PORT: +100 per process type, +1 per instance (Procfile default: "
        "$PORT, else 5000)",
    )


def _error(message: str) -> int:
    print(f"aioproc: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command == "run":
        return _command_run(args)
    if args.command == "check":
        return _command_check(args)
    if args.command == "ctl":
        from ._ctl import main_ctl

        return main_ctl(args)
    if args.command == "init":
        cmd = list(args.cmd)
        if cmd[:1] == ["--"]:
            cmd = cmd[1:]
        if not cmd:
            return _error("init: no command given (aioproc init -- CMD ARGS...)")
        try:
            grace = check_duration(args.grace, "--grace")
        except ValueError as exc:  # NaN, infinite or negative: argparse's float() takes them
            return _error(f"init: {exc}")
        from ._init import main_init

        return main_init(cmd, args.group, grace, args.verbose)
    parser.print_help(sys.stderr)
    return 2


def _read_config(args: argparse.Namespace, only: Sequence[str] = ()) -> Config:
    """The configuration the arguments name; raises ConfigError."""
    from ._config import ConfigError, LoadOptions, find_config, load_config

    if args.file and args.procfile and args.file != args.procfile:
        raise ConfigError("give the file once: as FILE or with -f/--procfile")
    name = args.file or args.procfile
    root = Path(args.root) if args.root else None
    if root is not None and not root.is_dir():
        raise ConfigError(f"-d/--root: {root} is not a directory")
    path = Path(name) if name else find_config(Path.cwd() if root is None else root)
    env_files = None
    if args.env_file is not None:
        env_files = tuple(
            Path(f.strip()) for item in args.env_file for f in item.split(",") if f.strip()
        )
    if args.port is not None and not 0 < args.port <= 65535:
        raise ConfigError(f"-p/--port: {args.port} is not a port number")
    options = LoadOptions(
        env_files=env_files,
        root=root,
        concurrency=_concurrency(args.concurrency),
        port=args.port,
    )
    return load_config(path, only, options)


def _concurrency(specs: Sequence[str]) -> dict[str, int]:
    from ._config import ConfigError

    out: dict[str, int] = {}
    for item in (part.strip() for spec in specs for part in spec.split(",")):
        if not item:
            continue
        name, eq, count = item.partition("=")
        if not eq or not name.strip() or not is_number(count.strip()):
            raise ConfigError(f"-c/--concurrency: expected NAME=COUNT, got {item!r}")
        out[name.strip()] = int(count)
    return out


def _command_check(args: argparse.Namespace) -> int:
    from ._config import ConfigError, describe_config

    try:
        config = _read_config(args)
    except ConfigError as exc:
        return _error(str(exc))
    sys.stdout.write(describe_config(config))
    return 0


def _command_run(args: argparse.Namespace) -> int:
    from ..control import SocketInUse
    from ._config import ConfigError
    from ._ctl import CONTROL_ENV, control_path
    from ._run import HttpUnavailable, run_services

    only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    try:
        config = _read_config(args, only)
    except ConfigError as exc:
        return _error(str(exc))
    control = None if args.no_control else control_path(args.control, config.path)
    # A path asked for must work; the default one may be impossible (read-only).
    required = bool(args.control or os.environ.get(CONTROL_ENV))
    try:
        http = _http_settings(args, config)
        runner = _loop_runner(args.loop or os.environ.get("AIOPROC_LOOP") or "asyncio")
    except ConfigError as exc:
        return _error(str(exc))
    try:
        return runner(
            run_services(
                config,
                _COLOR[args.color],
                control=control,
                control_required=required,
                raw_output=args.raw_output,
                http=http,
                timestamps=args.time_format or ("clock" if args.timestamps else None),
                log_format=args.log_format,
                mark_stderr=args.mark_stderr,
            )
        )
    except HttpUnavailable as exc:
        return _error(f"http: {exc}")
    # Only binding the control socket gets here: it happens before any service starts.
    except SocketInUse as exc:
        return _error(f"control socket: {exc}")
    except OSError as exc:
        return _error(f"control socket {control}: {exc.strerror or exc}")


def _loop_runner(name: str) -> Callable[[Coroutine[Any, Any, int]], int]:
    """How to run the command on the event loop ``name`` (``--loop``, ``AIOPROC_LOOP``)."""
    from ._config import ConfigError

    if name not in _LOOPS:
        raise ConfigError(f"--loop/AIOPROC_LOOP: {name!r} is not one of {', '.join(_LOOPS)}")
    if name == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        raise ConfigError(
            "--loop uvloop: uvloop is not installed (pip install 'aioproc-linux[uvloop]')"
        ) from None

    def run(main: Coroutine[Any, Any, int]) -> int:
        if sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # pragma: no cover
        try:  # pragma: no cover
            return asyncio.run(main)
        finally:  # pragma: no cover
            asyncio.set_event_loop_policy(None)

    return run


def _http_settings(args: argparse.Namespace, config: Config) -> HttpSettings | None:
    """Where ``aioproc run`` serves HTTP, and its token; ConfigError for a bad choice."""
    from ._config import ConfigError
    from ._run import HttpSettings

    address, where = args.http, "--http"
    if address is None:
        address, where = config.http, config.http_where
    if address is None:
        return None
    token = args.http_token or os.environ.get("AIOPROC_HTTP_TOKEN") or config.http_token
    try:
        from ..http import is_loopback, parse_address
    except ImportError:
        raise ConfigError(
            f"{where}: serving HTTP needs the http extra: pip install 'aioproc-linux[http]'"
        ) from None
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not token and not is_loopback(host):
        raise ConfigError(
            f"{where}: {host} is not a loopback address: serving HTTP there needs a token "
            "(--http-token or AIOPROC_HTTP_TOKEN)"
        )
    return HttpSettings(host, port, token or None)
